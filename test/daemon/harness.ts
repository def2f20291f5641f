/**
 * Runs a Daemon in-process on ephemeral loopback ports with its log lines captured, for tests.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { extractRange } from '../helpers/piimage.js';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Daemon } from '../../src/daemon.js';
import { createLogger } from '../../src/util/log.js';
import { run } from '../helpers/tools.js';

export interface LogLine {
  level: number;
  msg: string;
  [k: string]: unknown;
}

export interface RunningDaemon {
  daemon: Daemon;
  configPath: string;
  lines: LogLine[];
  /** The same lines as written (JSON text), for checks JSON.parse cannot make (duplicate keys). */
  raw: string[];
  tftpPort: number;
  nbdPort: number;
  /** Fetches a file by TFTP with curl (a real client); null when the server says not found. */
  fetch(path: string, blksize?: number): Promise<Buffer | null>;
}

/** Config text with loopback, ephemeral ports and DHCP off, followed by `body` (images, pis, hosts…). */
export function testConfig(stateDir: string, body: string): string {
  return `server: { address: 127.0.0.1, stateDir: ${stateDir} }
dhcp: { enabled: false }
tftp: { address: 127.0.0.1, port: 0 }
nbd: { address: 127.0.0.1, port: 0 }
status: { enabled: false }
logging: { level: debug }
${body}`;
}

export async function startDaemon(t: { after(fn: () => unknown): void }, dir: string, configText: string, opts: { watch?: boolean } = {}): Promise<RunningDaemon> {
  const configPath = join(dir, 'netbootd.yaml');
  writeFileSync(configPath, configText);
  const lines: LogLine[] = [];
  const raw: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) {
        if (!l) continue;
        raw.push(l);
        lines.push(JSON.parse(l) as LogLine);
      }
      cb();
    },
  });
  const daemon = new Daemon({ configPath, logger: createLogger({ level: 'debug', destination: sink }), watch: opts.watch ?? false });
  await daemon.start();
  t.after(() => daemon.stop());
  const tftpPort = daemon.bound.tftp!;
  const fetch = async (path: string, blksize = 1468): Promise<Buffer | null> => {
    const r = await run('curl', ['-sS', '--tftp-blksize', String(blksize), `tftp://127.0.0.1:${tftpPort}/${path}`], { allowFail: true });
    if (r.code === 0) return r.stdout;
    if (/not found|error 1\b|code 1\b/i.test(r.stderr) || r.code === 68) return null;
    throw new Error(`curl tftp ${path}: exit ${r.code}: ${r.stderr}`);
  };
  return { daemon, configPath, lines, raw, tftpPort, nbdPort: daemon.bound.nbd!, fetch };
}

/** Byte ranges (64 KiB granules) where two buffers differ, merged into runs. */
export function diffRuns(a: Buffer, b: Buffer, granule = 64 * 1024): Array<{ off: number; len: number }> {
  const runs: Array<{ off: number; len: number }> = [];
  for (let off = 0; off < a.length; off += granule) {
    const end = Math.min(a.length, off + granule);
    if (a.compare(b, off, end, off, end) === 0) continue;
    const last = runs[runs.length - 1];
    if (last && last.off + last.len === off) last.len += end - off;
    else runs.push({ off, len: end - off });
  }
  return runs;
}

/**
 * What a client does when it updates its boot partition: a real NBD client (qemu-io) writes, at `uri`,
 * only the 64 KiB blocks of [start, start+size) where `changed` differs from `original`, then flushes.
 * Returns the new bytes of that range.
 */
export async function writeChangedBlocks(dir: string, original: string, changed: string, start: number, size: number, uri: string): Promise<Buffer> {
  extractRange(original, start, size, join(dir, 'range-old.bin'));
  extractRange(changed, start, size, join(dir, 'range-new.bin'));
  const oldBytes = readFileSync(join(dir, 'range-old.bin'));
  const newBytes = readFileSync(join(dir, 'range-new.bin'));
  const runs = diffRuns(oldBytes, newBytes);
  if (runs.length === 0) throw new Error('nothing changed');
  const cmds: string[] = [];
  runs.forEach((r, i) => {
    const f = join(dir, `run${i}.bin`);
    writeFileSync(f, newBytes.subarray(r.off, r.off + r.len));
    cmds.push('-c', `write -s ${f} ${start + r.off} ${r.len}`);
  });
  cmds.push('-c', 'flush');
  await run('qemu-io', ['-f', 'raw', ...cmds, uri]);
  return newBytes;
}
