/**
 * `netbootd prep --cmdline pxelinux.cfg/default` on a PC image: the PXELINUX file keeps its lines and only its
 * APPEND lines change (it used to be joined into one line, which PXELINUX cannot read); a file prep does not
 * understand is refused with the reason and left as it was.
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { mcopyOut } from '../helpers/fatimg.js';
import { buildPcImage } from '../helpers/pcimage.js';
import { haveTools, tempDir } from '../helpers/tools.js';
import { netbootd } from '../helpers/piimage.js';

const MiB = 1024 ** 2;
const CFG = 'DEFAULT debian\nPROMPT 0\n\nLABEL debian\n  KERNEL vmlinuz\n  INITRD initrd.img\n  APPEND console=ttyS0 root=/dev/sda2 ro quiet\n';

const pcImage = (dir: string, files: Record<string, string>): Promise<string> => buildPcImage(dir, files);

it('prep --cmdline pxelinux.cfg/default keeps the lines and edits APPEND', async (t) => {
  if (!haveTools(t, 'sfdisk', 'mkfs.vfat', 'mcopy', 'mmd')) return;
  const dir = tempDir(t);
  const img = await pcImage(dir, { 'pxelinux.cfg/default': CFG });
  const r = await netbootd(['prep', img, '--cmdline', 'pxelinux.cfg/default', '--server', '198.18.0.1', '--export', 'debian']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout.toString(), /pxelinux\.cfg\/default: line 7: APPEND console=ttyS0 root=\/dev\/sda2 ro quiet {2}→ {2}APPEND console=ttyS0 ro quiet ip=dhcp nbdroot=198\.18\.0\.1\/debian root=\/dev\/nbd0p2/);
  const out = (await mcopyOut(img, '/pxelinux.cfg/default', MiB)).toString();
  assert.equal(out, CFG.replace('APPEND console=ttyS0 root=/dev/sda2 ro quiet', 'APPEND console=ttyS0 ro quiet ip=dhcp nbdroot=198.18.0.1/debian root=/dev/nbd0p2'));
  // A second run changes nothing.
  const again = await netbootd(['prep', img, '--cmdline', 'pxelinux.cfg/default', '--server', '198.18.0.1', '--export', 'debian']);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout.toString(), /nothing to change/);
});

it('prep refuses a file it does not understand, and a PXELINUX file already joined into one line', async (t) => {
  if (!haveTools(t, 'sfdisk', 'mkfs.vfat', 'mcopy', 'mmd')) return;
  const dir = tempDir(t);
  const img = await pcImage(dir, { 'notes.txt': 'first line\nsecond line\n', 'pxelinux.cfg/default': CFG.replace(/\n/g, ' ') });
  const sha = (): string => createHash('sha256').update(readFileSync(img)).digest('hex');
  const before = sha();
  const notes = await netbootd(['prep', img, '--cmdline', 'notes.txt', '--server', '198.18.0.1']);
  assert.equal(notes.code, 1);
  assert.match(notes.stderr, /notes\.txt: 2 lines, and neither a kernel command line/);
  const joined = await netbootd(['prep', img, '--cmdline', 'pxelinux.cfg/default', '--server', '198.18.0.1']);
  assert.equal(joined.code, 1);
  assert.match(joined.stderr, /several PXELINUX directives on one line/);
  assert.equal(sha(), before, 'nothing written');
});

it('prep on a PC image finds pxelinux.cfg/default by itself when there is no cmdline.txt', async (t) => {
  if (!haveTools(t, 'sfdisk', 'mkfs.vfat', 'mcopy', 'mmd')) return;
  const dir = tempDir(t);
  const img = await pcImage(dir, { 'pxelinux.cfg/default': CFG });
  const r = await netbootd(['prep', img, '--server', '198.18.0.1', '--export', 'debian']);
  assert.equal(r.code, 0, r.stderr);
  const out = (await mcopyOut(img, '/pxelinux.cfg/default', MiB)).toString();
  assert.match(out, /^ {2}APPEND console=ttyS0 ro quiet ip=dhcp nbdroot=198\.18\.0\.1\/debian root=\/dev\/nbd0p2$/m);
  assert.equal(out.split('\n').length, CFG.split('\n').length);
});

it('prep --config keeps a relative image path relative (to the config folder), and a rerun changes nothing', async (t) => {
  if (!haveTools(t, 'sfdisk', 'mkfs.vfat', 'mcopy', 'mmd')) return;
  const dir = tempDir(t);
  await pcImage(dir, { 'pxelinux.cfg/default': CFG });
  writeFileSync(join(dir, 'netbootd.yaml'), '# my config\nimages: {}\n');
  const args = ['prep', 'pc.img', '--server', '198.18.0.1', '--export', 'debian', '--config', 'netbootd.yaml'];
  const r = await netbootd(args, { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  const text = readFileSync(join(dir, 'netbootd.yaml'), 'utf8');
  assert.equal(text, '# my config\nimages: { debian: { path: pc.img, bootPartition: 1 } }\n');
  const again = await netbootd(args, { cwd: dir });
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout.toString(), /nothing to change/);
  assert.equal(readFileSync(join(dir, 'netbootd.yaml'), 'utf8'), text);
});
