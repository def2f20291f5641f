/**
 * Attack: the state directory fills up while a client's overlay is being created (a real ENOSPC: a small
 * tmpfs in a private mount namespace). The overlay is made by the client's first write; a write that cannot
 * make it fails (never acknowledged) and leaves nothing half-made, so the next write after space is freed
 * works without a manual reset; a pre-existing overlay is never removed by a failure.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { CowBlockDevice, overlayPaths } from '../../src/disk/cow.js';
import { writeAt } from '../../src/disk/blockdev.js';
import { MemoryBlockDevice } from '../../src/testing/memory-device.js';
import * as P from '../../src/nbd/packet.js';
import { REPO_ROOT, haveTools, run, startProcess, tempDir } from '../helpers/tools.js';
import { RawNbd } from '../nbd/client.js';

const SERVE = join(REPO_ROOT, 'test/disk/fixtures/enospc-serve.ts');

test('ENOSPC while creating an overlay: the write fails, nothing half-made is left; after space is freed the next write works (no reset)', async (t) => {
  if (!haveTools(t, 'unshare', 'mount')) return;
  if (process.getuid?.() !== 0) return t.skip('needs root to mount a tmpfs in a private mount namespace');
  const probe = await run('unshare', ['-m', 'sh', '-c', 'mount -t tmpfs -o size=64k tmpfs /mnt'], { allowFail: true });
  if (probe.code !== 0) return t.skip(`cannot mount a tmpfs in a mount namespace here: ${probe.stderr.toString().trim()}`);

  const dir = tempDir(t);
  const state = join(dir, 'state');
  mkdirSync(state);
  const base = join(dir, 'base.img');
  const baseData = randomBytes(1 << 20);
  writeFileSync(base, baseData);
  const child = startProcess('unshare', [
    '-m', '--propagation', 'private', 'sh', '-c',
    'mount -t tmpfs -o size=256k tmpfs "$0" && exec "$1" --import tsx "$2" "$0" "$3"',
    state, process.execPath, SERVE, base,
  ], { cwd: REPO_ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  t.after(() => child.stop());
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const lines = createInterface({ input: child.stdout! });
  const pending: Array<(l: string) => void> = [];
  lines.on('line', (l) => pending.shift()?.(l));
  const nextLine = (): Promise<string> =>
    new Promise((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`no answer from the server (stderr: ${stderr})`)), 15_000);
      pending.push((l) => {
        clearTimeout(timer);
        res(l);
      });
    });
  const command = (c: string): Promise<string> => {
    const answer = nextLine();
    child.stdin!.write(`${c}\n`);
    return answer;
  };
  const portLine = await nextLine();
  const port = Number(/^port (\d+)$/.exec(portLine)?.[1]);
  assert.ok(port > 0, portLine);

  assert.match(await command('fill'), /^filled \d+ ENOSPC$/);
  // Attaching makes no files (an overlay is made by the first write); reading works.
  const c = await RawNbd.connect(port);
  await c.handshake();
  await c.go('cow');
  c.request(P.CMD_READ, 0, 10n, 0, 4096);
  assert.deepEqual((await c.simpleReply(4096)).data, baseData.subarray(0, 4096));
  assert.equal(await command('ls'), 'ls []', 'a client that only reads leaves no overlay');
  // The first write cannot make the overlay while the state directory is full: an error, twice.
  const data = randomBytes(8192);
  for (let i = 0; i < 2; i++) {
    c.request(P.CMD_WRITE, 0, BigInt(20 + i), 4096, data.length, data);
    assert.notEqual((await c.simpleReply()).error, 0, 'the write that cannot be stored is not acknowledged');
  }
  assert.equal(await command('ls'), 'ls []', 'the failed attempts left no overlay or map behind');

  await command('free');
  // No reset-overlay, no reconnect needed: the next write makes the overlay.
  c.request(P.CMD_WRITE, 0, 1n, 4096, data.length, data);
  assert.equal((await c.simpleReply()).error, 0);
  c.request(P.CMD_FLUSH, 0, 2n, 0, 0);
  assert.equal((await c.simpleReply()).error, 0);
  c.request(P.CMD_READ, 0, 3n, 0, 16384);
  const r = await c.simpleReply(16384);
  assert.equal(r.error, 0);
  assert.deepEqual(r.data, Buffer.concat([baseData.subarray(0, 4096), data, baseData.subarray(12288, 16384)]));
  assert.deepEqual(readFileSync(base), baseData, 'the base is untouched');
  c.destroy();
});

test('a failed overlay open never removes files that existed before it (a client overlay with data)', async (t) => {
  const dir = tempDir(t);
  const p = overlayPaths(dir, 'exp', 'client');
  mkdirSync(p.dir, { recursive: true });
  // An overlay larger than the base: refused, and kept for the administrator to look at.
  writeFileSync(p.overlay, randomBytes(128 * 1024));
  // (No map: the overlay is made at the first write, which finds the old file and refuses it.)
  const stray = await CowBlockDevice.open(new MemoryBlockDevice(Buffer.alloc(64 * 1024), true), dir, 'exp', 'client');
  await assert.rejects(writeAt(stray, 0, Buffer.alloc(512, 1)), /larger than the base/);
  await stray.close();
  assert.ok(existsSync(p.overlay), 'the pre-existing overlay is still there');
  assert.equal(existsSync(p.map), false);

  // A map left all zeros by a creation that failed half-way (before this fix): re-initialised, not refused.
  const q = overlayPaths(dir, 'exp', 'halfmade');
  writeFileSync(q.overlay, Buffer.alloc(0));
  writeFileSync(q.map, Buffer.alloc(4096 + 2));
  const dev = await CowBlockDevice.open(new MemoryBlockDevice(Buffer.alloc(64 * 1024), true), dir, 'exp', 'halfmade');
  assert.equal(dev.allocatedBlocks, 0);
  await dev.close();
});
