/**
 * Attack: the image file changes under a running NBD server. Deleted, replaced by a rename, truncated:
 * the clients of the old file get errors (a FLUSH or a FUA write is never acknowledged into a file that
 * lost its name, a read past the new end is never zeros), new clients get the file the name now holds,
 * and nothing acknowledged by a FLUSH before the change is lost.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, renameSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { NbdServer } from '../../src/nbd/server.js';
import { StaticExportProvider } from '../../src/nbd/exports.js';
import * as P from '../../src/nbd/packet.js';
import { tempDir } from '../helpers/tools.js';
import { RawNbd } from './client.js';

const SIZE = 1 << 20;

async function setup(t: TestContext) {
  const dir = tempDir(t);
  const rw = join(dir, 'rw.img');
  const base = join(dir, 'base.img');
  writeFileSync(rw, randomBytes(SIZE));
  writeFileSync(base, randomBytes(SIZE));
  const provider = new StaticExportProvider([
    { name: 'rw', path: rw, mode: 'readwrite' },
    { name: 'cow', path: base, mode: 'cow', stateDir: join(dir, 'state') },
  ]);
  const server = new NbdServer({ exports: provider });
  const { port } = await server.listen(0, '127.0.0.1');
  t.after(async () => {
    await server.close();
    await provider.close();
  });
  return { dir, rw, base, port, provider };
}

/** A connection with simple replies, one request at a time. */
async function attach(port: number, name: string) {
  const c = await RawNbd.connect(port);
  await c.handshake();
  await c.go(name);
  let h = 1n;
  const io = {
    c,
    async write(offset: number, data: Buffer, fua = false): Promise<number> {
      c.request(P.CMD_WRITE, fua ? P.CMD_FLAG_FUA : 0, h++, offset, data.length, data);
      return (await c.simpleReply()).error;
    },
    async flush(): Promise<number> {
      c.request(P.CMD_FLUSH, 0, h++, 0, 0);
      return (await c.simpleReply()).error;
    },
    async read(offset: number, length: number): Promise<{ error: number; data: Buffer }> {
      c.request(P.CMD_READ, 0, h++, offset, length);
      return c.simpleReply(length);
    },
  };
  return io;
}

test('read-write image deleted while attached: FLUSH and FUA writes fail (never acknowledged into an unlinked file); new clients are refused', async (t) => {
  const { rw, port } = await setup(t);
  const a = await attach(port, 'rw');
  const before = randomBytes(4096);
  assert.equal(await a.write(0, before), 0);
  assert.equal(await a.flush(), 0);
  assert.deepEqual(readFileSync(rw).subarray(0, 4096), before, 'flushed data is in the named file');

  unlinkSync(rw);
  await a.write(8192, randomBytes(4096)); // may be accepted: only FLUSH/FUA promise durability
  assert.notEqual(await a.flush(), 0, 'FLUSH after the image was deleted must fail');
  assert.notEqual(await a.write(12288, randomBytes(512), true), 0, 'FUA write after deletion must fail');
  const r = await a.read(0, 4096);
  assert.notEqual(r.error, 0, 'the stale device fails every later request');

  // A new client gets a clear refusal, not the deleted inode.
  const b = await RawNbd.connect(port);
  await b.handshake();
  await assert.rejects(b.go('rw'), /GO refused/);
  a.c.destroy();
  b.destroy();
});

test('read-write image replaced by a rename: the old connection gets errors, a new one sees the new file; flushed data was in the old file', async (t) => {
  const { dir, rw, port } = await setup(t);
  const a = await attach(port, 'rw');
  const flushed = randomBytes(4096);
  assert.equal(await a.write(0, flushed), 0);
  assert.equal(await a.flush(), 0);

  // What an administrator does: copy, change, rename over.
  const next = Buffer.from(readFileSync(rw));
  const marker = Buffer.from('this is the new image file');
  marker.copy(next, 65536);
  writeFileSync(join(dir, 'rw.img.tmp'), next);
  renameSync(join(dir, 'rw.img.tmp'), rw);

  await a.write(4096, randomBytes(4096));
  assert.notEqual(await a.flush(), 0, 'FLUSH into the replaced (now unlinked) file must fail');
  const old = await a.read(65536, marker.length);
  assert.notEqual(old.error, 0, 'the old connection is told, not switched to the new file');

  const b = await attach(port, 'rw');
  const seen = await b.read(65536, marker.length);
  assert.equal(seen.error, 0);
  assert.deepEqual(seen.data, marker, 'a new connection reads the new file');
  const head = await b.read(0, 4096);
  assert.deepEqual(head.data, flushed, 'what the FLUSH acknowledged before the change is in the file');
  const w = randomBytes(4096);
  assert.equal(await b.write(4096, w, true), 0);
  assert.deepEqual(readFileSync(rw).subarray(4096, 8192), w, 'new writes land in the named file');
  a.c.destroy();
  b.c.destroy();
});

test('image truncated while attached: a READ past the new end is an error, not zeros', async (t) => {
  const { rw, port } = await setup(t);
  const a = await attach(port, 'rw');
  assert.equal((await a.read(SIZE - 4096, 4096)).error, 0);
  truncateSync(rw, SIZE / 2);
  const r = await a.read(SIZE - 4096, 4096);
  assert.notEqual(r.error, 0, 'a read past the new end must fail (today: zeros reported as success)');
  assert.notEqual(await a.flush(), 0);
  a.c.destroy();
});

test('copy-on-write export: base deleted or replaced: FLUSH and FUA fail on the old connection; the periodic check finds it too', async (t) => {
  const { dir, base, port, provider } = await setup(t);
  const a = await attach(port, 'cow');
  assert.equal(await a.write(0, randomBytes(4096)), 0);
  assert.equal(await a.flush(), 0);
  // Replaced: the new base is another file under the same name.
  writeFileSync(join(dir, 'base.tmp'), randomBytes(SIZE));
  renameSync(join(dir, 'base.tmp'), base);
  assert.notEqual(await a.flush(), 0, 'FLUSH over a replaced base must fail');
  assert.notEqual(await a.write(4096, randomBytes(4096), true), 0, 'FUA write over a replaced base must fail');
  a.c.destroy();

  // A new connection gets the same overlay over the new base; deleting that base is found by a check.
  const b = await attach(port, 'cow');
  assert.equal((await b.read(0, 4096)).error, 0);
  unlinkSync(base);
  const changes = await provider.devices.checkFiles();
  assert.ok(changes.some((c) => c.name === base && c.change === 'deleted'), JSON.stringify(changes));
  assert.notEqual((await b.read(65536, 4096)).error, 0, 'reads after the check fail');
  assert.notEqual(await b.flush(), 0);
  b.c.destroy();
});
