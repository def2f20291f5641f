import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { haveTools, run, tempDir } from '../helpers/tools.js';
import { mcopyIn } from '../helpers/fatimg.js';
import { buildPiOsImage, netbootd, PI_OS_LAYOUT } from '../helpers/piimage.js';
import { startDaemon, testConfig, writeChangedBlocks } from './harness.js';
import { RawNbd } from '../nbd/client.js';

const boot = PI_OS_LAYOUT.bootStart;
const sha = (f: string): string => createHash('sha256').update(readFileSync(f)).digest('hex');

test('copy-on-write: TFTP serves each client its own view; neighbours and the base are untouched; reset restores the base', async (t) => {
  if (!haveTools(t, 'curl', 'qemu-io', 'mcopy', 'sfdisk', 'mkfs.vfat', 'mkfs.ext4')) return;
  const dir = tempDir(t);
  const image = join(dir, 'pi.img');
  await buildPiOsImage(image);
  const baseHash = sha(image);
  const state = join(dir, 'state');
  const config = testConfig(state, `images:
  pios: { path: ${image}, mode: cow }
pis:
  "11111111": { image: pios }
  "22222222": { image: pios }
`).replace('status: { enabled: false }', 'status: { address: 127.0.0.1, port: 0 }');
  const d = await startDaemon(t, dir, config);
  const fetchFrom = async (source: string, path: string): Promise<string> =>
    (await run('curl', ['-sS', '--interface', source, `tftp://127.0.0.1:${d.tftpPort}/${path}`])).stdout.toString();

  // Pi 1 boots from 127.0.0.1 and Pi 2 from 127.0.0.2: both see the base.
  assert.equal(await fetchFrom('127.0.0.1', '11111111/cmdline.txt'), PI_OS_LAYOUT.cmdline);
  assert.equal(await fetchFrom('127.0.0.2', '22222222/cmdline.txt'), PI_OS_LAYOUT.cmdline);

  // Pi 1 rewrites its cmdline.txt over NBD (qemu-io connects from 127.0.0.1: the daemon knows it is Pi 1).
  const copy = join(dir, 'copy.img');
  copyFileSync(image, copy);
  const mine = PI_OS_LAYOUT.cmdline.replace('rootwait', 'rootwait quiet splash');
  writeFileSync(join(dir, 'cmdline.txt'), mine);
  await mcopyIn(copy, [join(dir, 'cmdline.txt')], '::/', { offset: boot, overwrite: true });
  await writeChangedBlocks(dir, image, copy, boot, PI_OS_LAYOUT.bootSize, `nbd://127.0.0.1:${d.nbdPort}/pios`);
  assert.ok(existsSync(join(state, 'pios', 'pi-11111111.overlay')), 'the overlay is named by the Pi serial');

  assert.equal(await fetchFrom('127.0.0.1', '11111111/cmdline.txt'), mine, 'Pi 1 gets what it wrote');
  assert.equal(await fetchFrom('127.0.0.2', '22222222/cmdline.txt'), PI_OS_LAYOUT.cmdline, 'Pi 2 still gets the base');
  assert.equal(sha(image), baseHash, 'the base image never changes');

  // Reset while connected is refused; after, the overlay is gone and Pi 1 sees the base again.
  const statusPort = d.daemon.bound.status!;
  const post = (body: unknown) =>
    fetch(`http://127.0.0.1:${statusPort}/reset-overlay`, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }).then(async (r) => ({ status: r.status, body: (await r.json()) as Record<string, unknown> }));
  const c = await RawNbd.connect(d.nbdPort, { localAddress: '127.0.0.1' });
  await c.handshake();
  await c.go('pios');
  const busy = await post({ image: 'pios', client: '11111111' });
  assert.equal(busy.status, 409);
  assert.match(String(busy.body.error), /in use/);
  c.destroy();
  await c.closed;
  let r = await post({ image: 'pios', client: '11111111' });
  for (let i = 0; i < 20 && r.status === 409; i++) {
    await new Promise((res) => setTimeout(res, 100)); // the server notices the closed socket
    r = await post({ image: 'pios', client: '11111111' });
  }
  assert.deepEqual(r, { status: 200, body: { image: 'pios', identity: 'pi-11111111', existed: true } });
  assert.equal(existsSync(join(state, 'pios', 'pi-11111111.overlay')), false);
  assert.equal(await fetchFrom('127.0.0.1', '11111111/cmdline.txt'), PI_OS_LAYOUT.cmdline);
  assert.equal((await post({ image: 'nope', client: '11111111' })).status, 409);

  // With the daemon stopped, the CLI deletes the overlay itself.
  await writeChangedBlocks(dir, image, copy, boot, PI_OS_LAYOUT.bootSize, `nbd://127.0.0.1:${d.nbdPort}/pios`);
  await d.daemon.stop();
  const out = await netbootd(['reset-overlay', 'pios', '11111111', '--config', d.configPath]);
  assert.equal(out.code, 0, out.stderr);
  assert.match(out.stdout.toString(), /reset the overlay pi-11111111 of image pios/);
  assert.equal(existsSync(join(state, 'pios', 'pi-11111111.map')), false);
});
