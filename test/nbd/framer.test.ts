/**
 * The transmission framer on its own (no sockets): a recorded request stream split at every byte offset,
 * and at random sets of offsets, frames into exactly the same requests and payload bytes; payloads are
 * views of the pushed chunks (never copies); admission comes before a WRITE's payload is taken; bad
 * magic and oversized writes stop framing for good.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import * as P from '../../src/nbd/packet.js';
import { type FramedRequest, RequestFramer } from '../../src/nbd/framer.js';

const MAX_PAYLOAD = 1 << 20;

interface Cmd {
  type: number;
  flags: number;
  handle: bigint;
  offset: number;
  length: number;
  payload?: Buffer;
}

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7) & 0xff;
  return b;
}

/** A session as a client would send it: reads, writes of several sizes (one empty), the other commands, DISC. */
const COMMANDS: Cmd[] = [
  { type: P.CMD_READ, flags: 0, handle: 1n, offset: 0, length: 4096 },
  { type: P.CMD_WRITE, flags: 0, handle: 2n, offset: 4096, length: 1000, payload: pattern(1000, 2) },
  { type: P.CMD_FLUSH, flags: 0, handle: 3n, offset: 0, length: 0 },
  { type: P.CMD_WRITE, flags: P.CMD_FLAG_FUA, handle: 0xfedcba9876543210n, offset: 2 ** 40 + 5, length: 5, payload: pattern(5, 4) },
  { type: P.CMD_TRIM, flags: 0, handle: 5n, offset: 512, length: 65536 },
  { type: P.CMD_WRITE, flags: 0, handle: 6n, offset: 8192, length: 2048, payload: pattern(2048, 6) },
  { type: P.CMD_WRITE, flags: 0, handle: 7n, offset: 10240, length: 1, payload: pattern(1, 7) },
  { type: P.CMD_BLOCK_STATUS, flags: P.CMD_FLAG_REQ_ONE, handle: 8n, offset: 0, length: 1 << 20 },
  { type: P.CMD_WRITE, flags: 0, handle: 9n, offset: 0, length: 0, payload: Buffer.alloc(0) },
  { type: P.CMD_CACHE, flags: 0, handle: 10n, offset: 0, length: 4096 },
  { type: P.CMD_WRITE_ZEROES, flags: P.CMD_FLAG_NO_HOLE, handle: 11n, offset: 4096, length: 8192 },
  { type: P.CMD_READ, flags: P.CMD_FLAG_DF, handle: 12n, offset: 12345, length: 777 },
  { type: P.CMD_DISC, flags: 0, handle: 13n, offset: 0, length: 0 },
];

/** The recorded stream, in a buffer of its own (so views of it are recognisable). */
function record(cmds: Cmd[]): Buffer {
  const parts: Buffer[] = [];
  for (const c of cmds) {
    parts.push(P.buildRequest(c.type, c.flags, c.handle, c.offset, c.length));
    if (c.payload) parts.push(c.payload);
  }
  const joined = Buffer.concat(parts);
  const own = Buffer.allocUnsafeSlow(joined.length);
  joined.copy(own);
  return own;
}

const STREAM = record(COMMANDS);

/** A framed request as plain data: header fields and its payload bytes. */
function plain(r: FramedRequest): Cmd {
  const handle = (BigInt(r.handleHi) << 32n) | BigInt(r.handleLo);
  const out: Cmd = { type: r.type, flags: r.flags, handle, offset: r.offset, length: r.length };
  if (r.type === P.CMD_WRITE) out.payload = r.payload ?? Buffer.concat(r.parts!);
  return out;
}

/** Every payload byte the framer handed out is a view of `source` (no copy). */
function assertViews(r: FramedRequest, source: Buffer): void {
  if (r.type !== P.CMD_WRITE || r.length === 0) return;
  const views = r.payload ? [r.payload] : r.parts!;
  for (const v of views) assert.equal(v.buffer, source.buffer, 'payload bytes are views of the pushed chunks');
}

/** Pushes the stream cut at `cuts` (sorted offsets), framing after each push. */
function frameAt(cuts: number[]): FramedRequest[] {
  const f = new RequestFramer(MAX_PAYLOAD);
  const out: FramedRequest[] = [];
  let prev = 0;
  for (const c of [...cuts, STREAM.length]) {
    f.push(STREAM.subarray(prev, c));
    prev = c;
    for (let r = f.next(); r !== null; r = f.next()) out.push(r);
    assert.equal(f.error, null);
  }
  assert.equal(f.buffered, false);
  assert.equal(f.partial, null);
  return out;
}

function check(cuts: number[]): void {
  const got = frameAt(cuts);
  assert.deepEqual(got.map(plain), COMMANDS, `cut at ${cuts.join(',')}`);
  for (const r of got) assertViews(r, STREAM);
}

test('framer: the recorded stream in one chunk, and in one-byte chunks', () => {
  check([]);
  const got = frameAt([]);
  // Inside one chunk a payload is one view, not a part list.
  for (const r of got) if (r.type === P.CMD_WRITE) assert.ok(r.payload !== null && r.parts === null);
  check(Array.from({ length: STREAM.length - 1 }, (_, i) => i + 1));
});

test('framer: split at every byte offset, the same requests and payload bytes', () => {
  for (let i = 1; i < STREAM.length; i++) check([i]);
});

test('framer: split at every pair of offsets around the headers, and at random offset sets', () => {
  // Every pair of cuts within a window around each header boundary (where header copying and payload
  // views meet).
  const starts: number[] = [];
  let p = 0;
  for (const c of COMMANDS) {
    starts.push(p);
    p += P.REQUEST_HEADER_LENGTH + (c.payload?.length ?? 0);
  }
  for (const s of starts) {
    const lo = Math.max(1, s - 3);
    const hi = Math.min(STREAM.length - 1, s + P.REQUEST_HEADER_LENGTH + 3);
    for (let a = lo; a <= hi; a++) for (let b = a + 1; b <= hi; b++) check([a, b]);
  }
  fc.assert(
    fc.property(fc.uniqueArray(fc.integer({ min: 1, max: STREAM.length - 1 }), { maxLength: 64 }), (cuts) => {
      check(cuts.sort((x, y) => x - y));
    }),
    { numRuns: 400, seed: 14 },
  );
});

test('framer: a request is offered to admit before its payload is taken; refused, it and what follows wait', () => {
  let allow = false;
  const offered: number[] = [];
  const f = new RequestFramer(MAX_PAYLOAD, (r) => {
    offered.push(r.handleLo);
    return allow || r.handleLo === 1;
  });
  // The READ and the WRITE header with 10 bytes of its 1000-byte payload.
  const writeAt = P.REQUEST_HEADER_LENGTH;
  f.push(STREAM.subarray(0, writeAt + P.REQUEST_HEADER_LENGTH + 10));
  assert.equal(f.next()?.handleLo, 1);
  assert.equal(f.next(), null);
  assert.equal(f.waiting?.handleLo, 2, 'the WRITE waits for admission');
  assert.equal(f.partial, null, 'its payload is not taken');
  assert.equal(f.buffered, true, 'its bytes stay queued (the owner stops reading)');
  assert.equal(f.next(), null);
  assert.deepEqual(offered, [1, 2, 2], 'a waiting request is offered again, not parsed again');
  allow = true;
  assert.equal(f.next(), null, 'admitted, the payload is incomplete');
  assert.equal((f.partial as FramedRequest | null)?.handleLo, 2);
  assert.equal(f.buffered, false, 'everything queued was used: the owner reads on');
  f.push(STREAM.subarray(writeAt + P.REQUEST_HEADER_LENGTH + 10, writeAt + P.REQUEST_HEADER_LENGTH + 1000));
  const w = f.next();
  assert.equal(w?.handleLo, 2);
  assert.deepEqual(plain(w!).payload, COMMANDS[1]!.payload);
  assert.equal(w!.parts!.length, 2);
  assert.deepEqual(offered, [1, 2, 2, 2], 'a partial write is not offered again');
});

test('framer: clear() drops queued bytes and returns the write still gathering its payload', () => {
  const f = new RequestFramer(MAX_PAYLOAD);
  f.push(STREAM.subarray(0, P.REQUEST_HEADER_LENGTH * 2 + 10));
  assert.equal(f.next()?.type, P.CMD_READ);
  assert.equal(f.next(), null);
  assert.equal(f.clear()?.handleLo, 2);
  assert.equal(f.buffered, false);
  assert.equal(f.partial, null);
  f.push(P.buildRequest(P.CMD_FLUSH, 0, 99n, 0, 0));
  assert.equal(f.next()?.handleLo, 99, 'framing goes on from a clean state');
});

test('framer: bad magic and a write over maxPayload stop framing for good', () => {
  const bad = Buffer.from(STREAM.subarray(0, 2 * P.REQUEST_HEADER_LENGTH));
  bad.writeUInt32BE(0xdeadbeef, P.REQUEST_HEADER_LENGTH);
  const f = new RequestFramer(MAX_PAYLOAD);
  f.push(bad);
  assert.equal(f.next()?.type, P.CMD_READ);
  assert.equal(f.next(), null);
  assert.equal(f.error, 'magic');
  f.push(STREAM);
  assert.equal(f.next(), null, 'nothing after bad magic is framed');
  assert.equal(f.buffered, false);

  let offered = 0;
  const g = new RequestFramer(4096, () => ++offered > 0);
  g.push(P.buildRequest(P.CMD_WRITE, 0, 1n, 0, 4097));
  assert.equal(g.next(), null);
  assert.equal(g.error, 'too-big');
  assert.equal(g.rejected?.length, 4097);
  assert.equal(offered, 0, 'an oversized write is never admitted');
});
