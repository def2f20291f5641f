/**
 * The README's first command ends in `npm start`: build, then scripts/demo.sh, which brings up the daemon
 * on a demo image on unprivileged ports and prints how to fetch a file. This runs the demo script as a
 * newcomer would (ports moved out of the way) and does what it prints.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { haveTools, REPO_ROOT, run, startProcess } from '../helpers/tools.js';

test('npm start: the demo serves a Pi boot file by TFTP and the image by NBD, and says how', async (t) => {
  if (!haveTools(t, 'sfdisk', 'mkfs.vfat', 'mcopy', 'mmd', 'curl', 'nbdinfo')) return;
  if (!existsSync(join(REPO_ROOT, 'dist/src/cli/main.js'))) await run('npm', ['run', 'build'], { cwd: REPO_ROOT, timeoutMs: 300_000 });
  // NBD stays on its default 10809 (what the prepared cmdline.txt names); TFTP and status move aside.
  const ports = { DEMO_TFTP_PORT: '26969', DEMO_STATUS_PORT: '29810' };
  const p = startProcess('bash', [join(REPO_ROOT, 'scripts/demo.sh')], { cwd: REPO_ROOT, env: { ...process.env, ...ports }, detached: false });
  t.after(() => p.stop());
  let out = '';
  p.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  p.stderr!.on('data', (b: Buffer) => (out += b.toString()));
  for (let i = 0; i < 300 && !out.includes('netbootd started'); i++) await new Promise((r) => setTimeout(r, 100));
  assert.match(out, /netbootd started/, out);
  assert.match(out, /no errors, \d+ warnings?/, 'netbootd check passed on the prepared image');
  const fetchCmd = /curl -s (tftp:\/\/\S+)/.exec(out);
  assert.ok(fetchCmd, 'the demo prints how to fetch a file');
  const r = await run('curl', ['-s', fetchCmd[1]!]);
  assert.match(r.stdout.toString(), /ip=dhcp nbdroot=127\.0\.0\.1\/demo root=\/dev\/nbd0p2/);
  const info = await run('nbdinfo', ['--size', 'nbd://127.0.0.1:10809/demo']);
  assert.equal(Number(info.stdout.toString().trim()) > 100 * 1024 * 1024, true);
});
