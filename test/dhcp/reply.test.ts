import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Opt, fieldString, getOption, getOptionString, messageType, parseDhcp, serializeDhcp, type DhcpMessage } from '../../src/dhcp/packet.js';
import { classify, PI_OPTION_43 } from '../../src/dhcp/pxe.js';
import { buildProxyReply, replyDestination } from '../../src/dhcp/reply.js';
import { StaticDhcpPolicy } from './static-policy.js';
import { defaultServerAddress, addressForPeer, type InterfaceTable } from '../../src/dhcp/address.js';
import { loadHex } from './hex.js';

function parse(buf: Buffer): DhcpMessage {
  const r = parseDhcp(buf);
  if (!r.ok) assert.fail(r.error.message);
  return r.value;
}

/** Serializes a reply and parses it back, the way a client sees it. */
function wire(msg: DhcpMessage): { bytes: Buffer; msg: DhcpMessage } {
  const bytes = serializeDhcp(msg);
  return { bytes, msg: parse(bytes) };
}

test('Pi reply: option 43 is byte for byte what dnsmasq sends for pxe-service=0,"Raspberry Pi Boot"', () => {
  const expected = Buffer.concat([
    Buffer.from('0601030A04005058450914000011', 'hex'),
    Buffer.from('Raspberry Pi Boot', 'latin1'),
    Buffer.from('FF', 'hex'),
  ]);
  assert.deepEqual(PI_OPTION_43, expected);
  assert.equal(expected.length, 32); // dnsmasq logs "sent size: 32 option: 43 vendor-encap"

  const req = parse(loadHex('pi4-discover.hex'));
  const client = classify(req);
  const { bytes, msg } = wire(buildProxyReply(req, client, { bootFile: '' }, '198.18.0.2', 'offer'));
  assert.ok(bytes.length >= 300);
  assert.equal(msg.op, 2);
  assert.equal(msg.xid, req.xid);
  assert.deepEqual(msg.chaddr, req.chaddr);
  assert.equal(msg.yiaddr, '0.0.0.0');
  assert.equal(msg.siaddr, '198.18.0.2');
  assert.equal(messageType(msg), 2);
  assert.deepEqual(getOption(msg, Opt.VendorSpecific), expected);
  assert.deepEqual(getOption(msg, Opt.ServerId), Buffer.from([198, 18, 0, 2]));
  assert.equal(getOptionString(msg, Opt.TftpServerName), '198.18.0.2');
  assert.equal(getOptionString(msg, Opt.VendorClass), 'PXEClient');
  assert.deepEqual(getOption(msg, Opt.ClientUuid), getOption(req, Opt.ClientUuid));
  // Same option order as dnsmasq: 53, 54, 60, 97, 43 (then our 66).
  assert.deepEqual(msg.options.map((o) => o.code), [53, 54, 60, 97, 43, 66]);
  assert.equal(getOption(msg, 51), undefined, 'never a lease time');
});

test('BIOS reply: discovery control 8, boot file in file, siaddr set, broadcast flag', () => {
  const req = parse(loadHex('ipxe-bios-discover.hex'));
  const { msg } = wire(buildProxyReply(req, classify(req), { bootFile: 'pxelinux.0' }, '198.18.0.2', 'offer'));
  assert.deepEqual(getOption(msg, Opt.VendorSpecific), Buffer.from('060108ff', 'hex'));
  assert.equal(fieldString(msg.file), 'pxelinux.0');
  assert.equal(msg.siaddr, '198.18.0.2');
  assert.equal(msg.flags, 0x8000);
  assert.equal(msg.yiaddr, '0.0.0.0');
});

test('UEFI reply: no option 43 on 67; DHCPACK on 4011 with the boot file', () => {
  const req = parse(loadHex('ovmf-uefi-discover.hex'));
  const c = classify(req);
  const offer = wire(buildProxyReply(req, c, { bootFile: 'efi/grubx64.efi' }, '198.18.0.2', 'offer')).msg;
  assert.equal(getOption(offer, Opt.VendorSpecific), undefined);
  assert.equal(messageType(offer), 2);
  assert.equal(fieldString(offer.file), 'efi/grubx64.efi');
  const request = parse(loadHex('ovmf-uefi-discover.hex'));
  request.options[0] = { code: 53, data: Buffer.from([3]) };
  request.ciaddr = '198.18.0.150';
  request.flags = 0;
  const ack = wire(buildProxyReply(request, classify(request), { bootFile: 'efi/grubx64.efi' }, '198.18.0.2', 'ack')).msg;
  assert.equal(messageType(ack), 5);
  assert.equal(ack.ciaddr, '198.18.0.150');
  assert.equal(ack.yiaddr, '0.0.0.0');
  assert.equal(ack.flags, 0);
  assert.equal(fieldString(ack.file), 'efi/grubx64.efi');
  assert.equal(getOption(ack, Opt.VendorSpecific), undefined);
});

test('boot file longer than the file field goes to option 67; HTTP boot echoes HTTPClient', () => {
  const req = parse(loadHex('ovmf-uefi-discover.hex'));
  req.options = req.options.map((o) =>
    o.code === 60 ? { code: 60, data: Buffer.from('HTTPClient:Arch:00016:UNDI:003001') } : o.code === 93 ? { code: 93, data: Buffer.from([0, 16]) } : o,
  );
  const c = classify(req);
  assert.equal(c.firmware, 'http');
  assert.equal(c.isPxe, true);
  const url = 'http://198.18.0.2/' + 'x'.repeat(200);
  const msg = wire(buildProxyReply(req, c, { bootFile: url }, '198.18.0.2', 'offer')).msg;
  assert.equal(getOptionString(msg, Opt.VendorClass), 'HTTPClient');
  assert.equal(getOptionString(msg, Opt.BootFileName), url);
  assert.equal(getOption(msg, Opt.VendorSpecific), undefined);
});

test('option 97 is echoed only when it is 0 or 17 bytes', () => {
  const req = parse(loadHex('pi3-discover.hex'));
  for (const [len, echoed] of [[0, true], [17, true], [5, false], [16, false]] as const) {
    req.options = req.options.map((o) => (o.code === 97 ? { code: 97, data: Buffer.alloc(len, 1) } : o));
    const c = classify(req);
    assert.equal(c.uuidEcho !== undefined, echoed, `length ${len}`);
    const msg = wire(buildProxyReply(req, c, { bootFile: '' }, '198.18.0.2', 'offer')).msg;
    assert.equal(getOption(msg, 97) !== undefined, echoed);
  }
});

test('non-PXE and lookalike clients are classified correctly', () => {
  const req = parse(loadHex('pi3-discover.hex'));
  req.options = req.options.map((o) => (o.code === 60 ? { code: 60, data: Buffer.from('udhcp 1.35.0') } : o));
  assert.equal(classify(req).isPxe, false);
  const pi = parse(loadHex('pi3-discover.hex'));
  pi.chaddr[0] = 0x00; // not a Pi OUI
  assert.equal(classify(pi).isPi, false);
  const arch = parse(loadHex('pi3-discover.hex'));
  arch.options = arch.options.map((o) => (o.code === 93 ? { code: 93, data: Buffer.from([0, 7]) } : o));
  assert.equal(classify(arch).isPi, false);
  // RFC 3004 length-prefixed user class.
  const uc = parse(loadHex('pi3-discover.hex'));
  uc.options.push({ code: 77, data: Buffer.from('\x04iPXE', 'latin1') });
  assert.equal(classify(uc).isIpxe, true);
  for (const [a, fw] of [[0, 'bios'], [6, 'uefi32'], [7, 'uefi64'], [9, 'uefi64'], [10, 'arm32'], [11, 'arm64'], [16, 'http'], [19, 'http'], [2, 'unknown']] as const) {
    const m = parse(loadHex('ovmf-uefi-discover.hex'));
    m.options = m.options.map((o) => (o.code === 93 ? { code: 93, data: Buffer.from([0, a]) } : o));
    assert.equal(classify(m).firmware, fw, `arch ${a}`);
  }
});

test('reply destinations: relay, ciaddr, broadcast', () => {
  const req = parse(loadHex('pi3-discover.hex'));
  const ports = { server: 67, client: 68 };
  assert.deepEqual(replyDestination(req, ports), { address: '255.255.255.255', port: 68 });
  req.ciaddr = '198.18.0.7';
  assert.deepEqual(replyDestination(req, ports), { address: '198.18.0.7', port: 68 });
  req.giaddr = '198.19.0.1';
  assert.deepEqual(replyDestination(req, ports), { address: '198.19.0.1', port: 67 });
});

test('StaticDhcpPolicy: per MAC, defaults, iPXE, Pi switch, unknown clients', () => {
  const policy = new StaticDhcpPolicy({
    clients: { '52:54:00:12:34:56': { bios: 'special.0' }, '52:54:00:ab:cd:ef': 'all.efi' },
    defaults: { bios: 'pxelinux.0', uefi64: 'grubx64.efi', ipxe: 'http://x/boot.ipxe' },
    answerPis: false,
    answerUnknown: false,
  });
  const ipxe = classify(parse(loadHex('ipxe-bios-discover.hex')));
  assert.deepEqual(policy.decide(ipxe), { bootFile: 'special.0' });
  const ovmf = classify(parse(loadHex('ovmf-uefi-discover.hex')));
  assert.deepEqual(policy.decide(ovmf), { bootFile: 'all.efi' });
  const pi = classify(parse(loadHex('pi4-discover.hex')));
  assert.equal(policy.decide(pi), null);
  const stranger = { ...ovmf, mac: '02:00:00:00:00:01' };
  assert.equal(policy.decide(stranger), null);
  const open = new StaticDhcpPolicy({ defaults: { bios: 'pxelinux.0', uefi64: 'grubx64.efi', ipxe: 'boot.ipxe' }, answerPis: true, answerUnknown: true });
  assert.deepEqual(open.decide(stranger), { bootFile: 'grubx64.efi' });
  assert.deepEqual(open.decide({ ...ipxe, mac: '02:00:00:00:00:02' }), { bootFile: 'boot.ipxe' });
  assert.deepEqual(open.decide(pi), { bootFile: '', piBoot: true });
});

test('server address detection: config, interface, subnet of the client, only address, clear errors', () => {
  const v4 = (address: string, netmask: string, internal = false) => ({
    address, netmask, family: 'IPv4' as const, mac: '00:00:00:00:00:00', internal, cidr: null,
  });
  const one: InterfaceTable = { lo: [v4('127.0.0.1', '255.0.0.0', true)], eth0: [v4('198.18.0.2', '255.255.255.0')] };
  const two: InterfaceTable = { ...one, eth1: [v4('198.19.5.1', '255.255.0.0')] };
  assert.deepEqual(defaultServerAddress({}, one), { ok: true, address: '198.18.0.2', interface: 'eth0' });
  const amb = defaultServerAddress({}, two);
  assert.equal(amb.ok, false);
  if (!amb.ok) assert.match(amb.reason, /eth0 198\.18\.0\.2, eth1 198\.19\.5\.1/);
  assert.deepEqual(defaultServerAddress({ interfaceName: 'eth1' }, two), { ok: true, address: '198.19.5.1', interface: 'eth1' });
  assert.equal(defaultServerAddress({ interfaceName: 'wlan0' }, two).ok, false);
  assert.equal(defaultServerAddress({ interfaceName: 'lo' }, two).ok, false);
  assert.deepEqual(defaultServerAddress({ serverAddress: '198.18.9.9' }, two), { ok: true, address: '198.18.9.9' });
  assert.equal(defaultServerAddress({ serverAddress: 'nope' }, two).ok, false);
  assert.equal(defaultServerAddress({}, { lo: one.lo }).ok, false);
  assert.deepEqual(addressForPeer(two, '198.19.200.3'), { name: 'eth1', address: '198.19.5.1' });
  assert.equal(addressForPeer(two, '10.0.0.1'), null);
  assert.equal(addressForPeer(two, '198.19.200.3', 'eth0'), null);
});
