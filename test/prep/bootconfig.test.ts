/**
 * prep on the boot loader configs it can meet: a Pi cmdline.txt (one line), PXELINUX/SYSLINUX (`APPEND`
 * lines), GRUB (`linux` lines). Only the kernel arguments change; every other line stays byte for byte. A
 * file it does not understand, or a PXELINUX file joined into one line, is refused with the reason.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { rewriteBootConfig, existingNbdroot } from '../../src/prep/cmdline.js';
import { parseBootConfig } from '../../src/registry/cmdline.js';

const T = { server: '198.18.0.1', exportName: 'debian', rootPartition: 1 };

const PXELINUX = `# netboot menu
DEFAULT debian
PROMPT 0
TIMEOUT 30

LABEL debian
  MENU LABEL Debian (root on NBD)
  KERNEL vmlinuz
  INITRD initrd.img
  APPEND console=ttyS0 root=/dev/sda1 ro quiet

LABEL rescue
\tkernel vmlinuz
\tappend initrd=initrd.img root=/dev/sda1 single
LABEL local
  LOCALBOOT 0
  APPEND -
`;

describe('boot loader configs', () => {
  it('PXELINUX: every APPEND line gets the NBD root; every other line is kept byte for byte', () => {
    const r = rewriteBootConfig('pxelinux.cfg/default', PXELINUX, T);
    assert.ok('text' in r, 'error' in r ? r.error : '');
    const before = PXELINUX.split('\n');
    const after = r.text.split('\n');
    assert.equal(after.length, before.length, 'no line joined or split');
    const changed = after.map((l, i) => (l !== before[i] ? i + 1 : 0)).filter(Boolean);
    assert.deepEqual(changed, [10, 14], 'only the two APPEND lines with arguments change');
    assert.equal(after[9], '  APPEND console=ttyS0 ro quiet ip=dhcp nbdroot=198.18.0.1/debian root=/dev/nbd0p1');
    assert.equal(after[13], '\tappend initrd=initrd.img single ip=dhcp nbdroot=198.18.0.1/debian root=/dev/nbd0p1');
    assert.equal(after[16], '  APPEND -', '`APPEND -` (no arguments) stays');
    const again = rewriteBootConfig('pxelinux.cfg/default', r.text, T);
    assert.ok('text' in again && again.text === r.text, 'idempotent');
    assert.deepEqual(existingNbdroot(r.text, 'pxelinux.cfg/default'), { server: '198.18.0.1', exportName: 'debian' });
  });

  it('a PXELINUX file joined into one line is refused, never rewritten into a worse one', () => {
    const joined = PXELINUX.replace(/\n/g, ' ');
    const r = rewriteBootConfig('pxelinux.cfg/default', joined, T);
    assert.ok('error' in r);
    assert.match(r.error, /several PXELINUX directives on one line/);
    // The same file under another name is recognised by its directives when it has lines.
    const byContent = rewriteBootConfig('boot/menu.cfg', PXELINUX, T);
    assert.ok('text' in byContent);
  });

  it('GRUB: the arguments after the kernel path on each linux line', () => {
    const grub = `set timeout=5\nmenuentry 'Debian' {\n\tlinux /vmlinuz-6.1.0-amd64 root=UUID=abcd ro quiet\n\tinitrd /initrd.img-6.1.0-amd64\n}\nmenuentry 'Debian (efi)' {\n  linuxefi /vmlinuz\n}\n`;
    const r = rewriteBootConfig('boot/grub/grub.cfg', grub, T);
    assert.ok('text' in r, 'error' in r ? r.error : '');
    const lines = r.text.split('\n');
    assert.equal(lines[2], '\tlinux /vmlinuz-6.1.0-amd64 ro quiet ip=dhcp nbdroot=198.18.0.1/debian root=/dev/nbd0p1');
    assert.equal(lines[6], '  linuxefi /vmlinuz ip=dhcp nbdroot=198.18.0.1/debian root=/dev/nbd0p1');
    assert.equal(lines.filter((l, i) => l !== grub.split('\n')[i]).length, 2);
  });

  it('a Pi cmdline.txt is one line; a many-line file that is no boot config is refused', () => {
    const r = rewriteBootConfig('cmdline.txt', 'console=tty1 root=/dev/mmcblk0p2 rootwait\n', { ...T, rootPartition: 2 });
    assert.ok('text' in r);
    assert.equal(r.text, 'console=tty1 rootwait ip=dhcp nbdroot=198.18.0.1/debian root=/dev/nbd0p2\n');
    const two = rewriteBootConfig('cmdline.txt', 'console=tty1\nroot=/dev/sda2\n', T);
    assert.ok('error' in two && /2 lines/.test(two.error));
    const notes = rewriteBootConfig('notes.txt', 'some text\nmore text\n', T);
    assert.ok('error' in notes && /neither a kernel command line/.test(notes.error));
    const empty = rewriteBootConfig('pxelinux.cfg/default', 'DEFAULT x\nLABEL x\n  KERNEL vmlinuz\n', T);
    assert.ok('error' in empty && /no `APPEND` line/.test(empty.error));
  });

  it('parseBootConfig locates the arguments exactly (offsets into the text)', () => {
    const cfg = parseBootConfig('pxelinux.cfg/01-52-54-00-aa-bb-01', PXELINUX);
    assert.ok(!('error' in cfg));
    assert.equal(cfg.kind, 'syslinux');
    for (const l of cfg.lines) assert.equal(PXELINUX.slice(l.start, l.end), l.args);
    assert.deepEqual(cfg.lines.map((l) => l.line), [10, 14]);
  });
});
