/**
 * Byte-exact fixtures for the pure FAT codecs: boot sectors built field by field (and the FAT type
 * boundaries of the Microsoft spec), FAT12/16/32 entry decoding, and directory entries (8.3 names, NT
 * lowercase bits, 0x05, deleted and end markers, VFAT long names with order and checksum checks, labels,
 * timestamps).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseBootSector, isFat } from '../../src/fat/bpb.js';
import { fatEntry, isEndOfChain, extentsOverlap } from '../../src/fat/table.js';
import { parseDirectory, shortNameChecksum, decodeTimestamp, ATTR_DIRECTORY, ATTR_VOLUME_ID, ATTR_ARCHIVE } from '../../src/fat/dir.js';

interface BootFields {
  bps?: number;
  spc?: number;
  reserved?: number;
  fats?: number;
  rootEntries?: number;
  total: number;
  fatSize: number;
  fat32?: boolean;
  rootCluster?: number;
  label?: string;
}

/** A boot sector from explicit fields (the layout of the Microsoft FAT spec). */
function bootSector(f: BootFields): Buffer {
  const b = Buffer.alloc(512);
  b.set([0xeb, 0x3c, 0x90], 0);
  b.write('MSWIN4.1', 3, 'latin1');
  b.writeUInt16LE(f.bps ?? 512, 11);
  b[13] = f.spc ?? 1;
  b.writeUInt16LE(f.reserved ?? (f.fat32 ? 32 : 1), 14);
  b[16] = f.fats ?? 2;
  b.writeUInt16LE(f.fat32 ? 0 : (f.rootEntries ?? 512), 17);
  if (f.total < 0x10000 && !f.fat32) b.writeUInt16LE(f.total, 19);
  else b.writeUInt32LE(f.total, 32);
  b[21] = 0xf8;
  const ext = f.fat32 ? 64 : 36;
  if (f.fat32) {
    b.writeUInt32LE(f.fatSize, 36);
    b.writeUInt32LE(f.rootCluster ?? 2, 44);
    b.writeUInt16LE(1, 48);
  } else {
    b.writeUInt16LE(f.fatSize, 22);
  }
  b[ext + 2] = 0x29;
  b.writeUInt32LE(0x1234abcd, ext + 3);
  b.write((f.label ?? 'NO NAME').padEnd(11, ' '), ext + 7, 'latin1');
  b.write((f.fat32 ? 'FAT32' : 'FAT16').padEnd(8, ' '), ext + 18, 'latin1');
  b[510] = 0x55;
  b[511] = 0xaa;
  return b;
}

describe('parseBootSector', () => {
  it('a 1.44 MB floppy: exact geometry', () => {
    const r = parseBootSector(bootSector({ total: 2880, fatSize: 9, rootEntries: 224, label: 'FLOPPY' }));
    assert.ok(r.ok);
    const g = r.value;
    assert.equal(g.type, 'FAT12');
    assert.equal(g.clusterCount, 2847); // (2880 - 1 - 18 - 14) / 1
    assert.equal(g.maxCluster, 2848);
    assert.equal(g.fatOffset, 512);
    assert.equal(g.fatBytes, 9 * 512);
    assert.equal(g.rootDirOffset, 19 * 512);
    assert.equal(g.rootDirBytes, 224 * 32);
    assert.equal(g.dataOffset, 33 * 512);
    assert.equal(g.clusterSize, 512);
    assert.equal(g.volumeBytes, 2880 * 512);
    assert.equal(g.bpbLabel, 'FLOPPY');
    assert.equal(g.volumeId, 0x1234abcd);
    assert.equal(g.oemName, 'MSWIN4.1');
    assert.ok(isFat(bootSector({ total: 2880, fatSize: 9, rootEntries: 224 })));
  });

  it('the FAT type follows the cluster count: 4084/4085 and 65524/65525', () => {
    // Data sectors = total - reserved(1) - 2 FATs - root(32 sectors for 512 entries); 1 sector per cluster.
    const meta = (fat: number): number => 1 + 2 * fat + 32;
    const t = (clusters: number, fatSize: number): string => {
      const r = parseBootSector(bootSector({ total: meta(fatSize) + clusters, fatSize }));
      assert.ok(r.ok, r.ok ? '' : r.error.message);
      assert.equal(r.value.clusterCount, clusters);
      return r.value.type;
    };
    assert.equal(t(4084, 12), 'FAT12');
    assert.equal(t(4085, 16), 'FAT16');
    assert.equal(t(65524, 256), 'FAT16');
    // 65525 clusters is FAT32, which needs the FAT32 fields.
    const r = parseBootSector(bootSector({ total: meta(256) + 65525, fatSize: 256 }));
    assert.equal(r.ok, false);
    const f32 = parseBootSector(bootSector({ fat32: true, total: 32 + 2 * 520 + 65525, fatSize: 520 }));
    assert.ok(f32.ok, f32.ok ? '' : f32.error.message);
    assert.equal(f32.value.type, 'FAT32');
    assert.equal(f32.value.clusterCount, 65525);
    assert.equal(f32.value.rootDirBytes, 0);
    assert.equal(f32.value.dataOffset, (32 + 2 * 520) * 512);
  });

  it('4096-byte sectors and 128 sectors per cluster', () => {
    const r = parseBootSector(bootSector({ bps: 4096, spc: 128, total: 1 + 2 + 4 + 128 * 100, fatSize: 1, rootEntries: 512 }));
    assert.ok(r.ok, r.ok ? '' : r.error.message);
    assert.equal(r.value.clusterSize, 512 * 1024);
    assert.equal(r.value.clusterCount, 100);
    assert.equal(r.value.dataOffset, 7 * 4096);
  });

  it('rejects what the spec forbids, naming the field', () => {
    const cases: [Partial<BootFields>, RegExp][] = [
      [{ bps: 2048 + 512 }, /bytes per sector/],
      [{ bps: 8192 }, /bytes per sector/],
      [{ spc: 6 }, /sectors per cluster/],
      [{ reserved: 0 }, /reserved/],
      [{ fats: 0 }, /number of FATs/],
      [{ rootEntries: 0 }, /root entries/],
      [{ fatSize: 1 }, /too small/],
    ];
    for (const [over, re] of cases) {
      const r = parseBootSector(bootSector({ total: 2880, fatSize: 9, rootEntries: 224, ...over }));
      assert.equal(r.ok, false, JSON.stringify(over));
      if (!r.ok) {
        assert.equal(r.error.name, 'ParseError');
        assert.match(r.error.message, re);
      }
    }
    const short = parseBootSector(Buffer.alloc(100));
    assert.equal(short.ok, false);
    const big = parseBootSector(bootSector({ total: 2880, fatSize: 9, rootEntries: 224 }), 1000 * 512);
    assert.ok(!big.ok && big.error.code === 'ETRUNC');
  });
});

describe('FAT entries', () => {
  it('FAT12 packs two entries in three bytes', () => {
    // Entries 2 = 0x003, 3 = 0xFFF (end), 4 = 0x123, 5 = 0xABC.
    const fat = Buffer.from([0xf8, 0xff, 0xff, 0x03, 0xf0, 0xff, 0x23, 0xc1, 0xab]);
    assert.equal(fatEntry('FAT12', fat, 2), 0x003);
    assert.equal(fatEntry('FAT12', fat, 3), 0xfff);
    assert.equal(fatEntry('FAT12', fat, 4), 0x123);
    assert.equal(fatEntry('FAT12', fat, 5), 0xabc);
    assert.ok(isEndOfChain('FAT12', 0xff8) && !isEndOfChain('FAT12', 0xff7));
  });
  it('FAT16 and FAT32 (upper 4 bits ignored), with a chunk base', () => {
    const f16 = Buffer.from([0, 0, 0, 0, 0x34, 0x12, 0xff, 0xff]);
    assert.equal(fatEntry('FAT16', f16, 2), 0x1234);
    assert.ok(isEndOfChain('FAT16', fatEntry('FAT16', f16, 3)));
    const f32 = Buffer.from([0x78, 0x56, 0x34, 0xf2]);
    assert.equal(fatEntry('FAT32', f32, 16, 64), 0x02345678);
    assert.ok(isEndOfChain('FAT32', 0x0ffffff8) && !isEndOfChain('FAT32', 0x0ffffff7));
  });
  it('extent overlap = a cycle', () => {
    assert.equal(extentsOverlap([{ cluster: 2, count: 3 }, { cluster: 10, count: 1 }, { cluster: 5, count: 5 }]), false);
    assert.equal(extentsOverlap([{ cluster: 2, count: 4 }, { cluster: 5, count: 1 }]), true);
  });
});

/** A 32-byte 8.3 entry. */
function sfn(name11: string, attr: number, opts: { nt?: number; cluster?: number; size?: number; date?: number; time?: number; first?: number } = {}): Buffer {
  const e = Buffer.alloc(32);
  e.write(name11, 0, 'latin1');
  if (opts.first !== undefined) e[0] = opts.first;
  e[11] = attr;
  e[12] = opts.nt ?? 0;
  e.writeUInt16LE(opts.time ?? 0, 22);
  e.writeUInt16LE(opts.date ?? 0, 24);
  e.writeUInt16LE((opts.cluster ?? 0) >>> 16, 20);
  e.writeUInt16LE((opts.cluster ?? 0) & 0xffff, 26);
  e.writeUInt32LE(opts.size ?? 0, 28);
  return e;
}

/** Independent checksum: rotate right by one, add (the spec's loop written another way). */
function checksum(name11: Buffer): number {
  let s = 0;
  for (const c of name11) s = (((s >> 1) | ((s & 1) << 7)) + c) % 256;
  return s;
}

/** The long-name entries for `name` (last part first, as on disk) belonging to 8.3 `short`. */
function lfn(name: string, short: Buffer, opts: { badChecksum?: boolean } = {}): Buffer[] {
  const units: number[] = [...name].flatMap((ch) => {
    const b = Buffer.from(ch, 'utf16le');
    return Array.from({ length: b.length / 2 }, (_, i) => b.readUInt16LE(i * 2));
  });
  if (units.length % 13 !== 0) units.push(0);
  while (units.length % 13 !== 0) units.push(0xffff);
  const n = units.length / 13;
  const sum = checksum(short.subarray(0, 11)) ^ (opts.badChecksum ? 1 : 0);
  const out: Buffer[] = [];
  const offs = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
  for (let k = n; k >= 1; k--) {
    const e = Buffer.alloc(32);
    e[0] = k | (k === n ? 0x40 : 0);
    e[11] = 0x0f;
    e[13] = sum;
    for (let i = 0; i < 13; i++) e.writeUInt16LE(units[(k - 1) * 13 + i]!, offs[i]!);
    out.push(e);
  }
  return out;
}

describe('parseDirectory', () => {
  it('checksum matches an independent implementation', () => {
    for (const n of ['START4  ELF', 'MIXEDC~1TEX', '           ', '\xe5ABC    TXT']) {
      const b = Buffer.from(n, 'latin1');
      assert.equal(shortNameChecksum(b), checksum(b));
    }
  });

  it('8.3 names, NT lowercase bits, 0x05, deleted entries, label, end marker', () => {
    const dir = Buffer.concat([
      sfn('BOOTFS     ', ATTR_VOLUME_ID),
      sfn('START4  ELF', ATTR_ARCHIVE, { cluster: 3, size: 2228 }),
      sfn('CONFIG  TXT', ATTR_ARCHIVE, { nt: 0x18, cluster: 5, size: 10 }),
      sfn('README  TXT', ATTR_ARCHIVE, { nt: 0x08 }),
      sfn('KERNEL  IMG', ATTR_ARCHIVE, { nt: 0x10 }),
      sfn('XDELETEDTXT', ATTR_ARCHIVE, { first: 0xe5 }),
      sfn('XOEM    TXT', ATTR_ARCHIVE, { first: 0x05 }),
      sfn('OVERLAYS   ', ATTR_DIRECTORY, { nt: 0x08, cluster: 0x12345 }),
      sfn('NOEXT      ', ATTR_ARCHIVE),
      Buffer.alloc(32), // end
      sfn('AFTER   END', ATTR_ARCHIVE),
    ]);
    const r = parseDirectory(dir, { fat32: true });
    assert.ok(r.ok);
    const got = r.value.map((e) => [e.kind, e.name, e.shortName, e.firstCluster, e.size]);
    assert.deepEqual(got, [
      ['label', 'BOOTFS', 'BOOTFS', 0, 0],
      ['file', 'START4.ELF', 'START4.ELF', 3, 2228],
      ['file', 'config.txt', 'CONFIG.TXT', 5, 10],
      ['file', 'readme.TXT', 'README.TXT', 0, 0],
      ['file', 'KERNEL.img', 'KERNEL.IMG', 0, 0],
      ['file', 'ÕOEM.TXT', 'ÕOEM.TXT', 0, 0], // 0x05 stands for 0xE5 (Õ in code page 850)
      ['directory', 'overlays', 'OVERLAYS', 0x12345, 0],
      ['file', 'NOEXT', 'NOEXT', 0, 0],
    ]);
    // FAT12/16 ignore the high cluster word.
    const r16 = parseDirectory(dir, { fat32: false });
    assert.ok(r16.ok);
    assert.equal(r16.value.find((e) => e.shortName === 'OVERLAYS')!.firstCluster, 0x2345);
  });

  it('VFAT long names: valid, orphaned, out of order, wrong checksum', () => {
    const s1 = sfn('UNICOD~1TXT', ATTR_ARCHIVE, { cluster: 7, size: 3 });
    const s2 = sfn('ALONGF~1BIN', ATTR_ARCHIVE);
    const s3 = sfn('BADSUM~1TXT', ATTR_ARCHIVE);
    const s4 = sfn('ORDER~1 TXT', ATTR_ARCHIVE);
    const long2 = lfn('a long file name that needs three entries.bin', s2);
    assert.equal(long2.length, 4);
    const swapped = lfn('swapped order of the parts.txt', s4);
    [swapped[0], swapped[1]] = [swapped[1]!, swapped[0]!];
    const dir = Buffer.concat([
      ...lfn('Ünïcødé ファイル.txt', s1), s1,
      ...long2, s2,
      ...lfn('checksum mismatch.txt', s3, { badChecksum: true }), s3,
      ...swapped, s4,
      ...lfn('orphan with no short entry.txt', s1).slice(0, 1), // then a deleted 8.3
      sfn('XGONE   TXT', ATTR_ARCHIVE, { first: 0xe5 }),
      ...lfn('.', s1), sfn('.          ', ATTR_DIRECTORY), // a long name never applies to dot entries
    ]);
    const r = parseDirectory(dir, { fat32: false });
    assert.ok(r.ok);
    assert.deepEqual(r.value.map((e) => [e.name, e.hasLongName]), [
      ['Ünïcødé ファイル.txt', true],
      ['a long file name that needs three entries.bin', true],
      ['BADSUM~1.TXT', false],
      ['ORDER~1.TXT', false],
      ['.', false],
    ]);
    assert.equal(r.value[0]!.shortName, 'UNICOD~1.TXT');
    assert.equal(r.value[4]!.kind, 'dot');
    // A 13-character name fills its entry exactly, with no terminator.
    const exact = parseDirectory(Buffer.concat([...lfn('thirteen.char', s1), s1]), { fat32: false });
    assert.ok(exact.ok);
    assert.equal(exact.value[0]!.name, 'thirteen.char');
  });

  it('timestamps decode as UTC fields; zero create/access dates are undefined', () => {
    // 2024-02-29 13:37:58 → date (44<<9)|(2<<5)|29, time (13<<11)|(37<<5)|29
    const d = (44 << 9) | (2 << 5) | 29;
    const t = (13 << 11) | (37 << 5) | 29;
    const e = sfn('TIME    TXT', ATTR_ARCHIVE, { date: d, time: t });
    e[13] = 150; // create time 10 ms units: +1.5 s
    e.writeUInt16LE(t, 14);
    e.writeUInt16LE(d, 16);
    const r = parseDirectory(e, { fat32: false });
    assert.ok(r.ok);
    assert.equal(r.value[0]!.mtime.toISOString(), '2024-02-29T13:37:58.000Z');
    assert.equal(r.value[0]!.ctime!.toISOString(), '2024-02-29T13:37:59.500Z');
    assert.equal(r.value[0]!.atime, undefined);
    assert.equal(decodeTimestamp(0, 0)!.toISOString(), '1980-01-01T00:00:00.000Z');
    assert.equal(decodeTimestamp(0, 0, 0, true), undefined);
    assert.equal(decodeTimestamp((1 << 9) | 0, 0)!.toISOString(), '1981-01-01T00:00:00.000Z'); // month/day 0 clamped
  });

  it('a buffer that is not whole entries is a ParseError', () => {
    const r = parseDirectory(Buffer.alloc(33), { fat32: false });
    assert.ok(!r.ok && r.error.name === 'ParseError');
    const many = parseDirectory(Buffer.alloc(64), { fat32: false, maxEntries: 1 });
    assert.ok(!many.ok);
  });
});
