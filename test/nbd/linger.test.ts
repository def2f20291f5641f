/**
 * After NBD_CMD_DISC the server ends its side and keeps reading until the peer's FIN, so the connection
 * (its writer slot, its overlay) is released at once; a shutdown right after a client's DISC and close does
 * not wait for a fallback timer.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NbdServer } from '../../src/nbd/server.js';
import { StaticExportProvider } from '../../src/nbd/exports.js';
import { RawNbd } from './client.js';
import { tempDir } from '../helpers/tools.js';

test('DISC then close: the connection is gone at once and close() does not wait', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'a.img'), Buffer.alloc(1 << 20));
  const provider = new StaticExportProvider([{ name: 'a', path: join(dir, 'a.img'), mode: 'readwrite' }]);
  const server = new NbdServer({ exports: provider });
  const { port } = await server.listen(0, '127.0.0.1');
  t.after(() => provider.close());

  // A client that says DISC and keeps its socket open: the server ends its side; once the client closes,
  // the connection is released without any timer.
  const a = await RawNbd.connect(port);
  await a.handshake();
  await a.go('a');
  a.request(1, 0, 1n, 0, 4096, Buffer.alloc(4096, 7));
  a.request(2, 0, 2n, 0, 0);
  await a.simpleReply();
  await a.waitEnd();
  a.socket.end();
  const t0 = Date.now();
  while (server.connections > 0 && Date.now() - t0 < 3000) await new Promise((r) => setTimeout(r, 10));
  assert.equal(server.connections, 0);
  assert.ok(Date.now() - t0 < 1000, `released after ${Date.now() - t0} ms`);

  // DISC and an immediate close, then shutdown.
  const b = await RawNbd.connect(port);
  await b.handshake();
  await b.go('a');
  b.request(1, 0, 3n, 0, 4096, Buffer.alloc(4096, 8));
  b.request(2, 0, 4n, 0, 0);
  b.destroy();
  const t1 = Date.now();
  await server.close();
  assert.ok(Date.now() - t1 < 2000, `close() took ${Date.now() - t1} ms`);
});
