/**
 * The README's install line `npm install -g .` on a fresh clone (no node_modules, no dist) puts a working
 * `netbootd` on the PATH: prepare installs the build tools it needs and builds. Into a private prefix, from a
 * copy of this checkout's files (what a clone of it holds).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { REPO_ROOT, run, tempDir } from '../helpers/tools.js';

test('npm install -g . from a fresh clone gives a working netbootd', async (t) => {
  const dir = tempDir(t);
  const clone = join(dir, 'netbootd');
  const files = (await run('git', ['ls-files', '-co', '--exclude-standard', '-z'], { cwd: REPO_ROOT })).stdout.toString().split('\0').filter(Boolean);
  for (const f of files) {
    if (!existsSync(join(REPO_ROOT, f))) continue; // deleted in the work tree
    mkdirSync(dirname(join(clone, f)), { recursive: true });
    cpSync(join(REPO_ROOT, f), join(clone, f));
  }
  assert.equal(existsSync(join(clone, 'node_modules')), false);
  const prefix = join(dir, 'global');
  const env = { ...process.env, npm_config_prefix: prefix, npm_config_audit: 'false', npm_config_fund: 'false', npm_config_prefer_offline: 'true' };
  const r = await run('npm', ['install', '-g', '.'], { cwd: clone, env, allowFail: true, timeoutMs: 600_000 });
  assert.equal(r.code, 0, r.stderr.toString());
  const bin = join(prefix, 'bin', 'netbootd');
  const v = await run(bin, ['--version'], { allowFail: true });
  assert.equal(v.code, 0, v.stderr.toString());
  assert.match(v.stdout.toString(), /^\d+\.\d+\.\d+/);
  const help = await run(bin, ['check', '--help'], { allowFail: true });
  assert.match(help.stdout.toString(), /--config/);
});
