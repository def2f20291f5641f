/**
 * Copy-on-write overlays: the device itself (against a model), persistence, reset, allocation; and
 * through the NBD server: two clients on one base see only their own writes, the base never changes,
 * overlays survive a server restart.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, readFileSync, existsSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import fc from 'fast-check';
import { CowBlockDevice, overlayPaths, resetOverlay, safeComponent } from '../../src/disk/cow.js';
import { FileBlockDevice, readAt, writeAt, flushDevice } from '../../src/disk/blockdev.js';
import { MemoryBlockDevice } from '../../src/testing/memory-device.js';
import { NbdServer } from '../../src/nbd/server.js';
import { StaticExportProvider } from '../../src/nbd/exports.js';
import * as P from '../../src/nbd/packet.js';
import { tempDir } from '../helpers/tools.js';
import { RawNbd } from './client.js';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

test('cow device: partial and spanning writes merge with the base; base untouched; writes announced', async (t) => {
  const dir = tempDir(t);
  const baseData = randomBytes(64 * 1024 + 1000); // size not a multiple of the block size
  const base = new MemoryBlockDevice(Buffer.from(baseData), true);
  const dev = await CowBlockDevice.open(base, dir, 'exp', '10.0.0.1');
  const seen: Array<[number, number]> = [];
  dev.onWritten((o, l) => seen.push([o, l]));
  const model = Buffer.from(baseData);
  const w = async (pos: number, data: Buffer): Promise<void> => {
    await writeAt(dev, pos, data);
    data.copy(model, pos);
  };
  await w(10, Buffer.from('abc')); // inside block 0, partial
  await w(4090, randomBytes(10)); // spans blocks 0/1, both partial
  await w(8192, randomBytes(8192)); // whole blocks 2 and 3
  await w(20000, randomBytes(30000)); // partial head, whole middle, partial tail
  await w(baseData.length - 5, Buffer.from('tail!')); // the short last block
  assert.deepEqual(await readAt(dev, 0, dev.size), model);
  assert.deepEqual(base.data, baseData, 'base unchanged');
  assert.deepEqual(seen[0], [10, 3]);
  assert.equal(seen.length, 5);
  await assert.rejects(writeAt(dev, dev.size - 1, Buffer.alloc(2)), (e: { code?: string }) => e.code === 'ENOSPC');
  await assert.rejects(readAt(dev, dev.size, 1), (e: { code?: string }) => e.code === 'EINVAL');
  await dev.close();
});

test('cow device matches a model under random concurrent writes (same blocks, overlapping batches)', async (t) => {
  const dir = tempDir(t);
  let n = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.array(fc.tuple(fc.nat(40000), fc.integer({ min: 1, max: 9000 })), { minLength: 1, maxLength: 6 }), { minLength: 1, maxLength: 5 }),
      async (batches) => {
        const baseData = randomBytes(48 * 1024);
        const base = new MemoryBlockDevice(Buffer.from(baseData), true);
        const dev = await CowBlockDevice.open(base, dir, 'model', `c${n++}`);
        const model = Buffer.from(baseData);
        for (const batch of batches) {
          // Non-overlapping within a batch (the client may not rely on the order of overlapping writes),
          // but sharing blocks: they run concurrently.
          const taken: Array<[number, number]> = [];
          const ops: Promise<void>[] = [];
          for (const [pos0, len0] of batch) {
            const pos = Math.min(pos0, dev.size - 1);
            const len = Math.min(len0, dev.size - pos);
            if (taken.some(([a, b]) => pos < b && a < pos + len)) continue;
            taken.push([pos, pos + len]);
            const data = randomBytes(len);
            data.copy(model, pos);
            ops.push(writeAt(dev, pos, data));
          }
          await Promise.all(ops);
        }
        assert.deepEqual(await readAt(dev, 0, dev.size), model);
        assert.deepEqual(base.data, baseData);
        await dev.close();
      },
    ),
    { numRuns: 40 },
  );
});

test('cow overlay persists across reopen, flush makes it durable, reset removes it, mismatched maps are refused', async (t) => {
  const dir = tempDir(t);
  const basePath = join(dir, 'base.img');
  const baseData = randomBytes(256 * 1024);
  writeFileSync(basePath, baseData);
  const base = await FileBlockDevice.open(basePath, { readOnly: true });
  t.after(() => base.close());
  const state = join(dir, 'state');
  const a = await CowBlockDevice.open(base, state, 'img/1', 'aa:bb:cc:dd:ee:ff');
  await writeAt(a, 5000, Buffer.from('persist me'));
  await flushDevice(a);
  await a.close();
  const p = overlayPaths(state, 'img/1', 'aa:bb:cc:dd:ee:ff');
  assert.ok(existsSync(p.overlay) && existsSync(p.map));
  assert.ok(!p.overlay.includes('img/1'), 'names are one path component');
  const b = await CowBlockDevice.open(base, state, 'img/1', 'aa:bb:cc:dd:ee:ff');
  assert.equal((await readAt(b, 5000, 10)).toString(), 'persist me');
  assert.equal(b.allocatedBlocks, 1); // 5000..5010 lies in block 1 (4 KiB blocks), nothing else
  await b.close();
  await assert.rejects(CowBlockDevice.open(base, state, 'img/1', 'aa:bb:cc:dd:ee:ff', { blockSize: 65536 }), (e: { code?: string }) => e.code === 'COW_MAP');
  assert.equal(await resetOverlay(state, 'img/1', 'aa:bb:cc:dd:ee:ff'), true);
  assert.equal(await resetOverlay(state, 'img/1', 'aa:bb:cc:dd:ee:ff'), false);
  const c = await CowBlockDevice.open(base, state, 'img/1', 'aa:bb:cc:dd:ee:ff');
  assert.deepEqual(await readAt(c, 5000, 10), baseData.subarray(5000, 5010));
  await c.close();
  assert.deepEqual(readFileSync(basePath), baseData);
  assert.equal(safeComponent('..'), '%2e.');
  assert.equal(safeComponent('a/b'), 'a%2fb');
});

test('cow allocation: written blocks allocated, zero base blocks hole+zero, data base blocks allocated', async (t) => {
  const dir = tempDir(t);
  const baseData = Buffer.alloc(64 * 1024);
  baseData.fill(7, 16384, 32768); // blocks 4..7 data, the rest zeros
  const dev = await CowBlockDevice.open(new MemoryBlockDevice(baseData, true), dir, 'e', 'c');
  await writeAt(dev, 0, Buffer.alloc(4096, 1)); // block 0 written (with non-zero data)
  await writeAt(dev, 40960, Buffer.alloc(100, 0)); // block 10 written (zeros, still allocated)
  const ext = await new Promise<Array<{ length: number; hole: boolean; zero: boolean }>>((res, rej) =>
    dev.blockStatus(0, dev.size, (e, x) => (e ? rej(e) : res(x!))),
  );
  assert.deepEqual(ext, [
    { length: 4096, hole: false, zero: false },
    { length: 12288, hole: true, zero: true },
    { length: 16384, hole: false, zero: false },
    { length: 8192, hole: true, zero: true },
    { length: 4096, hole: false, zero: false },
    { length: 20480, hole: true, zero: true },
  ]);
  await dev.close();
});

async function startServer(base: string, state: string) {
  const provider = new StaticExportProvider([{ name: 'pi', path: base, mode: 'cow', stateDir: state }]);
  const server = new NbdServer({ exports: provider });
  const { port } = await server.listen(0, '127.0.0.1');
  return { provider, server, port, stop: async () => { await server.close(); await provider.close(); } };
}

async function client(port: number, localAddress: string): Promise<RawNbd> {
  const c = await RawNbd.connect(port, { localAddress });
  await c.handshake();
  const g = await c.go('pi');
  assert.equal(g.flags & P.TFLAG_READ_ONLY, 0);
  return c;
}

test('cow export over NBD: two clients see only their own writes; base never changes; overlays survive a restart', async (t) => {
  const dir = tempDir(t);
  const base = join(dir, 'base.img');
  const baseData = randomBytes(1 << 20);
  writeFileSync(base, baseData);
  const baseHash = sha(baseData);
  const state = join(dir, 'state');
  let s = await startServer(base, state);
  t.after(() => s.stop());

  const a = await client(s.port, '127.0.0.1');
  const b = await client(s.port, '127.0.0.2');
  a.request(P.CMD_WRITE, 0, 1n, 1000, 7, Buffer.from('client1'));
  b.request(P.CMD_WRITE, P.CMD_FLAG_FUA, 1n, 1000, 7, Buffer.from('CLIENT2'));
  assert.equal((await a.simpleReply()).error, 0);
  assert.equal((await b.simpleReply()).error, 0);
  a.request(P.CMD_FLUSH, 0, 2n, 0, 0);
  assert.equal((await a.simpleReply()).error, 0);
  a.request(P.CMD_READ, 0, 3n, 998, 11);
  b.request(P.CMD_READ, 0, 3n, 998, 11);
  const ra = (await a.simpleReply(11)).data;
  const rb = (await b.simpleReply(11)).data;
  assert.equal(ra.subarray(2, 9).toString(), 'client1');
  assert.equal(rb.subarray(2, 9).toString(), 'CLIENT2');
  assert.deepEqual(ra.subarray(0, 2), baseData.subarray(998, 1000));
  // A third client (no writes) sees the base.
  const c = await client(s.port, '127.0.0.3');
  c.request(P.CMD_READ, 0, 1n, 998, 11);
  assert.deepEqual((await c.simpleReply(11)).data, baseData.subarray(998, 1009));
  for (const x of [a, b, c]) x.destroy();
  assert.equal(sha(readFileSync(base)), baseHash, 'base bytes unchanged');

  await s.stop();
  s = await startServer(base, state);
  const a2 = await client(s.port, '127.0.0.1');
  a2.request(P.CMD_READ, 0, 1n, 1000, 7);
  assert.equal((await a2.simpleReply(7)).data.toString(), 'client1');
  a2.destroy();
  const b2 = await client(s.port, '127.0.0.2');
  b2.request(P.CMD_READ, 0, 1n, 1000, 7);
  assert.equal((await b2.simpleReply(7)).data.toString(), 'CLIENT2');
  b2.destroy();
  await Promise.all([a2.closed, b2.closed]);
  for (let i = 0; i < 50 && s.server.connections > 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(await s.provider.resetOverlay('pi', '127.0.0.1'), true);
  const a3 = await client(s.port, '127.0.0.1');
  a3.request(P.CMD_READ, 0, 1n, 1000, 7);
  assert.deepEqual((await a3.simpleReply(7)).data, baseData.subarray(1000, 1007));
  a3.destroy();
  assert.equal(sha(readFileSync(base)), baseHash, 'base bytes unchanged');
});
