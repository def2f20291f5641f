/**
 * Property tests: random and mutated bytes into the BPB and directory parsers, and mutated images under
 * FatVolume (open, a bounded walk of the tree, reading every file). Only NetbootError subclasses may come
 * out, and every run must finish (a run that takes longer than a few seconds counts as a hang).
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryBlockDevice } from '../../src/testing/memory-device.js';
import { parseBootSector, type Bpb } from '../../src/fat/bpb.js';
import { parseDirectory } from '../../src/fat/dir.js';
import { FatTable, extentsOverlap } from '../../src/fat/table.js';
import { FatVolume } from '../../src/fat/volume.js';
import { NetbootError, ParseError } from '../../src/util/errors.js';
import { haveTools, which } from '../helpers/tools.js';
import { FAT_TOOLS, mcopyIn, mkfsVfat, mmd, prng, randomBytes } from '../helpers/fatimg.js';
import { randomFat } from './random-fat.js';

interface Img {
  data: Buffer;
  bpb: Bpb;
}
const images: Record<string, Img> = {};
let work = '';

before(async () => {
  if (FAT_TOOLS.some((t) => which(t) === null)) return;
  work = mkdtempSync(join(tmpdir(), 'netbootd-fatfuzz-'));
  const rand = prng(7);
  const src = join(work, 'src');
  mkdirSync(join(src, 'dir', 'sub'), { recursive: true });
  writeFileSync(join(src, 'a long file name.bin'), randomBytes(rand, 5000));
  writeFileSync(join(src, 'SHORT.TXT'), 'short\n');
  writeFileSync(join(src, 'dir', 'Ünïcødé.txt'), randomBytes(rand, 1500));
  writeFileSync(join(src, 'dir', 'sub', 'empty'), '');
  for (let i = 0; i < 12; i++) writeFileSync(join(src, 'dir', `file ${i}.dat`), randomBytes(rand, 100 + i * 300));
  for (const [name, fat, kib, s] of [['FAT12', 12, 512, 1], ['FAT16', 16, 4200, 1], ['FAT32', 32, 34000, 1]] as const) {
    const img = join(work, `${name}.img`);
    await mkfsVfat(img, { fat, sectorSize: 512, clusterSectors: s, sizeKiB: kib, label: 'FUZZ' });
    await mcopyIn(img, ['a long file name.bin', 'SHORT.TXT', 'dir'].map((n) => join(src, n)), '::/', { recursive: true });
    await mmd(img, ['/emptydir']);
    const data = readFileSync(img);
    const r = parseBootSector(data.subarray(0, 512), data.length);
    assert.ok(r.ok);
    images[name] = { data, bpb: r.value };
  }
});
after(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

/** Error codes seen by the volume runs (reported as a diagnostic: shows the mutations reach deep). */
const seen = new Map<string, number>();

function onlyTyped(e: unknown): void {
  if (!(e instanceof NetbootError)) throw new Error(`untyped error escaped: ${String((e as Error)?.stack ?? e)}`);
  seen.set(e.code, (seen.get(e.code) ?? 0) + 1);
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`hang: ${what} did not finish in ${ms} ms`)), ms);
    }),
  ]);
}

/** Opens the volume, walks a bounded part of the tree, reads every file it meets. */
async function exercise(dev: MemoryBlockDevice): Promise<number> {
  let vol: FatVolume;
  try {
    vol = await FatVolume.open(dev);
  } catch (e) {
    onlyTyped(e);
    return 0;
  }
  let visited = 0;
  let bytes = 0;
  const buf = Buffer.alloc(8192);
  const walk = async (path: string, depth: number): Promise<void> => {
    if (depth > 6 || visited > 300) return;
    let list;
    try {
      list = await vol.readdir(path);
    } catch (e) {
      onlyTyped(e);
      return;
    }
    for (const e of list) {
      if (++visited > 300) return;
      const p = `${path === '/' ? '' : path}/${e.name}`;
      try {
        await vol.stat(p);
        if (e.isDirectory) {
          await walk(p, depth + 1);
          continue;
        }
        const src = await vol.open(p);
        for (let pos = 0; pos < src.size && bytes < 4 << 20; pos += buf.length) {
          const n = await new Promise<number>((res, rej) => src.read(buf, 0, buf.length, pos, (err, k) => (err ? rej(err) : res(k))));
          assert.equal(n, Math.min(buf.length, src.size - pos));
          bytes += n;
        }
        src.close();
      } catch (err) {
        onlyTyped(err);
      }
    }
  };
  await walk('/', 0);
  vol.close();
  return visited;
}

describe('BPB parser', () => {
  it('random bytes: Result, never a throw', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 1024 }), fc.option(fc.nat()), (bytes, size) => {
        const r = parseBootSector(Buffer.from(bytes), size ?? undefined);
        if (!r.ok) assert.ok(r.error instanceof ParseError);
      }),
      { numRuns: 3000 },
    );
  });

  it('mutated real boot sectors: ParseError or a self-consistent geometry', (t) => {
    if (!haveTools(t, ...FAT_TOOLS)) return;
    const sectors = Object.values(images).map((i) => i.data.subarray(0, 512));
    fc.assert(
      fc.property(
        fc.nat({ max: sectors.length - 1 }),
        fc.array(fc.tuple(fc.nat({ max: 511 }), fc.nat({ max: 255 })), { minLength: 1, maxLength: 8 }),
        (which, muts) => {
          const b = Buffer.from(sectors[which]!);
          for (const [i, v] of muts) b[i] = v;
          const r = parseBootSector(b, 64 << 20);
          if (!r.ok) {
            assert.ok(r.error instanceof ParseError);
            return;
          }
          const g = r.value;
          assert.equal(g.type, g.clusterCount < 4085 ? 'FAT12' : g.clusterCount < 65525 ? 'FAT16' : 'FAT32');
          assert.ok(g.dataOffset + g.clusterCount * g.clusterSize <= g.volumeBytes);
          assert.ok(g.volumeBytes <= 64 << 20);
          assert.ok(g.fatOffset + g.fatBytes <= g.dataOffset);
          if (g.type === 'FAT32') assert.ok(g.rootCluster >= 2 && g.rootCluster <= g.maxCluster);
          else assert.ok(g.rootDirBytes > 0 && g.rootDirOffset + g.rootDirBytes <= g.dataOffset);
        },
      ),
      { numRuns: 3000 },
    );
  });
});

describe('directory parser', () => {
  it('random bytes: Result, never a throw; bounded output', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 4096 }), fc.boolean(), (bytes, fat32) => {
        const r = parseDirectory(Buffer.from(bytes), { fat32 });
        if (!r.ok) {
          assert.ok(r.error instanceof ParseError);
          assert.notEqual(bytes.length % 32, 0);
          return;
        }
        assert.ok(r.value.length <= bytes.length / 32);
        for (const e of r.value) {
          assert.equal(typeof e.name, 'string');
          assert.ok(e.size >= 0 && e.firstCluster >= 0 && !Number.isNaN(e.mtime.getTime()));
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('mutated real directories (long names, labels, deleted entries): never a throw', (t) => {
    if (!haveTools(t, ...FAT_TOOLS)) return;
    const { data, bpb } = images.FAT16!;
    const root = data.subarray(bpb.rootDirOffset, bpb.rootDirOffset + 32 * 64);
    const clean = parseDirectory(root, { fat32: false });
    assert.ok(clean.ok);
    assert.ok(clean.value.some((e) => e.name === 'a long file name.bin'));
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat({ max: root.length - 1 }), fc.nat({ max: 255 })), { minLength: 1, maxLength: 16 }), (muts) => {
        const b = Buffer.from(root);
        for (const [i, v] of muts) b[i] = v;
        const r = parseDirectory(b, { fat32: false });
        assert.ok(r.ok);
        assert.ok(r.value.length <= 64);
      }),
      { numRuns: 3000 },
    );
  });
});

describe('FAT table', () => {
  it('chains over random FATs terminate with extents or CorruptError', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('FAT12', 'FAT16', 'FAT32' as const),
        fc.uint8Array({ minLength: 64, maxLength: 2048 }),
        fc.nat(),
        fc.nat({ max: 100000 }),
        async (type, seed, start, limit) => {
          // A FAT made of the random bytes repeated: lots of short cycles and wild links.
          const { fat, bpb } = randomFat(type, seed);
          const clusterCount = bpb.clusterCount;
          const table = new FatTable(new MemoryBlockDevice(fat, true), bpb, 4);
          try {
            const c = await table.chain(start % (clusterCount + 4), { limit: limit + 1, onLonger: limit % 2 ? 'stop' : 'error', what: 'fuzz' });
            assert.ok(c.clusters <= Math.min(limit + 1, clusterCount));
            assert.ok(!extentsOverlap(c.extents));
          } catch (e) {
            onlyTyped(e);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('FatVolume over mutated images', () => {
  for (const name of ['FAT12', 'FAT16', 'FAT32']) {
    it(`${name}: only typed errors, always terminates`, async (t) => {
      if (!haveTools(t, ...FAT_TOOLS)) return;
      const img = images[name]!;
      // Mutations land in the metadata (boot sector, FATs, root) and the first data clusters, where the
      // directories and the start of every file live.
      const span = Math.min(img.data.length, img.bpb.dataOffset + 96 * img.bpb.clusterSize);
      const clean = await exercise(new MemoryBlockDevice(Buffer.from(img.data)));
      assert.ok(clean > 15, `the clean image walks (${clean} entries)`);
      const work = Buffer.from(img.data);
      await fc.assert(
        fc.asyncProperty(
          fc.array(
            fc.oneof(
              fc.tuple(fc.constant('byte' as const), fc.nat({ max: span - 1 }), fc.nat({ max: 0xff })),
              // A 32-bit value at an aligned place: cluster links, sizes, first clusters.
              fc.tuple(fc.constant('u32' as const), fc.nat({ max: Math.floor(span / 4) - 1 }), fc.nat({ max: 0xffffffff })),
              // A FAT entry pointing back at an earlier cluster (cycles).
              fc.tuple(fc.constant('link' as const), fc.nat({ max: 200 }), fc.nat({ max: 200 })),
            ),
            { minLength: 1, maxLength: 10 },
          ),
          async (muts) => {
            const saved: [number, Buffer][] = [];
            const patch = (off: number, bytes: Buffer): void => {
              if (off < 0 || off + bytes.length > work.length) return;
              saved.push([off, Buffer.from(work.subarray(off, off + bytes.length))]);
              bytes.copy(work, off);
            };
            for (const [kind, a, b] of muts) {
              if (kind === 'byte') patch(a, Buffer.from([b]));
              else if (kind === 'u32') {
                const v = Buffer.alloc(4);
                v.writeUInt32LE(b);
                patch(a * 4, v);
              } else {
                const { type, fatOffset } = img.bpb;
                const c = a + 2;
                const v = Buffer.alloc(4);
                if (type === 'FAT32') {
                  v.writeUInt32LE(b + 2);
                  patch(fatOffset + c * 4, v);
                } else if (type === 'FAT16') {
                  patch(fatOffset + c * 2, Buffer.from([(b + 2) & 0xff, (b + 2) >> 8]));
                } else {
                  const off = fatOffset + c + (c >>> 1);
                  const cur = work.readUInt16LE(off);
                  const nv = c & 1 ? (cur & 0x000f) | ((b + 2) << 4) : (cur & 0xf000) | (b + 2);
                  patch(off, Buffer.from([nv & 0xff, (nv >> 8) & 0xff]));
                }
              }
            }
            try {
              await withTimeout(exercise(new MemoryBlockDevice(work, true)), 10_000, 'walk of a mutated image');
            } finally {
              for (let i = saved.length - 1; i >= 0; i--) saved[i]![1].copy(work, saved[i]![0]);
            }
          },
        ),
        { numRuns: name === 'FAT32' ? 300 : 500 },
      );
      t.diagnostic(`${name} error codes: ${[...seen].map(([k, v]) => `${k}=${v}`).join(' ')}`);
      seen.clear();
      assert.ok(work.equals(img.data), 'mutations were undone');
    });
  }
});
