/** Property tests: the parser returns a Result for any input and never throws; valid parses round-trip. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parseDhcp, parseSubOptions, serializeDhcp } from '../../src/dhcp/packet.js';
import { classify } from '../../src/dhcp/pxe.js';
import { buildProxyReply } from '../../src/dhcp/reply.js';
import { loadHex, FIXTURES } from './hex.js';

const seeds = FIXTURES.map(loadHex);

/** Whatever parses must classify, build a reply and round-trip without throwing. */
function exercise(buf: Buffer): void {
  const r = parseDhcp(buf);
  assert.equal(typeof r.ok, 'boolean');
  if (!r.ok) {
    assert.equal(r.error.name, 'ParseError');
    assert.equal(typeof r.error.code, 'string');
    return;
  }
  assert.deepEqual(serializeDhcp(r.value), buf, 'unchanged message re-serializes byte for byte');
  const c = classify(r.value);
  const reply = serializeDhcp(buildProxyReply(r.value, c, { bootFile: 'x.0' }, '198.18.0.2', 'offer'));
  const back = parseDhcp(reply);
  assert.ok(back.ok, 'our own reply parses');
  assert.ok(reply.length >= 300);
  const v43 = r.value.options.find((o) => o.code === 43);
  if (v43) parseSubOptions(v43.data);
}

test('random bytes: parse returns a Result and never throws', () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 0, maxLength: 700 }), (a) => exercise(Buffer.from(a))),
    { numRuns: 3000 },
  );
});

test('random bytes behind a valid header and cookie reach the option parser', () => {
  const header = seeds[0]!.subarray(0, 240);
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 0, maxLength: 400 }), (a) => exercise(Buffer.concat([header, Buffer.from(a)]))),
    { numRuns: 3000 },
  );
});

test('mutated captures (byte flips, truncation, insertion) never throw', () => {
  const mutation = fc.record({
    seed: fc.integer({ min: 0, max: seeds.length - 1 }),
    flips: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 12 }),
    cut: fc.option(fc.nat(), { nil: undefined }),
    insert: fc.option(fc.tuple(fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 8 })), { nil: undefined }),
  });
  fc.assert(
    fc.property(mutation, ({ seed, flips, cut, insert }) => {
      let b = Buffer.from(seeds[seed]!);
      // Bias flips towards the options area where the interesting parsing is.
      for (const [pos, val] of flips) b[240 + (pos % (b.length - 240))] = val;
      if (insert) {
        const at = 240 + (insert[0] % (b.length - 240));
        b = Buffer.concat([b.subarray(0, at), Buffer.from(insert[1]), b.subarray(at)]);
      }
      if (cut !== undefined) b = b.subarray(0, cut % (b.length + 1));
      exercise(b);
    }),
    { numRuns: 5000 },
  );
});

test('sub-option parser: any bytes give a Result', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (a) => {
      const r = parseSubOptions(Buffer.from(a));
      assert.equal(typeof r.ok, 'boolean');
    }),
    { numRuns: 3000 },
  );
});

test('overloaded packets with random file/sname contents never throw and round-trip', () => {
  const base = seeds[0]!;
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 64, maxLength: 64 }),
      fc.uint8Array({ minLength: 128, maxLength: 128 }),
      fc.integer({ min: 0, max: 4 }),
      fc.uint8Array({ maxLength: 40 }),
      (sname, file, ov, rest) => {
        const b = Buffer.from(base.subarray(0, 240));
        Buffer.from(sname).copy(b, 44);
        Buffer.from(file).copy(b, 108);
        exercise(Buffer.concat([b, Buffer.from([52, 1, ov]), Buffer.from(rest)]));
      },
    ),
    { numRuns: 3000 },
  );
});
