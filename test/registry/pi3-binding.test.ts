/**
 * Issue 16: the Pi 3 boot ROM sends no DHCPREQUEST (raspberrypi/documentation bootmodes/net.md), so its
 * root `bootcode.bin` request is tied to its MAC through the server's neighbour table (the ROM ARPs for the
 * TFTP server first: raspberrypi/firmware issue #745 capture) — only as evidence consistent with the claim
 * rules: a configured Pi's MAC, a DISCOVER of that MAC within the last minute, the ROM's first file, an
 * address with no MAC, the Pi's pin. A host that merely asks gets nothing. The lookup is injected.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig } from '../../src/config/load.js';
import { ClientTable } from '../../src/registry/clients.js';
import { ImagePool } from '../../src/registry/pool.js';
import { Registry } from '../../src/registry/registry.js';
import { macInArpTable } from '../../src/registry/pi.js';

const PI3_MAC = 'b8:27:eb:12:34:56'; // derived from serial a0123456 (b8:27:eb + its low 24 bits)

function setup(pis: string, table: Record<string, string>): { reg: Registry; clients: ClientTable; lookups: string[] } {
  const r = parseConfig(`server: { stateDir: /tmp/netbootd-pi3-binding }\nimages: { a: { path: /nonexistent/a.img, mode: cow } }\npis:\n${pis}`, '/etc/netbootd/netbootd.yaml');
  assert.ok(r.ok, r.ok ? '' : r.errors.map((e) => e.message).join('\n'));
  const clients = new ClientTable();
  const reg = new Registry(r.config, new ImagePool(), clients);
  const lookups: string[] = [];
  reg.neighbours = async (ip) => {
    lookups.push(ip);
    return table[ip];
  };
  return { reg, clients, lookups };
}

/** resolve() binds, then opens the file (the image does not exist here: only the binding is looked at). */
async function ask(reg: Registry, address: string, path: string): Promise<void> {
  try {
    const src = await reg.resolve({ address, port: 1024, path });
    src?.close();
  } catch {
    /* no image behind it */
  }
}

test('Pi 3 ROM: bootcode.bin binds a configured Pi MAC from the neighbour table after its DISCOVER; the root is then its view', async () => {
  const { reg, clients } = setup('  a0123456: { image: a, model: 3 }\n', { '198.18.0.120': PI3_MAC });
  clients.noteModel(PI3_MAC, 'pi3-bootrom');
  await ask(reg, '198.18.0.120', 'bootcode.bin');
  assert.equal(clients.get('198.18.0.120')?.mac, PI3_MAC);
  assert.equal(clients.get('198.18.0.120')?.model, 'pi3-bootrom');
  assert.deepEqual(reg.target('198.18.0.120', 'bootcode.bin'), { kind: 'pi', image: 'a', path: 'bootcode.bin' });
  // bootcode.bin then asks under the serial: the same Pi (serial identity, one overlay key).
  assert.deepEqual(reg.target('198.18.0.120', 'a0123456/start.elf'), { kind: 'pi', image: 'a', path: 'start.elf' });
  assert.equal(clients.stateKey('198.18.0.120'), 'pi-a0123456');
});

test('Pi 3 ROM: no binding without a DISCOVER of that MAC in the last minute', async () => {
  const { reg, clients } = setup('  a0123456: { image: a }\n', { '198.18.0.121': PI3_MAC });
  await ask(reg, '198.18.0.121', 'bootcode.bin');
  assert.equal(clients.get('198.18.0.121')?.mac, undefined, 'no DISCOVER at all');
  clients.noteModel(PI3_MAC, 'pi3-bootrom', Date.now() - 61_000);
  await ask(reg, '198.18.0.121', 'bootcode.bin');
  assert.equal(clients.get('198.18.0.121')?.mac, undefined, 'a DISCOVER older than a minute');
  assert.equal(reg.target('198.18.0.121', 'bootcode.bin'), null);
});

test('a host that merely asks bootcode.bin gets no Pi identity: its own MAC (not a configured Pi) is what the table shows', async () => {
  const { reg, clients } = setup('  a0123456: { image: a }\n', { '198.18.0.122': '52:54:00:aa:bb:cc', '198.18.0.123': 'b8:27:eb:99:99:99' });
  clients.noteModel('52:54:00:aa:bb:cc', 'pi');
  clients.noteModel('b8:27:eb:99:99:99', 'pi3-bootrom');
  await ask(reg, '198.18.0.122', 'bootcode.bin');
  await ask(reg, '198.18.0.123', 'bootcode.bin');
  assert.equal(clients.get('198.18.0.122')?.mac, undefined);
  assert.equal(clients.get('198.18.0.123')?.mac, undefined, 'an unconfigured Pi 3');
  assert.equal(reg.target('198.18.0.122', 'bootcode.bin'), null);
  assert.equal(reg.target('198.18.0.123', 'bootcode.bin'), null);
  assert.equal(clients.holder('mac', PI3_MAC), undefined);
});

test('the neighbour table is consulted only for the ROM\'s first file from an address without a MAC', async () => {
  const { reg, clients, lookups } = setup('  a0123456: { image: a }\n', { '198.18.0.124': PI3_MAC, '198.18.0.125': PI3_MAC });
  clients.noteModel(PI3_MAC, 'pi3-bootrom');
  await ask(reg, '198.18.0.124', 'start.elf');
  await ask(reg, '198.18.0.124', 'a0123456/bootcode.bin');
  assert.deepEqual(lookups, [], 'other files and serial paths do not look');
  reg.dhcpSeen('198.18.0.125', '52:54:00:00:00:01');
  await ask(reg, '198.18.0.125', 'bootcode.bin');
  assert.deepEqual(lookups, [], 'an address with a MAC keeps it');
  assert.equal(clients.get('198.18.0.125')?.mac, '52:54:00:00:00:01');
});

test('the claim rules still hold: a pinned Pi 3 is not bound elsewhere, and a MAC attached to NBD does not move', async () => {
  const { reg, clients } = setup('  a0123456: { image: a, address: 198.18.0.9 }\n', { '198.18.0.126': PI3_MAC, '198.18.0.9': PI3_MAC, '198.18.0.127': PI3_MAC });
  clients.noteModel(PI3_MAC, 'pi3-bootrom');
  await ask(reg, '198.18.0.126', 'bootcode.bin');
  assert.equal(clients.get('198.18.0.126')?.mac, undefined, 'outside its pin');
  await ask(reg, '198.18.0.9', 'bootcode.bin');
  assert.equal(clients.get('198.18.0.9')?.mac, PI3_MAC, 'inside its pin');
  clients.attach('198.18.0.9', 'mac:' + PI3_MAC);
  await ask(reg, '198.18.0.127', 'bootcode.bin');
  assert.equal(clients.holder('mac', PI3_MAC), '198.18.0.9', 'attached: never moved');
});

test('/proc/net/arp parsing: complete entries only', () => {
  const text = 'IP address       HW type     Flags       HW address            Mask     Device\n' +
    '198.18.0.120     0x1         0x2         b8:27:eb:12:34:56     *        eth0\n' +
    '198.18.0.121     0x1         0x0         00:00:00:00:00:00     *        eth0\n' +
    '198.18.0.1      0x1         0x6         02:00:00:00:00:01     *        eth0\n';
  assert.equal(macInArpTable(text, '198.18.0.120'), PI3_MAC);
  assert.equal(macInArpTable(text, '198.18.0.121'), undefined, 'incomplete');
  assert.equal(macInArpTable(text, '198.18.0.12'), undefined, 'no prefix matches');
  assert.equal(macInArpTable(text, '198.18.0.1'), '02:00:00:00:00:01');
  assert.equal(macInArpTable('garbage\n\u0000\n1 2 3', '1'), undefined);
});
