/**
 * Attacks on the NBD server's slots and budgets: connection floods (overall and from one address), clients
 * that stop reading their replies (stall timeout frees memory, writer slot and connection), and connections
 * that hold the server-wide in-flight budget while others still get served and the budget comes back whole.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { NbdServer, type NbdLimits } from '../../src/nbd/server.js';
import { StaticExportProvider } from '../../src/nbd/exports.js';
import * as P from '../../src/nbd/packet.js';
import { createLogger } from '../../src/util/log.js';
import { tempDir } from '../helpers/tools.js';
import { RawNbd } from './client.js';

const MiB = 1 << 20;
const SIZE = 4 * MiB;

async function setup(t: TestContext, limits: Partial<NbdLimits>) {
  const dir = tempDir(t);
  const data = randomBytes(SIZE);
  const img = join(dir, 'disk.img');
  writeFileSync(img, data);
  const provider = new StaticExportProvider([
    { name: 'rw', path: img, mode: 'readwrite' },
    { name: 'ro', path: img, mode: 'readonly' },
  ]);
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write: (c: Buffer, _e, cb) => {
      for (const l of c.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  const server = new NbdServer({ exports: provider, limits, logger: createLogger({ level: 'debug', destination: sink }) });
  const { port } = await server.listen(0, '127.0.0.1');
  const open: RawNbd[] = [];
  t.after(async () => {
    for (const c of open) c.destroy();
    await server.close();
    await provider.close();
  });
  const connect = async (localAddress: string): Promise<RawNbd> => {
    const c = await RawNbd.connect(port, { localAddress });
    open.push(c);
    return c;
  };
  return { data, server, port, lines, connect };
}

/** True when the server greets, false when it closes the connection without a byte. */
async function greeted(c: RawNbd): Promise<boolean> {
  try {
    await c.handshake();
    return true;
  } catch (e) {
    if (/connection ended with 0\/18/.test(String(e))) return false;
    throw e;
  }
}

async function until(what: string, cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('connection caps: per client address and overall; extra connections closed at accept with one rate-limited line', async (t) => {
  const { server, lines, connect } = await setup(t, { maxConnections: 5, maxConnectionsPerClient: 2 });
  const a1 = await connect('127.0.0.2');
  const a2 = await connect('127.0.0.2');
  assert.ok(await greeted(a1));
  assert.ok(await greeted(a2));
  // A flood of extra connections from the same address: each closed at once, one log line for all.
  for (let i = 0; i < 10; i++) assert.equal(await greeted(await connect('127.0.0.2')), false, 'third connection from one address refused');
  const perClient = lines.filter((l) => l.msg === 'nbd connection refused: too many connections from this client');
  assert.equal(perClient.length, 1, 'rate-limited to one line');
  assert.equal(perClient[0]!.ip, '127.0.0.2');
  assert.equal(perClient[0]!.limit, 2);

  // Other addresses are still served, up to the overall cap.
  for (const ip of ['127.0.0.3', '127.0.0.3', '127.0.0.4']) assert.ok(await greeted(await connect(ip)));
  assert.equal(server.connections, 5);
  for (let i = 0; i < 5; i++) assert.equal(await greeted(await connect('127.0.0.5')), false, 'sixth connection overall refused');
  assert.equal(lines.filter((l) => l.msg === 'nbd connection refused: too many connections').length, 1);

  // A slot freed is a slot taken again.
  a1.destroy();
  await until('the server sees the close', () => server.connections === 4);
  const again = await connect('127.0.0.2');
  assert.ok(await greeted(again));
  await again.go('ro');
  again.request(P.CMD_READ, 0, 1n, 0, 512);
  assert.equal((await again.simpleReply(512)).error, 0);
});

test('stall timeout: a client that stops reading its replies is closed, its memory and writer slot freed; an idle one is not', async (t) => {
  const { server, lines, connect, data } = await setup(t, { stallTimeoutMs: 300 });
  // An idle client: nothing queued for it, so it is never "stalled", however long it stays quiet.
  const idle = await connect('127.0.0.3');
  await idle.handshake();
  await idle.go('ro');
  idle.request(P.CMD_READ, 0, 1n, 0, 4096);
  assert.equal((await idle.simpleReply(4096)).error, 0);

  // The staller holds the read-write export (one writer) and queues more replies than the kernel buffers.
  const staller = await connect('127.0.0.2');
  await staller.handshake();
  await staller.go('rw');
  staller.socket.pause();
  const reqs: Buffer[] = [];
  for (let i = 0; i < 64; i++) reqs.push(P.buildRequest(P.CMD_READ, 0, BigInt(i), (i % 4) * MiB, MiB));
  staller.write(Buffer.concat(reqs));
  await until('some of its replies are in flight', () => server.inflightBytes > 8 * MiB);
  const other = await connect('127.0.0.4');
  await other.handshake();
  await assert.rejects(other.go('rw'), 'the writer slot is taken while the staller is connected');

  const t0 = Date.now();
  await until('the server closes the staller', () => server.connections === 2);
  const ms = Date.now() - t0;
  assert.ok(ms < 2000, `closed after ${ms} ms`);
  staller.socket.resume(); // a paused socket does not notice the reset until it reads
  await staller.closed;
  await until('its budget is given back', () => server.inflightBytes === 0);
  const log = lines.find((l) => l.msg === 'nbd client stopped reading its replies; closing');
  assert.ok(log, 'a log line says why');
  assert.equal(log.ip, '127.0.0.2');
  assert.equal(log.export, 'rw');

  // The writer slot is free again.
  await other.go('rw');
  other.request(P.CMD_READ, 0, 2n, MiB, 100);
  assert.deepEqual((await other.simpleReply(100)).data, data.subarray(MiB, MiB + 100));

  // The idle client, quiet for several stall timeouts, still works.
  await new Promise((r) => setTimeout(r, 1000));
  idle.request(P.CMD_READ, 0, 3n, 4096, 4096);
  const r = await idle.simpleReply(4096);
  assert.equal(r.error, 0);
  assert.deepEqual(r.data, data.subarray(4096, 8192));
  assert.equal(server.connections, 2);
});

test('server-wide budget: non-reading connections cannot take more than it; others are served (small ones at once, big ones in turn); it comes back whole', async (t) => {
  const BUDGET = 8 * MiB;
  const { server, connect, data } = await setup(t, { maxInflightBytesTotal: BUDGET, maxInflightBytes: 4 * MiB });
  // Six hostile connections each pipeline 8 × 4 MiB READs and never read.
  const hostile: RawNbd[] = [];
  const reqs: Buffer[] = [];
  for (let i = 0; i < 8; i++) reqs.push(P.buildRequest(P.CMD_READ, 0, BigInt(i), 0, 4 * MiB));
  for (let i = 0; i < 6; i++) {
    const c = await connect('127.0.0.2');
    await c.handshake();
    await c.go('ro');
    c.socket.pause();
    c.write(Buffer.concat(reqs));
    hostile.push(c);
  }
  await until('the hostile connections hold replies', () => server.inflightBytes >= 4 * MiB);
  await new Promise((r) => setTimeout(r, 500));
  // Over the budget by at most the reply headers of what was admitted (without it: 6 × 4 MiB or more).
  assert.ok(server.inflightBytes <= BUDGET + 4096, `in flight ${server.inflightBytes}`);

  // A client with big requests waits its turn (first come, first served) ...
  const big = await connect('127.0.0.3');
  await big.handshake();
  await big.go('ro');
  for (let i = 0; i < 3; i++) big.request(P.CMD_READ, 0, BigInt(100 + i), 0, 4 * MiB);
  // ... while a client with small requests is served meanwhile (one request in flight is always allowed).
  const small = await connect('127.0.0.4');
  await small.handshake();
  await small.go('ro');
  for (let i = 0; i < 16; i++) small.request(P.CMD_READ, 0, BigInt(i), i * 65536, 65536);
  for (let i = 0; i < 16; i++) {
    const r = await small.simpleReply(65536);
    assert.equal(r.error, 0);
    const h = Number(r.handle);
    assert.deepEqual(r.data, data.subarray(h * 65536, (h + 1) * 65536));
  }
  assert.ok(server.inflightBytes <= BUDGET + 2 * MiB + 4096, `in flight ${server.inflightBytes}`);

  // The hostile connections go: the waiting big reads are served, and every byte of budget comes back.
  for (const c of hostile) c.destroy();
  for (let i = 0; i < 3; i++) {
    const r = await big.simpleReply(4 * MiB);
    assert.equal(r.error, 0);
    assert.ok(r.data.equals(data));
  }
  await until('the budget is back to zero', () => server.inflightBytes === 0);
});

test('handshake: a client that sends options without reading the replies does not make the server queue them', async (t) => {
  const dir = tempDir(t);
  const img = join(dir, 'disk.img');
  writeFileSync(img, Buffer.alloc(65536));
  // 100 exports with long descriptions: one NBD_OPT_LIST (16 bytes) is answered with ~25 KB.
  const provider = new StaticExportProvider(
    Array.from({ length: 100 }, (_, i) => ({ name: `export-${i}`, path: img, mode: 'readonly' as const, description: 'd'.repeat(200) })),
  );
  const server = new NbdServer({ exports: provider });
  const { port } = await server.listen(0, '127.0.0.1');
  t.after(async () => {
    await server.close();
    await provider.close();
  });
  const queued = (): number => Math.max(0, ...[...(server as unknown as { conns: Set<{ stream: { writableLength: number } }> }).conns].map((c) => c.stream.writableLength));
  const list = Buffer.alloc(16);
  list.writeBigUInt64BE(P.IHAVEOPT, 0);
  list.writeUInt32BE(P.OPT_LIST, 8);

  // 2000 LISTs (32 KB, under the handshake flood limit) would be ~50 MB of replies.
  const c = await RawNbd.connect(port);
  await c.handshake();
  c.socket.pause();
  c.write(Buffer.concat(Array.from({ length: 2000 }, () => list)));
  let max = 0;
  for (let i = 0; i < 20; i++) {
    await new Promise((r) => setTimeout(r, 25));
    max = Math.max(max, queued());
  }
  assert.ok(max < 4 << 20, `server queued ${(max / 1048576).toFixed(1)} MiB of option replies`);
  c.destroy();

  // Flow control, not a kill: a client that reads late gets every reply.
  const d = await RawNbd.connect(port);
  await d.handshake();
  d.socket.pause();
  d.write(Buffer.concat(Array.from({ length: 80 }, () => list)));
  await new Promise((r) => setTimeout(r, 200));
  d.socket.resume();
  for (let i = 0; i < 80; i++) {
    let n = 0;
    for (;;) {
      const r = await d.readOptionReply();
      if (r.type === P.REP_ACK) break;
      assert.equal(r.type, P.REP_SERVER);
      n++;
    }
    assert.equal(n, 100);
  }
  await d.go('export-7');
  d.request(P.CMD_READ, 0, 1n, 0, 512);
  assert.equal((await d.simpleReply(512)).error, 0);
  d.destroy();
});
