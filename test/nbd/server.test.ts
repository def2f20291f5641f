/**
 * The NBD server through a raw-socket client: handshake options, request validation, errors per spec,
 * pipelining, DISC with requests in flight, clients that vanish, allow-lists and the one-writer rule.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { NbdServer, type NbdLimits } from '../../src/nbd/server.js';
import { StaticExportProvider, type StaticExport } from '../../src/nbd/exports.js';
import * as P from '../../src/nbd/packet.js';
import { haveTools, run, tempDir } from '../helpers/tools.js';
import { RawNbd } from './client.js';

const SIZE = 1 << 20;

async function setup(t: TestContext, exportsExtra: Partial<StaticExport>[] = [], limits: Partial<NbdLimits> = {}) {
  const dir = tempDir(t);
  const data = randomBytes(SIZE);
  const rw = join(dir, 'rw.img');
  const ro = join(dir, 'ro.img');
  writeFileSync(rw, data);
  writeFileSync(ro, data);
  const provider = new StaticExportProvider([
    { name: 'rw', path: rw, mode: 'readwrite', description: 'read-write disk' },
    { name: 'ro', path: ro, mode: 'readonly' },
    ...exportsExtra.map((e, i) => ({ name: `x${i}`, path: rw, mode: 'readonly' as const, ...e })),
  ]);
  const server = new NbdServer({ exports: provider, limits });
  const { port } = await server.listen(0, '127.0.0.1');
  t.after(async () => {
    await server.close();
    await provider.close();
  });
  return { dir, data, rw, ro, port, server, provider };
}

async function connectGo(port: number, name: string, opts: { structured?: boolean; meta?: boolean } = {}) {
  const c = await RawNbd.connect(port);
  await c.handshake();
  if (opts.structured) assert.equal((await c.option(P.OPT_STRUCTURED_REPLY))[0]!.type, P.REP_ACK);
  if (opts.meta) {
    const r = await c.option(P.OPT_SET_META_CONTEXT, RawNbd.metaData(name, [P.BASE_ALLOCATION]));
    assert.equal(r[0]!.type, P.REP_META_CONTEXT);
  }
  const g = await c.go(name, [P.INFO_NAME, P.INFO_DESCRIPTION, P.INFO_BLOCK_SIZE]);
  return { c, ...g };
}

test('handshake: unknown option gets ERR_UNSUP and negotiation goes on; LIST; INFO and GO agree', async (t) => {
  const { port } = await setup(t);
  const c = await RawNbd.connect(port);
  assert.equal(await c.handshake(), P.FLAG_FIXED_NEWSTYLE | P.FLAG_NO_ZEROES);
  const unk = await c.option(4242, Buffer.from('whatever'));
  assert.equal(unk[0]!.type, P.REP_ERR_UNSUP);
  assert.equal(unk[0]!.option, 4242);
  const list = await c.option(P.OPT_LIST);
  const names = list.filter((r) => r.type === P.REP_SERVER).map((r) => r.data.subarray(4, 4 + r.data.readUInt32BE(0)).toString());
  assert.deepEqual(names, ['rw', 'ro']);
  assert.equal(list.at(-1)!.type, P.REP_ACK);
  const badList = await c.option(P.OPT_LIST, Buffer.from('x'));
  assert.equal(badList[0]!.type, P.REP_ERR_INVALID);
  const info = await c.option(P.OPT_INFO, RawNbd.infoData('rw', [P.INFO_NAME, P.INFO_DESCRIPTION]));
  const types = info.filter((r) => r.type === P.REP_INFO).map((r) => r.data.readUInt16BE(0));
  assert.deepEqual(types, [P.INFO_EXPORT, P.INFO_NAME, P.INFO_DESCRIPTION, P.INFO_BLOCK_SIZE]);
  assert.equal(info.find((r) => r.data.readUInt16BE(0) === P.INFO_DESCRIPTION)!.data.subarray(2).toString(), 'read-write disk');
  const bs = info.find((r) => r.type === P.REP_INFO && r.data.readUInt16BE(0) === P.INFO_BLOCK_SIZE)!.data;
  assert.deepEqual([bs.readUInt32BE(2), bs.readUInt32BE(6), bs.readUInt32BE(10)], [1, 4096, 32 << 20]);
  const unknown = await c.option(P.OPT_INFO, RawNbd.infoData('nope'));
  assert.equal(unknown[0]!.type, P.REP_ERR_UNKNOWN);
  const badInfo = await c.option(P.OPT_INFO, Buffer.from([0, 0, 0, 9, 1]));
  assert.equal(badInfo[0]!.type, P.REP_ERR_INVALID);
  const infoExport = info.find((r) => r.type === P.REP_INFO && r.data.readUInt16BE(0) === P.INFO_EXPORT)!.data;
  const g = await c.go('rw');
  assert.equal(g.size, SIZE);
  assert.equal(g.flags, infoExport.readUInt16BE(10), 'INFO and GO report the same flags');
  assert.ok(g.flags & P.TFLAG_SEND_FLUSH && g.flags & P.TFLAG_SEND_FUA && g.flags & P.TFLAG_SEND_TRIM);
  assert.equal(g.flags & P.TFLAG_READ_ONLY, 0);
  c.destroy();
});

test('bad client flags and bad option magic end the connection', async (t) => {
  const { port, server } = await setup(t);
  const a = await RawNbd.connect(port);
  await a.handshake(0x80);
  await a.waitEnd();
  const b = await RawNbd.connect(port);
  await b.handshake();
  b.write(Buffer.alloc(16, 0x41));
  await b.waitEnd();
  // Option too long: closed instead of buffering it.
  const c = await RawNbd.connect(port);
  await c.handshake();
  const h = Buffer.alloc(16);
  h.writeBigUInt64BE(P.IHAVEOPT, 0);
  h.writeUInt32BE(P.OPT_GO, 8);
  h.writeUInt32BE(0xffffffff, 12);
  c.write(h);
  await c.waitEnd();
  assert.equal(server.connections >= 0, true);
});

test('ABORT is acknowledged and the server closes', async (t) => {
  const { port } = await setup(t);
  const c = await RawNbd.connect(port);
  await c.handshake();
  const r = await c.option(P.OPT_ABORT);
  assert.equal(r[0]!.type, P.REP_ACK);
  await c.waitEnd();
});

test('EXPORT_NAME: size + flags without zeroes (NO_ZEROES), with 124 zeroes otherwise; unknown name closes', async (t) => {
  const { port } = await setup(t);
  const a = await RawNbd.connect(port);
  await a.handshake();
  a.sendOption(P.OPT_EXPORT_NAME, Buffer.from('ro'));
  const r = await a.read(10);
  assert.equal(Number(r.readBigUInt64BE(0)), SIZE);
  assert.ok(r.readUInt16BE(8) & P.TFLAG_READ_ONLY);
  a.request(P.CMD_READ, 0, 1n, 0, 16);
  const rep = await a.simpleReply(16);
  assert.equal(rep.error, 0);
  a.destroy();

  const b = await RawNbd.connect(port);
  await b.handshake(P.FLAG_C_FIXED_NEWSTYLE);
  b.sendOption(P.OPT_EXPORT_NAME, Buffer.from('rw'));
  const r2 = await b.read(134);
  assert.ok(r2.subarray(10).every((x) => x === 0));
  b.destroy();

  const c = await RawNbd.connect(port);
  await c.handshake();
  c.sendOption(P.OPT_EXPORT_NAME, Buffer.from('missing'));
  assert.equal((await c.waitEnd()).length, 0);
});

test('reads and writes: misaligned I/O works, range and flag errors per spec (simple replies)', async (t) => {
  const { port, data, rw } = await setup(t);
  const { c } = await connectGo(port, 'rw');
  // misaligned read
  c.request(P.CMD_READ, 0, 1n, 1001, 777);
  let r = await c.simpleReply(777);
  assert.equal(r.error, 0);
  assert.equal(r.handle, 1n);
  assert.deepEqual(r.data, data.subarray(1001, 1778));
  // misaligned write, then read back
  const payload = Buffer.from('hello, misaligned world');
  c.request(P.CMD_WRITE, 0, 2n, 4093, payload.length, payload);
  assert.equal((await c.simpleReply()).error, 0);
  c.request(P.CMD_READ, 0, 3n, 4090, 30);
  r = await c.simpleReply(30);
  assert.deepEqual(r.data.subarray(3, 3 + payload.length), payload);
  // out of range read → EINVAL, no payload follows
  c.request(P.CMD_READ, 0, 4n, SIZE - 10, 20);
  assert.equal((await c.simpleReply()).error, P.NBD_EINVAL);
  c.request(P.CMD_READ, 0, 5n, 0xffffffffffffn, 1);
  assert.equal((await c.simpleReply()).error, P.NBD_EINVAL);
  // write past the end → ENOSPC (payload consumed, stream stays in sync)
  c.request(P.CMD_WRITE, 0, 6n, SIZE - 2, 4, Buffer.from('abcd'));
  assert.equal((await c.simpleReply()).error, P.NBD_ENOSPC);
  // unknown command → EINVAL
  c.request(42, 0, 7n, 0, 0);
  assert.equal((await c.simpleReply()).error, P.NBD_EINVAL);
  // unknown flag → EINVAL; REQ_ONE on READ → EINVAL; DF without structured replies → EINVAL
  c.request(P.CMD_READ, 0x8000, 8n, 0, 512);
  assert.equal((await c.simpleReply()).error, P.NBD_EINVAL);
  c.request(P.CMD_READ, P.CMD_FLAG_REQ_ONE, 9n, 0, 512);
  assert.equal((await c.simpleReply()).error, P.NBD_EINVAL);
  c.request(P.CMD_READ, P.CMD_FLAG_DF, 10n, 0, 512);
  assert.equal((await c.simpleReply()).error, P.NBD_EINVAL);
  // bad flags on a write: EINVAL, payload still consumed
  c.request(P.CMD_WRITE, P.CMD_FLAG_REQ_ONE, 11n, 0, 3, Buffer.from('zzz'));
  assert.equal((await c.simpleReply()).error, P.NBD_EINVAL);
  // zero-length read, flush with an offset
  c.request(P.CMD_READ, 0, 12n, 0, 0);
  assert.equal((await c.simpleReply()).error, P.NBD_EINVAL);
  c.request(P.CMD_FLUSH, 0, 13n, 512, 0);
  assert.equal((await c.simpleReply()).error, P.NBD_EINVAL);
  // block status without a meta context
  c.request(P.CMD_BLOCK_STATUS, 0, 14n, 0, 512);
  assert.equal((await c.simpleReply()).error, P.NBD_EINVAL);
  // over-large read: EOVERFLOW, connection stays up
  c.request(P.CMD_READ, 0, 15n, 0, (32 << 20) + 1);
  assert.ok([P.NBD_EOVERFLOW, P.NBD_EINVAL].includes((await c.simpleReply()).error));
  // FUA write, flush, trim, write zeroes (+FAST_ZERO → ENOTSUP), cache
  c.request(P.CMD_WRITE, P.CMD_FLAG_FUA, 16n, 0, 4, Buffer.from('FUA!'));
  assert.equal((await c.simpleReply()).error, 0);
  c.request(P.CMD_FLUSH, 0, 17n, 0, 0);
  assert.equal((await c.simpleReply()).error, 0);
  c.request(P.CMD_TRIM, P.CMD_FLAG_FUA, 18n, 8192, 4096);
  assert.equal((await c.simpleReply()).error, 0);
  c.request(P.CMD_WRITE_ZEROES, P.CMD_FLAG_NO_HOLE, 19n, 100, 3000);
  assert.equal((await c.simpleReply()).error, 0);
  c.request(P.CMD_WRITE_ZEROES, P.CMD_FLAG_FAST_ZERO, 20n, 100, 3000);
  assert.equal((await c.simpleReply()).error, P.NBD_ENOTSUP);
  c.request(P.CMD_CACHE, 0, 21n, 0, 65536);
  assert.equal((await c.simpleReply()).error, 0);
  c.request(P.CMD_DISC, 0, 22n, 0, 0);
  await c.waitEnd();
  const file = readFileSync(rw);
  assert.equal(file.subarray(0, 4).toString(), 'FUA!');
  assert.deepEqual(file.subarray(4093, 4093 + payload.length), payload);
  assert.ok(file.subarray(100, 3100).every((b) => b === 0));
  assert.deepEqual(file.subarray(SIZE - 2), data.subarray(SIZE - 2), 'the refused write changed nothing');
});

test('read-only export: writes, trims and zeroes get EPERM; reads work', async (t) => {
  const { port, data } = await setup(t);
  const { c, flags } = await connectGo(port, 'ro');
  assert.ok(flags & P.TFLAG_READ_ONLY);
  assert.ok(flags & P.TFLAG_CAN_MULTI_CONN);
  c.request(P.CMD_WRITE, 0, 1n, 0, 4, Buffer.from('nope'));
  assert.equal((await c.simpleReply()).error, P.NBD_EPERM);
  c.request(P.CMD_TRIM, 0, 2n, 0, 4096);
  assert.equal((await c.simpleReply()).error, P.NBD_EPERM);
  c.request(P.CMD_WRITE_ZEROES, 0, 3n, 0, 4096);
  assert.equal((await c.simpleReply()).error, P.NBD_EPERM);
  c.request(P.CMD_READ, 0, 4n, 0, 8);
  assert.deepEqual((await c.simpleReply(8)).data, data.subarray(0, 8));
  c.destroy();
});

test('structured replies: OFFSET_DATA reads, error chunks with messages, base:allocation block status', async (t) => {
  const { port, data } = await setup(t);
  const c = await RawNbd.connect(port);
  await c.handshake();
  // meta context before structured replies: invalid
  assert.equal((await c.option(P.OPT_LIST_META_CONTEXT, RawNbd.metaData('rw', [])))[0]!.type, P.REP_ERR_INVALID);
  assert.equal((await c.option(P.OPT_STRUCTURED_REPLY))[0]!.type, P.REP_ACK);
  const list = await c.option(P.OPT_LIST_META_CONTEXT, RawNbd.metaData('rw', []));
  assert.equal(list[0]!.type, P.REP_META_CONTEXT);
  assert.equal(list[0]!.data.subarray(4).toString(), 'base:allocation');
  const none = await c.option(P.OPT_SET_META_CONTEXT, RawNbd.metaData('rw', ['qemu:dirty-bitmap:x']));
  assert.deepEqual(none.map((r) => r.type), [P.REP_ACK]);
  const set = await c.option(P.OPT_SET_META_CONTEXT, RawNbd.metaData('rw', ['base:allocation']));
  assert.deepEqual(set.map((r) => r.type), [P.REP_META_CONTEXT, P.REP_ACK]);
  const id = set[0]!.data.readUInt32BE(0);
  const g = await c.go('rw');
  assert.ok(g.flags & P.TFLAG_SEND_DF);
  c.request(P.CMD_READ, P.CMD_FLAG_DF, 1n, 4096, 100);
  let ch = await c.chunk();
  assert.equal(ch.type, P.REPLY_TYPE_OFFSET_DATA);
  assert.equal(ch.flags & P.REPLY_FLAG_DONE, P.REPLY_FLAG_DONE);
  assert.equal(Number(ch.payload.readBigUInt64BE(0)), 4096);
  assert.deepEqual(ch.payload.subarray(8), data.subarray(4096, 4196));
  c.request(P.CMD_READ, 0, 2n, SIZE, 1);
  ch = await c.chunk();
  assert.equal(ch.type, P.REPLY_TYPE_ERROR);
  assert.equal(ch.payload.readUInt32BE(0), P.NBD_EINVAL);
  assert.match(ch.payload.subarray(6, 6 + ch.payload.readUInt16BE(4)).toString(), /past the end/);
  c.request(P.CMD_BLOCK_STATUS, 0, 3n, 0, 65536);
  ch = await c.chunk();
  assert.equal(ch.type, P.REPLY_TYPE_BLOCK_STATUS);
  assert.equal(ch.payload.readUInt32BE(0), id);
  assert.equal(ch.payload.readUInt32BE(4), 65536);
  c.request(P.CMD_BLOCK_STATUS, 0, 4n, SIZE - 512, 1024);
  ch = await c.chunk();
  assert.equal(ch.type, P.REPLY_TYPE_ERROR);
  c.destroy();
});

test('pipelining: many requests in flight, every reply matched by handle; DISC answers in-flight requests first', async (t) => {
  const { port, data } = await setup(t);
  const { c } = await connectGo(port, 'rw');
  const N = 200;
  const parts: Buffer[] = [];
  for (let i = 0; i < N; i++) parts.push(P.buildRequest(P.CMD_READ, 0, BigInt(1000 + i), i * 4096, 4096));
  parts.push(P.buildRequest(P.CMD_DISC, 0, 9n, 0, 0));
  c.write(Buffer.concat(parts)); // all in one go, DISC last
  const seen = new Set<bigint>();
  for (let i = 0; i < N; i++) {
    const r = await c.simpleReply(4096);
    assert.equal(r.error, 0);
    const idx = Number(r.handle - 1000n);
    assert.deepEqual(r.data, data.subarray(idx * 4096, idx * 4096 + 4096));
    seen.add(r.handle);
  }
  assert.equal(seen.size, N);
  assert.equal((await c.waitEnd()).length, 0, 'nothing after the replies; DISC itself has no reply');
});

test('bad request magic and oversized writes end the connection; the server keeps serving', async (t) => {
  const { port } = await setup(t, [], { maxPayload: 1 << 20 });
  const a = (await connectGo(port, 'rw')).c;
  a.write(Buffer.alloc(28, 0x55));
  await a.waitEnd();
  const b = (await connectGo(port, 'rw')).c;
  b.request(P.CMD_WRITE, 0, 1n, 0, (1 << 20) + 1);
  await b.waitEnd();
  const d = (await connectGo(port, 'rw')).c;
  d.request(P.CMD_READ, 0, 1n, 0, 8);
  assert.equal((await d.simpleReply(8)).error, 0);
  d.destroy();
});

test('a client that vanishes mid-write: nothing of it is written, the server serves the next client', async (t) => {
  const { port, rw, data, server } = await setup(t);
  const a = (await connectGo(port, 'rw')).c;
  a.request(P.CMD_WRITE, 0, 1n, 0, 65536);
  a.write(Buffer.alloc(30000, 0xee)); // less than announced
  await new Promise((r) => setTimeout(r, 50));
  a.destroy();
  await a.closed;
  for (let i = 0; i < 50 && server.connections > 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(server.connections, 0);
  // The writer slot was released: another client may write.
  const b = await RawNbd.connect(port);
  await b.handshake();
  const g = await b.go('rw');
  assert.equal(g.size, SIZE);
  b.request(P.CMD_READ, 0, 2n, 0, 16);
  const r = await b.simpleReply(16);
  assert.deepEqual(r.data, data.subarray(0, 16));
  b.destroy();
  assert.deepEqual(readFileSync(rw).subarray(0, 30000), data.subarray(0, 30000));
});

test('one writer per read-write export (other addresses refused with a message) unless shared', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'a.img'), Buffer.alloc(65536));
  const provider = new StaticExportProvider([
    { name: 'one', path: join(dir, 'a.img'), mode: 'readwrite' },
    { name: 'many', path: join(dir, 'a.img'), mode: 'readwrite', shared: true },
  ]);
  const server = new NbdServer({ exports: provider });
  const { port } = await server.listen(0, '127.0.0.1');
  t.after(async () => {
    await server.close();
    await provider.close();
  });
  const a = await RawNbd.connect(port, { localAddress: '127.0.0.1' });
  await a.handshake();
  await a.go('one');
  // same address: a second connection is the same client (e.g. a reconnecting kernel)
  const a2 = await RawNbd.connect(port, { localAddress: '127.0.0.1' });
  await a2.handshake();
  await a2.go('one');
  const b = await RawNbd.connect(port, { localAddress: '127.0.0.2' });
  await b.handshake();
  const info = await b.option(P.OPT_INFO, RawNbd.infoData('one'));
  assert.equal(info[0]!.type, P.REP_ERR_POLICY);
  assert.match(info[0]!.data.toString(), /in use by another client/);
  assert.ok(!info[0]!.data.toString().includes('127.0.0.1'), 'the refusal does not name the holder');
  await assert.rejects(b.go('one'), (e: { type?: number }) => e.type === P.REP_ERR_POLICY);
  await b.go('many');
  a.destroy();
  a2.destroy();
  await Promise.all([a.closed, a2.closed]);
  for (let i = 0; i < 50 && server.connections > 1; i++) await new Promise((r) => setTimeout(r, 20));
  const c = await RawNbd.connect(port, { localAddress: '127.0.0.2' });
  await c.handshake();
  await c.go('one');
  c.destroy();
  b.destroy();
});

test('allow-lists: hidden exports are absent from LIST and answer ERR_UNKNOWN like missing ones', async (t) => {
  const { port } = await setup(t, [{ name: 'secret', allow: ['10.0.0.0/8', '::1'] }, { name: 'lo', allow: ['127.0.0.0/24'] }]);
  const c = await RawNbd.connect(port);
  await c.handshake();
  const list = await c.option(P.OPT_LIST);
  const names = list.filter((r) => r.type === P.REP_SERVER).map((r) => r.data.subarray(4, 4 + r.data.readUInt32BE(0)).toString());
  assert.deepEqual(names, ['rw', 'ro', 'lo']);
  const hidden = await c.option(P.OPT_INFO, RawNbd.infoData('secret'));
  const missing = await c.option(P.OPT_INFO, RawNbd.infoData('no-such'));
  assert.equal(hidden[0]!.type, P.REP_ERR_UNKNOWN);
  assert.equal(missing[0]!.type, P.REP_ERR_UNKNOWN);
  assert.equal(hidden[0]!.data.toString().replace('secret', 'X'), missing[0]!.data.toString().replace('no-such', 'X'));
  assert.equal((await c.option(P.OPT_STRUCTURED_REPLY))[0]!.type, P.REP_ACK);
  assert.equal((await c.option(P.OPT_LIST_META_CONTEXT, RawNbd.metaData('secret', [])))[0]!.type, P.REP_ERR_UNKNOWN);
  await c.go('lo');
  c.destroy();
});

test('server close: in-flight requests finish, writes are flushed, connections end', async (t) => {
  const { port, server, rw } = await setup(t);
  const { c } = await connectGo(port, 'rw');
  c.request(P.CMD_WRITE, 0, 1n, 0, 5, Buffer.from('final'));
  assert.equal((await c.simpleReply()).error, 0);
  await server.close();
  await c.waitEnd();
  assert.equal(readFileSync(rw).subarray(0, 5).toString(), 'final');
  const again = await RawNbd.connect(port).then(() => true, () => false);
  assert.equal(again, false);
});

test('STARTTLS: refused without TLS config; with it, TLS-only exports need TLS, then work over node:tls', async (t) => {
  if (!haveTools(t, 'openssl')) return;
  const dir = tempDir(t);
  await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'key.pem', '-out', 'cert.pem', '-days', '2', '-subj', '/CN=127.0.0.1'], { cwd: dir });
  const data = randomBytes(65536);
  writeFileSync(join(dir, 'img'), data);
  const exportsCfg: StaticExport[] = [
    { name: 'open', path: join(dir, 'img'), mode: 'readonly' },
    { name: 'sec', path: join(dir, 'img'), mode: 'readonly', tlsRequired: true },
  ];
  const p1 = new StaticExportProvider(exportsCfg);
  const plain = new NbdServer({ exports: p1 });
  const port1 = (await plain.listen(0, '127.0.0.1')).port;
  const p2 = new StaticExportProvider(exportsCfg);
  const secure = new NbdServer({ exports: p2, tls: { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) } });
  const port2 = (await secure.listen(0, '127.0.0.1')).port;
  t.after(async () => {
    await plain.close();
    await secure.close();
    await p1.close();
    await p2.close();
  });

  const a = await RawNbd.connect(port1);
  await a.handshake();
  assert.equal((await a.option(P.OPT_STARTTLS))[0]!.type, P.REP_ERR_POLICY);
  await a.go('open'); // negotiation went on
  a.destroy();

  const b = await RawNbd.connect(port2);
  await b.handshake();
  const names = (rs: Awaited<ReturnType<RawNbd['option']>>): string[] =>
    rs.filter((r) => r.type === P.REP_SERVER).map((r) => r.data.subarray(4, 4 + r.data.readUInt32BE(0)).toString());
  assert.deepEqual(names(await b.option(P.OPT_LIST)), ['open']);
  assert.equal((await b.option(P.OPT_INFO, RawNbd.infoData('sec')))[0]!.type, P.REP_ERR_TLS_REQD);
  await assert.rejects(b.go('sec'), (e: { type?: number }) => e.type === P.REP_ERR_TLS_REQD);
  await b.startTls();
  assert.equal((await b.option(P.OPT_STARTTLS))[0]!.type, P.REP_ERR_INVALID);
  assert.deepEqual(names(await b.option(P.OPT_LIST)), ['open', 'sec']);
  await b.go('sec');
  b.request(P.CMD_READ, 0, 1n, 100, 1000);
  assert.deepEqual((await b.simpleReply(1000)).data, data.subarray(100, 1100));
  b.request(P.CMD_DISC, 0, 2n, 0, 0);
  await b.waitEnd();

  // EXPORT_NAME of a TLS-only export without TLS cannot return an error: the session is ended.
  const c = await RawNbd.connect(port2);
  await c.handshake();
  c.sendOption(P.OPT_EXPORT_NAME, Buffer.from('sec'));
  assert.equal((await c.waitEnd()).length, 0);
});

test('backpressure: a client that does not read its replies does not make the server buffer them all', async (t) => {
  const { port } = await setup(t, [], { maxInflightBytes: 1 << 20, maxInflightRequests: 64 });
  const { c } = await connectGo(port, 'ro');
  c.socket.pause(); // read nothing for now
  const N = 3000; // 3000 × 64 KiB = 187.5 MiB of replies
  const before = process.memoryUsage().arrayBuffers;
  const reqs: Buffer[] = [];
  for (let i = 0; i < N; i++) reqs.push(P.buildRequest(P.CMD_READ, 0, BigInt(i), (i % 16) * 65536, 65536));
  c.socket.write(Buffer.concat(reqs));
  await new Promise((r) => setTimeout(r, 800));
  const grown = process.memoryUsage().arrayBuffers - before;
  assert.ok(grown < 48 << 20, `server buffered ${(grown / 1048576).toFixed(1)} MiB`);
  c.socket.resume();
  let got = 0;
  for (let i = 0; i < N; i++) {
    const r = await c.simpleReply(65536);
    assert.equal(r.error, 0);
    got++;
  }
  assert.equal(got, N);
  c.destroy();
});

test('random bytes in the handshake or after GO never take the server down', async (t) => {
  const { port, server } = await setup(t, [], { handshakeTimeoutMs: 500 });
  const fc = (await import('fast-check')).default;
  await fc.assert(
    fc.asyncProperty(fc.boolean(), fc.uint8Array({ minLength: 1, maxLength: 400 }), async (afterGo, bytes) => {
      const c = await RawNbd.connect(port);
      await c.handshake();
      if (afterGo) await c.go('rw');
      c.write(Buffer.from(bytes));
      await new Promise((r) => setTimeout(r, 5));
      c.destroy();
      await c.closed;
    }),
    { numRuns: 60 },
  );
  const { c } = await connectGo(port, 'ro');
  c.request(P.CMD_READ, 0, 1n, 0, 4);
  assert.equal((await c.simpleReply(4)).error, 0);
  c.destroy();
  await c.closed;
  for (let i = 0; i < 100 && server.connections > 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(server.connections, 0, 'every fuzzed connection was cleaned up');
});

test('kernel-client session (as nbd-client 3.24 sets it up): GO without info requests, simple replies, pipelined I/O with FLUSH/FUA/TRIM', async (t) => {
  const { port, rw } = await setup(t);
  const c = await RawNbd.connect(port);
  await c.handshake(P.FLAG_C_FIXED_NEWSTYLE | P.FLAG_C_NO_ZEROES);
  const g = await c.go('rw', []);
  assert.equal(g.size, SIZE);
  for (const f of [P.TFLAG_HAS_FLAGS, P.TFLAG_SEND_FLUSH, P.TFLAG_SEND_FUA, P.TFLAG_SEND_TRIM]) assert.ok(g.flags & f);
  assert.equal(g.replies.at(-1)!.type, P.REP_ACK);
  // The kernel pipelines 512-aligned requests of up to 128 KiB and interleaves FLUSH and FUA writes.
  const model = readFileSync(rw);
  const reqs: Buffer[] = [];
  const expect = new Map<bigint, number>(); // handle → read length (0: no data)
  let h = 1n;
  let k = 0;
  for (let i = 0; i < 64; i++) {
    if (i % 3 === 0) {
      // Writes in flight together never overlap (their order is not defined), hence distinct regions.
      const off = k * 40960;
      const len = 512 * (1 + ((k * 37) % 64));
      k++;
      const d = randomBytes(len);
      d.copy(model, off);
      reqs.push(P.buildRequest(P.CMD_WRITE, i % 2 ? P.CMD_FLAG_FUA : 0, h, off, len), d);
      expect.set(h++, 0);
      reqs.push(P.buildRequest(P.CMD_FLUSH, 0, h, 0, 0));
      expect.set(h++, 0);
    } else if (i % 3 === 1) {
      reqs.push(P.buildRequest(P.CMD_TRIM, 0, h, SIZE - 65536, 65536));
      expect.set(h++, 0);
    } else {
      reqs.push(P.buildRequest(P.CMD_READ, 0, h, SIZE - 131072, 4096));
      expect.set(h++, 4096);
    }
  }
  c.write(Buffer.concat(reqs));
  for (let i = 0; i < expect.size; i++) {
    // Replies come in any order: read the header, then the data its handle announces.
    const hd = await c.read(16);
    assert.equal(hd.readUInt32BE(0), P.SIMPLE_REPLY_MAGIC);
    assert.equal(hd.readUInt32BE(4), 0);
    const len = expect.get(hd.readBigUInt64BE(8));
    assert.notEqual(len, undefined, 'reply for a known handle');
    if (len) assert.ok((await c.read(len)).equals(model.subarray(SIZE - 131072, SIZE - 131072 + 4096)));
  }
  // Reads after the writes were acknowledged see them.
  for (let off = 0; off < SIZE; off += 128 * 1024) c.request(P.CMD_READ, 0, BigInt(off), off, 128 * 1024);
  const got = Buffer.alloc(SIZE);
  for (let off = 0; off < SIZE; off += 128 * 1024) {
    const r = await c.simpleReply(128 * 1024);
    assert.equal(r.error, 0);
    r.data.copy(got, Number(r.handle));
  }
  assert.ok(got.subarray(0, SIZE - 65536).equals(model.subarray(0, SIZE - 65536)));
  c.request(P.CMD_DISC, 0, 0n, 0, 0);
  await c.waitEnd();
});
