/**
 * Runs a Daemon in-process on ephemeral loopback ports with its log lines captured, for tests.
 */
import { writeFileSync } from 'node:fs';
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
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as LogLine);
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
  return { daemon, configPath, lines, tftpPort, nbdPort: daemon.bound.nbd!, fetch };
}
