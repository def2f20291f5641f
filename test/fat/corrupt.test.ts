/**
 * Corrupted images end in typed errors, never in a crash or a hang: chain loops, links to free or
 * out-of-range clusters, chains shorter than the size, truncated images, bogus BPBs, looping directory
 * chains and directory cycles. Images are built by mkfs.vfat + mcopy, then damaged in memory.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryBlockDevice } from '../../src/testing/memory-device.js';
import { parseBootSector, type Bpb } from '../../src/fat/bpb.js';
import { FatVolume, MAX_PATH_DEPTH } from '../../src/fat/volume.js';
import { NetbootError } from '../../src/util/errors.js';
import { haveTools, which } from '../helpers/tools.js';
import { FAT_TOOLS, mcopyIn, mkfsVfat, mmd, prng, randomBytes } from '../helpers/fatimg.js';
import { readAll } from './read.js';

const images: Record<string, Buffer> = {};
let work = '';
const BIG = 10 * 512 + 100; // 11 clusters of 512 bytes

before(async () => {
  if (FAT_TOOLS.some((t) => which(t) === null)) return;
  work = mkdtempSync(join(tmpdir(), 'netbootd-fatcorrupt-'));
  const rand = prng(99);
  const src = join(work, 'src');
  mkdirSync(join(src, 'sub', 'inner'), { recursive: true });
  writeFileSync(join(src, 'big.bin'), randomBytes(rand, BIG));
  writeFileSync(join(src, 'sub', 'inner', 'leaf.txt'), 'leaf\n');
  for (const [name, fat, kib] of [['fat16', 16, 8192], ['fat32', 32, 40000], ['fat12', 12, 1024]] as const) {
    const img = join(work, `${name}.img`);
    await mkfsVfat(img, { fat, sectorSize: 512, clusterSectors: 1, sizeKiB: kib, label: 'DAMAGED' });
    await mcopyIn(img, [join(src, 'big.bin'), join(src, 'sub')], '::/', { recursive: true });
    await mmd(img, ['/empty.dir']);
    images[name] = readFileSync(img);
  }
});
after(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

function bpbOf(img: Buffer): Bpb {
  const r = parseBootSector(img.subarray(0, 512));
  assert.ok(r.ok);
  return r.value;
}

/** Writes a FAT entry into every FAT copy. */
function setEntry(img: Buffer, cluster: number, value: number): void {
  const b = bpbOf(img);
  for (let f = 0; f < b.numFats; f++) {
    const base = b.reservedSectors * b.bytesPerSector + f * b.fatBytes;
    if (b.type === 'FAT16') img.writeUInt16LE(value, base + cluster * 2);
    else if (b.type === 'FAT32') img.writeUInt32LE(value, base + cluster * 4);
    else {
      const off = base + cluster + (cluster >>> 1);
      const v = img.readUInt16LE(off);
      img.writeUInt16LE(cluster & 1 ? (v & 0x000f) | (value << 4) : (v & 0xf000) | value, off);
    }
  }
}

/** Byte offset of the 8.3 entry named `name11` (11 bytes, space padded) anywhere in the image. */
function findEntry(img: Buffer, name11: string): number {
  const at = img.indexOf(Buffer.from(name11, 'latin1'));
  assert.ok(at >= 0 && at % 32 === 0, `entry ${name11}`);
  return at;
}

function firstCluster(img: Buffer, entry: number): number {
  return img.readUInt16LE(entry + 20) * 0x10000 + img.readUInt16LE(entry + 26);
}

async function volOf(img: Buffer): Promise<FatVolume> {
  return FatVolume.open(new MemoryBlockDevice(img, true, 'damaged.img'));
}

function usable(t: { skip(msg?: string): void }, name: string): Buffer | undefined {
  if (!haveTools(t as never, ...FAT_TOOLS)) return undefined;
  const img = images[name];
  if (!img) t.skip('image not built');
  return img ? Buffer.from(img) : undefined;
}

for (const name of ['fat12', 'fat16', 'fat32']) {
  describe(`damaged ${name} image`, () => {
    it('the undamaged image reads fine (control)', async (t) => {
      const img = usable(t, name);
      if (!img) return;
      const vol = await volOf(img);
      assert.equal(vol.label, 'DAMAGED');
      assert.equal((await readAll(await vol.open('/big.bin'), 4096)).length, BIG);
      assert.deepEqual((await vol.readdir('/sub/inner')).map((e) => e.name), ['leaf.txt']);
      const ext = await vol.extents('/big.bin');
      assert.deepEqual(ext.length, 1, 'big.bin is contiguous in a fresh image');
    });

    it('a loop in a file chain → CorruptError ELOOP', async (t) => {
      const img = usable(t, name);
      if (!img) return;
      const c0 = firstCluster(img, findEntry(img, 'BIG     BIN'));
      setEntry(img, c0 + 4, c0 + 1);
      const vol = await volOf(img);
      await assert.rejects(vol.open('/big.bin'), { name: 'CorruptError', code: 'ELOOP' });
    });

    it('a self-loop at the end of the chain → ELOOP', async (t) => {
      const img = usable(t, name);
      if (!img) return;
      const c0 = firstCluster(img, findEntry(img, 'BIG     BIN'));
      setEntry(img, c0 + 10, c0 + 10);
      // The file needs 11 clusters: the 12th link is past the size and ignored, so this reads fine...
      const vol = await volOf(img);
      assert.equal((await readAll(await vol.open('/big.bin'), 512)).length, BIG);
      // ...but a loop inside the needed part is caught.
      const img2 = usable(t, name)!;
      setEntry(img2, c0 + 9, c0 + 9);
      await assert.rejects((await volOf(img2)).open('/big.bin'), { name: 'CorruptError', code: 'ELOOP' });
    });

    it('a link to an out-of-range cluster → CorruptError EBADCHAIN', async (t) => {
      const img = usable(t, name);
      if (!img) return;
      const b = bpbOf(img);
      const c0 = firstCluster(img, findEntry(img, 'BIG     BIN'));
      setEntry(img, c0 + 2, b.maxCluster + 1);
      await assert.rejects((await volOf(img)).open('/big.bin'), { name: 'CorruptError', code: 'EBADCHAIN' });
    });

    it('a link to a free cluster or cluster 1 → EBADCHAIN', async (t) => {
      for (const v of [0, 1]) {
        const img = usable(t, name);
        if (!img) return;
        const c0 = firstCluster(img, findEntry(img, 'BIG     BIN'));
        setEntry(img, c0 + 3, v);
        await assert.rejects((await volOf(img)).open('/big.bin'), { name: 'CorruptError', code: 'EBADCHAIN' });
      }
    });

    it('a chain shorter than the file size → CorruptError ESHORT', async (t) => {
      const img = usable(t, name);
      if (!img) return;
      const c0 = firstCluster(img, findEntry(img, 'BIG     BIN'));
      setEntry(img, c0 + 5, 0x0ffffff8 & (name === 'fat12' ? 0xfff : name === 'fat16' ? 0xffff : 0x0fffffff));
      await assert.rejects((await volOf(img)).open('/big.bin'), { name: 'CorruptError', code: 'ESHORT' });
    });

    it('a chain longer than the size is cut at the size', async (t) => {
      const img = usable(t, name);
      if (!img) return;
      const e = findEntry(img, 'BIG     BIN');
      img.writeUInt32LE(600, e + 28);
      const src = await (await volOf(img)).open('/big.bin');
      assert.equal(src.size, 600);
      const whole = await readAll(await (await volOf(Buffer.from(images[name]!))).open('/big.bin'), 4096);
      assert.ok((await readAll(src, 4096)).equals(whole.subarray(0, 600)));
    });

    it('a first cluster out of range, or a size larger than the volume → CorruptError', async (t) => {
      const img = usable(t, name);
      if (!img) return;
      const e = findEntry(img, 'BIG     BIN');
      img.writeUInt16LE(1, e + 26);
      img.writeUInt16LE(0, e + 20);
      await assert.rejects((await volOf(img)).open('/big.bin'), { name: 'CorruptError', code: 'EBADCLUSTER' });
      const img2 = usable(t, name)!;
      img2.writeUInt32LE(0xfffffff0, findEntry(img2, 'BIG     BIN') + 28);
      await assert.rejects((await volOf(img2)).open('/big.bin'), { name: 'CorruptError', code: 'ESIZE' });
    });

    it('a directory chain that loops → CorruptError ELOOP, the rest of the volume still reads', async (t) => {
      const img = usable(t, name);
      if (!img) return;
      const sub = firstCluster(img, findEntry(img, 'SUB        '));
      setEntry(img, sub, sub);
      const vol = await volOf(img);
      await assert.rejects(vol.readdir('/sub'), { name: 'CorruptError', code: 'ELOOP' });
      await assert.rejects(vol.stat('/sub/inner/leaf.txt'), { name: 'CorruptError', code: 'ELOOP' });
      assert.equal((await vol.stat('/big.bin')).size, BIG);
    });

    it('a directory that contains its own ancestor: lookups stay bounded', async (t) => {
      const img = usable(t, name);
      if (!img) return;
      const sub = firstCluster(img, findEntry(img, 'SUB        '));
      const inner = findEntry(img, 'INNER      ');
      img.writeUInt16LE(sub & 0xffff, inner + 26);
      img.writeUInt16LE(sub >>> 16, inner + 20);
      const vol = await volOf(img);
      const deep = '/sub' + '/inner'.repeat(MAX_PATH_DEPTH - 2);
      assert.ok((await vol.stat(deep)).isDirectory);
      await assert.rejects(vol.stat('/sub' + '/inner'.repeat(MAX_PATH_DEPTH + 5)), { name: 'NotFoundError', code: 'ENAMETOOLONG' });
    });

    it('a truncated image → ParseError ETRUNC', async (t) => {
      const img = usable(t, name);
      if (!img) return;
      await assert.rejects(volOf(img.subarray(0, Math.floor(img.length / 2))), { name: 'ParseError', code: 'ETRUNC' });
      await assert.rejects(volOf(img.subarray(0, 100)), { name: 'CorruptError', code: 'ETRUNC' });
    });
  });
}

describe('bogus boot sectors', () => {
  const mutations: [string, (b: Buffer) => void][] = [
    ['no 55 AA signature', (b) => b.writeUInt16LE(0, 510)],
    ['bytes per sector 1000', (b) => b.writeUInt16LE(1000, 11)],
    ['bytes per sector 256', (b) => b.writeUInt16LE(256, 11)],
    ['bytes per sector 8192', (b) => b.writeUInt16LE(8192, 11)],
    ['sectors per cluster 3', (b) => (b[13] = 3)],
    ['sectors per cluster 0', (b) => (b[13] = 0)],
    ['reserved sectors 0', (b) => b.writeUInt16LE(0, 14)],
    ['no FATs', (b) => (b[16] = 0)],
    ['media byte 0x12', (b) => (b[21] = 0x12)],
    ['total sectors 0', (b) => {
      b.writeUInt16LE(0, 19);
      b.writeUInt32LE(0, 32);
    }],
    ['FAT size 0', (b) => {
      b.writeUInt16LE(0, 22);
      b.writeUInt32LE(0, 36);
    }],
    ['a FAT too small for the clusters', (b) => {
      if (b.readUInt16LE(22)) b.writeUInt16LE(1, 22);
      else b.writeUInt32LE(1, 36);
    }],
    ['metadata larger than the volume', (b) => b.writeUInt16LE(0xffff, 14)],
    ['a bad jump instruction', (b) => (b[0] = 0)],
  ];
  for (const name of ['fat16', 'fat32']) {
    for (const [what, mutate] of mutations) {
      it(`${name}: ${what} → ParseError`, async (t) => {
        const img = usable(t, name);
        if (!img) return;
        mutate(img);
        const r = parseBootSector(img.subarray(0, 512), img.length);
        assert.equal(r.ok, false);
        await assert.rejects(volOf(img), (e: unknown) => e instanceof NetbootError && e.name === 'ParseError');
      });
    }
  }
  it('fat32: root cluster out of range, root entries set, FAT32 version ≠ 0 → ParseError', async (t) => {
    for (const mutate of [(b: Buffer) => b.writeUInt32LE(1, 44), (b: Buffer) => b.writeUInt32LE(0x0fffffff, 44), (b: Buffer) => b.writeUInt16LE(512, 17), (b: Buffer) => b.writeUInt16LE(1, 42)]) {
      const img = usable(t, 'fat32');
      if (!img) return;
      mutate(img);
      await assert.rejects(volOf(img), { name: 'ParseError', code: 'EBADBPB' });
    }
  });
  it('fat32: a root directory chain that loops → CorruptError at open', async (t) => {
    const img = usable(t, 'fat32');
    if (!img) return;
    const b = bpbOf(img);
    setEntry(img, b.rootCluster, b.rootCluster);
    await assert.rejects(volOf(img), { name: 'CorruptError', code: 'ELOOP' });
  });
  it('an all-zero or random device is not FAT', async () => {
    await assert.rejects(volOf(Buffer.alloc(1 << 20)), { name: 'ParseError' });
    await assert.rejects(volOf(randomBytes(prng(5), 1 << 16)), { name: 'ParseError' });
  });
});
