/**
 * Property tests: random and mutated bytes into the MBR/EBR/GPT codecs and into readPartitionTable.
 * Whatever the bytes, the codecs return a Result (never throw) and readPartitionTable resolves or rejects
 * with a NetbootError subclass, in bounded time.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { MemoryBlockDevice } from '../../src/testing/memory-device.js';
import { crc32 } from '../../src/disk/crc32.js';
import { parseGptEntries, parseGptHeader } from '../../src/disk/gpt.js';
import { parseEbr, parseMbr } from '../../src/disk/mbr.js';
import { openPartition, readPartitionTable } from '../../src/disk/partitions.js';
import { NetbootError, ParseError } from '../../src/util/errors.js';
import { craftDos, craftGpt } from './craft.js';

const RUNS = Number(process.env.FUZZ_RUNS ?? 300);

function assertResult(r: { ok: boolean; error?: unknown }): void {
  assert.equal(typeof r.ok, 'boolean');
  if (!r.ok) assert.ok(r.error instanceof ParseError, `not a ParseError: ${String(r.error)}`);
}

/** Resolves or rejects with a NetbootError; anything else (TypeError, RangeError…) fails the property. */
async function readsSafely(img: Buffer, sectorSize?: 512 | 4096): Promise<void> {
  const dev = new MemoryBlockDevice(img, true);
  try {
    const tab = await readPartitionTable(dev, sectorSize ? { sectorSize } : {});
    // Whatever it returned is openable and lies inside the device.
    for (const p of tab.partitions) {
      assert.ok(p.start >= 0 && p.size > 0 && p.start + p.size <= img.length, `partition ${p.number} out of range`);
      if (!p.extended) openPartition(dev, tab, p.number);
    }
  } catch (e) {
    if (!(e instanceof NetbootError)) throw e;
    assert.ok(e.message.length > 0);
  }
}

const interesting32 = fc.oneof(
  fc.constantFrom(0, 1, 2, 0x7fffffff, 0x80000000, 0xffffffff, 34, 2048, 4096),
  fc.integer({ min: 0, max: 0xffffffff }),
  fc.integer({ min: 0, max: 256 }),
);

/** Mutations: random bytes anywhere, bytes in `hot` regions, and 32-bit fields in `hot` regions. */
function mutations(len: number, hot: Array<[number, number]>) {
  const hotPos = fc.constantFrom(...hot).chain(([a, b]) => fc.integer({ min: a, max: Math.min(b, len) - 1 }));
  return fc.array(
    fc.oneof(
      fc.record({ kind: fc.constant('byte' as const), pos: fc.integer({ min: 0, max: len - 1 }), val: fc.integer({ min: 0, max: 255 }) }),
      fc.record({ kind: fc.constant('byte' as const), pos: hotPos, val: fc.integer({ min: 0, max: 255 }) }),
      fc.record({ kind: fc.constant('u32' as const), pos: hotPos, val: interesting32 }),
    ),
    { minLength: 1, maxLength: 12 },
  );
}

type Mutation = { kind: 'byte' | 'u32'; pos: number; val: number };
function apply(base: Buffer, ms: Mutation[]): Buffer {
  const img = Buffer.from(base);
  for (const m of ms) {
    if (m.kind === 'byte') img[m.pos] = m.val;
    else if (m.pos + 4 <= img.length) img.writeUInt32LE(m.val >>> 0, m.pos);
  }
  return img;
}

/** Recomputes the CRCs of a GPT header at `at` (and of its entry array when it lies in the image). */
function fixGptCrcs(img: Buffer, at: number, ss: number): void {
  if (at + 92 > img.length) return;
  const hsize = img.readUInt32LE(at + 12);
  const entriesLba = Number(img.readBigUInt64LE(at + 72));
  const bytes = img.readUInt32LE(at + 80) * img.readUInt32LE(at + 84);
  if (entriesLba * ss + bytes <= img.length && bytes <= 1 << 20) {
    img.writeUInt32LE(crc32(img.subarray(entriesLba * ss, entriesLba * ss + bytes)), at + 88);
  }
  if (hsize >= 92 && hsize <= ss && at + hsize <= img.length) {
    img.writeUInt32LE(0, at + 16);
    img.writeUInt32LE(crc32(img.subarray(at, at + hsize)), at + 16);
  }
}

test('parseMbr / parseEbr: random sectors return a Result', () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 0, maxLength: 600 }), fc.boolean(), (bytes, sign) => {
      const b = Buffer.from(bytes);
      if (sign && b.length >= 512) {
        b[510] = 0x55;
        b[511] = 0xaa;
      }
      assertResult(parseMbr(b));
      assertResult(parseEbr(b));
    }),
    { numRuns: RUNS * 3 },
  );
});

test('parseGptHeader / parseGptEntries: random and CRC-fixed mutated headers return a Result', () => {
  const valid = craftGpt(512, 256, [
    { type: 'c12a7328-f81f-11d2-ba4b-00a0c93ec93b', guid: '11111111-1111-1111-1111-111111111111', firstLba: 40, lastLba: 99, name: 'a' },
  ]);
  const header = valid.subarray(512, 1024);
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 0, maxLength: 700 }), fc.constantFrom(512, 4096), (bytes, ss) => {
      assertResult(parseGptHeader(Buffer.from(bytes), ss));
    }),
    { numRuns: RUNS },
  );
  fc.assert(
    fc.property(mutations(512, [[8, 92]]), fc.constantFrom(512, 4096), (ms, ss) => {
      const h = apply(header, ms);
      fixGptCrcs(h, 0, 512);
      const r = parseGptHeader(h, ss);
      assertResult(r);
      if (r.ok) {
        assert.ok(r.value.entryCount * r.value.entrySize <= 1 << 20);
        assert.equal(r.value.entrySize % 128, 0);
      }
    }),
    { numRuns: RUNS },
  );
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 0, maxLength: 2048 }),
      fc.integer({ min: 0, max: 0xffffffff }),
      fc.integer({ min: 0, max: 0xffffffff }),
      fc.boolean(),
      (bytes, entryCount, entrySize, fixCrc) => {
        const buf = Buffer.from(bytes);
        const count = entryCount % 20;
        const size = entrySize % 3 === 0 ? 128 : entrySize;
        const entriesCrc = fixCrc && count * size <= buf.length ? crc32(buf.subarray(0, count * size)) : 0;
        assertResult(parseGptEntries(buf, { entryCount: count, entrySize: size, entriesCrc }));
      },
    ),
    { numRuns: RUNS },
  );
});

test('readPartitionTable: random images resolve or reject with a NetbootError', async () => {
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ minLength: 0, maxLength: 8192 }), fc.boolean(), async (bytes, sign) => {
      const b = Buffer.from(bytes);
      if (sign && b.length >= 512) {
        b[510] = 0x55;
        b[511] = 0xaa;
        b[446 + 4] = 0xee; // sometimes a protective MBR, to reach the GPT code
      }
      await readsSafely(b);
    }),
    { numRuns: RUNS, timeout: 5000 },
  );
});

test('readPartitionTable: mutated dos images with an EBR chain never throw anything but NetbootError', async () => {
  const base = craftDos(3);
  const hot: Array<[number, number]> = [[446, 512], [48 * 512 + 446, 48 * 512 + 512], [64 * 512 + 446, 64 * 512 + 512], [80 * 512 + 446, 80 * 512 + 512]];
  await fc.assert(
    fc.asyncProperty(mutations(base.length, hot), fc.constantFrom(undefined, 512 as const, 4096 as const), async (ms, ss) => {
      await readsSafely(apply(base, ms), ss);
    }),
    { numRuns: RUNS * 2, timeout: 5000 },
  );
});

test('readPartitionTable: mutated GPT images (CRCs fixed up so the deep checks run) never throw anything else', async () => {
  for (const ss of [512, 4096] as const) {
    const sectors = 128;
    const base = craftGpt(ss, sectors, [
      { type: 'c12a7328-f81f-11d2-ba4b-00a0c93ec93b', guid: '11111111-1111-1111-1111-111111111111', firstLba: 40, lastLba: 59, name: 'boot' },
      { type: '0fc63daf-8483-4772-8e79-3d69d8477de4', guid: '22222222-2222-2222-2222-222222222222', firstLba: 60, lastLba: 90, name: 'root' },
    ]);
    const last = (sectors - 1) * ss;
    const hot: Array<[number, number]> = [[446, 512], [ss, ss + 92], [2 * ss, 2 * ss + 256], [last, last + 92]];
    await fc.assert(
      fc.asyncProperty(mutations(base.length, hot), fc.boolean(), async (ms, fix) => {
        const img = apply(base, ms);
        if (fix) {
          fixGptCrcs(img, ss, ss);
          fixGptCrcs(img, last, ss);
        }
        await readsSafely(img);
        await readsSafely(img, ss);
      }),
      { numRuns: RUNS, timeout: 5000 },
    );
  }
});
