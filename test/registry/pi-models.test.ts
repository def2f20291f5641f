/**
 * Issue 16: every Pi bootloader's TFTP paths find the same configured Pi and its one identity.
 * Paths as the bootloaders send them (bootloader config docs, TFTP_PREFIX 0/1/2 and TFTP_PREFIX_STR; the
 * Pi 3 boot ROM's `bootcode.bin` at the root, raspberrypi/documentation bootmodes/net.md):
 *   TFTP_PREFIX=0  `3a4b5c6d/start4.elf`          TFTP_PREFIX=2  `dc-a6-32-01-02-03/start4.elf`
 *   TFTP_PREFIX=1  `pxe/start4.elf`               Pi 3 ROM       `bootcode.bin`, then `0028f66d/start.elf`
 * The target is resolved without images (Registry.target is the pure half of resolve).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig } from '../../src/config/load.js';
import { ClientTable } from '../../src/registry/clients.js';
import { ImagePool } from '../../src/registry/pool.js';
import { Registry } from '../../src/registry/registry.js';
import { missingForModel } from '../../src/registry/pi-needs.js';

function registry(pis: string): { reg: Registry; clients: ClientTable } {
  const r = parseConfig(`server: { stateDir: /tmp/netbootd-pi-models }\nimages: { a: { path: /nonexistent/a.img, mode: cow } }\npis:\n${pis}`, '/etc/netbootd/netbootd.yaml');
  assert.ok(r.ok, r.ok ? '' : r.errors.map((e) => e.message).join('\n'));
  const clients = new ClientTable();
  return { reg: new Registry(r.config, new ImagePool(), clients), clients };
}

test('TFTP_PREFIX=2: a Pi listed by MAC is served under dc-a6-32-…/; its identity is its MAC; another address is refused', () => {
  const { reg, clients } = registry('  "dc:a6:32:01:02:03": { image: a }\n');
  const t = reg.target('198.18.0.50', 'dc-a6-32-01-02-03/start4.elf');
  assert.deepEqual(t, { kind: 'pi', image: 'a', path: 'start4.elf' });
  assert.equal(clients.holder('mac', 'dc:a6:32:01:02:03'), '198.18.0.50');
  assert.equal(clients.stateKey('198.18.0.50'), 'mac-dc-a6-32-01-02-03');
  assert.equal(reg.priority('198.18.0.50', 'dc-a6-32-01-02-03/kernel8.img'), 'known');
  // Not a boot start, holder active: never that Pi's view.
  assert.equal(reg.target('198.18.0.51', 'dc-a6-32-01-02-03/cmdline.txt'), null);
  assert.equal(reg.priority('198.18.0.51', 'dc-a6-32-01-02-03/cmdline.txt'), 'unknown');
  // An unconfigured MAC directory: nothing.
  assert.equal(reg.target('198.18.0.52', 'dc-a6-32-09-09-09/start4.elf'), null);
});

test('a Pi listed by serial with `mac:`: the MAC form and the serial form are one client (one overlay key)', () => {
  const { reg, clients } = registry('  3a4b5c6d: { image: a, mac: "DC-A6-32-01-02-04" }\n');
  assert.deepEqual(reg.target('198.18.0.60', 'dc-a6-32-01-02-04/start4.elf'), { kind: 'pi', image: 'a', path: 'start4.elf' });
  assert.equal(clients.holder('serial', '3a4b5c6d'), '198.18.0.60');
  assert.equal(clients.stateKey('198.18.0.60'), 'pi-3a4b5c6d');
  assert.deepEqual(reg.target('198.18.0.60', '3a4b5c6d/cmdline.txt'), { kind: 'pi', image: 'a', path: 'cmdline.txt' });
  assert.equal(clients.stateKey('198.18.0.60'), 'pi-3a4b5c6d', 'same identity by either form');
  // The serial form from another address while it is held: refused, as before.
  assert.equal(reg.target('198.18.0.61', '3a4b5c6d/cmdline.txt'), null);
});

test('TFTP_PREFIX=1: a fixed TFTP_PREFIX_STR directory is served to the Pi whose MAC the address holds, and to no other', () => {
  const { reg, clients } = registry('  3a4b5c6d: { image: a, mac: "dc:a6:32:01:02:05", prefix: pxe/ }\n');
  // Nobody known at this address: the directory names no Pi.
  assert.equal(reg.target('198.18.0.70', 'pxe/start4.elf'), null);
  // Its DHCP exchange (the DHCPREQUEST the proxy sees) binds the MAC; then the prefix is taken off.
  assert.equal(reg.dhcpSeen('198.18.0.70', 'dc:a6:32:01:02:05', { firmware: 'pi' }), true);
  assert.deepEqual(reg.target('198.18.0.70', 'pxe/start4.elf'), { kind: 'pi', image: 'a', path: 'start4.elf' });
  assert.deepEqual(reg.target('198.18.0.70', 'pxe/overlays/disable-bt.dtbo'), { kind: 'pi', image: 'a', path: 'overlays/disable-bt.dtbo' });
  assert.equal(clients.stateKey('198.18.0.70'), 'pi-3a4b5c6d');
  // Another Pi-looking address that made no DHCP exchange gets nothing.
  assert.equal(reg.target('198.18.0.71', 'pxe/start4.elf'), null);
});

test('Pi 3B/3B+: bootcode.bin at the root only for a configured Pi (found from its b8:27:eb MAC), then its serial directory', () => {
  // The MAC of the Pi 3 DISCOVER in test/dhcp/fixtures/pi3-discover.hex: b8:27:eb:28:f6:6d → serial ..28f66d.
  const { reg, clients } = registry('  "0028f66d": { image: a, model: 3 }\n');
  clients.learn('198.18.0.80', { mac: 'b8:27:eb:28:f6:6d', dhcp: true });
  assert.deepEqual(reg.target('198.18.0.80', 'bootcode.bin'), { kind: 'pi', image: 'a', path: 'bootcode.bin' });
  assert.equal(clients.holder('serial', '0028f66d'), '198.18.0.80', 'bootcode.bin is the start of its boot');
  assert.deepEqual(reg.target('198.18.0.80', '0028f66d/start.elf'), { kind: 'pi', image: 'a', path: 'start.elf' });
  // An unconfigured Pi 3 (another serial): no bootcode.bin.
  clients.learn('198.18.0.81', { mac: 'b8:27:eb:99:99:99', dhcp: true });
  assert.equal(reg.target('198.18.0.81', 'bootcode.bin'), null);
  // An address whose MAC is unknown: no bootcode.bin either.
  assert.equal(reg.target('198.18.0.82', 'bootcode.bin'), null);
});

test('Pi 5: 16-digit serials are keyed by their low 32 bits; two that collide are an error naming both', () => {
  const ok = parseConfig('images: { a: { path: /x.img } }\npis:\n  0c8f7e5cbd989ae1: { image: a }\n');
  assert.ok(ok.ok);
  assert.deepEqual(Object.keys(ok.config.pis), ['bd989ae1']);
  assert.match(ok.warnings.map((w) => w.message).join('\n'), /low 32 bits|last 8|bd989ae1/);
  const bad = parseConfig('images: { a: { path: /x.img } }\npis:\n  0c8f7e5cbd989ae1: { image: a }\n  77aa00ffbd989ae1: { image: a }\n');
  assert.equal(bad.ok, false);
  const msg = bad.ok ? '' : bad.errors.map((e) => e.message).join('\n');
  assert.match(msg, /77aa00ffbd989ae1/);
  assert.match(msg, /0c8f7e5cbd989ae1/);
});

test('config: a prefix needs a MAC; one MAC names one Pi', () => {
  const a = parseConfig('images: { a: { path: /x.img } }\npis:\n  3a4b5c6d: { image: a, prefix: pxe }\n');
  assert.equal(a.ok, false);
  assert.match(a.ok ? '' : a.errors.map((e) => e.message).join('\n'), /mac/);
  const b = parseConfig('images: { a: { path: /x.img } }\npis:\n  3a4b5c6d: { image: a, mac: dc:a6:32:01:02:03 }\n  dc-a6-32-01-02-03: { image: a }\n');
  assert.equal(b.ok, false);
});

test('netbootd check needs per model (Pi 3, 4, 5)', () => {
  const set = (...n: string[]) => new Set(n);
  const pi5 = set('config.txt', 'cmdline.txt', 'kernel_2712.img', 'bcm2712-rpi-5-b.dtb');
  assert.deepEqual(missingForModel(5, pi5, 'arm_64bit=1\n'), [], 'a Pi 5 needs no start4.elf/fixup4.dat');
  assert.deepEqual(missingForModel(4, pi5, 'arm_64bit=1\n'), ['start4.elf', 'fixup4.dat', 'a kernel (kernel8.img or kernel7l.img)', 'a device tree for the model (bcm2711-rpi-4-b.dtb (or -400, -cm4))']);
  assert.deepEqual(missingForModel(3, set('start.elf', 'fixup.dat', 'config.txt', 'cmdline.txt', 'kernel8.img', 'bcm2710-rpi-3-b-plus.dtb'), ''), ['bootcode.bin']);
  // `kernel=` and `os_prefix` move the kernel.
  assert.deepEqual(missingForModel(5, set('config.txt', 'cmdline.txt', 'v/vmlinuz', 'v/bcm2712-rpi-5-b.dtb'), 'os_prefix=v/\nkernel=vmlinuz\n'), []);
});
