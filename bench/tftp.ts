/**
 * TFTP throughput: netbootd vs tftpd-hpa (`in.tftpd`) vs `atftpd`, the same file on tmpfs, the same client
 * (Debian's `atftp`) for every server, side by side in one run.
 *
 *   npm run bench:tftp                    (builds, then runs dist/bench/tftp.js)
 *   BENCH_TFTP_MB=64 BENCH_TFTP_REPS=3 npm run bench:tftp
 *   BENCH_TFTP_PIN=0 npm run bench:tftp   (every server and the client pinned to CPU 0 with taskset)
 *
 * Lockstep TFTP is latency-bound: one round trip per block. Where the kernel places the server and the
 * client matters a lot in a VM (a cross-CPU wake-up is an IPI): the pinned mode takes placement out of
 * the comparison and shows the per-block cost of each server alone.
 *
 * Every server runs as its own process (netbootd: this compiled file in `--serve` mode). Runs are
 * interleaved across servers (noise on a shared machine hits all of them alike); each cell shows the
 * median MiB/s of the runs (best in brackets). Every received file is checked byte-exact.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import dgram from 'node:dgram';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, median } from './lib.js';
import { which } from '../test/helpers/tools.js';

const HPA = process.env.IN_TFTPD ?? '/opt/netbootd-peers/tftpd-hpa/usr/sbin/in.tftpd';
const MB = Number(process.env.BENCH_TFTP_MB ?? 64);
const REPS = Number(process.env.BENCH_TFTP_REPS ?? 3);
const PIN = process.env.BENCH_TFTP_PIN;

interface Row {
  name: string;
  opts: string[];
}
const ROWS: Row[] = [
  { name: 'blksize 512', opts: ['--option', 'blksize 512'] },
  { name: 'blksize 1468', opts: ['--option', 'blksize 1468'] },
  { name: 'blksize 8192', opts: ['--option', 'blksize 8192'] },
  { name: 'blksize 1468 windowsize 16', opts: ['--option', 'blksize 1468', '--option', 'windowsize 16'] },
];

interface Server {
  name: string;
  port: number;
  proc: ChildProcess;
}

async function serveMode(dir: string): Promise<void> {
  const { TftpServer } = await import('../src/tftp/server.js');
  const { DirectoryResolver } = await import('../src/tftp/resolver.js');
  const { silentLogger } = await import('../src/util/log.js');
  const s = new TftpServer({
    resolver: new DirectoryResolver(dir), logger: silentLogger, address: '127.0.0.1', port: 0,
    limits: { maxBlksize: 65464 },
  });
  const { port } = await s.listen();
  process.stdout.write(`PORT ${port}\n`);
  process.on('SIGTERM', () => void s.close().then(() => process.exit(0)));
}



const children: ChildProcess[] = [];
function killChildren(): void {
  for (const c of children) {
    if (c.pid !== undefined && c.exitCode === null) {
      try {
        process.kill(c.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
}
process.on('exit', killChildren);

/** The command line, under `taskset -a -c CPU` when pinning. */
function pinned(cmd: string, args: string[]): [string, string[]] {
  return PIN !== undefined && PIN !== '' ? ['taskset', ['-a', '-c', PIN, cmd, ...args]] : [cmd, args];
}

function start(cmd: string, args: string[]): ChildProcess {
  const [c0, a0] = pinned(cmd, args);
  const c = spawn(c0, a0, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(c);
  return c;
}

async function startNetbootd(dir: string): Promise<Server> {
  const self = fileURLToPath(import.meta.url);
  const proc = start(process.execPath, [self, '--serve', dir]);
  const port = await new Promise<number>((resolve, reject) => {
    let buf = '';
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /PORT (\d+)/.exec(buf);
      if (m) resolve(Number(m[1]));
    });
    proc.once('exit', (code) => reject(new Error(`netbootd exited ${code}`)));
  });
  return { name: 'netbootd', port, proc };
}

async function waitUdp(port: number): Promise<void> {
  // A peer is up when it answers an RRQ for a missing file.
  const s = dgram.createSocket('udp4');
  try {
    for (let i = 0; i < 50; i++) {
      const got = await new Promise<boolean>((resolve) => {
        const t = setTimeout(() => resolve(false), 100);
        s.once('message', () => {
          clearTimeout(t);
          resolve(true);
        });
        s.send(Buffer.from('\0\x01no-such-file\0octet\0'), port, '127.0.0.1');
      });
      if (got) return;
    }
    throw new Error(`no TFTP server answering on ${port}`);
  } finally {
    s.close();
  }
}

async function startPeers(dir: string): Promise<Server[]> {
  const peers: Server[] = [];
  const root = process.getuid?.() === 0;
  const user = root ? 'root' : (process.env.USER ?? 'nobody');
  if (existsSync(HPA)) {
    const port = await freePort('udp');
    const proc = start(HPA, ['-L', '-u', user, '-s', dir, '-a', `127.0.0.1:${port}`]);
    await waitUdp(port);
    peers.push({ name: 'in.tftpd', port, proc });
  } else console.log(`(tftpd-hpa not found at ${HPA}: skipped)`);
  const atftpd = which('atftpd');
  if (atftpd) {
    const port = await freePort('udp');
    const proc = start(atftpd, ['--daemon', '--no-fork', '--port', String(port), '--bind-address', '127.0.0.1',
      '--user', user, '--group', root ? 'root' : user, '--logfile', '/dev/null', dir]);
    await waitUdp(port);
    peers.push({ name: 'atftpd', port, proc });
  } else console.log('(atftpd not found: skipped)');
  return peers;
}

function runClient(port: number, opts: string[], out: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const [cmd, args] = pinned('atftp', [...opts, '-g', '-r', 'bench.bin', '-l', out, '127.0.0.1', String(port)]);
    const c = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    c.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    c.on('exit', (code) => {
      const s = Number(process.hrtime.bigint() - t0) / 1e9;
      if (code !== 0) reject(new Error(`atftp exited ${code}: ${err.slice(0, 300)}`));
      else resolve(s);
    });
  });
}


async function main(): Promise<void> {
  if (process.argv[2] === '--serve') return serveMode(process.argv[3]!);
  if (!which('atftp')) {
    console.error('atftp (the client) is not installed: apt-get install atftp');
    process.exit(1);
  }
  const base = existsSync('/dev/shm') ? '/dev/shm' : '/tmp';
  const dir = join(base, `netbootd-bench-tftp-${process.pid}`);
  mkdirSync(dir, { recursive: true });
  const cleanup = (): void => rmSync(dir, { recursive: true, force: true });
  process.on('exit', cleanup);
  const file = join(dir, 'bench.bin');
  {
    const fd = openSync(file, 'w');
    const chunk = Buffer.allocUnsafe(1 << 20);
    let x = 0x9e3779b9;
    for (let i = 0; i < MB; i++) {
      for (let j = 0; j < chunk.length; j += 4) {
        x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
        chunk.writeUInt32LE(x, j);
      }
      writeSync(fd, chunk);
    }
    closeSync(fd);
  }
  const want = createHash('sha256').update(readFileSync(file)).digest('hex');
  const out = join(dir, 'out.bin');
  const servers = [await startNetbootd(dir), ...(await startPeers(dir))];
  console.log(`TFTP bench: ${MB} MiB file on ${base} (tmpfs), client atftp, ${REPS} runs per cell, servers: ${servers.map((s) => s.name).join(', ')}`);
  if (PIN) console.log(`every server and the client pinned to CPU ${PIN} (taskset)`);
  console.log('in.tftpd (tftpd-hpa 5.2) has no windowsize support: in the windowsize row it ignores the option and runs lockstep.');
  const results = new Map<string, Map<string, number[]>>();
  for (const row of ROWS) {
    const perServer = new Map<string, number[]>();
    results.set(row.name, perServer);
    for (let rep = 0; rep < REPS; rep++) {
      for (const s of servers) {
        const secs = await runClient(s.port, row.opts, out);
        const data = readFileSync(out);
        if (data.length !== MB * 1048576 || (rep === 0 && createHash('sha256').update(data).digest('hex') !== want)) {
          throw new Error(`${s.name} ${row.name}: received file differs`);
        }
        writeFileSync(out, '');
        const mibps = MB / secs;
        (perServer.get(s.name) ?? perServer.set(s.name, []).get(s.name)!).push(mibps);
      }
    }
  }
  const names = servers.map((s) => s.name);
  const w = 30;
  const cell = 20;
  console.log('');
  console.log('row'.padEnd(w) + names.map((n) => n.padStart(cell)).join('') + '   netbootd / best peer');
  for (const row of ROWS) {
    const r = results.get(row.name)!;
    const med = (n: string): number => median(r.get(n)!);
    const best = (n: string): number => Math.max(...r.get(n)!);
    const peers = names.filter((n) => n !== 'netbootd');
    const bestPeer = peers.length ? Math.max(...peers.map(med)) : NaN;
    const ratio = med('netbootd') / bestPeer;
    console.log(
      row.name.padEnd(w) +
        names.map((n) => `${med(n).toFixed(1)} (${best(n).toFixed(1)})`.padStart(cell)).join('') +
        `   ${Number.isFinite(ratio) ? ratio.toFixed(2) + 'x' : 'n/a'}`,
    );
  }
  console.log('\nMiB/s, median of runs (best in brackets); ratio compares medians.');
  for (const s of servers) s.proc.kill('SIGTERM');
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
