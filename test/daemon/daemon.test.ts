import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { haveTools, run, tempDir } from '../helpers/tools.js';
import { mcopyIn, mcopyOut, prng, randomBytes } from '../helpers/fatimg.js';
import { buildPiOsImage, extractRange, PI_OS_LAYOUT } from '../helpers/piimage.js';
import { startDaemon, testConfig, writeChangedBlocks } from './harness.js';

const SERIAL = '12345678';
const boot = PI_OS_LAYOUT.bootStart;

test('coherence: boot files a client rewrites over NBD are what TFTP serves next, without a restart', async (t) => {
  if (!haveTools(t, 'curl', 'qemu-io', 'mcopy', 'sfdisk', 'mkfs.vfat', 'mkfs.ext4')) return;
  const dir = tempDir(t);
  const image = join(dir, 'pi.img');
  await buildPiOsImage(image);
  const d = await startDaemon(t, dir, testConfig(join(dir, 'state'), `images:
  pios: { path: ${image}, mode: readwrite }
pis:
  "${SERIAL}": { image: pios }
`));
  // Boot 1: what the image holds now.
  assert.equal((await d.fetch(`${SERIAL}/cmdline.txt`))!.toString(), PI_OS_LAYOUT.cmdline);
  const oldInitrd = await mcopyOut(image, '/initramfs8', boot);
  assert.deepEqual(await d.fetch(`${SERIAL}/initramfs8`), oldInitrd);

  // The client updates its kernel command line and initramfs: we build the new boot partition bytes with
  // mtools on a copy, and a real NBD client (qemu-io) writes only the 64 KiB blocks that changed.
  const copy = join(dir, 'copy.img');
  copyFileSync(image, copy);
  const newCmdline = PI_OS_LAYOUT.cmdline.replace('rootwait', 'rootwait ip=dhcp nbdroot=127.0.0.1/pios root=/dev/nbd0p2');
  const newInitrd = randomBytes(prng(7), 3 * 1024 * 1024 + 4321);
  writeFileSync(join(dir, 'cmdline.txt'), newCmdline);
  writeFileSync(join(dir, 'initramfs8'), newInitrd);
  await mcopyIn(copy, [join(dir, 'cmdline.txt'), join(dir, 'initramfs8')], '::/', { offset: boot, overwrite: true });
  const newBoot = await writeChangedBlocks(dir, image, copy, boot, PI_OS_LAYOUT.bootSize, `nbd://127.0.0.1:${d.nbdPort}/pios`);

  // Boot 2: same daemon, no restart: TFTP serves exactly the bytes the client wrote.
  assert.equal((await d.fetch(`${SERIAL}/cmdline.txt`))!.toString(), newCmdline);
  assert.deepEqual(await d.fetch(`${SERIAL}/initramfs8`), newInitrd);
  // And the image file holds them too (the write was acknowledged after a flush).
  extractRange(image, boot, PI_OS_LAYOUT.bootSize, join(dir, 'now-boot.bin'));
  assert.ok(readFileSync(join(dir, 'now-boot.bin')).equals(newBoot));
  const disc = d.lines.find((l) => l.msg === 'nbd disconnect' && (l.bytesWritten as number) > 3 * 1024 * 1024);
  assert.ok(disc, 'the NBD session is logged with its byte counts');
  assert.equal(disc.serial, SERIAL, 'and with the Pi it belongs to (learned from its TFTP paths)');
  assert.equal(disc.ip, '127.0.0.1');
});

test('reload: a new config applies without dropping a running transfer; a bad one is rejected and the old one stays', async (t) => {
  if (!haveTools(t, 'atftp', 'curl', 'sfdisk', 'mkfs.vfat', 'mcopy')) return;
  const dir = tempDir(t);
  const image = join(dir, 'pi.img');
  await buildPiOsImage(image);
  const images = `images:\n  pios: { path: ${image}, mode: readonly }\n`;
  const d = await startDaemon(t, dir, testConfig(join(dir, 'state'), `${images}pis:\n  "${SERIAL}": { image: pios }\n`));
  assert.equal(await d.fetch('abcdef01/config.txt'), null, 'unknown serial: file not found');

  // A slow transfer (blksize 8, lockstep) of a 640 KiB file, with a reload in the middle of it.
  const out = join(dir, 'kernel8.img');
  const transfer = run('atftp', ['--option', 'blksize 8', '-g', '-r', `${SERIAL}/kernel8.img`, '-l', out, '127.0.0.1', String(d.tftpPort)], { timeoutMs: 120_000 });
  await new Promise((r) => setTimeout(r, 400));
  writeFileSync(d.configPath, testConfig(join(dir, 'state'), `${images}pis:\n  "${SERIAL}": { image: pios }\n  abcdef01: { image: pios }\n`));
  assert.equal(await d.daemon.reload('test'), true);
  const st = d.daemon.statusJson() as { tftp: { active: number; transfers: Array<{ path: string; serial?: string; percent: number }> } };
  assert.ok(st.tftp.active >= 1, 'the transfer was still running during the reload');
  assert.equal(st.tftp.transfers[0]!.path, `${SERIAL}/kernel8.img`);
  assert.equal(st.tftp.transfers[0]!.serial, SERIAL, 'status names the client');
  assert.ok(st.tftp.transfers[0]!.percent < 100);
  await transfer;
  assert.deepEqual(readFileSync(out), await mcopyOut(image, '/kernel8.img', boot));
  const sent = d.lines.find((l) => l.msg === 'file sent' && l.path === `${SERIAL}/kernel8.img`);
  assert.ok(sent && sent.serial === SERIAL && sent.ip === '127.0.0.1' && sent.bytes === 655360, 'the TFTP log line names the Pi and the bytes');
  assert.ok((await d.fetch('abcdef01/config.txt'))!.length > 0, 'the new Pi is served');

  // A broken config: rejected with its position, the previous config keeps serving.
  writeFileSync(d.configPath, `${images}pis:\n  "${SERIAL}": { image: nope }\n`);
  assert.equal(await d.daemon.reload('test'), false);
  const err = d.lines.find((l) => l.level === 50 && /pis\.12345678\.image: image `nope` is not defined/.test(l.msg));
  assert.ok(err, 'the error names the key');
  assert.match(err.msg, /netbootd\.yaml:\d+:\d+: /);
  assert.ok((await d.fetch('abcdef01/config.txt'))!.length > 0, 'the old config still serves');
});

test('reload on change of the config file', async (t) => {
  if (!haveTools(t, 'curl', 'sfdisk', 'mkfs.vfat', 'mcopy')) return;
  const dir = tempDir(t);
  const image = join(dir, 'pi.img');
  await buildPiOsImage(image);
  const images = `images:\n  pios: { path: ${image}, mode: readonly }\n`;
  const d = await startDaemon(t, dir, testConfig(join(dir, 'state'), images), { watch: true });
  assert.equal(await d.fetch(`${SERIAL}/config.txt`), null);
  writeFileSync(d.configPath, testConfig(join(dir, 'state'), `${images}pis:\n  "${SERIAL}": { image: pios }\n`));
  let got: Buffer | null = null;
  for (let i = 0; i < 50 && got === null; i++) {
    await new Promise((r) => setTimeout(r, 100));
    got = await d.fetch(`${SERIAL}/config.txt`);
  }
  assert.ok(got && got.length > 0, 'the Pi added to the file is served without SIGHUP');
  assert.ok(d.lines.some((l) => l.msg === 'config reloaded' && l.why === 'file changed'));
});
