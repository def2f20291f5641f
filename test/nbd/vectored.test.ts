/**
 * Vectored I/O: FileBlockDevice readv/writev (used by the NBD server to merge contiguous requests), and
 * the server's merging of pipelined contiguous READs/WRITEs, including payloads spread over many chunks.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { FileBlockDevice, skipBytes, totalLength } from '../../src/disk/blockdev.js';
import { NbdServer } from '../../src/nbd/server.js';
import { StaticExportProvider } from '../../src/nbd/exports.js';
import * as P from '../../src/nbd/packet.js';
import { tempDir } from '../helpers/tools.js';
import { RawNbd } from './client.js';

test('skipBytes and totalLength', () => {
  const bufs = [Buffer.from('abc'), Buffer.from('de'), Buffer.from('fghi')];
  assert.equal(totalLength(bufs), 9);
  assert.deepEqual(skipBytes(bufs, 0).map(String), ['abc', 'de', 'fghi']);
  assert.deepEqual(skipBytes(bufs, 4).map(String), ['e', 'fghi']);
  assert.deepEqual(skipBytes(bufs, 5).map(String), ['fghi']);
  assert.deepEqual(skipBytes(bufs, 9).map(String), []);
});

test('file device readv/writev: consecutive buffers, one written announcement, range errors', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'img');
  writeFileSync(path, Buffer.alloc(65536, 1));
  const dev = await FileBlockDevice.open(path);
  t.after(() => dev.close());
  const seen: Array<[number, number]> = [];
  dev.onWritten((o, l) => seen.push([o, l]));
  const parts = [randomBytes(100), randomBytes(5000), randomBytes(1)];
  await new Promise<void>((res, rej) => dev.writev(parts, 1000, (e) => (e ? rej(e) : res())));
  assert.deepEqual(seen, [[1000, 5101]]);
  assert.deepEqual(readFileSync(path).subarray(1000, 6101), Buffer.concat(parts));
  const outs = [Buffer.alloc(50), Buffer.alloc(5051)];
  await new Promise<void>((res, rej) => dev.readv(outs, 1000, (e) => (e ? rej(e) : res())));
  assert.deepEqual(Buffer.concat(outs), Buffer.concat(parts));
  await assert.rejects(new Promise<void>((res, rej) => dev.writev([Buffer.alloc(10)], 65530, (e) => (e ? rej(e) : res()))), (e: { code?: string }) => e.code === 'ENOSPC');
  await assert.rejects(new Promise<void>((res, rej) => dev.readv([Buffer.alloc(10)], 65530, (e) => (e ? rej(e) : res()))), (e: { code?: string }) => e.code === 'EINVAL');
});

test('server merges pipelined contiguous writes (odd sizes, FUA, multi-chunk payloads) and reads correctly', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'img');
  const size = 8 << 20;
  writeFileSync(path, Buffer.alloc(size));
  const provider = new StaticExportProvider([{ name: 'd', path, mode: 'readwrite' }]);
  const server = new NbdServer({ exports: provider });
  const { port } = await server.listen(0, '127.0.0.1');
  t.after(async () => {
    await server.close();
    await provider.close();
  });
  const probe = await provider.open('d', { address: '127.0.0.1', tls: false });
  assert.ok(!('refused' in probe));
  let announcements = 0;
  if (!('refused' in probe)) {
    probe.device.onWritten(() => announcements++);
    probe.release();
  }
  const c = await RawNbd.connect(port);
  await c.handshake();
  await c.option(P.OPT_STRUCTURED_REPLY);
  await c.go('d');
  const model = Buffer.alloc(size);
  const reqs: Buffer[] = [];
  let off = 0;
  let h = 0n;
  // 150 small contiguous writes of odd sizes, then 4 contiguous 1 MiB writes (payloads span many chunks).
  for (let i = 0; i < 150; i++) {
    const d = randomBytes(1000 + ((i * 37) % 3000));
    d.copy(model, off);
    reqs.push(P.buildRequest(P.CMD_WRITE, i % 10 === 0 ? P.CMD_FLAG_FUA : 0, h++, off, d.length), d);
    off += d.length;
  }
  off = 4 << 20;
  for (let i = 0; i < 4; i++) {
    const d = randomBytes(1 << 20);
    d.copy(model, off);
    reqs.push(P.buildRequest(P.CMD_WRITE, 0, h++, off, d.length), d);
    off += d.length;
  }
  c.write(Buffer.concat(reqs));
  for (let i = 0; i < 154; i++) {
    const ch = await c.chunk();
    assert.equal(ch.simple ? ch.error : -1, 0);
  }
  assert.ok(readFileSync(path).equals(model));
  assert.ok(announcements < 154, `contiguous writes were merged (${announcements} disk writes for 154 requests)`);
  // Contiguous structured reads, merged on the server, each answered with its own data.
  const n = 64;
  const rq: Buffer[] = [];
  for (let i = 0; i < n; i++) rq.push(P.buildRequest(P.CMD_READ, 0, BigInt(i), (4 << 20) + i * 65536, 65536));
  c.write(Buffer.concat(rq));
  for (let i = 0; i < n; i++) {
    const ch = await c.chunk();
    assert.equal(ch.type, P.REPLY_TYPE_OFFSET_DATA);
    const at = Number(ch.payload.readBigUInt64BE(0));
    assert.equal(at, (4 << 20) + Number(ch.handle) * 65536);
    assert.ok(ch.payload.subarray(8).equals(model.subarray(at, at + 65536)));
  }
  c.destroy();
});
