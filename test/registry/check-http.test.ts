/**
 * `netbootd check` with HTTP boot on (issue 15): each PC's iPXE script (its boot.ipxe, its kernel keys, or
 * its PXELINUX entry) and every file that script loads must be in its image; the iPXE builds chain-loading
 * and UEFI HTTP boot hand out must be readable files.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { checkConfig } from '../../src/registry/check.js';
import { buildPcImage } from '../helpers/pcimage.js';
import { haveTools, tempDir } from '../helpers/tools.js';

test('check: HTTP boot scripts and the files they load, and the iPXE builds', async (t) => {
  if (!haveTools(t, 'mcopy', 'sfdisk', 'mkfs.vfat')) return;
  const dir = tempDir(t);
  const append = 'APPEND initrd=initrd.img ip=dhcp root=/dev/nbd0p2 nbdroot=198.18.0.2/pc';
  const pc = await buildPcImage(dir, { vmlinuz: 'k', 'initrd.img': 'i', 'pxelinux.cfg/default': `DEFAULT l\nLABEL l\n  KERNEL vmlinuz\n  ${append}\n` });
  const bare = await buildPcImage(dir, { 'readme.txt': 'nothing to boot' }, 'bare.img');
  const scripted = await buildPcImage(dir, { 'boot.ipxe': '#!ipxe\n' }, 'scripted.img');
  writeFileSync(join(dir, 'ipxe.efi'), 'efi');
  const configPath = join(dir, 'netbootd.yaml');
  const write = (http: string): void =>
    writeFileSync(configPath, `server: { address: 198.18.0.2, stateDir: ${join(dir, 'state')} }
http: ${http}
images:
  pc: { path: ${pc} }
  bare: { path: ${bare} }
  scripted: { path: ${scripted} }
hosts:
  "52:54:00:00:00:01": { image: pc }
  "52:54:00:00:00:02": { image: pc, kernel: vmlinuz, initrd: [initrd.img, missing.img], cmdline: "root=/dev/nbd0p2 nbdroot=198.18.0.2/pc" }
  "52:54:00:00:00:03": { image: bare }
  "52:54:00:00:00:04": { image: scripted }
  "52:54:00:00:00:05": { image: pc, kernel: vmlinuz, cmdline: "root=/dev/nbd0p2 nbdroot=198.18.0.9/pc" }
  "52:54:00:00:00:06": { image: bare, http: false }
`);
  write(`{ enabled: true, chainIpxe: true, ipxeBios: ${join(dir, 'no-such.kpxe')}, ipxeUefi: ${join(dir, 'ipxe.efi')} }`);
  const r = await checkConfig(configPath);
  const line = (subject: string, re: RegExp): string | undefined => r.lines.find((l) => l.subject === subject && re.test(l.message))?.level;
  assert.equal(line('host 52:54:00:00:00:01 http', /script from pxelinux\.cfg\/default: vmlinuz, initrd\.img over HTTP/), 'ok');
  assert.equal(line('host 52:54:00:00:00:02 http', /loads missing\.img, not in image `pc`/), 'error');
  assert.equal(line('host 52:54:00:00:00:03 http', /iPXE clients get nothing/), 'error');
  assert.equal(line('host 52:54:00:00:00:04 http', /run boot\.ipxe/), 'ok');
  assert.equal(line('host 52:54:00:00:00:05 cmdline', /198\.18\.0\.9/), 'warn', 'the kernel keys\' command line is checked like any other');
  assert.equal(r.lines.some((l) => l.subject === 'host 52:54:00:00:00:06 http'), false, 'a host on TFTP needs no script');
  assert.equal(line('http', /undionly\.kpxe .*no such file \(install Debian's ipxe package/), 'error');
  assert.equal(line('http', /ipxe\.efi .*ipxe\.efi$/), 'ok');
  // Chain-loading, the PCs need no PXELINUX files; the bare image is not reported for missing pxelinux.0.
  assert.equal(r.lines.some((l) => l.subject === 'host 52:54:00:00:00:03' && /pxelinux\.0/.test(l.message)), false);

  // HTTP off: no HTTP lines at all, and the boot files are checked as before.
  write('{ enabled: false }');
  const off = await checkConfig(configPath);
  assert.equal(off.lines.some((l) => l.subject === 'http' || / http$/.test(l.subject)), false);
  assert.equal(off.lines.find((l) => l.subject === 'host 52:54:00:00:00:03' && /pxelinux\.0/.test(l.message))?.level, 'warn');
});
