/**
 * FAT volumes inside partitioned disk images, as netbootd meets them: sfdisk lays out a dos table with a
 * logical partition and a gpt table, mkfs.vfat + mtools build the file systems, and src/disk/partitions
 * finds the windows. Listings and bytes equal mtools reading the same image at the partition's offset
 * (`-i disk.img@@offset`).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, ftruncateSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileBlockDevice } from '../../src/disk/blockdev.js';
import { openPartition, readPartitionTable } from '../../src/disk/partitions.js';
import { FatVolume, isFat, type FatStat } from '../../src/fat/volume.js';
import { haveTools, run, tempDir } from '../helpers/tools.js';
import { FAT_TOOLS, mcopyOut, mdirAll, mkfsVfat, populate } from '../helpers/fatimg.js';
import { readAll } from './read.js';

const MiB = 1 << 20;

/** Copies a file system image into the disk at byte `at` (dd skips zero blocks: sparse stays sparse). */
async function placeFile(disk: string, at: number, src: string): Promise<void> {
  assert.equal(at % MiB, 0);
  await run('dd', [`if=${src}`, `of=${disk}`, 'bs=1M', `seek=${at / MiB}`, 'conv=notrunc,sparse', 'status=none']);
}

async function compare(vol: FatVolume, disk: string, offset: number): Promise<number> {
  const ref = await mdirAll(disk, offset);
  let files = 0;
  for (const [path, list] of ref.dirs) {
    const ours: FatStat[] = await vol.readdir(path);
    assert.deepEqual(
      ours.map((e) => `${e.name}|${e.isDirectory}|${e.size}`).sort(),
      list.map((e) => `${e.name}|${e.isDirectory}|${e.size}`).sort(),
      `listing of ${path}`,
    );
    for (const e of ours) {
      if (e.isDirectory || path === '/many') continue;
      const p = `${path === '/' ? '' : path}/${e.name}`;
      const want = await mcopyOut(disk, p, offset);
      assert.ok((await readAll(await vol.open(p), 65536)).equals(want), `bytes of ${p}`);
      files++;
    }
  }
  assert.equal(vol.label, ref.label);
  return files;
}

describe('FAT inside partitioned images', () => {
  it('dos table: a primary FAT32 and a logical FAT16, a Linux partition that is not FAT', async (t) => {
    if (!haveTools(t, ...FAT_TOOLS, 'sfdisk')) return;
    const dir = tempDir(t);
    const disk = join(dir, 'disk.img');
    const fd = openSync(disk, 'w');
    ftruncateSync(fd, 128 * MiB);
    closeSync(fd);
    await run('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', disk], {
      input: 'label: dos\nstart=2048, size=81920, type=c\nstart=86016, type=5\nstart=88064, size=20480, type=6\nstart=110592, size=8192, type=83\n',
    });
    const p1 = join(dir, 'p1.img');
    await mkfsVfat(p1, { fat: 32, sectorSize: 512, clusterSectors: 1, sizeKiB: 40960, label: 'bootfs' });
    await populate(p1, join(dir, 'w1'), { clusterSize: 512, seed: 1 });
    await placeFile(disk, 2048 * 512, p1);
    const p5 = join(dir, 'p5.img');
    await mkfsVfat(p5, { fat: 16, sectorSize: 512, clusterSectors: 2, sizeKiB: 10240, label: 'LOGICAL' });
    await populate(p5, join(dir, 'w5'), { clusterSize: 1024, seed: 5 });
    await placeFile(disk, 88064 * 512, p5);

    const dev = await FileBlockDevice.open(disk, { readOnly: true });
    t.after(() => dev.close());
    const table = await readPartitionTable(dev);
    assert.equal(table.scheme, 'mbr');
    const byNum = new Map(table.partitions.map((p) => [p.number, p]));
    assert.deepEqual([...byNum.keys()].sort(), [1, 2, 5, 6]);

    const v1 = await FatVolume.open(openPartition(dev, table, 1), { name: 'disk.img p1' });
    assert.equal(v1.type, 'FAT32');
    assert.ok((await compare(v1, disk, byNum.get(1)!.start)) > 10);
    const v5 = await FatVolume.open(openPartition(dev, table, 5));
    assert.equal(v5.type, 'FAT16');
    assert.ok((await compare(v5, disk, byNum.get(5)!.start)) > 10);
    // The Linux partition holds no FAT: a clear typed error, and isFat says no.
    const p6 = openPartition(dev, table, 6);
    await assert.rejects(FatVolume.open(p6), { name: 'ParseError' });
    const sector = Buffer.alloc(512);
    await new Promise<void>((res, rej) => p6.read(sector, 0, 512, 0, (e) => (e ? rej(e) : res())));
    assert.equal(isFat(sector), false);
    assert.equal(isFat(readFileSync(p1).subarray(0, 512)), true);
    v1.close();
    v5.close();
  });

  it('gpt table: an EFI system partition with FAT32 of 4096-byte sectors', async (t) => {
    if (!haveTools(t, ...FAT_TOOLS, 'sfdisk')) return;
    const dir = tempDir(t);
    const disk = join(dir, 'disk.img');
    const fd = openSync(disk, 'w');
    ftruncateSync(fd, 320 * MiB);
    closeSync(fd);
    await run('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', disk], {
      input: 'label: gpt\nstart=2048, size=614400, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI system"\n',
    });
    const p1 = join(dir, 'p1.img');
    await mkfsVfat(p1, { fat: 32, sectorSize: 4096, clusterSectors: 1, sizeKiB: 300 * 1024, label: 'ESP' });
    await populate(p1, join(dir, 'w1'), { clusterSize: 4096, seed: 11, fragmentedSize: 300_000 });
    await placeFile(disk, 2048 * 512, p1);

    const dev = await FileBlockDevice.open(disk, { readOnly: true });
    t.after(() => dev.close());
    const table = await readPartitionTable(dev);
    assert.equal(table.scheme, 'gpt');
    const part = table.partitions.find((p) => p.number === 1)!;
    assert.equal(part.start, 2048 * 512);
    const vol = await FatVolume.open(openPartition(dev, table, 1));
    assert.equal(vol.type, 'FAT32');
    assert.equal(vol.bpb.bytesPerSector, 4096);
    assert.ok((await compare(vol, disk, part.start)) > 10);
    assert.ok((await vol.extents('/frag/fragmented.bin')).length > 5);
    vol.close();
  });
});
