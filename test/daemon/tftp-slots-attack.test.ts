/**
 * Attack at the daemon: unknown PCs (served by `defaults`) fill the TFTP slots with transfers they never
 * acknowledge; a configured Pi is still served at once (the registry calls it known), and the tftp limit
 * keys of the config reach the server.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { haveTools, tempDir } from '../helpers/tools.js';
import { buildPiOsImage, PI_IMAGE_TOOLS } from '../helpers/piimage.js';
import { startDaemon, testConfig } from './harness.js';
import { NeverAck, curlFrom, spreadAddresses, until } from '../tftp/attack.js';

const SERIAL = '12345678';

test('daemon: never-ACKing unknown PCs hold at most unknownShare of the slots; a configured Pi is served at once', async (t) => {
  if (!haveTools(t, 'curl', ...PI_IMAGE_TOOLS)) return;
  const dir = tempDir(t);
  const image = join(dir, 'pi.img');
  await buildPiOsImage(image);
  const root = join(dir, 'tftp');
  mkdirSync(root);
  writeFileSync(join(root, 'pxelinux.0'), Buffer.alloc(64 * 1024, 1));
  const config = testConfig(join(dir, 'state'), `images:
  pios: { path: ${image}, mode: readonly }
pis:
  "${SERIAL}": { image: pios }
defaults: { tftpRoot: ${root} }
`).replace(
    'tftp: { address: 127.0.0.1, port: 0 }',
    'tftp: { address: 127.0.0.1, port: 0, maxTransfers: 32, maxPerClient: 4, maxPerSubnet: 8, unknownShare: 50, firstAckTimeoutMs: 3000 }',
  );
  const d = await startDaemon(t, dir, config);
  const active = (): number => (d.daemon.statusJson() as { tftp: { active: number } }).tftp.active;
  // 16 addresses in 16 /24s, 4 transfers each: 64 wanted, the unknown share is 16.
  const attack = await NeverAck.open(spreadAddresses(16, 30), 4);
  t.after(() => attack.close());
  attack.sustain(d.tftpPort, 'pxelinux.0');
  assert.ok(await until(() => active() >= 16, 3000), `attack under way: ${active()}`);
  await new Promise((r) => setTimeout(r, 500));
  assert.ok(active() <= 16, `unknown clients hold at most half of 32: ${active()}`);
  const got = await curlFrom('127.0.0.1', d.tftpPort, `${SERIAL}/config.txt`, 3000);
  assert.ok(got.data && got.data.length > 0, `the configured Pi is served at once: ${got.err}`);
  console.log(`# daemon: attackers held ${active()}/32 slots; the configured Pi got config.txt in ${got.ms} ms`);
});
