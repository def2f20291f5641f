/**
 * kill -9 right after the replies: every write acknowledged with FUA, or before an acknowledged FLUSH, is
 * in the image (read-write export) or the overlay (copy-on-write export) after a restart.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { REPO_ROOT, startProcess, tempDir } from '../helpers/tools.js';
import * as P from '../../src/nbd/packet.js';
import { RawNbd } from './client.js';

const SERVE = join(REPO_ROOT, 'test/nbd/fixtures/serve.ts');

async function serve(cfg: unknown): Promise<{ port: number; kill9(): Promise<void>; stop(): Promise<void> }> {
  const child = startProcess(process.execPath, ['--import', 'tsx', SERVE, JSON.stringify(cfg), '0'], { cwd: REPO_ROOT });
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    let errText = '';
    child.stderr!.on('data', (d: Buffer) => (errText += d.toString()));
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /PORT (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.on('exit', (code) => reject(new Error(`serve exited ${code}: ${errText}`)));
  });
  return {
    port,
    stop: () => child.stop(),
    kill9: () =>
      new Promise((res) => {
        child.once('exit', () => res());
        process.kill(child.pid!, 'SIGKILL');
      }),
  };
}

interface Written {
  offset: number;
  data: Buffer;
}

/** Writes: FUA ones, and plain ones followed by a FLUSH; resolves once every reply arrived. */
async function writeAndAck(c: RawNbd, size: number): Promise<Written[]> {
  const written: Written[] = [];
  let h = 1n;
  const fua: Written[] = [];
  for (let i = 0; i < 16; i++) fua.push({ offset: i * 65536 + 123, data: randomBytes(5000) });
  for (const w of fua) c.request(P.CMD_WRITE, P.CMD_FLAG_FUA, h++, w.offset, w.data.length, w.data);
  for (const _ of fua) assert.equal((await c.simpleReply()).error, 0);
  written.push(...fua);
  const plain: Written[] = [];
  for (let i = 0; i < 32; i++) plain.push({ offset: size / 2 + i * 32768 + 7, data: randomBytes(20000) });
  for (const w of plain) c.request(P.CMD_WRITE, 0, h++, w.offset, w.data.length, w.data);
  for (const _ of plain) assert.equal((await c.simpleReply()).error, 0);
  c.request(P.CMD_FLUSH, 0, h++, 0, 0);
  assert.equal((await c.simpleReply()).error, 0);
  written.push(...plain);
  return written;
}

test('read-write export: acknowledged FUA writes and flushed writes survive kill -9', async (t) => {
  const dir = tempDir(t);
  const img = join(dir, 'img');
  const size = 4 << 20;
  writeFileSync(img, Buffer.alloc(size));
  const srv = await serve([{ name: 'd', path: img, mode: 'readwrite' }]);
  t.after(() => srv.stop());
  const c = await RawNbd.connect(srv.port);
  await c.handshake();
  await c.go('d');
  const written = await writeAndAck(c, size);
  await srv.kill9();
  const file = readFileSync(img);
  for (const w of written) assert.deepEqual(file.subarray(w.offset, w.offset + w.data.length), w.data, `write at ${w.offset}`);
  // And through a restarted server.
  const srv2 = await serve([{ name: 'd', path: img, mode: 'readwrite' }]);
  t.after(() => srv2.stop());
  const c2 = await RawNbd.connect(srv2.port);
  await c2.handshake();
  await c2.go('d');
  const w = written[20]!;
  c2.request(P.CMD_READ, 0, 1n, w.offset, w.data.length);
  assert.deepEqual((await c2.simpleReply(w.data.length)).data, w.data);
  c2.destroy();
});

test('copy-on-write export: acknowledged writes are in the overlay after kill -9 and restart', async (t) => {
  const dir = tempDir(t);
  const base = join(dir, 'base');
  const size = 4 << 20;
  const baseData = randomBytes(size);
  writeFileSync(base, baseData);
  const cfg = [{ name: 'c', path: base, mode: 'cow', stateDir: join(dir, 'state') }];
  const srv = await serve(cfg);
  t.after(() => srv.stop());
  const c = await RawNbd.connect(srv.port);
  await c.handshake();
  await c.go('c');
  const written = await writeAndAck(c, size);
  await srv.kill9();
  const srv2 = await serve(cfg);
  t.after(() => srv2.stop());
  const c2 = await RawNbd.connect(srv2.port);
  await c2.handshake();
  await c2.go('c');
  const model = Buffer.from(baseData);
  for (const w of written) w.data.copy(model, w.offset);
  for (let off = 0; off < size; off += 1 << 20) {
    c2.request(P.CMD_READ, 0, BigInt(off), off, 1 << 20);
    const r = await c2.simpleReply(1 << 20);
    assert.deepEqual(r.data, model.subarray(off, off + (1 << 20)), `MiB at ${off}`);
  }
  c2.destroy();
  assert.deepEqual(readFileSync(base), baseData, 'base unchanged');
});
