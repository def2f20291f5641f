/**
 * Transfer engine, driven by a scripted raw UDP client: option negotiation, lockstep and windowed
 * semantics, rollover, duplicate ACKs, unknown TIDs, retransmission on timeout, errors and limits.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildAck, buildRequest, buildError, OP_RRQ, OP_WRQ, OP_DATA, OP_OACK, OP_ERROR, type Packet } from '../../src/tftp/packet.js';
import { negotiate, DEFAULT_LIMITS } from '../../src/tftp/server.js';
import { RawClient, download } from './raw-client.js';
import { MapResolver, startServer, pattern } from './helpers.js';

const opt = (name: string, value: string) => ({ name, value });

function asData(p: Packet): { block: number; data: Buffer } {
  assert.equal(p.op, OP_DATA, `expected DATA, got ${JSON.stringify(p)}`);
  return p as { block: number; data: Buffer };
}

test('negotiate: only requested, understood, valid options are answered; caps apply', () => {
  const L = { ...DEFAULT_LIMITS, maxBlksize: 1468, maxWindowsize: 64 };
  const o = (k: string, v: string) => ({ name: k, key: k.toLowerCase(), value: v });
  let n = negotiate([o('BLKSIZE', '65464'), o('TSize', '0'), o('Timeout', '255'), o('windowSIZE', '65535'), o('foo', 'bar')], 'octet', 1234, L);
  assert.deepEqual(n.oack, [opt('BLKSIZE', '1468'), opt('TSize', '1234'), opt('Timeout', '255'), opt('windowSIZE', '64')]);
  assert.equal(n.blksize, 1468);
  assert.equal(n.windowsize, 64);
  assert.equal(n.timeoutMs, 255_000);
  // Out of range or not numbers: ignored, not answered.
  n = negotiate([o('blksize', '7'), o('timeout', '0'), o('timeout', '256'), o('windowsize', '0'), o('blksize', 'x')], 'octet', 1, L);
  assert.deepEqual(n.oack, []);
  n = negotiate([o('timeout', '256')], 'octet', 1, L);
  assert.deepEqual(n.oack, []);
  // Netascii: no tsize, no windowsize.
  n = negotiate([o('tsize', '0'), o('windowsize', '4'), o('blksize', '1024')], 'netascii', 10, L);
  assert.deepEqual(n.oack, [opt('blksize', '1024')]);
  assert.equal(n.windowsize, 1);
  // Window memory cap.
  n = negotiate([o('blksize', '65464'), o('windowsize', '64')], 'octet', 1, { ...L, maxBlksize: 65464, maxWindowBytes: 1 << 20 });
  assert.deepEqual(n.oack, [opt('blksize', '65464'), opt('windowsize', '16')]);
});

test('no options: DATA 1 straight away, lockstep to a final empty block for an exact multiple', async (t) => {
  const file = pattern(1024, 3);
  const s = await startServer(t, new MapResolver(new Map([['two', file]])));
  const c = await RawClient.open();
  t.after(() => c.close());
  c.send(buildRequest(OP_RRQ, '/two', 'octet'), s.port);
  const r1 = await c.recvPacket();
  assert.notEqual(r1.port, s.port, 'the transfer answers from its own port');
  assert.deepEqual(asData(r1.p), { op: OP_DATA, block: 1, data: file.subarray(0, 512) });
  c.send(buildAck(1), r1.port);
  const r2 = await c.recvPacket();
  assert.equal(asData(r2.p).block, 2);
  c.send(buildAck(2), r1.port);
  const r3 = await c.recvPacket();
  assert.deepEqual(asData(r3.p), { op: OP_DATA, block: 3, data: Buffer.alloc(0) });
  c.send(buildAck(3), r1.port);
  const done = await s.nextTransfer();
  assert.equal(done.outcome, 'complete');
  assert.equal(done.bytes, 1024);
  assert.equal(done.path, 'two');
  assert.ok(s.lines.some((l) => l.msg === 'file sent' && l.ip === '127.0.0.1' && l.path === 'two' && l.level === 30));
});

test('a zero-byte file is one empty DATA block', async (t) => {
  const s = await startServer(t, new MapResolver(new Map([['empty', Buffer.alloc(0)]])));
  const r = await download(s.port, 'empty', { tsize: true });
  assert.equal(r.data.length, 0);
  assert.deepEqual(r.oack, { tsize: '0' });
});

test('OACK echoes spelling, waits for ACK 0, is retransmitted on timeout, and a duplicate ACK 0 is ignored', async (t) => {
  const file = pattern(3000, 4);
  const s = await startServer(t, new MapResolver(new Map([['f', file]])), { defaultTimeoutMs: 150 });
  const c = await RawClient.open();
  t.after(() => c.close());
  c.send(buildRequest(OP_RRQ, 'f', 'OcTeT', [opt('BlkSize', '1000'), opt('TSIZE', '0'), opt('unknown', '1')]), s.port);
  const o1 = await c.recv();
  assert.deepEqual(o1.msg, Buffer.from('\x00\x06BlkSize\x001000\x00TSIZE\x003000\x00', 'latin1'));
  // No ACK 0: the OACK comes again after the timeout, identical.
  const o2 = await c.recv(1000);
  assert.deepEqual(o2.msg, o1.msg);
  assert.equal(o2.port, o1.port);
  c.send(buildAck(0), o1.port);
  const d1 = asData((await c.recvPacket()).p);
  assert.deepEqual(d1, { op: OP_DATA, block: 1, data: file.subarray(0, 1000) });
  c.send(buildAck(0), o1.port); // duplicate ACK 0: must not resend DATA 1
  c.send(buildAck(1), o1.port);
  const d2 = asData((await c.recvPacket()).p);
  assert.equal(d2.block, 2);
  assert.deepEqual(await c.drain(80), [], 'no duplicate DATA');
  c.send(buildAck(2), o1.port);
  const d3 = asData((await c.recvPacket()).p);
  assert.equal(d3.block, 3);
  assert.equal(d3.data.length, 1000);
  c.send(buildAck(3), o1.port);
  const d4 = asData((await c.recvPacket()).p);
  assert.deepEqual(d4, { op: OP_DATA, block: 4, data: Buffer.alloc(0) });
  c.send(buildAck(4), o1.port);
  assert.equal((await s.nextTransfer()).outcome, 'complete');
});

test('duplicate ACKs never trigger a resend (Sorcerer\'s Apprentice); only the timeout does, a bounded number of times', async (t) => {
  const file = pattern(2000, 5);
  const s = await startServer(t, new MapResolver(new Map([['f', file]])), { defaultTimeoutMs: 200, retries: 2 });
  const c = await RawClient.open();
  t.after(() => c.close());
  c.send(buildRequest(OP_RRQ, 'f', 'octet'), s.port);
  const r1 = await c.recvPacket();
  assert.equal(asData(r1.p).block, 1);
  c.send(buildAck(1), r1.port);
  c.send(buildAck(1), r1.port);
  c.send(buildAck(1), r1.port);
  const r2 = await c.recvPacket();
  assert.equal(asData(r2.p).block, 2);
  // Within the timeout nothing else comes, despite the duplicate ACKs.
  assert.deepEqual(await c.drain(120), []);
  // Then the retransmissions of block 2, exactly `retries` of them, then silence.
  const re1 = await c.recvPacket(1000);
  assert.equal(asData(re1.p).block, 2);
  const re2 = await c.recvPacket(1000);
  assert.equal(asData(re2.p).block, 2);
  const end = await s.nextTransfer();
  assert.equal(end.outcome, 'timeout');
  assert.equal(end.retransmits, 2);
  assert.deepEqual(await c.drain(300), []);
  assert.ok(!s.lines.some((l) => l.level >= 40), 'a timeout is not a warning');
});

test('a packet from an unknown TID gets ERROR 5 and the transfer carries on', async (t) => {
  const file = pattern(1500, 6);
  const s = await startServer(t, new MapResolver(new Map([['f', file]])));
  const c = await RawClient.open();
  const intruder = await RawClient.open();
  t.after(() => {
    c.close();
    intruder.close();
  });
  c.send(buildRequest(OP_RRQ, 'f', 'octet'), s.port);
  const r1 = await c.recvPacket();
  intruder.send(buildAck(1), r1.port);
  const e = await intruder.recvPacket();
  assert.equal(e.p.op, OP_ERROR);
  assert.equal((e.p as { code: number }).code, 5);
  assert.deepEqual(await c.drain(50), [], 'the intruder\'s ACK did not advance the transfer');
  const chunks = [asData(r1.p).data];
  let block = 1;
  for (;;) {
    c.send(buildAck(block), r1.port);
    const d = asData((await c.recvPacket()).p);
    assert.equal(d.block, block + 1);
    chunks.push(d.data);
    block++;
    if (d.data.length < 512) break;
  }
  c.send(buildAck(block), r1.port);
  assert.deepEqual(Buffer.concat(chunks), file);
  assert.equal((await s.nextTransfer()).outcome, 'complete');
});

test('windowsize: full windows, an ACK inside the window resends from the next block, a repeated ACK does nothing', async (t) => {
  const file = pattern(512 * 20 + 7, 7);
  const s = await startServer(t, new MapResolver(new Map([['f', file]])), { defaultTimeoutMs: 5000 });
  const c = await RawClient.open();
  t.after(() => c.close());
  c.send(buildRequest(OP_RRQ, 'f', 'octet', [opt('windowsize', '4')]), s.port);
  const o = await c.recvPacket();
  assert.equal(o.p.op, OP_OACK);
  const tid = o.port;
  const blocks = async (n: number): Promise<number[]> => {
    const got: number[] = [];
    for (let i = 0; i < n; i++) {
      const d = asData((await c.recvPacket()).p);
      assert.deepEqual(d.data, file.subarray((d.block - 1) * 512, d.block * 512));
      got.push(d.block);
    }
    return got;
  };
  c.send(buildAck(0), tid);
  assert.deepEqual(await blocks(4), [1, 2, 3, 4]);
  assert.deepEqual(await c.drain(50), []);
  c.send(buildAck(2), tid); // 3 and 4 "lost": resend from 3
  assert.deepEqual(await blocks(4), [3, 4, 5, 6]);
  c.send(buildAck(6), tid);
  assert.deepEqual(await blocks(4), [7, 8, 9, 10]);
  c.send(buildAck(6), tid); // stale/duplicate: ignored
  assert.deepEqual(await c.drain(80), []);
  c.send(buildAck(10), tid);
  assert.deepEqual(await blocks(4), [11, 12, 13, 14]);
  c.send(buildAck(14), tid);
  assert.deepEqual(await blocks(4), [15, 16, 17, 18]);
  c.send(buildAck(18), tid);
  assert.deepEqual(await blocks(3), [19, 20, 21]); // 21 is the short final block
  assert.deepEqual(await c.drain(50), []);
  c.send(buildAck(21), tid);
  const done = await s.nextTransfer();
  assert.equal(done.outcome, 'complete');
  assert.equal(done.bytes, file.length);
  assert.equal(done.windowsize, 4);
});

test('block numbers roll over past 65535 to 0 (windowed, blksize 8)', async (t) => {
  const size = 8 * 65536 + 100; // blksize 8: 65549 blocks
  const file = pattern(size, 8);
  const s = await startServer(t, new MapResolver(new Map([['big', file]])), { maxBlksize: 8, maxWindowsize: 64 });
  const r = await download(s.port, 'big', { blksize: 8, windowsize: 64, tsize: true });
  assert.equal(r.oack?.['windowsize'], '64');
  assert.equal(r.blocks, 65549);
  assert.equal(r.wraps, 1);
  assert.ok(r.data.equals(file));
  // Lockstep rollover (65536+ round trips) is proven by the interop tests with 33 MiB at blksize 512.
});

test('netascii converts LF and CR with carry-over across block boundaries', async (t) => {
  const text = Buffer.from('a\nbcdefg\r\nh\rijklmn\n\n\n\rxyz\n', 'latin1');
  const conv = Buffer.from(text.toString('latin1').replace(/\r/g, '\r\0').replace(/\n/g, '\r\n'), 'latin1');
  const s = await startServer(t, new MapResolver(new Map([['t.txt', text]])));
  for (const blksize of [8, 9, 10, 512]) {
    const r = await download(s.port, 't.txt', { mode: 'netascii', blksize, tsize: true, windowsize: 4 });
    assert.deepEqual(r.data, conv, `blksize ${blksize}`);
    assert.deepEqual(r.oack, { blksize: String(blksize) }, 'no tsize or windowsize in netascii');
  }
  // Exactly a multiple of the block size after conversion: a final empty block.
  const exact = Buffer.from('abc\ndef', 'latin1'); // 8 bytes converted
  const s2 = await startServer(t, new MapResolver(new Map([['e', exact]])));
  const r = await download(s2.port, 'e', { mode: 'netascii', blksize: 8 });
  assert.deepEqual(r.data, Buffer.from('abc\r\ndef', 'latin1'));
  assert.equal(r.blocks, 2);
});

test('refusals: WRQ is ERROR 2, malformed is ERROR 4, ".." is ERROR 2, missing is ERROR 1, mail mode is ERROR 4', async (t) => {
  const resolver = new MapResolver(new Map([['f', Buffer.from('x')]]));
  const s = await startServer(t, resolver);
  const c = await RawClient.open();
  t.after(() => c.close());
  const ask = async (b: Buffer): Promise<{ code: number; port: number }> => {
    c.send(b, s.port);
    const r = await c.recvPacket();
    assert.equal(r.p.op, OP_ERROR);
    return { code: (r.p as { code: number }).code, port: r.port };
  };
  assert.equal((await ask(buildRequest(OP_WRQ, 'f', 'octet'))).code, 2);
  assert.equal((await ask(Buffer.from('\x00\x01f\x00', 'latin1'))).code, 4);
  assert.equal((await ask(buildRequest(OP_RRQ, '../etc/passwd', 'octet'))).code, 2);
  assert.equal((await ask(buildRequest(OP_RRQ, 'a/\x01b', 'octet'))).code, 2);
  assert.equal((await ask(buildRequest(OP_RRQ, 'f', 'mail'))).code, 4);
  const nf = await ask(buildRequest(OP_RRQ, 'nope', 'octet'));
  assert.equal(nf.code, 1);
  assert.notEqual(nf.port, s.port, 'not found comes from a transfer socket');
  // Paths reach the resolver normalized.
  c.send(buildRequest(OP_RRQ, '\\\\abc//def\\x', 'octet'), s.port);
  await c.recvPacket();
  assert.equal(resolver.requests.at(-1)?.path, 'abc/def/x');
  assert.ok(s.lines.some((l) => l.msg === 'file not found' && l.ip === '127.0.0.1' && l.path === 'nope'));
});

test('client ERROR ends the transfer quietly; a retransmitted RRQ does not start a second transfer', async (t) => {
  const s = await startServer(t, new MapResolver(new Map([['f', pattern(5000, 10)]])));
  const c = await RawClient.open();
  t.after(() => c.close());
  const rrq = buildRequest(OP_RRQ, 'f', 'octet', [opt('tsize', '0')]);
  c.send(rrq, s.port);
  c.send(rrq, s.port);
  const o = await c.recvPacket();
  assert.equal(o.p.op, OP_OACK);
  assert.deepEqual(await c.drain(100), [], 'one transfer only');
  assert.equal(s.server.stats().active, 1);
  c.send(buildError(0, 'Early terminate'), o.port);
  const end = await s.nextTransfer();
  assert.equal(end.outcome, 'client-error');
  assert.equal(s.server.stats().active, 0);
  const ended = s.lines.find((l) => l.msg === 'transfer ended by client');
  assert.equal(ended?.level, 20);
});

test('limits: per-client and total transfers are enforced with ERROR 0; the slot frees when a transfer ends', async (t) => {
  const s = await startServer(t, new MapResolver(new Map([['f', pattern(5000, 11)]])), { maxPerClient: 2, maxTransfers: 3 });
  const cs = await Promise.all([1, 2, 3].map(() => RawClient.open()));
  t.after(() => cs.forEach((c) => c.close()));
  const [a, b, c] = cs as [RawClient, RawClient, RawClient];
  a.send(buildRequest(OP_RRQ, 'f', 'octet'), s.port);
  const ra = await a.recvPacket();
  b.send(buildRequest(OP_RRQ, 'f', 'octet'), s.port);
  await b.recvPacket();
  c.send(buildRequest(OP_RRQ, 'f', 'octet'), s.port);
  const rc = await c.recvPacket();
  assert.equal(rc.p.op, OP_ERROR);
  assert.equal((rc.p as { code: number }).code, 0);
  a.send(buildError(0, 'bye'), ra.port);
  await s.nextTransfer();
  c.send(buildRequest(OP_RRQ, 'f', 'octet'), s.port);
  const rc2 = await c.recvPacket();
  assert.equal(rc2.p.op, OP_DATA);
});

test('close() aborts running transfers with an ERROR and stops accepting', async (t) => {
  const s = await startServer(t, new MapResolver(new Map([['f', pattern(5000, 12)]])));
  const c = await RawClient.open();
  t.after(() => c.close());
  c.send(buildRequest(OP_RRQ, 'f', 'octet'), s.port);
  const r = await c.recvPacket();
  assert.equal(r.p.op, OP_DATA);
  await s.server.close();
  const e = await c.recvPacket();
  assert.equal(e.p.op, OP_ERROR);
  assert.equal(s.server.stats().active, 0);
});

test('a resolver that throws or rejects is answered "not found", logged, and the server keeps serving', async (t) => {
  let mode = 0;
  const resolver = {
    resolve(req: { path: string }) {
      if (mode === 0) throw new Error('sync boom');
      if (mode === 1) return Promise.reject(new Error('async boom'));
      return new MapResolver(new Map([['f', Buffer.from('ok')]])).resolve({ address: '', port: 0, path: req.path });
    },
  };
  const s = await startServer(t, resolver as never);
  const c = await RawClient.open();
  t.after(() => c.close());
  for (mode = 0; mode < 2; mode++) {
    c.send(buildRequest(OP_RRQ, 'f', 'octet'), s.port);
    const r = await c.recvPacket();
    assert.equal(r.p.op, OP_ERROR);
    assert.equal((r.p as { code: number }).code, 1);
  }
  const ok = await download(s.port, 'f');
  assert.equal(ok.data.toString(), 'ok');
  assert.equal(s.lines.filter((l) => l.msg === 'tftp resolve failed' && l.level === 40).length, 2);
});

test('retransmissions back off when no timeout was negotiated, and use the negotiated timeout exactly otherwise', async (t) => {
  const s = await startServer(t, new MapResolver(new Map([['f', pattern(2000, 13)]])), { defaultTimeoutMs: 100, retries: 3 });
  const c = await RawClient.open();
  t.after(() => c.close());
  c.send(buildRequest(OP_RRQ, 'f', 'octet'), s.port);
  const t0 = Date.now();
  await c.recvPacket();
  const at: number[] = [];
  for (let i = 0; i < 3; i++) {
    await c.recvPacket(2000);
    at.push(Date.now() - t0);
  }
  // Waits of 100, 200, 400 ms: arrivals near 100, 300, 700 (lower bounds only: timers may run late).
  assert.ok(at[0]! >= 90 && at[1]! >= 280 && at[2]! >= 650, `backoff: ${at.join(', ')}`);
  assert.ok(at[2]! - at[1]! > at[1]! - at[0]!, 'gaps grow');
  assert.equal((await s.nextTransfer()).outcome, 'timeout');
  // Negotiated "timeout 1": every wait is 1 s, no doubling (RFC 2349).
  c.send(buildRequest(OP_RRQ, 'f', 'octet', [opt('timeout', '1')]), s.port);
  const o = await c.recvPacket();
  assert.equal(o.p.op, OP_OACK);
  const t1 = Date.now();
  await c.recvPacket(2500);
  const g1 = Date.now() - t1;
  await c.recvPacket(2500);
  const g2 = Date.now() - t1 - g1;
  assert.ok(g1 >= 950 && g2 >= 950 && g2 < 1700, `fixed waits: ${g1}, ${g2}`);
  c.send(buildError(0, 'done'), o.port);
});

test('a client that vanishes (its port closed) ends the transfer quietly, without a warning', async (t) => {
  const s = await startServer(t, new MapResolver(new Map([['f', pattern(5000, 14)]])), { defaultTimeoutMs: 100 });
  const c = await RawClient.open();
  c.send(buildRequest(OP_RRQ, 'f', 'octet'), s.port);
  const r = await c.recvPacket();
  assert.equal(r.p.op, OP_DATA);
  c.close(); // no ERROR, no ACK: the retransmission meets a closed port
  const end = await s.nextTransfer();
  assert.ok(end.outcome === 'client-error' || end.outcome === 'timeout', end.outcome);
  assert.deepEqual(s.lines.filter((l) => l.level >= 40), []);
});

test('RRQs retransmitted while a slow lookup runs start one transfer, not several', async (t) => {
  const inner = new MapResolver(new Map([['f', pattern(3000, 15)]]));
  let calls = 0;
  const slow = {
    async resolve(req: { address: string; port: number; path: string }) {
      calls++;
      await new Promise((r) => setTimeout(r, 200));
      return inner.resolve(req);
    },
  };
  const s = await startServer(t, slow);
  const c = await RawClient.open();
  t.after(() => c.close());
  const rrq = buildRequest(OP_RRQ, 'f', 'octet');
  c.send(rrq, s.port);
  await new Promise((r) => setTimeout(r, 50));
  c.send(rrq, s.port);
  c.send(rrq, s.port);
  const first = await c.recvPacket();
  assert.equal(asData(first.p).block, 1);
  assert.deepEqual(await c.drain(300), [], 'no second transfer');
  assert.equal(calls, 1);
  assert.equal(s.server.stats().active, 1);
  c.send(buildError(0, 'bye'), first.port);
});
