/**
 * Issue 16: which Pi and which bootloader sent a DISCOVER, and the option 43 each gets.
 * Fixtures: test/dhcp/fixtures/pi3-discover.hex (Pi 3B boot ROM, option 97 = 00 44×16, from the tcpdump
 * decode in raspberrypi/documentation bootmodes/net.md) and pi4-discover.hex (Pi 4B EEPROM, option 97 =
 * 00 "RPi4" rev mac-lsb serial; provenance in the file). The Pi 5 DISCOVER is the Pi 4 one with what the
 * bcm2712 EEPROM changes: the FourCC "RPi5" (DHCP_OPTION97 layout of the bootloader config docs, Pi 5
 * family), board revision 0x00d04170 (Pi 5, from the boot log "boardrev d04170" in raspberrypi/rpi-eeprom
 * issue #556) and a MAC in 88:a2:9e (a Raspberry Pi (Trading) OUI of Pi 5 boards); serial be512421 (the
 * same log's "serial be512421").
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Opt, getOption, parseDhcp, serializeDhcp, type DhcpMessage } from '../../src/dhcp/packet.js';
import { classify, PI_OPTION_43, PI3_OPTION_43, PI_OUIS } from '../../src/dhcp/pxe.js';
import { buildProxyReply } from '../../src/dhcp/reply.js';
import { loadHex } from './hex.js';

function parse(buf: Buffer): DhcpMessage {
  const r = parseDhcp(buf);
  if (!r.ok) assert.fail(r.error.message);
  return r.value;
}

function pi5Discover(mac = '88:a2:9e:66:59:10'): DhcpMessage {
  const m = parse(loadHex('pi4-discover.hex'));
  const macBytes = Buffer.from(mac.replace(/:/g, ''), 'hex');
  macBytes.copy(m.chaddr, 0);
  const o97 = Buffer.alloc(17);
  o97.write('RPi5', 1, 'latin1');
  o97.writeUInt32LE(0x00d04170, 5);
  macBytes.copy(o97, 9, 2, 6);
  o97.writeUInt32LE(0xbe512421, 13);
  m.options = m.options.map((o) => (o.code === Opt.ClientUuid ? { code: o.code, data: o97 } : o));
  return m;
}

function replyTo(req: DhcpMessage): DhcpMessage {
  return parse(serializeDhcp(buildProxyReply(req, classify(req), { bootFile: '' }, '198.18.0.2', 'offer')));
}

/** PXE sub-option 9 (boot menu) description. */
function menuText(o43: Buffer): string {
  let i = 0;
  while (i + 1 < o43.length && o43[i] !== 0xff) {
    if (o43[i] === 9) return o43.toString('latin1', i + 5, i + 5 + o43[i + 4]!);
    i += 2 + o43[i + 1]!;
  }
  return '';
}

test('Pi 3B boot ROM: recognised by its option 97, answered with the padded "Raspberry Pi Boot   " menu; server in siaddr, 54 and 66', () => {
  const c = classify(parse(loadHex('pi3-discover.hex')));
  assert.equal(c.isPi, true);
  assert.equal(c.piModel?.name, 'pi3-bootrom');
  assert.equal(c.piModel?.family, 3);
  const r = replyTo(parse(loadHex('pi3-discover.hex')));
  const o43 = getOption(r, Opt.VendorSpecific)!;
  assert.deepEqual(o43, PI3_OPTION_43);
  assert.equal(menuText(o43), 'Raspberry Pi Boot   ');
  assert.equal(r.siaddr, '198.18.0.2');
  assert.deepEqual(getOption(r, Opt.ServerId), Buffer.from([198, 18, 0, 2]));
  assert.equal(getOption(r, Opt.TftpServerName)?.toString('latin1'), '198.18.0.2');
});

test('Pi 4 EEPROM: RPi4 option 97 gives the model, board revision and serial claim; dnsmasq\'s exact option 43', () => {
  const c = classify(parse(loadHex('pi4-discover.hex')));
  assert.equal(c.piModel?.name, 'pi4-eeprom');
  assert.equal(c.piModel?.boardRevision, 0x00c03111);
  assert.equal(c.piModel?.serial, '8a4c6cb6');
  assert.deepEqual(getOption(replyTo(parse(loadHex('pi4-discover.hex'))), Opt.VendorSpecific), PI_OPTION_43);
});

test('Pi 5 EEPROM: RPi5 option 97 and OUI 88:a2:9e; either alone is enough; a ROM-form 97 without a Pi OUI is not', () => {
  const c = classify(pi5Discover());
  assert.equal(c.isPi, true);
  assert.equal(c.piModel?.name, 'pi5-eeprom');
  assert.equal(c.piModel?.family, 5);
  assert.equal(c.piModel?.serial, 'be512421');
  assert.equal(menuText(getOption(replyTo(pi5Discover()), Opt.VendorSpecific)!), 'Raspberry Pi Boot');
  // MAC_ADDRESS / MAC_ADDRESS_OTP: a non-Pi MAC, the FourCC still says Pi 5.
  assert.equal(classify(pi5Discover('02:11:22:33:44:55')).piModel?.name, 'pi5-eeprom');
  // DHCP_OPTION97 customised: the OUI alone.
  const custom = pi5Discover();
  custom.options = custom.options.filter((o) => o.code !== Opt.ClientUuid);
  assert.equal(classify(custom).isPi, true);
  // The Pi 3 ROM form needs a Pi OUI (a Pi 1-3 MAC is always b8:27:eb).
  const fake = parse(loadHex('pi3-discover.hex'));
  fake.chaddr[0] = 0x02;
  assert.equal(classify(fake).isPi, false);
});

test('every Raspberry Pi OUI is recognised, including 88:a2:9e', () => {
  assert.ok(PI_OUIS.includes('88:a2:9e'));
  for (const oui of PI_OUIS) {
    const m = pi5Discover(`${oui}:01:02:03`);
    m.options = m.options.filter((o) => o.code !== Opt.ClientUuid);
    assert.equal(classify(m).isPi, true, oui);
  }
});
