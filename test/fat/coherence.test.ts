/**
 * Cache coherence: a FatVolume drops its caches when bytes are written through the BlockDevice it reads
 * (directly, or through the parent of its partition window). Image B is image A after an mtools update
 * (a replaced config.txt, a new file, a new directory); writing B's bytes over A through the device
 * must make the volume answer like B, as mtools reads B.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileBlockDevice, SliceBlockDevice, writeAt, type BlockDevice } from '../../src/disk/blockdev.js';
import { MemoryBlockDevice } from '../../src/testing/memory-device.js';
import { FatVolume } from '../../src/fat/volume.js';
import { haveTools, tempDir } from '../helpers/tools.js';
import { FAT_TOOLS, mcopyIn, mcopyOut, mkfsVfat, mmd, prng, randomBytes } from '../helpers/fatimg.js';
import { readAll } from './read.js';

interface Pair {
  a: string;
  b: string;
  dir: string;
}

async function buildPair(t: { after(fn: () => void): void }, fat: 16 | 32): Promise<Pair> {
  const dir = tempDir(t);
  const a = join(dir, 'a.img');
  const b = join(dir, 'b.img');
  await mkfsVfat(a, { fat, sectorSize: 512, clusterSectors: 1, sizeKiB: fat === 32 ? 40000 : 8192 });
  writeFileSync(join(dir, 'config.txt'), 'kernel=old.img\n');
  writeFileSync(join(dir, 'kernel8.img'), randomBytes(prng(1), 5000));
  await mcopyIn(a, [join(dir, 'config.txt'), join(dir, 'kernel8.img')], '::/');
  copyFileSync(a, b);
  // B: config.txt replaced by a bigger one (new clusters), a new file, a new directory.
  writeFileSync(join(dir, 'config.txt'), 'kernel=new.img\n'.repeat(100));
  writeFileSync(join(dir, 'new file.bin'), randomBytes(prng(2), 3000));
  await mcopyIn(b, [join(dir, 'config.txt'), join(dir, 'new file.bin')], '::/', { overwrite: true });
  await mmd(b, ['/newdir']);
  return { a, b, dir };
}

/** Writes every 4 KiB block of `to` that differs from `from` through `write`. */
async function applyDiff(from: Buffer, to: Buffer, write: (off: number, data: Buffer) => Promise<void>): Promise<number> {
  let blocks = 0;
  for (let off = 0; off < to.length; off += 4096) {
    const x = from.subarray(off, off + 4096);
    const y = to.subarray(off, off + 4096);
    if (!x.equals(y)) {
      await write(off, Buffer.from(y));
      blocks++;
    }
  }
  return blocks;
}

async function checkSeesB(vol: FatVolume, p: Pair): Promise<void> {
  const wantConfig = await mcopyOut(p.b, '/config.txt');
  assert.equal((await vol.stat('/config.txt')).size, wantConfig.length);
  assert.ok((await readAll(await vol.open('/CONFIG.TXT'), 512)).equals(wantConfig));
  const names = (await vol.readdir('/')).map((e) => e.name).sort();
  assert.deepEqual(names, ['config.txt', 'kernel8.img', 'new file.bin', 'newdir']);
  assert.ok((await readAll(await vol.open('/new file.bin'), 1000)).equals(await mcopyOut(p.b, '/new file.bin')));
}

describe('FatVolume sees writes made through its device', () => {
  for (const fat of [16, 32] as const) {
    it(`FAT${fat}: FileBlockDevice written in place`, async (t) => {
      if (!haveTools(t, ...FAT_TOOLS)) return;
      const p = await buildPair(t, fat);
      const before = readFileSync(p.a);
      const after = readFileSync(p.b);
      const dev = await FileBlockDevice.open(p.a);
      t.after(() => dev.close());
      const vol = await FatVolume.open(dev);
      t.after(() => vol.close());
      // Warm every cache: root listing, the chain and bytes of config.txt.
      assert.deepEqual((await vol.readdir('/')).map((e) => e.name).sort(), ['config.txt', 'kernel8.img']);
      const old = await vol.open('/config.txt');
      assert.equal((await readAll(old, 512)).toString(), 'kernel=old.img\n');

      const blocks = await applyDiff(before, after, (off, data) => writeAt(dev, off, data));
      assert.ok(blocks > 0);
      await checkSeesB(vol, p);
      // A source opened before the write keeps its extents (and its size).
      assert.equal(old.size, 15);
      assert.equal((await readAll(old, 512)).length, 15);
      // The image on disk is now B, as mtools sees it.
      assert.ok((await mcopyOut(p.a, '/config.txt')).equals(await mcopyOut(p.b, '/config.txt')));
    });
  }

  it('FAT16 inside a partition window: writes through the parent device are seen', async (t) => {
    if (!haveTools(t, ...FAT_TOOLS)) return;
    const p = await buildPair(t, 16);
    const before = readFileSync(p.a);
    const after = readFileSync(p.b);
    const start = 1 << 20;
    const disk = Buffer.alloc(start + before.length + (1 << 20));
    before.copy(disk, start);
    const parent = new MemoryBlockDevice(disk, false, 'disk.img');
    const part: BlockDevice = new SliceBlockDevice(parent, start, before.length, 'disk.img#p1');
    const vol = await FatVolume.open(part, { name: 'disk.img p1' });
    t.after(() => vol.close());
    assert.equal((await vol.readdir('/')).length, 2);
    // Writes outside the window change nothing.
    await writeAt(parent, 0, Buffer.alloc(4096, 0xee));
    assert.equal((await vol.readdir('/')).length, 2);
    await applyDiff(before, after, (off, data) => writeAt(parent, start + off, data));
    await checkSeesB(vol, p);
  });

  it('after close() the volume no longer listens (cached listing stays)', async (t) => {
    if (!haveTools(t, ...FAT_TOOLS)) return;
    const p = await buildPair(t, 16);
    const before = readFileSync(p.a);
    const dev = new MemoryBlockDevice(Buffer.from(before));
    const vol = await FatVolume.open(dev);
    assert.equal((await vol.readdir('/')).length, 2);
    vol.close();
    await applyDiff(before, readFileSync(p.b), (off, data) => writeAt(dev, off, data));
    assert.equal((await vol.readdir('/')).length, 2, 'stale by design once closed');
    const fresh = await FatVolume.open(dev);
    assert.equal((await fresh.readdir('/')).length, 4);
    fresh.close();
  });
});
