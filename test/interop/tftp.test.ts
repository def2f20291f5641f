/**
 * Interop with Debian's real TFTP clients (atftp, tftp-hpa, curl, busybox) against the netbootd daemon
 * (its TFTP server, registry and image pool, as `netbootd serve` runs them), serving from a directory
 * (`defaults.tftpRoot`) and a Pi's serial from a FAT32 partition inside an MBR disk image (built with
 * sfdisk, mkfs.vfat --offset and mcopy; never mounted). Every file must arrive byte-exact: empty, exact
 * multiples of the block size, and one larger than 65535 blocks at blksize 512 (block number rollover).
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDaemon } from '../daemon/harness.js';
import { haveTools, run, which } from '../helpers/tools.js';
import { pattern } from '../tftp/helpers.js';

const SERIAL = '1a2b3c4d';
const BIG = 65536 * 512 + 1000; // 65538 blocks at 512: wraps past 65535

const FILES: Record<string, number> = {
  empty: 0,
  'x8.bin': 8 * 100,
  'x512.bin': 512 * 16,
  'x1024.bin': 1024 * 8,
  'x1468.bin': 1468 * 8,
  'x8192.bin': 8192 * 4,
  'x65464.bin': 65464 * 2,
  'small.bin': 20 * 1024 + 3,
  'r1m.bin': 1024 * 1024 + 123,
  'big.bin': BIG,
};

let dir = '';
let work = '';
let dirPort = 0;
let fatPort = 0;
const cleanups: Array<() => unknown> = [];
const content = new Map<string, Buffer>();
let outN = 0;

type Client = 'atftp' | 'tftp' | 'curl' | 'busybox';

async function fetch(client: Client, port: number, remote: string, opts: { blksize?: number; windowsize?: number; tsize?: boolean; timeout?: number; noOptions?: boolean } = {}): Promise<Buffer> {
  const out = join(work, `out${outN++}`);
  const host = '127.0.0.1';
  switch (client) {
    case 'atftp': {
      const args: string[] = [];
      if (opts.blksize) args.push('--option', `blksize ${opts.blksize}`);
      if (opts.windowsize) args.push('--option', `windowsize ${opts.windowsize}`);
      if (opts.tsize) args.push('--option', 'tsize 0');
      if (opts.timeout) args.push('--option', `timeout ${opts.timeout}`);
      await run('atftp', [...args, '-g', '-r', remote, '-l', out, host, String(port)], { timeoutMs: 60_000 });
      break;
    }
    case 'tftp':
      await run('tftp', [host, String(port), '-m', 'binary', '-c', 'get', remote, out], { timeoutMs: 60_000 });
      break;
    case 'curl': {
      const args = ['-sS', '-o', out, `tftp://${host}:${port}/${remote}`];
      if (opts.blksize) args.push('--tftp-blksize', String(opts.blksize));
      if (opts.noOptions) args.push('--tftp-no-options');
      await run('curl', args, { timeoutMs: 60_000 });
      break;
    }
    case 'busybox': {
      const args = ['tftp'];
      if (opts.blksize) args.push('-b', String(opts.blksize));
      await run('busybox', [...args, '-g', '-r', remote, '-l', out, host, String(port)], { timeoutMs: 60_000 });
      break;
    }
  }
  const got = readFileSync(out);
  rmSync(out, { force: true });
  return got;
}

function same(got: Buffer, name: string, what: string): void {
  const want = content.get(name)!;
  assert.equal(got.length, want.length, `${what}: length`);
  assert.ok(got.equals(want), `${what}: bytes differ`);
}

describe('tftp interop with Debian clients', { concurrency: false }, () => {
  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'netbootd-tftp-interop-'));
    dir = join(work, 'root');
    mkdirSync(dir);
    let seed = 1;
    for (const [name, size] of Object.entries(FILES)) {
      const b = pattern(size, seed++);
      content.set(name, b);
      writeFileSync(join(dir, name), b);
    }
    // The daemon as it runs: its registry serves a directory to any PC (`defaults.tftpRoot`) and the Pi's
    // serial from the image's boot FAT through the image pool.
    let images = '';
    if (which('sfdisk') && which('mkfs.vfat') && which('mcopy')) {
      // 1 MiB gap, then an 80 MiB FAT32 partition (512-byte clusters so FAT32 is legal at this size).
      const img = join(work, 'pi.img');
      await run('truncate', ['-s', `${81 * 1024 * 1024}`, img]);
      await run('sfdisk', ['-q', img], { input: 'label: dos\nstart=2048, size=163840, type=c\n' });
      await run('mkfs.vfat', ['-F', '32', '-s', '1', '-n', 'BOOT', '--offset', '2048', img, '81920']);
      const names = Object.keys(FILES).map((n) => join(dir, n));
      await run('mcopy', ['-i', `${img}@@1M`, ...names, '::'], { env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });
      images = `images: { pi: { path: ${img}, mode: readonly } }\npis: { "${SERIAL.toUpperCase()}": { image: pi } }\n`;
    }
    const state = join(work, 'state');
    mkdirSync(state);
    const d = await startDaemon({ after: (fn) => void cleanups.push(fn) }, work, `server: { address: 127.0.0.1, stateDir: ${state} }
dhcp: { enabled: false }
tftp: { address: 127.0.0.1, port: 0, maxBlksize: 65464 }
nbd: { address: 127.0.0.1, port: 0 }
status: { enabled: false }
logging: { level: info }
defaults: { tftpRoot: ${dir} }
${images}`);
    dirPort = d.tftpPort;
    fatPort = d.tftpPort;
  });

  after(async () => {
    for (const fn of cleanups.reverse()) await fn();
    rmSync(work, { recursive: true, force: true });
  });

  test('atftp: blksize 8/512/1024/1468/8192/65464 with tsize and timeout, exact multiples and empty', async (t) => {
    if (!haveTools(t, 'atftp')) return;
    for (const bs of [8, 512, 1024, 1468, 8192, 65464]) {
      const exact = bs === 8 ? 'x8.bin' : `x${bs}.bin`;
      same(await fetch('atftp', dirPort, exact, { blksize: bs, tsize: true, timeout: 2 }), exact, `atftp blksize ${bs} ${exact}`);
      const other = bs === 8 ? 'small.bin' : 'r1m.bin';
      same(await fetch('atftp', dirPort, other, { blksize: bs }), other, `atftp blksize ${bs} ${other}`);
      same(await fetch('atftp', dirPort, 'empty', { blksize: bs, tsize: true }), 'empty', `atftp blksize ${bs} empty`);
    }
  });

  test('atftp: windowsize 1/4/16/64', async (t) => {
    if (!haveTools(t, 'atftp')) return;
    for (const ws of [1, 4, 16, 64]) {
      same(await fetch('atftp', dirPort, 'r1m.bin', { blksize: 1468, windowsize: ws, tsize: true }), 'r1m.bin', `atftp windowsize ${ws}`);
      same(await fetch('atftp', dirPort, 'x1468.bin', { blksize: 1468, windowsize: ws }), 'x1468.bin', `atftp windowsize ${ws} exact`);
      same(await fetch('atftp', dirPort, 'x512.bin', { windowsize: ws }), 'x512.bin', `atftp windowsize ${ws} 512 exact`);
    }
  });

  test('tftp-hpa (no options): empty, exact multiple, 1 MiB', async (t) => {
    if (!haveTools(t, 'tftp')) return;
    for (const f of ['empty', 'x512.bin', 'r1m.bin']) same(await fetch('tftp', dirPort, f), f, `tftp-hpa ${f}`);
  });

  test('curl --tftp-blksize: 512/1468/8192/65464', async (t) => {
    if (!haveTools(t, 'curl')) return;
    // curl always asks for tsize and rejects "tsize 0" in an OACK as invalid (lib/tftp.c), against any
    // server (tftpd-hpa and atftpd too): an empty file is fetched without options.
    same(await fetch('curl', dirPort, 'empty', { noOptions: true }), 'empty', 'curl empty');
    for (const bs of [512, 1468, 8192, 65464]) {
      same(await fetch('curl', dirPort, `x${bs}.bin`, { blksize: bs }), `x${bs}.bin`, `curl blksize ${bs} exact`);
      same(await fetch('curl', dirPort, 'r1m.bin', { blksize: bs }), 'r1m.bin', `curl blksize ${bs}`);
    }
  });

  test('busybox tftp -b: 512/1468/8192/65464', async (t) => {
    if (!haveTools(t, 'busybox')) return;
    same(await fetch('busybox', dirPort, 'empty'), 'empty', 'busybox empty');
    for (const bs of [512, 1468, 8192, 65464]) {
      same(await fetch('busybox', dirPort, `x${bs}.bin`, { blksize: bs }), `x${bs}.bin`, `busybox blksize ${bs} exact`);
      same(await fetch('busybox', dirPort, 'r1m.bin', { blksize: bs }), 'r1m.bin', `busybox blksize ${bs}`);
    }
  });

  test('rollover: a file of 65538 blocks at blksize 512 with every client', async (t) => {
    if (!haveTools(t, 'atftp', 'tftp', 'curl', 'busybox')) return;
    same(await fetch('atftp', dirPort, 'big.bin', { blksize: 512, tsize: true }), 'big.bin', 'atftp big');
    same(await fetch('tftp', dirPort, 'big.bin'), 'big.bin', 'tftp-hpa big');
    same(await fetch('curl', dirPort, 'big.bin'), 'big.bin', 'curl big');
    same(await fetch('busybox', dirPort, 'big.bin', { blksize: 512 }), 'big.bin', 'busybox big');
  });

  test('from a FAT32 partition in an MBR image (serial/path, case-insensitive serial)', async (t) => {
    if (!haveTools(t, 'atftp', 'tftp', 'curl', 'busybox', 'sfdisk', 'mkfs.vfat', 'mcopy')) return;
    const p = (f: string): string => `${SERIAL}/${f}`;
    for (const bs of [8, 512, 1468, 8192, 65464]) {
      const f = bs === 8 ? 'x8.bin' : `x${bs}.bin`;
      same(await fetch('atftp', fatPort, p(f), { blksize: bs, tsize: true }), f, `fat atftp ${bs}`);
    }
    same(await fetch('atftp', fatPort, p('r1m.bin'), { blksize: 1468, windowsize: 16, tsize: true }), 'r1m.bin', 'fat atftp windowsize 16');
    same(await fetch('atftp', fatPort, p('empty'), { tsize: true }), 'empty', 'fat atftp empty');
    same(await fetch('atftp', fatPort, `/${SERIAL.toUpperCase()}//big.bin`, { blksize: 512 }), 'big.bin', 'fat atftp big (rollover)');
    same(await fetch('tftp', fatPort, p('x512.bin')), 'x512.bin', 'fat tftp-hpa');
    same(await fetch('curl', fatPort, p('r1m.bin'), { blksize: 1468 }), 'r1m.bin', 'fat curl');
    same(await fetch('busybox', fatPort, p('x8192.bin'), { blksize: 8192 }), 'x8192.bin', 'fat busybox');
    // Unknown serial and missing file: not found, and the client says so.
    const r = await run('atftp', ['-g', '-r', 'deadbeef/x512.bin', '-l', join(work, 'nf'), '127.0.0.1', String(fatPort)], { allowFail: true });
    assert.notEqual(r.code, 0);
    const r2 = await run('atftp', ['-g', '-r', p('nope'), '-l', join(work, 'nf'), '127.0.0.1', String(fatPort)], { allowFail: true });
    assert.notEqual(r2.code, 0);
  });
});
