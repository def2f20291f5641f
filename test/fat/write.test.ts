/**
 * The FAT writer on images made by mkfs.vfat (FAT12, FAT16, FAT32): after every operation `fsck.fat -n` is
 * clean, every FAT copy is identical, and `mdir`/`mcopy` and our reader show exactly the expected tree
 * and bytes. Long, non-ASCII and 8.3 lowercase names; a full fixed root; a subdirectory that grows; a
 * nearly full volume (ENOSPC, volume unchanged and clean); FSInfo; crash order; reader coherence.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileBlockDevice, type BlockDevice } from '../../src/disk/blockdev.js';
import { MemoryBlockDevice } from '../../src/testing/memory-device.js';
import { FatVolume } from '../../src/fat/volume.js';
import { FatWriteError, FatWriter } from '../../src/fat/writer.js';
import { makeShortName, shortKey } from '../../src/fat/names.js';
import { longNameEntries, parseDirectory, type DirEntry } from '../../src/fat/dir.js';
import { FAT_TOOLS, MTOOLS_ENV, mcopyIn, mdirAll, mkfsVfat, prng, randomBytes, type MkfsOptions } from '../helpers/fatimg.js';
import { haveTools, run, tempDir } from '../helpers/tools.js';
import { Model, expectTree, fsckClean, fsinfo } from './write-helpers.js';
import { readAll } from './read.js';

const TOOLS = [...FAT_TOOLS, 'fsck.fat'];

const TYPES: Array<MkfsOptions & { title: string }> = [
  { title: 'FAT12', fat: 12, sizeKiB: 2048, clusterSectors: 1 },
  { title: 'FAT16', fat: 16, sizeKiB: 20480, clusterSectors: 1 },
  { title: 'FAT32', fat: 32, sizeKiB: 40000, clusterSectors: 1 },
  { title: 'FAT16 with 4096-byte sectors and 8 KiB clusters', fat: 16, sizeKiB: 36000, sectorSize: 4096, clusterSectors: 2 },
]

async function openWriter(img: string): Promise<{ dev: FileBlockDevice; w: FatWriter }> {
  const dev = await FileBlockDevice.open(img);
  const w = await FatWriter.open(dev);
  return { dev, w };
}

describe('FAT writer: operations on FAT12/16/32 checked with fsck.fat, mdir, mcopy and the reader', () => {
  for (const c of TYPES) {
    it(`${c.title}: create, overwrite, grow, truncate, rename, delete, mkdir, rmdir`, async (t) => {
      if (!haveTools(t, ...TOOLS)) return;
      const dir = tempDir(t);
      const img = join(dir, 'fat.img');
      await mkfsVfat(img, c);
      const rand = prng(c.fat);
      const m = new Model();
      const { dev, w } = await openWriter(img);
      t.after(() => dev.close());
      let step = 0;
      const check = async (what: string): Promise<void> => {
        await w.flush();
        await expectTree(img, m, dir, `after ${++step}: ${what}`);
      };
      const cs = w.bpb.clusterSize;

      const hello = Buffer.from('hello, world\n');
      await w.writeFile('/hello.txt', hello);
      m.set('/hello.txt', { dir: false, data: hello });
      await check('create an 8.3 lowercase file');

      const long = randomBytes(rand, 3 * cs + 5);
      await w.writeFile('/A rather long name, with spaces.binary', long);
      m.set('/A rather long name, with spaces.binary', { dir: false, data: long });
      await check('create a long name');

      const uni = randomBytes(rand, 1234);
      await w.writeFile('/Ünïcødé ファイル.txt', uni);
      m.set('/Ünïcødé ファイル.txt', { dir: false, data: uni });
      await check('create a non-ASCII name');

      await w.writeFile('/empty', Buffer.alloc(0));
      m.set('/empty', { dir: false, data: Buffer.alloc(0) });
      await check('create an empty file');

      await w.mkdir('/boot/overlays', { parents: true });
      m.set('/boot', { dir: true });
      m.set('/boot/overlays', { dir: true });
      await check('mkdir -p');

      // A subdirectory that must grow: more entries than one cluster holds (long names take 2-3 each).
      // Each name below takes 3 entries (2 long-name + 8.3): this many overflow the first cluster.
      const perCluster = cs / 32;
      for (let i = 0; i < Math.ceil(perCluster / 3) + 2; i++) {
        const name = `/boot/overlays/overlay number ${i}.dtbo`;
        const d = randomBytes(rand, (i * 37) % (2 * cs));
        await w.writeFile(name, d);
        m.set(name, { dir: false, data: d });
      }
      await check('a subdirectory grown by clusters');

      const bigger = randomBytes(rand, 5 * cs + 1);
      await w.writeFile('/HELLO.TXT', bigger); // the same file, another case: overwritten
      m.set('/hello.txt', { dir: false, data: bigger });
      await check('overwrite (grow)');

      await w.writeFile('/hello.txt', Buffer.from('short'));
      m.set('/hello.txt', { dir: false, data: Buffer.from('short') });
      await check('overwrite (shrink)');

      const tail = randomBytes(rand, 2 * cs);
      await w.write('/hello.txt', 3 * cs + 7, tail);
      const grown = Buffer.alloc(3 * cs + 7 + tail.length);
      Buffer.from('short').copy(grown);
      tail.copy(grown, 3 * cs + 7);
      m.set('/hello.txt', { dir: false, data: grown });
      await check('write past the end (gap reads as zeros)');

      await w.write('/empty', 0, Buffer.from('now with data'));
      m.set('/empty', { dir: false, data: Buffer.from('now with data') });
      await check('write into an empty file');

      await w.truncate('/A rather long name, with spaces.binary', cs + 1);
      m.set('/A rather long name, with spaces.binary', { dir: false, data: long.subarray(0, cs + 1) });
      await check('truncate (shrink)');

      await w.truncate('/A rather long name, with spaces.binary', 4 * cs);
      const ext = Buffer.alloc(4 * cs);
      long.copy(ext, 0, 0, cs + 1);
      m.set('/A rather long name, with spaces.binary', { dir: false, data: ext });
      await check('truncate (extend with zeros)');

      await w.truncate('/empty', 0);
      m.set('/empty', { dir: false, data: Buffer.alloc(0) });
      await check('truncate to 0');

      await w.rename('/Ünïcødé ファイル.txt', '/boot/renamed.TXT');
      m.delete('/Ünïcødé ファイル.txt');
      m.set('/boot/renamed.TXT', { dir: false, data: uni });
      await check('rename across directories');

      await w.rename('/boot/overlays', '/overlays');
      m.move('/boot/overlays', '/overlays');
      await check('move a directory to the root (its .. is updated)');

      await w.rename('/overlays/overlay number 1.dtbo', '/hello.txt');
      m.set('/hello.txt', m.get('/overlays/overlay number 1.dtbo')!);
      m.delete('/overlays/overlay number 1.dtbo');
      await check('rename over an existing file');

      await w.rename('/hello.txt', '/Hello.TXT');
      m.move('/hello.txt', '/Hello.TXT');
      await check('rename: change of case only');

      await assert.rejects(w.rmdir('/overlays'), (e: unknown) => e instanceof FatWriteError && e.code === 'ENOTEMPTY');
      await assert.rejects(w.mkdir('/boot'), (e: unknown) => e instanceof FatWriteError && e.code === 'EEXIST');
      await assert.rejects(w.remove('/boot'), (e: unknown) => e instanceof FatWriteError && e.code === 'EISDIR');
      await assert.rejects(w.writeFile('/bad:name', Buffer.alloc(1)), (e: unknown) => e instanceof FatWriteError && e.code === 'EINVAL');
      await assert.rejects(w.rename('/boot', '/boot/inside'), (e: unknown) => e instanceof FatWriteError && e.code === 'EINVAL');
      await w.mkdir('/Long Directory Name');
      await assert.rejects(w.rename('/Long Directory Name', '/LONGDI~1/inside'), (e: unknown) => e instanceof FatWriteError && e.code === 'EINVAL');
      await w.rmdir('/longdi~1');
      await assert.rejects(w.remove('/nothing'), (e: unknown) => (e as { code?: string }).code === 'ENOENT');

      for (const p of m.children('/overlays')) {
        await w.remove(p);
        m.delete(p);
      }
      await check('delete every file of a grown directory');

      await w.rmdir('/overlays');
      m.delete('/overlays');
      await check('rmdir');

      await w.mkdir('/x/y/z', { parents: true });
      await w.writeFile('/x/y/z/f', Buffer.from('f'));
      await w.removeTree('/x');
      await check('remove a tree');

      // FSInfo (FAT32): the free count is what fsck counts (fsck checks it), the hint is in range.
      const fi = await fsinfo(img);
      if (c.fat === 32) {
        assert.ok(fi);
        assert.equal(fi.free, w.usage.freeClusters);
        assert.ok(fi.next >= 2 && fi.next <= w.bpb.maxCluster);
      }
    });
  }
});

describe('FAT writer: limits', () => {
  it('FAT12: a full fixed root directory is a clear ENOSPC; the volume stays clean', async (t) => {
    if (!haveTools(t, ...TOOLS)) return;
    const dir = tempDir(t);
    const img = join(dir, 'fat.img');
    await mkfsVfat(img, { fat: 12, sizeKiB: 1024, rootEntries: 32 });
    const { dev, w } = await openWriter(img);
    t.after(() => dev.close());
    const m = new Model();
    let i = 0;
    let failure: unknown;
    for (; i < 100; i++) {
      const name = i % 2 ? `F${i}.BIN` : `long file name ${i}.bin`; // 1 or 3 entries each
      try {
        await w.writeFile(`/${name}`, Buffer.from(name));
      } catch (e) {
        failure = e;
        break;
      }
      m.set(`/${name}`, { dir: false, data: Buffer.from(name) });
    }
    assert.ok(failure instanceof FatWriteError, String(failure));
    assert.equal(failure.code, 'ENOSPC');
    assert.match(failure.message, /root directory is full \(32 entries on FAT12\)/);
    const free = w.usage.freeClusters;
    await assert.rejects(w.mkdir('/sub'), (e: unknown) => e instanceof FatWriteError && e.code === 'ENOSPC');
    assert.equal(w.usage.freeClusters, free, 'the cluster taken for the directory was given back');
    await w.flush();
    await expectTree(img, m, dir, 'with a full root');
  });

  for (const fat of [12, 16, 32] as const) {
    it(`FAT${fat}: a nearly full volume: ENOSPC leaves it clean and unchanged; the last cluster can be used`, async (t) => {
      if (!haveTools(t, ...TOOLS)) return;
      const dir = tempDir(t);
      const img = join(dir, 'fat.img');
      await mkfsVfat(img, { fat, sizeKiB: fat === 32 ? 34000 : fat === 16 ? 4200 : 600, clusterSectors: fat === 16 ? 1 : 1 });
      const { dev, w } = await openWriter(img);
      t.after(() => dev.close());
      const cs = w.bpb.clusterSize;
      const m = new Model();
      // Fill all but 3 clusters.
      const fill = Buffer.alloc((w.usage.freeClusters - 3) * cs, 0x5a);
      await w.writeFile('/filler.bin', fill);
      m.set('/filler.bin', { dir: false, data: fill });
      assert.equal(w.usage.freeClusters, 3);
      await w.flush();
      const before = readFileSync(img);
      await assert.rejects(w.writeFile('/too big.bin', Buffer.alloc(4 * cs)), (e: unknown) => {
        assert.ok(e instanceof FatWriteError);
        assert.equal(e.code, 'ENOSPC');
        assert.match(e.message, /no space left: need 4 clusters/);
        return true;
      });
      await assert.rejects(w.write('/filler.bin', fill.length, Buffer.alloc(4 * cs)), (e: unknown) => e instanceof FatWriteError && e.code === 'ENOSPC');
      // Overwriting needs room for the new copy before the old one is freed.
      await assert.rejects(w.writeFile('/filler.bin', Buffer.alloc(cs * 4)), (e: unknown) => e instanceof FatWriteError && e.code === 'ENOSPC');
      assert.equal(w.usage.freeClusters, 3);
      assert.ok(readFileSync(img).equals(before), 'nothing was written');
      await expectTree(img, m, dir, 'after ENOSPC');
      const last = Buffer.alloc(3 * cs, 0x33);
      await w.writeFile('/last.bin', last);
      m.set('/last.bin', { dir: false, data: last });
      assert.equal(w.usage.freeClusters, 0);
      await assert.rejects(w.writeFile('/one more byte', Buffer.alloc(1)), (e: unknown) => e instanceof FatWriteError && e.code === 'ENOSPC');
      await w.writeFile('/zero bytes fit', Buffer.alloc(0));
      m.set('/zero bytes fit', { dir: false, data: Buffer.alloc(0) });
      await w.flush();
      await expectTree(img, m, dir, 'full');
      await w.remove('/filler.bin');
      m.delete('/filler.bin');
      await w.flush();
      await expectTree(img, m, dir, 'after freeing');
    });
  }
});

describe('FAT writer: names and order', () => {
  it('long-name entries and short names are byte-identical to what mtools writes', async (t) => {
    if (!haveTools(t, ...TOOLS)) return;
    const dir = tempDir(t);
    const img = join(dir, 'fat.img');
    await mkfsVfat(img, { fat: 16, sizeKiB: 8192, clusterSectors: 1 });
    const names = ['A rather long name.txt', 'Ünïcødé ファイル.txt', 'exactly13char', 'twenty-six characters long'];
    for (const n of names) writeFileSync(join(dir, n), n);
    await mcopyIn(img, names.map((n) => join(dir, n)), '::/');
    const raw = readFileSync(img);
    const dev = new MemoryBlockDevice(raw, true);
    const vol = await FatVolume.open(dev);
    const b = vol.bpb;
    const root = raw.subarray(b.rootDirOffset, b.rootDirOffset + b.rootDirBytes);
    const entries = parseDirectory(root, { fat32: false });
    if (!entries.ok) throw entries.error;
    const list: DirEntry[] = entries.value;
    for (const n of names) {
      const e = list.find((x) => x.name === n)!;
      assert.ok(e, n);
      const short = root.subarray(e.index * 32, e.index * 32 + 11);
      const lfn = longNameEntries(n, short);
      const count = lfn.length / 32;
      assert.ok(root.subarray((e.index - count) * 32, e.index * 32).equals(lfn), `long-name entries of ${n}`);
    }
    // Short names: mtools' choice for a lone name equals ours.
    const taken = new Set<string>();
    for (const n of ['A rather long name.txt']) {
      const e = list.find((x) => x.name === n)!;
      assert.equal(shortKey(makeShortName(n, taken).raw), root.toString('latin1', e.index * 32, e.index * 32 + 11));
    }
  });

  it('short names: 8.3 in one case → NT bits, no long name; otherwise ~N made unique', () => {
    const none = new Set<string>();
    const s = (n: string, taken = none) => {
      const r = makeShortName(n, taken);
      return [shortKey(r.raw), r.ntCase, r.needsLongName];
    };
    assert.deepEqual(s('config.txt'), ['CONFIG  TXT', 0x18, false]);
    assert.deepEqual(s('README'), ['README     ', 0, false]);
    assert.deepEqual(s('readme.TXT'), ['README  TXT', 0x08, false]);
    assert.deepEqual(s('ReadMe.txt'), ['README  TXT', 0, true]);
    assert.deepEqual(s('kernel8.img'), ['KERNEL8 IMG', 0x18, false]);
    assert.deepEqual(s('bcm2711-rpi-4-b.dtb'), ['BCM271~1DTB', 0, true]);
    assert.deepEqual(s('.hidden'), ['HIDDEN~1   ', 0, true]);
    assert.deepEqual(s('a b.c'), ['AB~1    C  ', 0, true]);
    assert.deepEqual(s('ファイル'), ['____~1     ', 0, true]);
    const taken = new Set(['BCM271~1DTB', 'BCM271~2DTB']);
    assert.deepEqual(s('bcm2711-rpi-400.dtb', taken), ['BCM271~3DTB', 0, true]);
    const many = new Set<string>();
    for (let i = 1; i <= 9; i++) many.add(`LONGFI~${i}TXT`);
    assert.deepEqual(s('long file name.txt', many), ['LONGF~10TXT', 0, true]);
  });

  it('crash order: data clusters, then every FAT copy, then the directory entry; deletes the other way', async () => {
    // A FAT16 volume built in memory by our own writer's reader-compatible layout: use mkfs-like bytes.
    const img = Buffer.alloc(4 * 1024 * 1024);
    // Minimal FAT16 boot sector: 512 B sectors, 4 per cluster, 1 reserved, 2 FATs of 8 sectors, 512 root entries.
    img[0] = 0xeb; img[1] = 0x3c; img[2] = 0x90;
    img.write('MSWIN4.1', 3, 'latin1');
    img.writeUInt16LE(512, 11); img[13] = 4; img.writeUInt16LE(1, 14); img[16] = 2;
    img.writeUInt16LE(512, 17); img.writeUInt16LE(8192, 19); img[21] = 0xf8; img.writeUInt16LE(8, 22);
    img[38] = 0x29; img.write('NO NAME    FAT16   ', 43, 'latin1');
    img[510] = 0x55; img[511] = 0xaa;
    for (const f of [512, 512 + 8 * 512]) { img.writeUInt16LE(0xfff8, f); img.writeUInt16LE(0xffff, f + 2); }
    const inner = new MemoryBlockDevice(img);
    const log: string[] = [];
    const fatLo = 512, fatHi = 512 + 16 * 512, rootLo = fatHi, rootHi = rootLo + 512 * 32;
    const dev: BlockDevice = {
      size: inner.size, readOnly: false, name: 'rec',
      read: (b, o, l, p, cb) => inner.read(b, o, l, p, cb),
      write: (b, o, l, p, cb) => {
        log.push(p < fatLo ? 'boot' : p < fatLo + 8 * 512 ? 'fat0' : p < fatHi ? 'fat1' : p < rootHi ? 'dir' : 'data');
        inner.write(b, o, l, p, cb);
      },
      flush: (cb) => inner.flush(cb),
      onWritten: (l) => inner.onWritten(l),
    };
    const w = await FatWriter.open(dev);
    await w.writeFile('/a long file name.bin', Buffer.alloc(10000, 1));
    assert.deepEqual(log, ['data', 'fat0', 'fat1', 'dir']);
    log.length = 0;
    await w.writeFile('/a long file name.bin', Buffer.alloc(3000, 2));
    assert.deepEqual(log, ['data', 'fat0', 'fat1', 'dir', 'fat0', 'fat1'], 'new data, new chain, entry switched, old chain freed');
    log.length = 0;
    await w.remove('/a long file name.bin');
    assert.deepEqual(log, ['dir', 'fat0', 'fat1']);
    void rootLo;
  });

  it('timestamps: creation, modification and access dates are set (UTC fields, 2 s / 10 ms units)', async (t) => {
    if (!haveTools(t, ...TOOLS)) return;
    const dir = tempDir(t);
    const img = join(dir, 'fat.img');
    await mkfsVfat(img, { fat: 12, sizeKiB: 1024 });
    const { dev, w } = await openWriter(img);
    t.after(() => dev.close());
    const created = new Date(Date.UTC(2024, 10, 19, 12, 34, 57, 250));
    await w.writeFile('/stamp.txt', Buffer.from('x'), { mtime: created });
    await w.mkdir('/d', { mtime: created });
    const later = new Date(Date.UTC(2025, 0, 2, 3, 4, 6));
    await w.write('/stamp.txt', 1, Buffer.from('y'), { mtime: later });
    await w.flush();
    const vol = await FatVolume.open(dev);
    const st = await vol.stat('/stamp.txt');
    assert.equal(st.mtime.toISOString(), '2025-01-02T03:04:06.000Z');
    assert.equal(st.ctime?.toISOString(), '2024-11-19T12:34:57.250Z', 'creation time with its 10 ms part');
    assert.equal(st.atime?.toISOString(), '2025-01-02T00:00:00.000Z');
    assert.equal((await vol.stat('/d')).mtime.toISOString(), '2024-11-19T12:34:56.000Z');
    vol.close();
    const listing = await mdirAll(img);
    assert.deepEqual(listing.dirs.get('/')!.map((e) => [e.name, e.date, e.time]), [['stamp.txt', '2025-01-02', '03:04'], ['d', '2024-11-19', '12:34']]);
  });

  it('a FatVolume on the same device sees every write at once (coherence through written events)', async () => {
    const img = Buffer.alloc(4 * 1024 * 1024);
    img[0] = 0xeb; img[1] = 0x3c; img[2] = 0x90;
    img.writeUInt16LE(512, 11); img[13] = 4; img.writeUInt16LE(1, 14); img[16] = 2;
    img.writeUInt16LE(512, 17); img.writeUInt16LE(8192, 19); img[21] = 0xf8; img.writeUInt16LE(8, 22);
    img[510] = 0x55; img[511] = 0xaa;
    for (const f of [512, 512 + 8 * 512]) { img.writeUInt16LE(0xfff8, f); img.writeUInt16LE(0xffff, f + 2); }
    const dev = new MemoryBlockDevice(img);
    const vol = await FatVolume.open(dev);
    const w = await FatWriter.open(dev);
    assert.deepEqual(await vol.readdir('/'), []);
    await w.writeFile('/cmdline.txt', Buffer.from('console=tty1 root=/dev/mmcblk0p2\n'));
    const src = await vol.open('/cmdline.txt');
    assert.equal((await readAll(src, 4096)).toString(), 'console=tty1 root=/dev/mmcblk0p2\n');
    src.close();
    await w.writeFile('/cmdline.txt', Buffer.from('ip=dhcp\n'));
    const again = await vol.open('/cmdline.txt');
    assert.equal((await readAll(again, 4096)).toString(), 'ip=dhcp\n');
    again.close();
    await w.remove('/cmdline.txt');
    await assert.rejects(vol.stat('/cmdline.txt'), (e: unknown) => (e as { code?: string }).code === 'ENOENT');
    vol.close();
    w.close();
  });
});

void run; void MTOOLS_ENV; void fsckClean;

describe('FAT writer: corrupt volumes', () => {
  it('a looping directory chain or file chain is a CorruptError, never a hang; a read-only device is refused', async (t) => {
    if (!haveTools(t, ...TOOLS)) return;
    const dir = tempDir(t);
    const img = join(dir, 'fat.img');
    await mkfsVfat(img, { fat: 32, sizeKiB: 34000, clusterSectors: 1 });
    {
      const dev = await FileBlockDevice.open(img);
      const w = await FatWriter.open(dev);
      await w.mkdir('/sub');
      await w.writeFile('/sub/file.bin', Buffer.alloc(3 * 512, 1));
      await w.flush();
      await dev.close();
    }
    const base = readFileSync(img);
    const vol = await FatVolume.open(new MemoryBlockDevice(Buffer.from(base), true));
    const b = vol.bpb;
    const fileFirst = (await vol.extents('/sub/file.bin'))[0]!.cluster;
    const fatAt = (c: number): number => b.reservedSectors * b.bytesPerSector + c * 4;
    // The root directory's chain points at itself; then the file's last cluster points back at its first.
    const loopRoot = Buffer.from(base);
    loopRoot.writeUInt32LE(b.rootCluster, fatAt(b.rootCluster));
    const w1 = await FatWriter.open(new MemoryBlockDevice(loopRoot));
    await assert.rejects(w1.writeFile('/x', Buffer.alloc(1)), (e: unknown) => (e as { code?: string }).code === 'ELOOP');
    const loopFile = Buffer.from(base);
    loopFile.writeUInt32LE(fileFirst, fatAt(fileFirst + 2));
    const w2 = await FatWriter.open(new MemoryBlockDevice(loopFile));
    await assert.rejects(w2.writeFile('/sub/file.bin', Buffer.alloc(1)), (e: unknown) => (e as { code?: string }).code === 'ELOOP');
    await w2.remove('/sub/file.bin'); // the entry goes; the looping clusters are left for fsck
    await assert.rejects(FatWriter.open(new MemoryBlockDevice(Buffer.from(base), true)), (e: unknown) => (e as { code?: string }).code === 'EPERM');
    await assert.rejects(FatWriter.open(new MemoryBlockDevice(Buffer.alloc(4096))), (e: unknown) => (e as { code?: string }).code === 'EBADBPB');
  });
});
