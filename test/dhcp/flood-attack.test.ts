/**
 * Attack: DHCP floods and the log (issue 12). Every offer/ack was one info line, so a flood of PXE
 * DISCOVERs (any MAC when `defaults` answers unknown PCs, or a spoofed configured MAC) wrote one line per
 * packet; malformed packets were limited per source address only (spoofed sources are many). Now every
 * line a remote host can cause is limited per client and per kind, and carries the count left out.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import { ProxyDhcpServer } from '../../src/dhcp/server.js';
import { StaticDhcpPolicy } from './static-policy.js';
import { PERSONAS, buildRequest, waitFor } from './client.js';
import { captureLogger } from '../tftp/helpers.js';

const policy = new StaticDhcpPolicy({ defaults: { bios: 'pxelinux.0', uefi64: 'grubx64.efi' }, answerPis: true, answerUnknown: true });

const bind = (address: string): Promise<Socket> =>
  new Promise((r) => {
    const s = createSocket({ type: 'udp4' });
    s.on('error', () => {});
    s.bind(0, address, () => r(s));
  });

test('5,000 DISCOVERs (random MACs), 3,000 malformed packets from 100 addresses, 2,000 REQUESTs on 4011: log lines bounded, with counts', async (t) => {
  const client = await bind('127.0.0.1');
  const { logger, lines } = captureLogger();
  const server = new ProxyDhcpServer({
    policy,
    logger,
    serverAddress: '127.0.0.1',
    bindAddress: '127.0.0.1',
    ports: { dhcp: 0, proxy: 0, client: client.address().port, relay: 67 },
  });
  await server.start();
  const spoofed = await Promise.all(Array.from({ length: 100 }, (_, i) => bind(`127.0.60.${i + 1}`)));
  t.after(async () => {
    await server.stop();
    client.close();
    spoofed.forEach((s) => s.close());
  });
  const { dhcp, proxy } = server.address();
  const base = Buffer.from(buildRequest(PERSONAS.bios, 1, { ciaddr: '127.0.0.1' }));
  const startLines = lines.length;
  let sent = 0;
  const pace = async (): Promise<void> => {
    if (++sent % 25 === 0) await new Promise((r) => setTimeout(r, 1));
  };
  for (let i = 0; i < 5000; i++) {
    const b = Buffer.from(base);
    b.writeUInt32BE(0x10000 + i, 4); // xid
    b.writeUInt32BE(0x5254_0000 + i, 28 + 2); // chaddr: 52:54:<i>
    client.send(b, dhcp, '127.0.0.1');
    await pace();
  }
  for (let i = 0; i < 3000; i++) {
    spoofed[i % spoofed.length]!.send(base.subarray(0, 100 + (i % 130)), dhcp, '127.0.0.1');
    await pace();
  }
  for (let i = 0; i < 2000; i++) {
    client.send(buildRequest(PERSONAS.uefi, 0x900000 + i, { type: 3, ciaddr: '127.0.0.1' }), proxy!, '127.0.0.1');
    await pace();
  }
  // Served all the while: a client of its own still gets its offer.
  const wait = waitFor(client, 2000, (r) => r.msg.xid === 0xabcdef);
  client.send(buildRequest(PERSONAS.uefi, 0xabcdef, { ciaddr: '127.0.0.1' }), dhcp, '127.0.0.1');
  assert.ok(await wait, 'offer after the flood');
  await new Promise((r) => setTimeout(r, 200));
  await server.stop(); // logs the counts still held back
  const flood = lines.slice(startLines);
  const by = (msg: string) => flood.filter((l) => l.msg.startsWith(msg));
  const offers = by('proxy DHCP offer');
  const acks = by('PXE boot server ack');
  const malformed = by('dropped malformed DHCP packet');
  // A line is its own event plus the `suppressed` ones before it; a summary line is only its count.
  const sum = (ls: typeof flood) => ls.reduce((n, l) => n + (l.summary ? 0 : 1) + (Number(l.suppressed) || 0), 0);
  console.log(
    `# DHCP flood: ${server.stats.received} packets, ${server.stats.offers} offers, ${server.stats.acks} acks, ${server.stats.malformed} malformed; ` +
      `log lines: ${offers.length} offer, ${acks.length} ack, ${malformed.length} malformed, ${flood.length} in all`,
  );
  assert.ok(server.stats.offers >= 2500 && server.stats.acks >= 1000 && server.stats.malformed >= 1500, 'most of the flood reached the server');
  assert.ok(offers.length <= 52 && acks.length <= 52 && malformed.length <= 52, 'each kind bounded');
  assert.ok(flood.length <= 170, `log lines bounded: ${flood.length}`);
  // Lines plus the counts they carry account for every event.
  assert.equal(sum(offers), server.stats.offers);
  assert.equal(sum(acks), server.stats.acks);
  assert.equal(sum(malformed), server.stats.malformed);
});

test('a client booting logs its offer; its DISCOVER retransmissions (same xid) are counted, not repeated', async (t) => {
  const client = await bind('127.0.0.1');
  const { logger, lines } = captureLogger();
  const server = new ProxyDhcpServer({
    policy, logger, serverAddress: '127.0.0.1', bindAddress: '127.0.0.1',
    ports: { dhcp: 0, proxy: 0, client: client.address().port, relay: 67 },
  });
  await server.start();
  t.after(async () => {
    await server.stop();
    client.close();
  });
  for (let i = 0; i < 3; i++) {
    const wait = waitFor(client, 1000, (r) => r.msg.xid === 0x77);
    client.send(buildRequest(PERSONAS.bios, 0x77, { ciaddr: '127.0.0.1' }), server.address().dhcp, '127.0.0.1');
    assert.ok(await wait, 'each DISCOVER is answered');
  }
  const wait = waitFor(client, 1000, (r) => r.msg.xid === 0x78);
  client.send(buildRequest(PERSONAS.bios, 0x78, { ciaddr: '127.0.0.1' }), server.address().dhcp, '127.0.0.1');
  assert.ok(await wait);
  const offers = lines.filter((l) => l.msg === 'proxy DHCP offer');
  assert.deepEqual(offers.map((l) => l.xid), [0x77, 0x78], 'one line per boot (xid)');
  assert.equal(offers[1]!.suppressed, 2, 'the next line says how many were not logged');
});
