/**
 * The README's walk-throughs, as tests run them: the ```sh blocks between `<!-- NAME -->` and
 * `<!-- /NAME -->` markers, so that what the README tells users to type is what the tests execute.
 * The only change a test makes is the value of the settings lines (`NAME=value   # ...`) at the top of a
 * block, which the README marks as the user's own (their server address, their MAC, their folder), and the
 * `netbootd` and `sudo` the commands find on PATH (shims: the source tree's CLI; we run as root already).
 */
import { after } from 'node:test';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT, cliCommand, run } from './tools.js';

export const README = join(REPO_ROOT, 'README.md');

/** The shell code of every ```sh block between the markers, in order. Throws when the markers are missing. */
export function readmeBlocks(name: string, text = readFileSync(README, 'utf8')): string[] {
  const open = `<!-- ${name} -->`;
  const close = `<!-- /${name} -->`;
  const a = text.indexOf(open);
  const b = text.indexOf(close, a + open.length);
  if (a < 0 || b < 0) throw new Error(`README.md has no ${open} ... ${close} section`);
  const section = text.slice(a + open.length, b);
  const blocks = [...section.matchAll(/^[ \t]*```(?:sh|bash|shell)[ \t]*\n([\s\S]*?)^[ \t]*```[ \t]*$/gm)].map((m) => dedent(m[1]!));
  if (blocks.length === 0) throw new Error(`README.md ${open}: no \`\`\`sh block`);
  return blocks;
}

function dedent(s: string): string {
  const lines = s.split('\n');
  const indent = Math.min(...lines.filter((l) => l.trim() !== '').map((l) => /^[ \t]*/.exec(l)![0].length));
  return lines.map((l) => l.slice(indent)).join('\n');
}

/**
 * Gives the settings lines (`KEY=...` at the start of a line) the test's values. Every key must be there
 * exactly once, so a README edit that renames one fails the test instead of running with the example value.
 */
export function withSettings(block: string, settings: Record<string, string>): string {
  let out = block;
  for (const [k, v] of Object.entries(settings)) {
    const re = new RegExp(`^${k}=.*$`, 'gm');
    const n = out.match(re)?.length ?? 0;
    if (n !== 1) throw new Error(`README block: expected one \`${k}=\` settings line, found ${n}`);
    out = out.replace(re, `${k}=${shellQuote(v)}`);
  }
  return out;
}

export function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * A folder with `netbootd` (the CLI from the source tree, as `npm install -g .` would put it on PATH) and
 * `sudo` (tests run as root: it just runs the command, keeping PATH) — both `exec`, so a pid stays the
 * daemon's own.
 */
export function shimBin(dir: string): string {
  const cli = cliCommand();
  const netbootd = join(dir, 'netbootd');
  writeFileSync(netbootd, `#!/bin/sh\nexec ${[cli.cmd, ...cli.args].map(shellQuote).join(' ')} "$@"\n`);
  chmodSync(netbootd, 0o755);
  const sudo = join(dir, 'sudo');
  writeFileSync(sudo, '#!/bin/sh\nexec "$@"\n');
  chmodSync(sudo, 0o755);
  return dir;
}

/** The Debian packages scripts/install-test-deps.sh installs (its PACKAGES list). */
export function testDepsPackages(): Set<string> {
  const text = readFileSync(join(REPO_ROOT, 'scripts/install-test-deps.sh'), 'utf8');
  const list = /^PACKAGES=\(([\s\S]*?)^\)/m.exec(text)?.[1] ?? '';
  return new Set(list.split('\n').map((l) => l.replace(/#.*/, '')).join(' ').split(/\s+/).filter(Boolean));
}

/**
 * A temp folder for a walk-through test with the shims in `bin/`, removed after the test file (kept with
 * E2E_KEEP=1), after `teardown` (namespaces, daemons); `env` puts the shims first on PATH, HOME = the folder.
 */
export function walkthroughWork(prefix: string, teardown: () => Promise<void> | void): { work: string; env: NodeJS.ProcessEnv } {
  const work = mkdtempSync(join(tmpdir(), prefix));
  after(async () => {
    await teardown();
    if (process.env.E2E_KEEP) console.log(`[e2e] kept ${work} (E2E_KEEP)`);
    else rmSync(work, { recursive: true, force: true });
  });
  mkdirSync(join(work, 'bin'));
  const bin = shimBin(join(work, 'bin'));
  return { work, env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}`, HOME: work } };
}

/** Runs a README block with `bash -e -o pipefail`; its stdout and stderr, or an error ending with them. */
export async function runBlock(block: string, opts: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs: number }): Promise<string> {
  const r = await run('bash', ['-e', '-o', 'pipefail', '-c', block], { ...opts, allowFail: true });
  const out = `${r.stdout.toString()}${r.stderr}`;
  if (r.code !== 0) throw new Error(`the README block exited ${r.code}:\n${out.slice(-4000)}`);
  return out;
}
