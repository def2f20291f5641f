/**
 * A copy-on-write overlay is made by the client's first write: a client that only reads (nbdinfo, a probe, a
 * host opening the export from many addresses) leaves no files and no per-client memory behind.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NbdServer } from '../../src/nbd/server.js';
import { StaticExportProvider } from '../../src/nbd/exports.js';
import { haveTools, run, tempDir } from '../helpers/tools.js';
import { RawNbd } from './client.js';
import * as P from '../../src/nbd/packet.js';

test('reading a cow export makes no overlay files, from any number of addresses; the first write does', async (t) => {
  if (!haveTools(t, 'nbdinfo', 'qemu-io')) return;
  const dir = tempDir(t);
  const base = join(dir, 'base.img');
  writeFileSync(base, Buffer.alloc(4 << 20, 0x5a));
  const state = join(dir, 'state');
  const provider = new StaticExportProvider([{ name: 'cow', path: base, mode: 'cow', stateDir: state }]);
  const server = new NbdServer({ exports: provider });
  const { port } = await server.listen(0, '127.0.0.1');
  t.after(async () => {
    await server.close();
    await provider.close();
  });
  const files = (): string[] => (existsSync(join(state, 'cow')) ? readdirSync(join(state, 'cow')).sort() : []);

  const info = await run('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/cow`]);
  assert.equal(Number(info.stdout.toString().trim()), 4 << 20);
  await run('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0x5a 0 64k', `nbd://127.0.0.1:${port}/cow`]);
  // Many addresses opening and reading: no files.
  for (let i = 2; i < 12; i++) {
    const c = await RawNbd.connect(port, { localAddress: `127.0.0.${i}` });
    await c.handshake();
    await c.go('cow');
    c.request(P.CMD_READ, 0, 1n, 0, 512);
    assert.equal((await c.simpleReply(512)).error, 0);
    c.destroy();
  }
  assert.deepEqual(files(), [], 'readers left no overlay');

  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 8k 4k', '-c', 'flush', `nbd://127.0.0.1:${port}/cow`]);
  assert.deepEqual(files(), ['127.0.0.1.map', '127.0.0.1.overlay'], 'the first write made the overlay of that client');
  await run('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0x11 8k 4k', '-c', 'read -P 0x5a 0 8k', `nbd://127.0.0.1:${port}/cow`]);
});
