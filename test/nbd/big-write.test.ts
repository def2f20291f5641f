/**
 * Write framing through a real server. A WRITE as large as the per-connection in-flight limit (32 MiB with
 * the default limits, the advertised maximum block size) fills the connection's budget the moment it is
 * admitted; it must still receive its whole payload and be answered (pausing the socket at that point
 * leaves the payload unread and the connection hung with nothing queued, which the stall timeout does not
 * end). A zero-length WRITE whose header ends a socket chunk is refused with EINVAL and serving goes on.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, ftruncateSync, readSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { NbdServer, type NbdLimits } from '../../src/nbd/server.js';
import { StaticExportProvider } from '../../src/nbd/exports.js';
import * as P from '../../src/nbd/packet.js';
import { tempDir } from '../helpers/tools.js';
import { RawNbd } from './client.js';

/** A server over a sparse image of `size` bytes, and a client in transmission on it. */
async function serve(t: TestContext, size: number, limits: Partial<NbdLimits> = {}) {
  const dir = tempDir(t);
  const path = join(dir, 'disk.img');
  const fd = openSync(path, 'w');
  ftruncateSync(fd, size);
  closeSync(fd);
  const provider = new StaticExportProvider([{ name: 'rw', path, mode: 'readwrite' }]);
  const server = new NbdServer({ exports: provider, limits });
  const { port } = await server.listen(0, '127.0.0.1');
  t.after(async () => {
    await server.close();
    await provider.close();
  });
  const c = await RawNbd.connect(port);
  t.after(() => c.destroy());
  await c.handshake();
  await c.go('rw');
  return { path, server, c };
}

async function writeOnce(t: TestContext, size: number, limits: Partial<NbdLimits>): Promise<void> {
  const { path, server, c } = await serve(t, 2 * size, limits);
  const data = Buffer.alloc(size);
  for (let i = 0; i < size; i += 4096) data.writeUInt32BE(i, i);
  c.request(P.CMD_WRITE, 0, 7n, size, size, data);
  const r = await c.simpleReply(0);
  assert.equal(r.error, 0);
  assert.equal(r.handle, 7n);
  // And the pipeline goes on: a READ of what was written.
  c.request(P.CMD_READ, 0, 8n, size, 4096);
  const back = await c.simpleReply(4096);
  assert.equal(back.error, 0);
  assert.deepEqual(back.data, data.subarray(0, 4096));
  const onDisk = Buffer.alloc(16);
  const rfd = openSync(path, 'r');
  readSync(rfd, onDisk, 0, 16, size + size - 4096);
  closeSync(rfd);
  assert.deepEqual(onDisk, data.subarray(size - 4096, size - 4096 + 16));
  for (let i = 0; i < 100 && server.inflightBytes > 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(server.inflightBytes, 0, 'the budget is given back');
}

test('a WRITE as large as maxInflightBytes is answered (small limits)', async (t) => {
  await writeOnce(t, 1 << 20, { maxInflightBytes: 1 << 20, maxPayload: 1 << 20 });
});

test('a 32 MiB WRITE is answered with the default limits', async (t) => {
  await writeOnce(t, 32 << 20, {});
});

test('a zero-length WRITE whose header ends a socket chunk gets EINVAL; the connection serves on', async (t) => {
  const { c } = await serve(t, 1 << 20);
  c.request(P.CMD_WRITE, 0, 1n, 0, 0);
  const r = await c.simpleReply();
  assert.equal(r.error, P.NBD_EINVAL);
  await sleep(20);
  c.request(P.CMD_READ, 0, 2n, 0, 512);
  const back = await c.simpleReply(512);
  assert.equal(back.error, 0);
  assert.equal(back.handle, 2n);
});
