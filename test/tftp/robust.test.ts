/**
 * Field patterns and abuse: the Raspberry Pi / UEFI tsize probe then abort then the real request; many
 * transfers at once; a flood of malformed packets (random, truncated, oversized, option bombs).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildAck, buildError, buildRequest, OP_RRQ, OP_OACK, OP_DATA } from '../../src/tftp/packet.js';
import { RawClient, download } from './raw-client.js';
import { MapResolver, startServer, pattern } from './helpers.js';

const opt = (name: string, value: string) => ({ name, value });

for (const [who, code, message] of [['Raspberry Pi', 0, 'Early terminate'], ['UEFI', 8, 'Bad option']] as const) {
  test(`${who}: tsize probe, ERROR ${code} "${message}", then the real request; no warning logged`, async (t) => {
    const file = pattern(200 * 1024 + 11, 31);
    const s = await startServer(t, new MapResolver(new Map([['1a2b3c4d/start4.elf', file]])));
    const c = await RawClient.open();
    t.after(() => c.close());
    for (let round = 0; round < 3; round++) {
      c.send(buildRequest(OP_RRQ, '1a2b3c4d/start4.elf', 'octet', [opt('tsize', '0'), opt('blksize', '1024')]), s.port);
      const o = await c.recvPacket();
      assert.equal(o.p.op, OP_OACK);
      assert.deepEqual((o.p as { options: { key: string; value: string }[] }).options.map((x) => [x.key, x.value]), [['tsize', String(file.length)], ['blksize', '1024']]);
      c.send(buildError(code, message), o.port);
      const ended = await s.nextTransfer();
      assert.equal(ended.outcome, 'client-error');
      // The real request, from the same port (the Pi does this) and from a new one.
      if (round === 0) {
        c.send(buildRequest(OP_RRQ, '1a2b3c4d/start4.elf', 'octet', [opt('blksize', '1024')]), s.port);
        const got: Buffer[] = [];
        let port = -1;
        for (let block = 0; ; ) {
          const r = await c.recvPacket();
          if (r.p.op === OP_OACK) {
            port = r.port;
            c.send(buildAck(0), port);
            continue;
          }
          assert.equal(r.p.op, OP_DATA);
          const d = r.p as { block: number; data: Buffer };
          assert.equal(d.block, block + 1);
          block = d.block;
          got.push(d.data);
          c.send(buildAck(block), port);
          if (d.data.length < 1024) break;
        }
        assert.ok(Buffer.concat(got).equals(file));
        const st = await s.nextTransfer();
        assert.equal(st.outcome, 'complete', JSON.stringify(st));
      } else {
        const r = await download(s.port, '/1a2b3c4d//start4.elf', { blksize: 1024, tsize: true });
        assert.ok(r.data.equals(file));
        assert.equal((await s.nextTransfer()).outcome, 'complete');
      }
    }
    const warnings = s.lines.filter((l) => l.level >= 40);
    assert.deepEqual(warnings, [], 'no warning-level lines');
    assert.ok(s.lines.some((l) => l.level === 20 && l.msg === 'transfer ended by client'), 'the abort is logged at debug');
  });
}

test('50 concurrent transfers complete byte-exact (mixed block and window sizes)', async (t) => {
  const files = new Map<string, Buffer>();
  for (let i = 0; i < 50; i++) files.set(`f${i}`, pattern(100 * 1024 + i * 977, 100 + i));
  // One client address (loopback) runs all 50: raise the per-client cap for this test.
  const s = await startServer(t, new MapResolver(files), { maxPerClient: 64, maxBlksize: 8192 });
  const sizes = [512, 1468, 8192, 1024, 700];
  const results = await Promise.all(
    [...files.keys()].map((name, i) =>
      download(s.port, name, { blksize: sizes[i % sizes.length], windowsize: i % 3 === 0 ? 8 : undefined, tsize: i % 2 === 0 }),
    ),
  );
  results.forEach((r, i) => assert.ok(r.data.equals(files.get(`f${i}`)!), `f${i} differs`));
  for (let i = 0; i < 50; i++) await s.nextTransfer();
  assert.equal(s.transfers.filter((x) => x.outcome === 'complete').length, 50);
});

test('a flood of malformed packets leaves the server serving, with rate-limited logs', async (t) => {
  const file = pattern(300 * 1024, 41);
  const s = await startServer(t, new MapResolver(new Map([['ok.bin', file]])));
  const attackers = await Promise.all([1, 2, 3, 4].map(() => RawClient.open()));
  t.after(() => attackers.forEach((a) => a.close()));
  let rnd = 12345;
  const next = (): number => (rnd = (Math.imul(rnd, 1103515245) + 12345) >>> 0);
  const junk: Buffer[] = [];
  for (let i = 0; i < 1000; i++) {
    const b = Buffer.allocUnsafe(next() % 700);
    for (let j = 0; j < b.length; j++) b[j] = next() & 0xff;
    junk.push(b);
  }
  const rrq = buildRequest(OP_RRQ, 'ok.bin', 'octet', [opt('blksize', '1468')]);
  for (let i = 1; i < rrq.length; i += 3) junk.push(rrq.subarray(0, i)); // truncated
  junk.push(Buffer.concat([Buffer.from([0, 1]), Buffer.alloc(60000, 0x41), Buffer.from('\0octet\0')])); // oversized
  const bomb = Buffer.concat([Buffer.from('\0\x01ok.bin\0octet\0'), Buffer.from('o\x001\0'.repeat(3000))]);
  junk.push(bomb); // thousands of options
  junk.push(Buffer.concat([Buffer.from('\0\x01ok.bin\0octet\0blksize\0'), Buffer.alloc(20000, 0x39), Buffer.from([0])])); // huge value
  junk.push(Buffer.concat([Buffer.from('\0\x01'), Buffer.alloc(1500, 0x2f), Buffer.from('\0octet\0')])); // path of slashes
  junk.push(Buffer.from('\0\x03\0\x01data'), Buffer.from('\0\x04\0\x01'), Buffer.from('\0\x05\0\x00x\0'), Buffer.from('\0\x06a\0b\0'));
  let sent = 0;
  for (let round = 0; round < 3; round++) {
    for (const b of junk) {
      attackers[sent++ % attackers.length]!.send(b, s.port);
      // Paced a little so most of the flood reaches the parser rather than overflowing the socket buffer.
      if (sent % 16 === 0) await new Promise((r) => setImmediate(r));
    }
  }
  // Junk aimed at a running transfer's port, from its own client and from others.
  const c = await RawClient.open();
  t.after(() => c.close());
  // Let the server drain the flood, then ask (again if our request drowned in a full socket buffer).
  for (let last = -1; last !== s.server.stats().malformed; ) {
    last = s.server.stats().malformed;
    await new Promise((r) => setTimeout(r, 100));
  }
  let o: Awaited<ReturnType<RawClient['recvPacket']>> | null = null;
  for (let tries = 0; !o && tries < 5; tries++) {
    c.send(rrq, s.port);
    o = await c.recvPacket(500).catch(() => null);
  }
  assert.ok(o && o.p.op === OP_OACK, 'the server answers after the flood');
  for (const b of junk.slice(0, 300)) {
    c.send(b, o.port);
    attackers[0]!.send(b, o.port);
  }
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(s.server.stats().malformed > 2500, true, `malformed counted: ${s.server.stats().malformed}`);
  // Still serving, byte-exact, including the transfer that was under fire.
  c.send(buildAck(0), o.port);
  const got: Buffer[] = [];
  for (let block = 1; ; block++) {
    let r = await c.recvPacket();
    while (r.p.op !== OP_DATA || (r.p as { block: number }).block !== block) r = await c.recvPacket();
    const d = (r.p as { data: Buffer }).data;
    got.push(d);
    c.send(buildAck(block), o.port);
    if (d.length < 1468) break;
  }
  assert.ok(Buffer.concat(got).equals(file), 'transfer under fire is byte-exact');
  const r = await download(s.port, 'ok.bin', { blksize: 1468, windowsize: 16, tsize: true });
  assert.ok(r.data.equals(file));
  const malformedLines = s.lines.filter((l) => l.msg === 'malformed tftp packet');
  assert.ok(malformedLines.length >= 1 && malformedLines.length <= 4, `rate-limited: ${malformedLines.length} lines`);
  assert.ok(s.lines.length < 100, `few log lines overall: ${s.lines.length}`);
});
