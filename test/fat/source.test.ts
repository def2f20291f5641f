/**
 * FileSource reads over a fragmented file: any mix of sequential small reads (served by the read-ahead
 * window), large reads, random reads and concurrent reads returns exactly the bytes mtools extracts.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BlockDevice } from '../../src/disk/blockdev.js';
import { MemoryBlockDevice } from '../../src/testing/memory-device.js';
import { FatVolume, READAHEAD_BYTES } from '../../src/fat/volume.js';
import type { FileSource } from '../../src/util/source.js';
import { IoError } from '../../src/util/errors.js';
import { haveTools, which } from '../helpers/tools.js';
import { FAT_TOOLS, mcopyOut, mkfsVfat, populate } from '../helpers/fatimg.js';
import { readAt } from './read.js';

let work = '';
let image: Buffer | undefined;
let want: Buffer | undefined;

before(async () => {
  if (FAT_TOOLS.some((t) => which(t) === null)) return;
  work = mkdtempSync(join(tmpdir(), 'netbootd-fatsrc-'));
  const img = join(work, 'fat.img');
  await mkfsVfat(img, { fat: 16, sectorSize: 512, clusterSectors: 1, sizeKiB: 8192 });
  await populate(img, join(work, 'w'), { clusterSize: 512, fragmentedSize: 3 * READAHEAD_BYTES + 12345 });
  image = readFileSync(img);
  want = await mcopyOut(img, '/frag/fragmented.bin');
});
after(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

/** Counts device reads (to see that read-ahead and extents do what they claim). */
class CountingDevice extends MemoryBlockDevice {
  reads = 0;
  override read(buf: Buffer, offset: number, length: number, position: number, cb: (err: Error | null) => void): void {
    this.reads++;
    super.read(buf, offset, length, position, cb);
  }
}

/** Fails the `failAt`-th read (1-based) with an IoError EIO. */
class FailingDevice extends MemoryBlockDevice {
  reads = 0;
  failAt = 0;
  override read(buf: Buffer, offset: number, length: number, position: number, cb: (err: Error | null) => void): void {
    if (++this.reads === this.failAt) {
      process.nextTick(cb, new IoError('EIO', 'injected failure'));
      return;
    }
    super.read(buf, offset, length, position, cb);
  }
}

async function source(dev: BlockDevice): Promise<{ vol: FatVolume; src: FileSource }> {
  const vol = await FatVolume.open(dev);
  return { vol, src: await vol.open('/frag/fragmented.bin') };
}

describe('FatFileSource reads', () => {
  it('sequential TFTP-sized reads: exact bytes, few device reads', async (t) => {
    if (!haveTools(t, ...FAT_TOOLS)) return;
    const dev = new CountingDevice(Buffer.from(image!), true);
    const { vol, src } = await source(dev);
    const extents = (await vol.extents('/frag/fragmented.bin')).length;
    assert.ok(extents > 5);
    const before = dev.reads;
    const out = Buffer.alloc(src.size);
    for (let pos = 0; pos < src.size; pos += 1468) {
      const got = await readAt(src, 1468, pos);
      got.copy(out, pos);
    }
    assert.ok(out.equals(want!));
    const blocks = Math.ceil(src.size / 1468);
    // One device read per extent piece of each read-ahead window: far fewer than one per block.
    assert.ok(dev.reads - before <= extents + 2 * Math.ceil(src.size / READAHEAD_BYTES) + 2, `${dev.reads - before} device reads for ${blocks} blocks`);
    src.close();
    await assert.rejects(readAt(src, 10, 0), { name: 'IoError', code: 'EBADF' });
  });

  it('a large read spanning extents issues one device read per extent piece', async (t) => {
    if (!haveTools(t, ...FAT_TOOLS)) return;
    const dev = new CountingDevice(Buffer.from(image!), true);
    const { vol, src } = await source(dev);
    const extents = await vol.extents('/frag/fragmented.bin');
    const before = dev.reads;
    const got = await readAt(src, src.size, 0);
    assert.ok(got.equals(want!));
    assert.equal(dev.reads - before, extents.length);
  });

  it('random mixes of reads, also concurrent ones, equal the mtools bytes', async (t) => {
    if (!haveTools(t, ...FAT_TOOLS)) return;
    const dev = new MemoryBlockDevice(Buffer.from(image!), true);
    const { src } = await source(dev);
    const size = src.size;
    const op = fc.oneof(
      fc.record({ pos: fc.nat({ max: size + 100 }), len: fc.nat({ max: 3000 }) }),
      fc.record({ pos: fc.nat({ max: size }), len: fc.integer({ min: 60000, max: 300000 }) }),
      fc.record({ pos: fc.constant(-1), len: fc.integer({ min: 1, max: 65536 }) }), // continue sequentially
    );
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(op, { minLength: 1, maxLength: 6 }), { minLength: 1, maxLength: 20 }), async (batches) => {
        let next = 0;
        for (const batch of batches) {
          // Each batch runs concurrently, like a windowed TFTP transfer.
          await Promise.all(
            batch.map(async ({ pos, len }) => {
              const p = pos === -1 ? next : pos;
              if (pos === -1) next = Math.min(size, next + len);
              const got = await readAt(src, len, p);
              const exp = want!.subarray(Math.min(p, size), Math.min(p + len, size));
              assert.ok(got.equals(exp), `read ${len} at ${p}`);
            }),
          );
        }
      }),
      { numRuns: 200 },
    );
  });

  it('a device error in one piece of a fragmented read is reported once, and only it', async (t) => {
    if (!haveTools(t, ...FAT_TOOLS)) return;
    const dev = new FailingDevice(Buffer.from(image!), true);
    const { src } = await source(dev);
    for (const failAt of [1, 3, 7]) {
      dev.reads = 0;
      dev.failAt = failAt;
      const buf = Buffer.alloc(src.size);
      const calls: (Error | null)[] = [];
      await new Promise<void>((resolve) => {
        src.read(buf, 0, src.size, 0, (e) => {
          calls.push(e);
          setTimeout(resolve, 20); // give stray completions time to (wrongly) call back again
        });
      });
      assert.equal(calls.length, 1);
      assert.equal((calls[0] as { code?: string } | null)?.code, 'EIO');
    }
  });

  it('bad arguments are IoError EINVAL; a 0-byte file reads 0', async (t) => {
    if (!haveTools(t, ...FAT_TOOLS)) return;
    const { vol, src } = await source(new MemoryBlockDevice(Buffer.from(image!), true));
    const b = Buffer.alloc(10);
    for (const [off, len, pos] of [[-1, 1, 0], [0, 11, 0], [0, 1, -5], [0, 1.5, 0], [0, 1, Number.NaN]] as const) {
      await assert.rejects(
        new Promise((res, rej) => src.read(b, off, len, pos, (e, n) => (e ? rej(e) : res(n)))),
        { name: 'IoError', code: 'EINVAL' },
      );
    }
    const empty = await vol.open('/empty');
    assert.equal(empty.size, 0);
    assert.equal((await readAt(empty, 10, 0)).length, 0);
  });
});
