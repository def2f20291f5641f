/**
 * The directory-entry codec (src/fat/dir.ts) round trip: on every 32-byte slot of every directory of images
 * built by mkfs.vfat + mtools (FAT12/16/32, 512- and 4096-byte sectors, long and non-ASCII names, NT
 * lowercase bits, deleted entries, labels, '.'/'..') and of an image our writer filled, decoding then
 * encoding gives back the slot's bytes, and encoding a decoded slot then decoding it gives the same
 * fields. The writer's long-name encoder reproduces the long-name slots mtools wrote. Random slots round
 * trip too (the codec is lossless for any bytes).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type BlockDevice } from '../../src/disk/blockdev.js';
import { MemoryBlockDevice } from '../../src/testing/memory-device.js';
import { readBootSector, type Bpb } from '../../src/fat/bpb.js';
import {
  DIR_ENTRY_SIZE, decodeSlot, encodeSlot, isLongSlot, longNameEntries, parseDirectory, type ShortSlot,
} from '../../src/fat/dir.js';
import { FatTable } from '../../src/fat/table.js';
import { ROOT, loadDirectory, type LoadedDirectory } from '../../src/fat/tree.js';
import { FatWriter } from '../../src/fat/writer.js';
import { FAT_TOOLS, mkfsVfat, populate, type MkfsOptions } from '../helpers/fatimg.js';
import { haveTools, tempDir } from '../helpers/tools.js';

interface Seen {
  slots: number;
  long: number;
  deleted: number;
  ntLower: number;
  labels: number;
  dots: number;
  highCluster: number;
  longNamesRebuilt: number;
}

/** Every directory of the volume on `dev`, loaded through the reader's own tree and chain walker. */
async function directories(dev: BlockDevice): Promise<{ bpb: Bpb; dirs: Array<{ path: string; dir: LoadedDirectory }> }> {
  const { bpb } = await readBootSector(dev, 'img');
  const table = new FatTable(dev, bpb);
  const out: Array<{ path: string; dir: LoadedDirectory }> = [];
  const visit = async (first: number, path: string, depth: number): Promise<void> => {
    assert.ok(depth < 16, 'tree too deep');
    const dir = await loadDirectory(dev, bpb, table, first, 'img', path);
    out.push({ path, dir });
    for (const e of dir.entries) {
      if (e.kind === 'directory') await visit(e.firstCluster, `${path === '/' ? '' : path}/${e.name}`, depth + 1);
    }
  };
  await visit(ROOT, '/', 0);
  return { bpb, dirs: out };
}

/** Checks the round trip on every slot of every directory; returns what the images held. */
async function roundTrip(image: Buffer): Promise<Seen> {
  const seen: Seen = { slots: 0, long: 0, deleted: 0, ntLower: 0, labels: 0, dots: 0, highCluster: 0, longNamesRebuilt: 0 };
  const { bpb, dirs } = await directories(new MemoryBlockDevice(image, true));
  const fat32 = bpb.type === 'FAT32';
  for (const { path, dir } of dirs) {
    const buf = dir.buf;
    const again = Buffer.alloc(buf.length);
    for (let off = 0; off < buf.length; off += DIR_ENTRY_SIZE) {
      const slot = decodeSlot(buf, off);
      encodeSlot(slot, again, off);
      const where = `${path} slot ${off / DIR_ENTRY_SIZE}`;
      assert.ok(again.subarray(off, off + DIR_ENTRY_SIZE).equals(buf.subarray(off, off + DIR_ENTRY_SIZE)), `encode(decode(bytes)) differs at ${where}`);
      assert.deepEqual(decodeSlot(again, off), slot, `decode(encode(slot)) differs at ${where}`);
      seen.slots++;
      if (buf[off] === 0xe5) seen.deleted++;
      if (slot.kind === 'long') {
        seen.long++;
        continue;
      }
      const s: ShortSlot = slot;
      if (s.ntCase & 0x18) seen.ntLower++;
      if (s.clusterHigh !== 0) seen.highCluster++;
    }
    assert.ok(again.equals(buf), `${path}: the re-encoded directory differs`);
    // The whole directory decodes the same from the re-encoded bytes.
    const a = parseDirectory(buf, { fat32 });
    const b = parseDirectory(again, { fat32 });
    assert.ok(a.ok && b.ok);
    assert.deepEqual(b.value, a.value);
    for (const e of a.value) {
      if (e.kind === 'label') seen.labels++;
      if (e.kind === 'dot') seen.dots++;
      if (!e.hasLongName) continue;
      // The writer's encoder gives the long-name slots that stand before the 8.3 entry.
      const off = e.index * DIR_ENTRY_SIZE;
      const lfn = longNameEntries(e.name, buf.subarray(off, off + 11));
      assert.ok(isLongSlot(buf, off - DIR_ENTRY_SIZE));
      assert.ok(buf.subarray(off - lfn.length, off).equals(lfn), `${path}: long-name slots of ${e.name}`);
      seen.longNamesRebuilt++;
    }
  }
  return seen;
}

const CASES: MkfsOptions[] = [
  { fat: 12, sectorSize: 512, clusterSectors: 1, sizeKiB: 1440, label: 'FLOPPY' },
  { fat: 12, sectorSize: 4096, clusterSectors: 1, sizeKiB: 8192 },
  { fat: 16, sectorSize: 512, clusterSectors: 4, sizeKiB: 32768, label: 'BOOT' },
  { fat: 16, sectorSize: 4096, clusterSectors: 2, sizeKiB: 65536, label: 'SIXTEEN4K' },
  { fat: 32, sectorSize: 512, clusterSectors: 1, sizeKiB: 40000, label: 'bootfs' },
  { fat: 32, sectorSize: 4096, clusterSectors: 1, sizeKiB: 300000 },
];

describe('directory-entry codec: decode ∘ encode = identity', () => {
  for (const c of CASES) {
    it(`every slot of a FAT${c.fat} -S ${c.sectorSize} image written by mkfs.vfat and mtools`, async (t) => {
      if (!haveTools(t, ...FAT_TOOLS)) return;
      const dir = tempDir(t);
      const img = join(dir, 'fat.img');
      await mkfsVfat(img, c);
      await populate(img, join(dir, 'work'), { clusterSize: (c.sectorSize ?? 512) * (c.clusterSectors ?? 1), manyFiles: 40 });
      const seen = await roundTrip(readFileSync(img));
      // The images hold what the codec must carry: long names, deleted slots, NT lowercase bits, dots.
      assert.ok(seen.long > 10, `long-name slots: ${seen.long}`);
      assert.ok(seen.longNamesRebuilt > 5, `long names rebuilt: ${seen.longNamesRebuilt}`);
      assert.ok(seen.deleted >= 12, `deleted slots: ${seen.deleted}`);
      assert.ok(seen.ntLower > 0, `NT lowercase entries: ${seen.ntLower}`);
      assert.ok(seen.dots >= 8, `dot entries: ${seen.dots}`);
      if (c.label) assert.ok(seen.labels === 1, `labels: ${seen.labels}`);
    });
  }

  it('every slot of an image filled by the writer (new, renamed, shrunk, deleted, nested entries)', async (t) => {
    if (!haveTools(t, 'mkfs.vfat')) return;
    const dir = tempDir(t);
    const img = join(dir, 'fat.img');
    await mkfsVfat(img, { fat: 32, sizeKiB: 34000, clusterSectors: 1 });
    const dev = new MemoryBlockDevice(readFileSync(img));
    const w = await FatWriter.open(dev);
    const when = new Date(Date.UTC(2024, 1, 29, 13, 37, 59, 120));
    await w.mkdir('/boot/overlays', { parents: true, mtime: when });
    await w.writeFile('/boot/config.txt', Buffer.from('arm_64bit=1\n'), { mtime: when });
    await w.writeFile('/boot/README', Buffer.alloc(3000, 1), { mtime: when });
    await w.writeFile('/boot/A rather long name.txt', Buffer.alloc(5000, 2), { mtime: when });
    await w.writeFile('/boot/overlays/Ünïcødé ファイル.dtbo', Buffer.alloc(10, 3), { mtime: when });
    for (let i = 0; i < 40; i++) await w.writeFile(`/boot/overlays/file number ${i}.bin`, Buffer.alloc(i * 100, i), { mtime: when });
    for (let i = 0; i < 40; i += 3) await w.remove(`/boot/overlays/file number ${i}.bin`);
    await w.rename('/boot/README', '/boot/overlays/readme');
    await w.truncate('/boot/A rather long name.txt', 10, { mtime: when });
    await w.rename('/boot/overlays', '/moved overlays');
    await w.flush();
    w.close();
    const seen = await roundTrip(dev.data);
    assert.ok(seen.long > 40 && seen.deleted > 10 && seen.ntLower > 0 && seen.dots === 4, JSON.stringify(seen));
  });

  it('any 32 bytes round trip (the codec is lossless)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.boolean(), (bytes, lfn) => {
        const buf = Buffer.from(bytes);
        if (lfn) buf[11] = (buf[11]! & 0xc0) | 0x0f;
        const slot = decodeSlot(buf, 0);
        assert.equal(slot.kind, lfn ? 'long' : (buf[11]! & 0x3f) === 0x0f ? 'long' : 'short');
        const again = Buffer.alloc(32);
        encodeSlot(slot, again, 0);
        assert.ok(again.equals(buf));
        assert.deepEqual(decodeSlot(again, 0), slot);
      }),
      { numRuns: 2000 },
    );
  });
});
