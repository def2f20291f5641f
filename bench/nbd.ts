/**
 * NBD benchmark: netbootd vs nbd-server vs nbdkit (file plugin), side by side in one run, on the same
 * image in page cache (/dev/shm). Rows: nbdcopy sequential read to null: (1 and 4 connections), fio 4k
 * randread / randwrite at iodepth 32, fio 256k sequential write. Prints figures and ratios.
 *
 *   npm run bench:nbd                 (env: NBD_BENCH_SIZE_MB=1024, NBD_BENCH_SECONDS=5, NBD_BENCH_ROUNDS=1)
 */
import { readFileSync, writeFileSync, mkdtempSync, rmSync, openSync, writeSync, closeSync, existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { join, resolve } from 'node:path';
import { tmpdir, availableParallelism, loadavg } from 'node:os';
import { run, which, startProcess } from '../test/helpers/tools.js';
import { freePort } from './lib.js';

const SIZE_MB = Number(process.env.NBD_BENCH_SIZE_MB ?? 1024);
const SECONDS = Number(process.env.NBD_BENCH_SECONDS ?? 5);
const ROUNDS = Number(process.env.NBD_BENCH_ROUNDS ?? 1);
const ONLY = process.env.NBD_BENCH_ROWS ? new RegExp(process.env.NBD_BENCH_ROWS) : null;
const ONLY_SERVERS = process.env.NBD_BENCH_SERVERS ? new RegExp(process.env.NBD_BENCH_SERVERS) : null;
const HERE = new URL('.', import.meta.url).pathname;
const SERVE = resolve(HERE, '../test/nbd/fixtures/serve.js');

interface Server {
  name: string;
  uri: string;
  stop(): Promise<void>;
}


async function waitPort(port: number, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((res) => {
      const c = net.connect(port, '127.0.0.1', () => {
        c.destroy();
        res(true);
      });
      c.on('error', () => res(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`port ${port} never opened`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function waitFile(path: string): Promise<void> {
  for (let i = 0; i < 200 && !existsSync(path); i++) await new Promise((r) => setTimeout(r, 25));
}

async function startNetbootd(image: string): Promise<Server> {
  const cfg = JSON.stringify([{ name: 'bench', path: image, mode: 'readwrite', shared: true }]);
  // libuv's threadpool sized to the machine (at most 4): on small machines fewer pool threads mean fewer
  // wake-ups and context switches per request (the daemon applies the same default).
  const env = { ...process.env, UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? String(Math.min(4, availableParallelism())) };
  const child = startProcess(process.execPath, [SERVE, cfg, '0'], { stdio: ['ignore', 'pipe', 'inherit'], env });
  const port = await new Promise<number>((res, rej) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /PORT (\d+)/.exec(out);
      if (m) res(Number(m[1]));
    });
    child.on('exit', (c) => rej(new Error(`netbootd serve exited ${c}`)));
  });
  return { name: 'netbootd', uri: `nbd://127.0.0.1:${port}/bench`, stop: () => child.stop() };
}

async function startNbdServer(image: string, dir: string): Promise<Server> {
  const port = await freePort('tcp');
  const conf = join(dir, 'nbd-server.conf');
  writeFileSync(conf, `[generic]\nuser = root\ngroup = root\nlistenaddr = 127.0.0.1\nport = ${port}\nallowlist = true\n[bench]\nexportname = ${image}\nflush = true\nfua = true\ntrim = true\n`);
  // Without -d nbd-server daemonizes and forks per client (-d would serve a single connection); its
  // pid comes from the pid file and it is stopped by that pid.
  const pidFile = join(dir, 'nbd-server.pid');
  await run(which('nbd-server')!, ['-C', conf, '-p', pidFile]);
  await waitFile(pidFile);
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  await waitPort(port);
  const stop = async (): Promise<void> => {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      /* gone */
    }
    await new Promise((r) => setTimeout(r, 300));
  };
  return { name: 'nbd-server', uri: `nbd://127.0.0.1:${port}/bench`, stop };
}

async function startNbdkit(image: string): Promise<Server> {
  const port = await freePort('tcp');
  const child = startProcess(which('nbdkit')!, ['-f', '-p', String(port), '-i', '127.0.0.1', 'file', image], { stdio: ['ignore', 'ignore', 'inherit'] });
  await waitPort(port);
  return { name: 'nbdkit', uri: `nbd://127.0.0.1:${port}/`, stop: () => child.stop() };
}

interface Row {
  label: string;
  unit: string;
  measure(uri: string): Promise<number>;
}

async function nbdcopyRead(uri: string, conns: number): Promise<number> {
  const t0 = process.hrtime.bigint();
  await run('nbdcopy', [`--connections=${conns}`, uri, 'null:'], { timeoutMs: 300_000 });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  return (SIZE_MB * 1024 * 1024) / s / 1e6;
}

async function fio(uri: string, rw: string, bs: string, depth: number, metric: 'iops' | 'mbps'): Promise<number> {
  const args = [
    '--name=bench', '--ioengine=nbd', `--uri=${uri}`, `--rw=${rw}`, `--bs=${bs}`, `--iodepth=${depth}`,
    `--size=${SIZE_MB}M`, '--time_based', `--runtime=${SECONDS}`, '--ramp_time=1', '--output-format=json', '--numjobs=1',
  ];
  const r = await run('fio', args, { timeoutMs: 300_000, cwd: tmpdir() });
  const text = r.stdout.toString();
  const json = JSON.parse(text.slice(text.indexOf('{'))) as { jobs: Array<{ read: { iops: number; bw_bytes: number }; write: { iops: number; bw_bytes: number } }> };
  const j = json.jobs[0]!;
  const side = rw.includes('read') ? j.read : j.write;
  return metric === 'iops' ? side.iops : side.bw_bytes / 1e6;
}

const ALL_ROWS: Row[] = [
  { label: 'nbdcopy seq read, 1 conn', unit: 'MB/s', measure: (u) => nbdcopyRead(u, 1) },
  { label: 'nbdcopy seq read, 4 conns', unit: 'MB/s', measure: (u) => nbdcopyRead(u, 4) },
  { label: 'fio 4k randread qd32', unit: 'IOPS', measure: (u) => fio(u, 'randread', '4k', 32, 'iops') },
  { label: 'fio 4k randwrite qd32', unit: 'IOPS', measure: (u) => fio(u, 'randwrite', '4k', 32, 'iops') },
  { label: 'fio 256k seq write qd32', unit: 'MB/s', measure: (u) => fio(u, 'write', '256k', 32, 'mbps') },
];

const ROWS = ALL_ROWS.filter((r) => !ONLY || ONLY.test(r.label));

function makeImage(path: string): void {
  const fd = openSync(path, 'w');
  const block = randomBytes(16 << 20);
  for (let i = 0; i < SIZE_MB / 16; i++) {
    block.writeUInt32LE(i, 0);
    writeSync(fd, block, 0, block.length, i * block.length);
  }
  closeSync(fd);
}

async function main(): Promise<void> {
  for (const t of ['nbdcopy', 'fio', 'nbd-server', 'nbdkit']) {
    if (!which(t)) throw new Error(`missing ${t} (run scripts/install-test-deps.sh)`);
  }
  const base = existsSync('/dev/shm') ? '/dev/shm' : '/tmp';
  const dir = mkdtempSync(join(base, 'netbootd-nbd-bench-'));
  const image = join(dir, 'image.raw');
  const cleanup = (): void => rmSync(dir, { recursive: true, force: true });
  process.on('exit', cleanup);
  console.log(`# NBD benchmark: ${SIZE_MB} MiB image in ${base} (page cache), ${SECONDS}s fio runs, ${ROUNDS} round(s), best of rounds`);
  console.log(`# ${availableParallelism()} cores, load average ${loadavg().map((x) => x.toFixed(1)).join(' ')} at start`);
  makeImage(image);
  const starters: Array<() => Promise<Server>> = [() => startNetbootd(image), () => startNbdServer(image, dir), () => startNbdkit(image)];
  const names = ['netbootd', 'nbd-server', 'nbdkit'];
  const results: number[][] = ROWS.map(() => names.map(() => 0));
  for (let round = 0; round < ROUNDS; round++) {
    for (let s = 0; s < starters.length; s++) {
      if (ONLY_SERVERS && !ONLY_SERVERS.test(names[s]!)) continue;
      const srv = await starters[s]!();
      try {
        for (let r = 0; r < ROWS.length; r++) {
          const v = await ROWS[r]!.measure(srv.uri);
          results[r]![s] = Math.max(results[r]![s]!, v); // best of rounds
        }
      } finally {
        await srv.stop();
      }
    }
  }
  const pad = (x: string, n: number): string => x.padStart(n);
  console.log(`${'workload'.padEnd(28)}${pad('unit', 6)}${names.map((n) => pad(n, 12)).join('')}${pad('vs nbd-server', 15)}${pad('vs nbdkit', 11)}`);
  for (let r = 0; r < ROWS.length; r++) {
    const v = results[r]!;
    const fmt = (x: number): string => (x >= 100 ? x.toFixed(0) : x.toFixed(1));
    console.log(
      `${ROWS[r]!.label.padEnd(28)}${pad(ROWS[r]!.unit, 6)}${v.map((x) => pad(fmt(x), 12)).join('')}` +
      `${pad(`${(v[0]! / v[1]!).toFixed(2)}x`, 15)}${pad(`${(v[0]! / v[2]!).toFixed(2)}x`, 11)}`,
    );
  }
  console.log(`# load average ${loadavg().map((x) => x.toFixed(1)).join(' ')} at end (other work on the machine skews every column)`);
  cleanup();
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
