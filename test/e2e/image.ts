/**
 * Reading what a booted client wrote, without mounting anything: partition table by `sfdisk --json`,
 * ext4 files by `debugfs` on the partition's bytes (copied out with dd), FAT files by mtools (`@@offset`).
 * A copy-on-write client's view is assembled with netbootd's own CowBlockDevice over the base image.
 */
import { closeSync, openSync, readdirSync, readSync, writeSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { run } from '../helpers/tools.js';
import { FileBlockDevice, readAt } from '../../src/disk/blockdev.js';
import { CowBlockDevice } from '../../src/disk/cow.js';

const MTOOLS_ENV = { ...process.env, MTOOLS_SKIP_CHECK: '1', LC_ALL: 'C.UTF-8', TZ: 'UTC' };

export interface Part {
  number: number;
  /** Byte offset and size. */
  start: number;
  size: number;
  type: string;
}

/** The MBR/GPT partitions of an image file, as sfdisk reads them. */
export async function partitionsOf(image: string): Promise<Part[]> {
  const r = await run('sfdisk', ['--json', image]);
  const j = JSON.parse(r.stdout.toString()) as {
    partitiontable: { sectorsize?: number; partitions: { node: string; start: number; size: number; type: string }[] };
  };
  const ss = j.partitiontable.sectorsize ?? 512;
  return j.partitiontable.partitions.map((p) => ({
    number: Number(/(\d+)$/.exec(p.node)?.[1] ?? 0),
    start: p.start * ss,
    size: p.size * ss,
    type: p.type,
  }));
}

async function partition(image: string, n: number): Promise<Part> {
  const p = (await partitionsOf(image)).find((x) => x.number === n);
  if (!p) throw new Error(`${image}: no partition ${n}`);
  return p;
}

/** Copies partition `n` of `image` into the file `to` (dd, sparse). */
export async function extractPartition(image: string, n: number, to: string): Promise<Part> {
  const p = await partition(image, n);
  await run('dd', [`if=${image}`, `of=${to}`, 'bs=64K', `skip=${p.start}`, `count=${p.size}`, 'iflag=skip_bytes,count_bytes', 'conv=sparse', 'status=none']);
  return p;
}

/** `debugfs -R "cat PATH"` on an ext4 file system image; null when the file does not exist. */
export async function debugfsCat(fsImage: string, path: string): Promise<string | null> {
  const r = await run('debugfs', ['-R', `cat ${path}`, fsImage], { allowFail: true });
  if (/File not found|not found by ext2_lookup/i.test(r.stderr)) return null;
  if (r.code !== 0) throw new Error(`debugfs cat ${path} on ${fsImage}: ${r.stderr}`);
  return r.stdout.toString();
}

/** A file of the ext4 partition `n` of a disk image (null when absent). `scratch`: a temp folder. */
export async function readExt4File(image: string, n: number, path: string, scratch: string): Promise<string | null> {
  const fsImage = join(scratch, `p${n}-${process.pid}-${Date.now()}.ext4`);
  await extractPartition(image, n, fsImage);
  try {
    return await debugfsCat(fsImage, path);
  } finally {
    await run('rm', ['-f', fsImage]);
  }
}

/** A file of the FAT partition `n` of a disk image (mtools at the partition's offset); null when absent. */
export async function readFatFile(image: string, n: number, path: string): Promise<Buffer | null> {
  const p = await partition(image, n);
  const r = await run('mtype', ['-i', `${image}@@${p.start}`, `::${path}`], { env: MTOOLS_ENV, allowFail: true });
  if (r.code !== 0) return null;
  return r.stdout;
}

/** Copies every file of FAT partition `n` into `dir` (the reference stack's TFTP root). */
export async function extractFat(image: string, n: number, dir: string): Promise<void> {
  const p = await partition(image, n);
  await run('mcopy', ['-s', '-n', '-m', '-i', `${image}@@${p.start}`, '::*', `${dir}/`], { env: MTOOLS_ENV });
}

/** Every file of a FAT partition as path → bytes (paths as mtools lists them, '/'-separated, no leading /). */
export async function fatFiles(image: string, n: number): Promise<Map<string, Buffer>> {
  const p = await partition(image, n);
  const r = await run('mdir', ['-/', '-b', '-i', `${image}@@${p.start}`, '::'], { env: MTOOLS_ENV });
  const out = new Map<string, Buffer>();
  for (const line of r.stdout.toString().split('\n')) {
    const name = line.trim().replace(/^::\/?/, '');
    if (!name || name.endsWith('/')) continue;
    const data = await readFatFile(image, n, name);
    if (data) out.set(name, data);
  }
  return out;
}

export interface ParsedResult {
  cmdline: string;
  address: string;
  mac: string;
  marker: string;
  date: string;
  raw: string;
}

/** Parses the /boot-result file written by the initramfs (`key: value` lines). */
export function parseBootResult(text: string): ParsedResult {
  const get = (k: string): string => new RegExp(`^${k}: (.*)$`, 'm').exec(text)?.[1]?.trim() ?? '';
  return { cmdline: get('cmdline'), address: get('address'), mac: get('mac'), marker: get('marker'), date: get('date'), raw: text };
}

/**
 * The root-partition files of every copy-on-write client of `exportName` in `stateDir`, read through
 * netbootd's CowBlockDevice (base + that client's overlay), keyed by the client identity in the file name.
 */
export async function readCowClients(
  baseImage: string, stateDir: string, exportName: string, partNo: number, path: string, scratch: string,
): Promise<Map<string, string | null>> {
  const out = new Map<string, string | null>();
  const dir = join(stateDir, exportName);
  if (!existsSync(dir)) return out;
  const part = await partition(baseImage, partNo);
  const base = await FileBlockDevice.open(baseImage, { readOnly: true });
  try {
    for (const f of readdirSync(dir).filter((x) => x.endsWith('.map')).sort()) {
      const client = decodeURIComponent(f.slice(0, -4).replace(/%(?![0-9a-f]{2})/gi, '%25'));
      const cow = await CowBlockDevice.open(base, stateDir, exportName, client);
      const fsImage = join(scratch, `cow-${out.size}.ext4`);
      const fd = openSync(fsImage, 'w');
      try {
        const chunk = 1 << 20;
        for (let off = 0; off < part.size; off += chunk) {
          const len = Math.min(chunk, part.size - off);
          const buf = await readAt(cow, part.start + off, len);
          writeSync(fd, buf, 0, len, off);
        }
      } finally {
        closeSync(fd);
        await cow.close();
      }
      out.set(client, await debugfsCat(fsImage, path));
      await run('rm', ['-f', fsImage]);
    }
  } finally {
    await base.close();
  }
  return out;
}

/** The checks every e2e boot's /boot-result passes: this VM wrote it, this boot, from its NBD root. */
export function checkBootResult<R extends ParsedResult>(r: R | null, want: { mac: string; marker: string; started: number }, label: string): R {
  assert.ok(r, `${label}: /boot-result missing from the root partition`);
  assert.equal(r.mac, want.mac, `${label}: written by another client`);
  assert.equal(r.marker, want.marker, `${label}: marker`);
  assert.match(r.cmdline, /nbdroot=198\.18\.0\.2\/e2e\b/, `${label}: kernel command line`);
  assert.match(r.address, /^198\.18\.0\.1\d\d\/24$/, `${label}: address must come from the router's range`);
  const when = Date.parse(r.date);
  assert.ok(Number.isFinite(when) && Math.abs(when - want.started) < 30 * 60_000, `${label}: date ${r.date} is not this boot's`);
  return r;
}

/** `len` bytes of a file at `pos`. */
export function readRange(file: string, pos: number, len: number): Buffer {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(len);
    readSync(fd, b, 0, len, pos);
    return b;
  } finally {
    closeSync(fd);
  }
}
