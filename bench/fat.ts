/**
 * Benchmark: read a 64 MiB file out of a FAT32 image, netbootd's FatVolume/FileSource against mtools'
 * `mcopy`, side by side in one run. Run with `npm run bench:fat` (builds, then `node dist/bench/fat.js`).
 *
 * netbootd reads the way TFTP and `netbootd cat` do: one FileBlockDevice (opened once, like the daemon),
 * then per iteration FatVolume.open + open(path) (cold FAT/directory caches) and a loop of positional
 * reads into one reused buffer (1 MiB and 64 KiB), bytes discarded. mcopy copies the same file to
 * /dev/null; its time is taken by bash's `time` around the process (fork + exec + copy), so Node's own
 * spawn cost is not charged to it. The OS page cache is warm for both (the image is read once first).
 * Both outputs are checked once against the source file by SHA-256.
 *
 * Options (environment): FAT_BENCH_ITER (default 7), FAT_BENCH_DIR (default /dev/shm if present, else tmp).
 */
import { execFile, spawn } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileBlockDevice } from '../src/disk/blockdev.js';
import { FatVolume } from '../src/fat/volume.js';
import type { FileSource } from '../src/util/source.js';
import { median } from './lib.js';
import { resetNextFreeHint } from '../test/helpers/fatimg.js';

const MiB = 1 << 20;
const FILE_SIZE = 64 * MiB;
const ITER = Number(process.env.FAT_BENCH_ITER ?? 7);
const ENV = { ...process.env, MTOOLS_SKIP_CHECK: '1', LC_ALL: 'C' };

function sh(cmd: string, args: string[]): Promise<{ stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { env: ENV, encoding: 'buffer', maxBuffer: 256 * MiB }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')}: ${err.message} ${stderr.toString()}`));
      else resolve({ stdout, stderr: stderr.toString() });
    });
  });
}

function readChunk(src: FileSource, buf: Buffer, pos: number): Promise<number> {
  return new Promise((resolve, reject) => src.read(buf, 0, buf.length, pos, (e, n) => (e ? reject(e) : resolve(n))));
}

/** One netbootd iteration: open the volume and the file, read it all; returns seconds. */
async function netbootdOnce(dev: FileBlockDevice, bufSize: number, hash?: ReturnType<typeof createHash>): Promise<number> {
  const buf = Buffer.allocUnsafe(bufSize);
  const t0 = process.hrtime.bigint();
  const vol = await FatVolume.open(dev);
  const src = await vol.open('/BIG.BIN');
  let pos = 0;
  while (pos < src.size) {
    const n = await readChunk(src, buf, pos);
    if (n === 0) throw new Error(`short read at ${pos}`);
    if (hash) hash.update(buf.subarray(0, n));
    pos += n;
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  src.close();
  vol.close();
  if (pos !== FILE_SIZE) throw new Error(`read ${pos} bytes, expected ${FILE_SIZE}`);
  return secs;
}

/** `n` timed mcopy runs (bash's `time` per run); returns seconds each. */
async function mcopyTimes(img: string, n: number): Promise<number[]> {
  const script = `TIMEFORMAT=%4R; for i in $(seq ${n}); do time mcopy -n -i "$1" ::/BIG.BIN /dev/null; done`;
  const { stderr } = await sh('bash', ['-c', script, 'bench', img]);
  const times = stderr.split('\n').map((l) => l.trim()).filter((l) => /^\d+(\.\d+)?$/.test(l)).map(Number);
  if (times.length !== n) throw new Error(`mcopy timing: ${stderr}`);
  return times;
}


const mibps = (secs: number): number => FILE_SIZE / MiB / secs;

/** Points FAT32's FSInfo next-free hint at cluster 2, so that mtools fills freed holes first. */

/**
 * Fragments the free space: 2048 files of 32 KiB, every other one deleted, so the first half of the
 * big file lands in 1024 holes of 32 KiB.
 */
async function fragment(dir: string, img: string): Promise<void> {
  const fill = join(dir, 'fill');
  mkdirSync(fill, { recursive: true });
  const names: string[] = [];
  const chunk = Buffer.alloc(32 * 1024, 0x5a);
  for (let i = 0; i < 2048; i++) {
    const p = join(fill, `F${i}.BIN`);
    writeFileSync(p, chunk);
    names.push(p);
  }
  for (let i = 0; i < names.length; i += 512) await sh('mcopy', ['-i', img, ...names.slice(i, i + 512), '::/']);
  const del = names.filter((_, i) => i % 2 === 0).map((p) => `::/${p.slice(fill.length + 1)}`);
  for (let i = 0; i < del.length; i += 512) await sh('mdel', ['-i', img, ...del.slice(i, i + 512)]);
  resetNextFreeHint(img);
  rmSync(fill, { recursive: true, force: true });
}

async function scenario(dir: string, name: string, clusterSectors: number, source: string, sourceHash: string, fragmented = false): Promise<void> {
  const img = join(dir, `${name}.img`);
  rmSync(img, { force: true });
  await sh('mkfs.vfat', ['-C', '-F', '32', '-S', '512', '-s', String(clusterSectors), '-n', 'BENCH', img, String(300 * 1024)]);
  if (fragmented) await fragment(dir, img);
  await sh('mcopy', ['-i', img, source, '::/BIG.BIN']);
  readFileSync(img); // warm the page cache for both readers

  const dev = await FileBlockDevice.open(img, { readOnly: true });
  try {
    // Correctness once: the bytes both readers produce hash to the source.
    const h = createHash('sha256');
    await netbootdOnce(dev, MiB, h);
    const ours = h.digest('hex');
    const theirs = createHash('sha256').update((await sh('mcopy', ['-n', '-i', img, '::/BIG.BIN', '-'])).stdout).digest('hex');
    if (ours !== sourceHash || theirs !== sourceHash) throw new Error(`hash mismatch: netbootd ${ours} mcopy ${theirs} source ${sourceHash}`);
    const extents = (await (await FatVolume.open(dev)).extents('/BIG.BIN')).length;

    const big: number[] = [];
    const small: number[] = [];
    const mc: number[] = [];
    await netbootdOnce(dev, MiB); // JIT warm-up
    for (let i = 0; i < ITER; i++) {
      // Interleaved so that noise from the shared machine hits all three alike.
      big.push(await netbootdOnce(dev, MiB));
      small.push(await netbootdOnce(dev, 64 * 1024));
      mc.push(...(await mcopyTimes(img, 1)));
    }
    const clusterKiB = (clusterSectors * 512) / 1024;
    console.log(`\nFAT32, ${clusterKiB} KiB clusters, 64 MiB file in ${extents} extent(s); ${ITER} iterations; sha256 ok (${sourceHash.slice(0, 12)}…)`);
    const row = (label: string, xs: number[]): void => {
      console.log(`  ${label.padEnd(34)} median ${mibps(median(xs)).toFixed(0).padStart(6)} MiB/s   best ${mibps(Math.min(...xs)).toFixed(0).padStart(6)} MiB/s   (${(median(xs) * 1000).toFixed(1)} ms)`);
    };
    row('netbootd FileSource, 1 MiB reads', big);
    row('netbootd FileSource, 64 KiB reads', small);
    row('mcopy -n ::/BIG.BIN /dev/null', mc);
    console.log(`  ratio netbootd/mcopy (median): 1 MiB reads ${(median(mc) / median(big)).toFixed(2)}x, 64 KiB reads ${(median(mc) / median(small)).toFixed(2)}x`);
  } finally {
    await dev.close();
  }
}

async function main(): Promise<void> {
  for (const tool of ['mkfs.vfat', 'mcopy', 'bash']) {
    const ok = await new Promise<boolean>((res) => spawn('sh', ['-c', `command -v ${tool}`]).on('exit', (c) => res(c === 0)));
    if (!ok) throw new Error(`${tool} is missing (run scripts/install-test-deps.sh)`);
  }
  const base = process.env.FAT_BENCH_DIR ?? (existsSync('/dev/shm') ? '/dev/shm' : tmpdir());
  const dir = mkdtempSync(join(base, 'netbootd-bench-fat-'));
  try {
    const source = join(dir, 'big.bin');
    const data = Buffer.allocUnsafe(FILE_SIZE);
    randomFillSync(data);
    writeFileSync(source, data);
    const sourceHash = createHash('sha256').update(data).digest('hex');
    console.log(`bench:fat — reading a 64 MiB file from a FAT32 image (${dir}), node ${process.version}`);
    await scenario(dir, 'fat32-4k', 8, source, sourceHash);
    await scenario(dir, 'fat32-512', 1, source, sourceHash);
    await scenario(dir, 'fat32-4k-fragmented', 8, source, sourceHash, true);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
