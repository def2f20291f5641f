/**
 * `netbootd check` on what a new user meets: its suggested fix, run verbatim, makes the next check pass (on a
 * daemon with a non-default NBD port); an image with no partition table used only over NBD (behind a
 * tftpRoot host) is fine; a PXELINUX config joined into one line is caught.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildPcImage } from '../helpers/pcimage.js';
import { cliCommand, haveTools, run, tempDir } from '../helpers/tools.js';
import { netbootd } from '../helpers/piimage.js';

const CFG = 'DEFAULT debian\nLABEL debian\n  KERNEL vmlinuz\n  INITRD initrd.img\n  APPEND console=ttyS0 root=/dev/sda2 ro\n';
const BOOT_FILES = { 'pxelinux.0': 'x', 'ldlinux.c32': 'x', 'syslinux.efi': 'x', 'ldlinux.e64': 'x', vmlinuz: 'k', 'initrd.img': 'i' };

function config(dir: string, images: string, hosts: string): string {
  const file = join(dir, 'netbootd.yaml');
  writeFileSync(file, `server: { address: 198.18.0.1, stateDir: ${join(dir, 'state')} }\nnbd: { port: 10810 }\nimages:\n${images}hosts:\n${hosts}`);
  return file;
}

test("check's suggested prep command, run verbatim, makes the next check pass (non-default NBD port)", async (t) => {
  if (!haveTools(t, 'sfdisk', 'mkfs.vfat', 'mcopy', 'mmd')) return;
  const dir = tempDir(t);
  const img = await buildPcImage(dir, { ...BOOT_FILES, 'pxelinux.cfg/default': CFG });
  const file = config(dir, `  debian: { path: ${img}, mode: cow }\n`, '  "52:54:00:aa:bb:01": { image: debian, bootFile: pxelinux.0 }\n');
  const first = await netbootd(['check', '--config', file]);
  assert.equal(first.code, 1, first.stdout.toString());
  const m = /run: (netbootd prep .*)$/m.exec(first.stdout.toString());
  assert.ok(m, first.stdout.toString());
  assert.match(m[1]!, /--server 198\.18\.0\.1:10810/, 'the port is in the fix');
  // Verbatim, through a shell, with `netbootd` being this checkout's CLI.
  const { cmd, args } = cliCommand();
  const shell = m[1]!.replace(/^netbootd /, `${[cmd, ...args].map((a) => `'${a}'`).join(' ')} `);
  const fixed = await run('sh', ['-c', shell], { allowFail: true });
  assert.equal(fixed.code, 0, fixed.stderr.toString());
  const second = await netbootd(['check', '--config', file]);
  assert.equal(second.code, 0, second.stdout.toString());
  assert.match(second.stdout.toString(), /nbdroot=198\.18\.0\.1:10810\/debian root=\/dev\/nbd0p2 match export `debian` on port 10810/);
});

test('prep --config reads the NBD port (and server) from the config', async (t) => {
  if (!haveTools(t, 'sfdisk', 'mkfs.vfat', 'mcopy', 'mmd')) return;
  const dir = tempDir(t);
  const img = await buildPcImage(dir, { ...BOOT_FILES, 'pxelinux.cfg/default': CFG });
  const file = config(dir, `  debian: { path: ${img} }\n`, '  "52:54:00:aa:bb:01": { image: debian, bootFile: pxelinux.0 }\n');
  const p = await netbootd(['prep', img, '--export', 'debian', '--config', file]);
  assert.equal(p.code, 0, p.stderr);
  const c = await netbootd(['check', '--config', file]);
  assert.equal(c.code, 0, c.stdout.toString());
});

test('check: a partitionless image used only over NBD (tftpRoot host) is fine; a joined PXELINUX file is an error', async (t) => {
  if (!haveTools(t, 'sfdisk', 'mkfs.vfat', 'mcopy', 'mmd', 'mkfs.ext4')) return;
  const dir = tempDir(t);
  const bare = join(dir, 'root.ext4');
  await run('truncate', ['-s', '32M', bare]);
  await run('mkfs.ext4', ['-q', '-F', bare]);
  const tftp = join(dir, 'tftp');
  mkdirSync(tftp);
  writeFileSync(join(tftp, 'pxelinux.0'), 'x');
  let file = config(dir, `  root: { path: ${bare} }\n`, `  "52:54:00:aa:bb:02": { tftpRoot: ${tftp}, bootFile: pxelinux.0 }\n`);
  const ok = await netbootd(['check', '--config', file]);
  assert.equal(ok.code, 0, ok.stdout.toString());
  assert.match(ok.stdout.toString(), /image root: .*NBD only/);

  const joined = await buildPcImage(dir, { ...BOOT_FILES, 'pxelinux.cfg/default': CFG.replace(/\n/g, ' ') }, 'joined.img');
  file = config(dir, `  j: { path: ${joined} }\n`, '  "52:54:00:aa:bb:03": { image: j, bootFile: pxelinux.0 }\n');
  const bad = await netbootd(['check', '--config', file]);
  assert.equal(bad.code, 1, bad.stdout.toString());
  assert.match(bad.stdout.toString(), /ERROR host 52:54:00:aa:bb:03 pxelinux\.cfg\/default: .*several PXELINUX directives on one line/);
});

test('check: a Pi whose config.txt loads an initramfs the boot partition lacks is an error', async (t) => {
  if (!haveTools(t, 'sfdisk', 'mkfs.vfat', 'mcopy', 'mmd', 'mkfs.ext4')) return;
  const { buildPiOsImage } = await import('../helpers/piimage.js');
  const dir = tempDir(t);
  const img = join(dir, 'pios.img');
  await buildPiOsImage(img);
  const file = join(dir, 'netbootd.yaml');
  writeFileSync(file, `server: { address: 198.18.0.1, stateDir: ${join(dir, 'state')} }\nimages: {}\n`);
  const p = await netbootd(['prep', img, '--export', 'pios', '--config', file, '--serial', '12345678']);
  assert.equal(p.code, 0, p.stderr);
  const good = await netbootd(['check', '--config', file]);
  assert.equal(good.code, 0, good.stdout.toString());
  assert.match(good.stdout.toString(), /config\.txt loads an initramfs by auto_initramfs \(initramfs8\)/);
  const rm = await netbootd(['rm', img, '1:/initramfs8']);
  assert.equal(rm.code, 0, rm.stderr);
  const bad = await netbootd(['check', '--config', file]);
  assert.equal(bad.code, 1, bad.stdout.toString());
  assert.match(bad.stdout.toString(), /ERROR pi 12345678 config\.txt: auto_initramfs=1 but none of .*initramfs8.* is in the boot partition/);
});
