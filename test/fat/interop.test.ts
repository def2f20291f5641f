/**
 * The FAT reader against mtools on images built by mkfs.vfat: FAT12/16/32, 512- and 4096-byte sectors,
 * several cluster sizes; long, non-ASCII and mixed-case names; nested and 2000-entry directories; 0-byte
 * and fragmented files. Every listing (names, sizes, directory flags, dates) equals `mdir -a -/`, and
 * every file's bytes equal what `mcopy` extracts.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { FileBlockDevice } from '../../src/disk/blockdev.js';
import { FatVolume, type FatStat } from '../../src/fat/volume.js';
import { haveTools, tempDir } from '../helpers/tools.js';
import { readAll, readAt } from './read.js';
import { FAT_TOOLS, attributeLetters, mattribAll, mcopyOut, mcopyTree, mdirAll, mkfsVfat, populate, prng, type MkfsOptions } from '../helpers/fatimg.js';

interface Case extends MkfsOptions {
  many?: number;
}

const CASES: Case[] = [
  { fat: 12, sectorSize: 512, clusterSectors: 1, sizeKiB: 1440, label: 'FLOPPY' },
  { fat: 12, sectorSize: 4096, clusterSectors: 1, sizeKiB: 8192 },
  { fat: 16, sectorSize: 512, clusterSectors: 4, sizeKiB: 32768, many: 2000, label: 'BOOT' },
  { fat: 16, sectorSize: 4096, clusterSectors: 2, sizeKiB: 65536, label: 'SIXTEEN4K' },
  { fat: 32, sectorSize: 512, clusterSectors: 1, sizeKiB: 40000, many: 2000, label: 'bootfs' },
  { fat: 32, sectorSize: 4096, clusterSectors: 1, sizeKiB: 300000 },
  { fat: 32, sectorSize: 512, clusterSectors: 16, sizeKiB: 640000, label: 'BIGCLUSTER' },
];

function ymd(d: Date): [string, string] {
  const p = (n: number): string => String(n).padStart(2, '0');
  return [`${d.getUTCFullYear()}-${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())}`, `${p(d.getUTCHours())}:${p(d.getUTCMinutes())}`];
}

function byName<T extends { name: string }>(a: T, b: T): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

async function walk(vol: FatVolume, dir: string, out: Map<string, FatStat[]>, depth = 0): Promise<void> {
  assert.ok(depth < 16, 'directory tree too deep');
  const list = await vol.readdir(dir);
  out.set(dir, list);
  for (const e of list) if (e.isDirectory) await walk(vol, dir === '/' ? `/${e.name}` : `${dir}/${e.name}`, out, depth + 1);
}

function hostFiles(root: string, rel = ''): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(root, rel))) {
    const r = rel ? `${rel}/${name}` : name;
    if (statSync(join(root, r)).isDirectory()) out.push(...hostFiles(root, r));
    else out.push(r);
  }
  return out;
}

describe('FAT reader equals mtools', () => {
  for (const c of CASES) {
    const title = `FAT${c.fat} -S ${c.sectorSize} -s ${c.clusterSectors}${c.many ? ` with a ${c.many}-entry directory` : ''}`;
    it(title, async (t) => {
      if (!haveTools(t, ...FAT_TOOLS)) return;
      const dir = tempDir(t);
      const img = join(dir, 'fat.img');
      await mkfsVfat(img, c);
      const clusterSize = c.sectorSize! * c.clusterSectors!;
      await populate(img, join(dir, 'work'), { clusterSize, manyFiles: c.many, seed: c.fat * 7919 + clusterSize });

      const dev = await FileBlockDevice.open(img, { readOnly: true });
      t.after(() => dev.close());
      const vol = await FatVolume.open(dev);
      t.after(() => vol.close());
      assert.equal(vol.type, `FAT${c.fat}`);

      // Listings: every directory, every entry.
      const ref = await mdirAll(img);
      assert.equal(vol.label, ref.label === '' ? '' : ref.label, 'volume label');
      if (c.label) assert.equal(vol.label.toUpperCase(), c.label.toUpperCase());
      const ours = new Map<string, FatStat[]>();
      await walk(vol, '/', ours);
      assert.deepEqual([...ours.keys()].sort(), [...ref.dirs.keys()].sort(), 'the same directories');
      let entries = 0;
      for (const [path, refList] of ref.dirs) {
        const got = ours.get(path)!.map((e) => {
          const [date, time] = ymd(e.mtime);
          return { name: e.name, isDirectory: e.isDirectory, size: e.size, date, time };
        });
        assert.deepEqual(got.sort(byName), refList.slice().sort(byName), `listing of ${path}`);
        entries += got.length;
      }
      assert.ok(entries > 25, `${entries} entries`);
      if (c.many) assert.equal(ours.get('/many')!.length, c.many);

      // Attributes: as mattrib reports them, for every file and directory.
      const attrs = await mattribAll(img);
      assert.equal(attrs.get('/hidden.sys'), 'AHRS');
      assert.equal(attrs.get('/overlays/README'), '');
      let checked = 0;
      for (const [path, letters] of attrs) {
        assert.equal(attributeLetters((await vol.stat(path)).attributes), letters, `attributes of ${path}`);
        checked++;
      }
      assert.ok(checked > 25);

      // Bytes: everything mcopy extracts, read back through FileSource with several read sizes.
      const out = join(dir, 'out');
      await mcopyTree(img, out);
      const files = hostFiles(out);
      assert.ok(files.length > 20);
      const rand = prng(c.sizeKiB);
      for (const rel of files) {
        const want = readFileSync(join(out, rel));
        const src = await vol.open(`/${rel}`);
        assert.equal(src.size, want.length, `size of /${rel}`);
        const chunk = [512, 4096, 65536, 1000 + (rand() % 9000)][rand() % 4]!;
        assert.ok((await readAll(src, chunk)).equals(want), `bytes of /${rel} (reads of ${chunk})`);
        if (want.length > 0) {
          const pos = rand() % want.length;
          const len = 1 + (rand() % (2 * clusterSize + 7));
          assert.ok((await readAt(src, len, pos)).equals(want.subarray(pos, pos + len)), `random read of /${rel}`);
          assert.equal((await readAt(src, 10, want.length)).length, 0, 'read at EOF');
        }
        src.close();
      }

      // The fragmented file really is fragmented, and reads across extents are right.
      const ext = await vol.extents('/frag/fragmented.bin');
      assert.ok(ext.length > 5, `fragmented.bin has ${ext.length} extents`);
      const frag = await mcopyOut(img, '/frag/fragmented.bin');
      const fsrc = await vol.open('/FRAG/FRAGMENTED.BIN');
      assert.ok((await readAll(fsrc, 3 * clusterSize + 1)).equals(frag));

      // Case-insensitive lookup on long and short names.
      assert.equal((await vol.stat('/START4.ELF')).name, 'start4.elf');
      assert.equal((await vol.stat('/Start4.Elf')).shortName, 'START4.ELF');
      assert.equal((await vol.stat('/nEsTeD/LEVEL2/level3/DEEP FILE.DAT')).size, 2 * clusterSize - 1);
      const uni = (await vol.readdir('/')).find((e) => e.name === 'Ünïcødé ファイル.txt')!;
      assert.ok(uni, 'non-ASCII long name listed');
      assert.notEqual(uni.shortName, uni.name);
      assert.equal((await vol.stat(`/${uni.shortName.toLowerCase()}`)).name, uni.name, 'lookup by short name');
      assert.equal((await vol.stat('/ünïcødé ファイル.TXT')).size, 1234, 'Unicode case folding');
      const mixed = await vol.stat('/mixed.txt');
      assert.equal(mixed.name, 'MiXeD.TxT');
      assert.equal((await vol.stat('/upper.txt')).name, 'UPPER.TXT');
      assert.equal((await vol.stat('/config.txt')).name, 'config.txt');
      assert.equal((await vol.stat('/config.txt')).shortName, 'CONFIG.TXT');

      // Errors are typed.
      await assert.rejects(vol.stat('/nope'), { name: 'NotFoundError', code: 'ENOENT' });
      await assert.rejects(vol.stat('/config.txt/x'), { name: 'NotFoundError', code: 'ENOTDIR' });
      await assert.rejects(vol.open('/nested'), { name: 'NotFoundError', code: 'EISDIR' });
      await assert.rejects(vol.readdir('/config.txt'), { name: 'NotFoundError', code: 'ENOTDIR' });
    });
  }
});
