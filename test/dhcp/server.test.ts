/** ProxyDhcpServer on loopback, ephemeral ports (replies are steered to 127.0.0.1 through ciaddr). */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { ProxyDhcpServer, type ProxyDhcpServerOptions } from '../../src/dhcp/server.js';
import { StaticDhcpPolicy } from './static-policy.js';
import { fieldString, getOption, messageType, parseDhcp, serializeDhcp } from '../../src/dhcp/packet.js';
import { PERSONAS, buildRequest, collect, waitFor, type Persona } from './client.js';
import { loadHex, FIXTURES } from './hex.js';

const policy = new StaticDhcpPolicy({
  defaults: { bios: 'pxelinux.0', uefi64: 'grubx64.efi' },
  answerPis: true,
  answerUnknown: true,
});

async function setup(t: TestContext, extra: Partial<ProxyDhcpServerOptions> = {}): Promise<{ server: ProxyDhcpServer; client: Socket; dhcp: number; proxy: number }> {
  const client = createSocket({ type: 'udp4' });
  await new Promise<void>((r) => client.bind(0, '127.0.0.1', () => r()));
  const server = new ProxyDhcpServer({
    policy,
    serverAddress: '127.0.0.1',
    bindAddress: '127.0.0.1',
    ports: { dhcp: 0, proxy: 0, client: client.address().port, relay: 67 },
    ...extra,
  });
  await server.start();
  t.after(async () => {
    await server.stop();
    client.close();
  });
  const a = server.address();
  return { server, client, dhcp: a.dhcp, proxy: a.proxy! };
}

const send = (s: Socket, buf: Buffer, port: number): Promise<void> =>
  new Promise((r, j) => s.send(buf, port, '127.0.0.1', (e) => (e ? j(e) : r())));

async function discover(s: Socket, p: Persona, port: number, xid: number, ms = 1000) {
  const wait = waitFor(s, ms, (r) => r.msg.xid === xid);
  await send(s, buildRequest(p, xid, { ciaddr: '127.0.0.1' }), port);
  return wait;
}

test('DISCOVER on 67 from a BIOS PXE client gets a proxy offer', async (t) => {
  const { client, dhcp } = await setup(t);
  const r = await discover(client, PERSONAS.bios, dhcp, 0x1001);
  assert.ok(r, 'an offer arrived');
  assert.equal(messageType(r.msg), 2);
  assert.equal(r.msg.yiaddr, '0.0.0.0');
  assert.equal(fieldString(r.msg.file), 'pxelinux.0');
  assert.deepEqual(getOption(r.msg, 43), Buffer.from('060108ff', 'hex'));
});

test('silence: REQUEST on 67, DISCOVER on 4011, non-PXE clients, clients the policy does not claim', async (t) => {
  const strict = new StaticDhcpPolicy({ defaults: { bios: 'pxelinux.0' }, answerUnknown: false, answerPis: false });
  const { client, dhcp, proxy, server } = await setup(t, { policy: strict });
  const all = collect(client, 400);
  await send(client, buildRequest(PERSONAS.bios, 1, { type: 3, ciaddr: '127.0.0.1' }), dhcp);
  await send(client, buildRequest(PERSONAS.bios, 2, { type: 1, ciaddr: '127.0.0.1' }), proxy);
  await send(client, buildRequest(PERSONAS.plain, 3, { ciaddr: '127.0.0.1' }), dhcp);
  await send(client, buildRequest(PERSONAS.bios, 4, { ciaddr: '127.0.0.1' }), dhcp); // unknown MAC
  await send(client, buildRequest(PERSONAS.pi4, 5, { ciaddr: '127.0.0.1' }), dhcp); // Pis switched off
  assert.deepEqual(await all, []);
  assert.equal(server.stats.offers + server.stats.acks, 0);
  assert.equal(server.stats.ignored, 5);
});

test('REQUEST on 4011 gets a DHCPACK with the boot file, unicast to its source port', async (t) => {
  const { client, proxy } = await setup(t);
  const other = createSocket({ type: 'udp4' });
  await new Promise<void>((r) => other.bind(0, '127.0.0.1', () => r()));
  t.after(() => other.close());
  const wait = waitFor(other, 1000, (r) => r.msg.xid === 0x2002);
  await send(other, buildRequest(PERSONAS.uefi, 0x2002, { type: 3, ciaddr: '127.0.0.1' }), proxy);
  const r = await wait;
  assert.ok(r);
  assert.equal(r.port, proxy, 'from the 4011 socket');
  assert.equal(messageType(r.msg), 5);
  assert.equal(fieldString(r.msg.file), 'grubx64.efi');
  assert.equal(getOption(r.msg, 43), undefined);
  void client;
});

test('a relayed DISCOVER (giaddr set) is answered to the relay agent port', async (t) => {
  const relay = createSocket({ type: 'udp4' });
  await new Promise<void>((r) => relay.bind(0, '127.0.0.1', () => r()));
  t.after(() => relay.close());
  const { client, dhcp } = await setup(t, { ports: { dhcp: 0, proxy: 0, client: 9, relay: relay.address().port } });
  const wait = waitFor(relay, 1000, (r) => r.msg.xid === 0x5005);
  await send(client, buildRequest(PERSONAS.uefi, 0x5005, { giaddr: '127.0.0.1' }), dhcp);
  const r = await wait;
  assert.ok(r, 'the offer went to giaddr:relay port');
  assert.equal(r.msg.giaddr, '127.0.0.1');
  assert.equal(r.msg.flags, 0x8000, 'broadcast flag, so the relay broadcasts it to the addressless client');
});

test('reply delay holds the offer back', async (t) => {
  const { client, dhcp } = await setup(t, { replyDelayMs: 250 });
  const t0 = performance.now();
  const r = await discover(client, PERSONAS.uefi, dhcp, 0x3003, 2000);
  assert.ok(r);
  assert.ok(r.at - t0 >= 240, `arrived after ${r.at - t0} ms`);
});

test('start-up fails clearly when the server address cannot be decided', async () => {
  const server = new ProxyDhcpServer({
    policy,
    bindAddress: '127.0.0.1',
    ports: { dhcp: 0, proxy: 0 },
    networkInterfaces: () => ({
      eth0: [{ address: '198.18.0.2', netmask: '255.255.255.0', family: 'IPv4', mac: '02:00:00:00:00:01', internal: false, cidr: null }],
      eth1: [{ address: '198.19.0.2', netmask: '255.255.255.0', family: 'IPv4', mac: '02:00:00:00:00:02', internal: false, cidr: null }],
    }),
  });
  await assert.rejects(server.start(), (e: Error & { code?: string }) => {
    assert.equal(e.code, 'DHCP_NO_SERVER_ADDRESS');
    assert.match(e.message, /eth0 198\.18\.0\.2, eth1 198\.19\.0\.2/);
    return true;
  });
});

test('a flood of 10,000 random and mangled packets leaves the server answering', async (t) => {
  const { client, dhcp, proxy, server } = await setup(t);
  const seeds = FIXTURES.map(loadHex);
  let sent = 0;
  for (let i = 0; i < 10_000; i++) {
    let pkt: Buffer;
    if (i % 2 === 0) pkt = randomBytes(i % 600);
    else {
      pkt = Buffer.from(seeds[i % seeds.length]!);
      const flips = 1 + (i % 8);
      for (let k = 0; k < flips; k++) pkt[(i * 7919 + k * 104729) % pkt.length] = (i * 31 + k) & 0xff;
      if (i % 3 === 0) pkt = pkt.subarray(0, (i * 13) % pkt.length);
      pkt[0] = 1; // keep most as requests so they reach the option parser
    }
    await send(client, pkt, i % 5 === 0 ? proxy : dhcp);
    sent++;
    // Yield often: the server shares this event loop, and the kernel drops what its socket buffer can't hold.
    if (sent % 16 === 0) await new Promise((r) => setImmediate(r));
  }
  const r = await discover(client, PERSONAS.bios, dhcp, 0x4004, 3000);
  assert.ok(r, 'still answers a valid DISCOVER');
  assert.equal(fieldString(r.msg.file), 'pxelinux.0');
  assert.ok(server.stats.received >= 9_900, `received ${server.stats.received} of 10000`);
  assert.ok(server.stats.malformed > 4000, `malformed counted: ${server.stats.malformed}`);
});

test('a REQUEST on 67 is never answered, but tells which address the client takes (lease event)', async (t) => {
  const { client, dhcp, server } = await setup(t);
  const leases: Array<{ mac: string; ip: string; firmware?: string }> = [];
  server.on('lease', (l: { mac: string; ip: string; firmware?: string }) => leases.push(l));
  const all = collect(client, 400);
  // Selecting: option 50 carries the address offered by the real DHCP server.
  const sel = parseDhcp(buildRequest(PERSONAS.bios, 0x77, { type: 3 }));
  assert.ok(sel.ok);
  sel.value.options.push({ code: 50, data: Buffer.from([198, 18, 0, 42]) });
  await send(client, serializeDhcp(sel.value), dhcp);
  // Renewing: ciaddr.
  await send(client, buildRequest(PERSONAS.bios, 0x78, { type: 3, ciaddr: '198.18.0.43' }), dhcp);
  assert.equal((await all).length, 0, 'no reply to a REQUEST on 67');
  assert.deepEqual(leases, [
    { mac: PERSONAS.bios.mac, ip: '198.18.0.42', firmware: 'bios' },
    { mac: PERSONAS.bios.mac, ip: '198.18.0.43', firmware: 'bios' },
  ]);
});
