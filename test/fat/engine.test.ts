/**
 * The reader and the writer share one FAT engine: the same chain walker (the writer's FAT in memory and
 * the reader's chunk cache give the same extents and the same errors on any FAT), and the same tree
 * (`FatWriter.stat` answers as `FatVolume.stat` does, so a CLI needs only the writer on a partition).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { MemoryBlockDevice } from '../../src/testing/memory-device.js';
import { FatTable, fatEntry, walkChain, type ChainOptions } from '../../src/fat/table.js';
import { FatVolume } from '../../src/fat/volume.js';
import { FatWriter } from '../../src/fat/writer.js';
import { FAT_TOOLS, mkfsVfat, populate } from '../helpers/fatimg.js';
import { haveTools, tempDir } from '../helpers/tools.js';
import { randomFat } from './random-fat.js';

async function outcome<T>(f: () => T | Promise<T>): Promise<{ ok: T } | { error: string }> {
  try {
    return { ok: await f() };
  } catch (e) {
    const x = e as { name?: string; code?: string; message?: string };
    return { error: `${x.name} ${x.code} ${x.message}` };
  }
}

describe('one FAT engine for the reader and the writer', () => {
  it('the chain walker over a FAT in memory equals the chunk-cached one, extents and errors alike', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('FAT12', 'FAT16', 'FAT32' as const),
        fc.uint8Array({ minLength: 64, maxLength: 2048 }),
        fc.oneof(fc.integer({ min: 0, max: 250 }), fc.nat()),
        fc.nat({ max: 100000 }),
        async (type, seed, start, limit) => {
          const { fat, bpb } = randomFat(type, seed);
          // Some straight runs too, so that chains also end well instead of always hitting bad links.
          for (let c = 2; c < 200 && type !== 'FAT12'; c++) {
            if (type === 'FAT16') fat.writeUInt16LE(c % 50 === 0 ? 0xffff : c + 1, c * 2);
            else fat.writeUInt32LE(c % 50 === 0 ? 0x0fffffff : c + 1, c * 4);
          }
          const opts: ChainOptions = { limit: limit + 1, onLonger: limit % 2 ? 'stop' : 'error', what: 'x' };
          const s = start % (bpb.clusterCount + 4);
          const cached = await outcome(() => new FatTable(new MemoryBlockDevice(fat, true), bpb, 4, 'v').chain(s, opts));
          const inMemory = await outcome(() => walkChain(bpb, (c) => fatEntry(type, fat, c), s, opts, 'v'));
          assert.deepEqual(inMemory, cached);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('FatWriter.stat answers as FatVolume.stat for every path, the root and missing paths', async (t) => {
    if (!haveTools(t, ...FAT_TOOLS)) return;
    const dir = tempDir(t);
    const img = join(dir, 'fat.img');
    await mkfsVfat(img, { fat: 16, sizeKiB: 8192, clusterSectors: 1 });
    await populate(img, join(dir, 'work'), { clusterSize: 512 });
    const dev = new MemoryBlockDevice(readFileSync(img));
    const vol = await FatVolume.open(dev);
    const w = await FatWriter.open(dev);
    const paths = ['/', '', '/./nested/../nested', '/missing', '/config.txt/x', '/missing/deeper', '/CONFIG.TXT', '/MIXED~1.TXT'];
    const walk = async (d: string): Promise<void> => {
      for (const e of await vol.readdir(d)) {
        const p = d === '/' ? `/${e.name}` : `${d}/${e.name}`;
        paths.push(p, p.toUpperCase(), `${d === '/' ? '' : d}/${e.shortName}`);
        if (e.isDirectory) await walk(p);
      }
    };
    await walk('/');
    assert.ok(paths.length > 60);
    for (const p of paths) assert.deepEqual(await outcome(() => w.stat(p)), await outcome(() => vol.stat(p)), p);
    vol.close();
    w.close();
  });
});
