/**
 * Shared test helpers: external tools, subprocesses (cleaned up by pid), temporary folders.
 */
import { spawn, execFile, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { mkdtempSync, rmSync, accessSync, constants } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, delimiter, resolve } from 'node:path';
import type { TestContext } from 'node:test';

export const REPO_ROOT = resolve(new URL('../..', import.meta.url).pathname);
export const IN_CI = process.env.CI === 'true';

/** Where a command is on PATH (plus /usr/sbin, /sbin), or null. */
export function which(cmd: string): string | null {
  const dirs = (process.env.PATH ?? '').split(delimiter).concat(['/usr/sbin', '/sbin', '/usr/local/sbin']);
  for (const d of dirs) {
    const p = join(d, cmd);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return null;
}

/**
 * True when every tool is installed. Otherwise: under CI=true the test fails (a missing install step must
 * not pass silently); elsewhere it is skipped with the reason.
 */
export function haveTools(t: TestContext, ...tools: string[]): boolean {
  const missing = tools.filter((x) => which(x) === null);
  if (missing.length === 0) return true;
  const msg = `missing tools: ${missing.join(', ')} (run scripts/install-test-deps.sh)`;
  if (IN_CI) throw new Error(msg);
  t.skip(msg);
  return false;
}

export interface RunResult {
  stdout: Buffer;
  stderr: string;
  code: number;
}

/** Runs a command to completion; rejects on non-zero exit unless `allowFail`. */
export function run(
  cmd: string,
  args: string[],
  opts: { input?: Buffer | string; allowFail?: boolean; env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    const child = execFile(
      cmd,
      args,
      { encoding: 'buffer', maxBuffer: 1 << 30, env: opts.env ?? process.env, cwd: opts.cwd, timeout: opts.timeoutMs ?? 120_000 },
      (error, stdout, stderr) => {
        const code = error ? (typeof (error as { code?: unknown }).code === 'number' ? (error as { code: number }).code : 1) : 0;
        const res = { stdout, stderr: stderr.toString(), code };
        if (code !== 0 && !opts.allowFail) {
          reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${res.stderr.slice(0, 2000)}`));
        } else resolvePromise(res);
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** Processes started by tests, killed by pid when the test process ends however it ends. */
const started = new Set<ChildProcess>();
function killAll(): void {
  for (const c of started) {
    if (c.pid !== undefined && c.exitCode === null) {
      try {
        process.kill(c.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
  started.clear();
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    killAll();
    process.exit(1);
  });
}

/** Starts a long-running process; it is killed by pid at test end (`stop`) or when the runner exits. */
export function startProcess(cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess & { stop(): Promise<void> } {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  started.add(child);
  child.on('exit', () => started.delete(child));
  const stop = (): Promise<void> =>
    new Promise((res) => {
      if (child.exitCode !== null || child.signalCode !== null) return res();
      child.once('exit', () => res());
      try {
        process.kill(child.pid!, 'SIGTERM');
      } catch {
        return res();
      }
      setTimeout(() => {
        if (child.exitCode === null && child.signalCode === null) {
          try {
            process.kill(child.pid!, 'SIGKILL');
          } catch {
            /* gone */
          }
        }
      }, 3000).unref();
    });
  return Object.assign(child, { stop });
}

/** A temporary folder removed at the end of the test (pass the test context). */
export function tempDir(t: { after(fn: () => void): void }, prefix = 'netbootd-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The CLI as a command line runnable from tests (TypeScript source through tsx). */
export function cliCommand(): { cmd: string; args: string[] } {
  // tsx by absolute URL: the command may run in another folder (a user's config folder), where a bare
  // `tsx` would not resolve.
  return { cmd: process.execPath, args: ['--import', import.meta.resolve('tsx'), join(REPO_ROOT, 'src/cli/main.ts')] };
}
