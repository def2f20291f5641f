import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Opt,
  buildSubOptions,
  fieldString,
  getOption,
  getOptionString,
  macOf,
  messageType,
  parseDhcp,
  parseSubOptions,
  serializeDhcp,
  type DhcpMessage,
} from '../../src/dhcp/packet.js';
import { classify } from '../../src/dhcp/pxe.js';
import { loadHex, FIXTURES } from './hex.js';

function parseOk(buf: Buffer): DhcpMessage {
  const r = parseDhcp(buf);
  if (!r.ok) assert.fail(`parse failed: ${r.error.code} ${r.error.message}`);
  return r.value;
}

for (const name of FIXTURES) {
  test(`${name}: parse then serialize gives identical bytes`, () => {
    const raw = loadHex(name);
    const msg = parseOk(raw);
    assert.equal(messageType(msg), 1);
    assert.deepEqual(serializeDhcp(msg), raw);
  });
}

test('Pi 3 DISCOVER: fields and classification', () => {
  const msg = parseOk(loadHex('pi3-discover.hex'));
  assert.equal(msg.xid, 0x26f30339);
  assert.equal(macOf(msg), 'b8:27:eb:28:f6:6d');
  assert.deepEqual(msg.options.map((o) => o.code), [53, 55, 93, 94, 97, 60]);
  const c = classify(msg);
  assert.equal(c.isPxe, true);
  assert.equal(c.isPi, true);
  assert.equal(c.firmware, 'bios');
  assert.equal(c.arch, 0);
  assert.equal(c.uuidEcho?.length, 17);
  assert.equal(c.isIpxe, false);
});

test('Pi 4 DISCOVER: option 97 carries the RPi4 FourCC', () => {
  const msg = parseOk(loadHex('pi4-discover.hex'));
  const uuid = getOption(msg, Opt.ClientUuid)!;
  assert.equal(uuid.length, 17);
  assert.equal(uuid[0], 0);
  assert.equal(uuid.subarray(1, 5).toString('latin1'), 'RPi4');
  const c = classify(msg);
  assert.equal(c.isPi, true);
  assert.equal(c.mac, 'dc:a6:32:c2:1f:fe');
});

test('iPXE BIOS DISCOVER: iPXE, BIOS, not a Pi; 175 sub-options parse', () => {
  const msg = parseOk(loadHex('ipxe-bios-discover.hex'));
  const c = classify(msg);
  assert.equal(c.isIpxe, true);
  assert.equal(c.userClass, 'iPXE');
  assert.equal(c.firmware, 'bios');
  assert.equal(c.isPi, false, 'same vendor class and arch as a Pi, but not a Pi OUI');
  assert.deepEqual(getOption(msg, Opt.ClientId), Buffer.from('01525400123456', 'hex'));
  const eb = parseSubOptions(getOption(msg, Opt.Etherboot)!);
  assert.ok(eb.ok);
  assert.deepEqual(eb.value.find((s) => s.code === 0xb1)?.data, Buffer.from('018086100e', 'hex'));
});

test('OVMF DISCOVER: x64 UEFI', () => {
  const msg = parseOk(loadHex('ovmf-uefi-discover.hex'));
  const c = classify(msg);
  assert.equal(c.arch, 7);
  assert.equal(c.firmware, 'uefi64');
  assert.equal(c.isPi, false);
  assert.equal(c.vendorClass, 'PXEClient:Arch:00007:UNDI:003000');
  assert.equal(msg.flags, 0x8000);
  assert.equal(getOption(msg, Opt.ParamRequestList)?.length, 35);
});

/** Builds a raw packet: header (from a fixture) + given option bytes. */
function withOptions(optionBytes: Buffer, base = loadHex('pi3-discover.hex')): Buffer {
  return Buffer.concat([base.subarray(0, 240), optionBytes]);
}

test('RFC 3396: a repeated option code is concatenated; the split layout survives a round trip', () => {
  const raw = withOptions(Buffer.from('350101' + '2b03010203' + '0c026869' + '2b020405' + 'ff' + '000000', 'hex'));
  const msg = parseOk(raw);
  assert.deepEqual(msg.options.map((o) => o.code), [53, 43, 12]);
  assert.deepEqual(getOption(msg, 43), Buffer.from('0102030405', 'hex'));
  assert.deepEqual(serializeDhcp(msg), raw);
});

test('RFC 3396: values over 255 bytes are split on serialize and joined again on parse', () => {
  const msg = parseOk(loadHex('pi3-discover.hex'));
  const long = Buffer.alloc(600, 0x41);
  msg.options.push({ code: 224, data: long });
  const out = serializeDhcp(msg);
  const again = parseOk(out);
  assert.deepEqual(getOption(again, 224), long);
  assert.equal(again.layout!.fragments.filter((f) => f.code === 224).map((f) => f.len).join(','), '255,255,90');
});

test('pad bytes, bytes after END and a missing END survive a round trip', () => {
  const a = withOptions(Buffer.from('00003501010000' + 'ff' + 'deadbeef', 'hex'));
  assert.deepEqual(serializeDhcp(parseOk(a)), a);
  const b = withOptions(Buffer.from('350101' + '3c0450584500', 'hex'));
  const mb = parseOk(b);
  assert.equal(getOptionString(mb, 60), 'PXE');
  assert.deepEqual(serializeDhcp(mb), b);
});

test('option overload (52): options in file and sname are read, in order, and round-trip', () => {
  const base = Buffer.from(loadHex('pi3-discover.hex').subarray(0, 240));
  // file field: option 67 "boot.efi" then END; sname field: option 66 "10.0.0.1" then END.
  const file = Buffer.concat([Buffer.from([67, 8]), Buffer.from('boot.efi'), Buffer.from([255])]);
  const sname = Buffer.concat([Buffer.from([66, 8]), Buffer.from('10.0.0.1'), Buffer.from([255])]);
  base.fill(0, 44, 236);
  file.copy(base, 108);
  sname.copy(base, 44);
  const raw = Buffer.concat([base, Buffer.from('350101' + '340103' + 'ff', 'hex'), Buffer.alloc(20)]);
  const msg = parseOk(raw);
  assert.deepEqual(msg.options.map((o) => o.code), [53, 52, 67, 66]);
  assert.equal(getOptionString(msg, 67), 'boot.efi');
  assert.equal(getOptionString(msg, 66), '10.0.0.1');
  assert.deepEqual(serializeDhcp(msg), raw);
  // Changed: laid out fresh, all options in the options field, the overloaded fields cleared.
  msg.options = msg.options.filter((o) => o.code !== 66);
  const fresh = parseOk(serializeDhcp(msg));
  assert.deepEqual(fresh.options.map((o) => o.code), [53, 67]);
  assert.equal(getOptionString(fresh, 67), 'boot.efi');
  assert.ok(fresh.file.every((b) => b === 0) && fresh.sname.every((b) => b === 0));
});

test('a changed message is laid out fresh, without overload, padded to 300 bytes', () => {
  const msg = parseOk(withOptions(Buffer.from('350101ff', 'hex')));
  msg.options.push({ code: 66, data: Buffer.from('198.18.0.2') });
  const out = serializeDhcp(msg);
  assert.equal(out.length, 300);
  assert.deepEqual(out.subarray(240, 256), Buffer.from('350101420a3139382e31382e302e32ff', 'hex'));
  assert.ok(out.subarray(256).every((b) => b === 0));
});

test('malformed packets give typed ParseErrors', () => {
  const good = loadHex('pi3-discover.hex');
  const cases: [string, Buffer, string][] = [
    ['empty', Buffer.alloc(0), 'DHCP_SHORT'],
    ['short', good.subarray(0, 239), 'DHCP_SHORT'],
    ['bad op', Buffer.concat([Buffer.from([9]), good.subarray(1)]), 'DHCP_BAD_OP'],
    ['bad hlen', (() => { const b = Buffer.from(good); b[2] = 17; return b; })(), 'DHCP_BAD_HLEN'],
    ['no cookie', (() => { const b = Buffer.from(good); b[236] = 0; return b; })(), 'DHCP_NO_COOKIE'],
    ['option past the end', withOptions(Buffer.from('3501013c20414243', 'hex')), 'DHCP_TRUNCATED_OPTION'],
    ['option without length', withOptions(Buffer.from('35', 'hex')), 'DHCP_TRUNCATED_OPTION'],
    ['overload of 2 bytes', withOptions(Buffer.from('34020101ff', 'hex')), 'DHCP_BAD_OVERLOAD'],
    ['overload value 7', withOptions(Buffer.from('340107ff', 'hex')), 'DHCP_BAD_OVERLOAD'],
  ];
  for (const [what, buf, code] of cases) {
    const r = parseDhcp(buf);
    assert.equal(r.ok, false, what);
    if (!r.ok) {
      assert.equal(r.error.code, code, what);
      assert.equal(r.error.name, 'ParseError');
    }
  }
  // An overloaded file field that lies about a length.
  const b = Buffer.from(good.subarray(0, 240));
  b.fill(0, 44, 236);
  Buffer.from([67, 200, 0x41]).copy(b, 108);
  const r = parseDhcp(Buffer.concat([b, Buffer.from('340101ff', 'hex')]));
  assert.equal(r.ok, false);
  if (!r.ok) assert.equal(r.error.code, 'DHCP_TRUNCATED_OPTION');
});

test('encapsulated sub-options: build, parse, pads, lying lengths', () => {
  const built = buildSubOptions([
    { code: 6, data: Buffer.from([8]) },
    { code: 10, data: Buffer.from('\x00PXE', 'latin1') },
  ]);
  assert.deepEqual(built, Buffer.from('0601080a0400505845ff', 'hex'));
  const p = parseSubOptions(Buffer.from('00060108ff0901', 'hex'));
  assert.ok(p.ok);
  assert.deepEqual(p.value, [{ code: 6, data: Buffer.from([8]) }]);
  const bad = parseSubOptions(Buffer.from('0605ab', 'hex'));
  assert.equal(bad.ok, false);
  assert.throws(() => buildSubOptions([{ code: 1, data: Buffer.alloc(256) }]), RangeError);
});

test('fieldString reads a NUL-terminated header field', () => {
  const f = Buffer.alloc(128);
  f.write('pxelinux.0');
  assert.equal(fieldString(f), 'pxelinux.0');
});
