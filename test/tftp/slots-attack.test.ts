/**
 * Attack: TFTP transfer slots held by clients that never acknowledge anything (issue 12). With the
 * daemon's default limits (256 transfers, 16 per address), 272 RRQs from 17 addresses used to keep every
 * other client out with "Server busy" for the 30 s idle timeout. Now: a first-packet timeout frees such
 * slots in seconds, a client holding fewer slots takes the slot of a stalled transfer of one holding many,
 * unknown clients are capped per /24 and to a share of the slots, and known clients come first.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { haveTools } from '../helpers/tools.js';
import type { ResolveRequest, TftpResolver } from '../../src/tftp/resolver.js';
import type { TransferStats } from '../../src/tftp/server.js';
import { BufferSource } from '../../src/util/source.js';
import { MapResolver, startServer, pattern } from './helpers.js';
import { NeverAck, curlFrom, spreadAddresses, until } from './attack.js';

/** The daemon's defaults (config/netbootd.example.yaml). */
const DAEMON = { maxTransfers: 256, maxPerClient: 16 };
const FILE = pattern(200 * 1024 + 3, 7);

/** Paths under `1a2b3c4d/` are a configured client's (as the daemon says of a configured Pi serial). */
class PriorityResolver implements TftpResolver {
  constructor(private readonly inner: MapResolver) {}
  resolve(req: ResolveRequest) {
    return this.inner.resolve(req);
  }
  priority(_address: string, path: string): 'known' | 'unknown' {
    return path.startsWith('1a2b3c4d/') ? 'known' : 'unknown';
  }
}

test('272 never-ACKing RRQs from 17 addresses, repeated: a new client still downloads within seconds', async (t) => {
  if (!haveTools(t, 'curl')) return;
  const s = await startServer(t, new MapResolver(new Map([['boot.bin', FILE]])), DAEMON);
  const attack = await NeverAck.open(spreadAddresses(17), 16);
  t.after(() => attack.close());
  attack.sustain(s.port, 'boot.bin');
  assert.ok(await until(() => s.server.stats().active >= DAEMON.maxTransfers, 3000), `slots filled: ${s.server.stats().active}`);
  await new Promise((r) => setTimeout(r, 700));
  // Tries like a firmware would (each "Server busy" is an immediate answer), for at most 5 s.
  const t0 = Date.now();
  let got: Awaited<ReturnType<typeof curlFrom>> | null = null;
  for (let i = 0; Date.now() - t0 < 5000; i++) {
    got = await curlFrom('127.0.200.1', s.port, 'boot.bin', 3000);
    if (got.data) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  const ms = Date.now() - t0;
  console.log(`# under a sustained never-ACK attack on all ${DAEMON.maxTransfers} slots: a new client downloaded in ${ms} ms (${s.server.stats().preempted} stalled transfers preempted)`);
  assert.ok(got?.data?.equals(FILE), `downloaded within 5 s: ${got?.err}`);
  assert.ok(ms < 5000);
  const busyLines = s.lines.filter((l) => l.msg === 'tftp transfer limit reached').length;
  assert.ok(busyLines <= 60, `busy log lines bounded: ${busyLines}`);
});

test('never-ACKed transfers free their slots after the first-packet timeout, not the 30 s idle timeout', async (t) => {
  const s = await startServer(t, new MapResolver(new Map([['boot.bin', FILE]])), { ...DAEMON, firstAckTimeoutMs: 2000 });
  const attack = await NeverAck.open(spreadAddresses(17), 16);
  t.after(() => attack.close());
  const t0 = Date.now();
  attack.burst(s.port, 'boot.bin');
  assert.ok(await until(() => s.server.stats().active >= DAEMON.maxTransfers, 3000), `slots filled: ${s.server.stats().active}`);
  const freed = await until(() => s.server.stats().active === 0, 5000);
  const ms = Date.now() - t0;
  console.log(`# ${DAEMON.maxTransfers} never-ACKed transfers: all slots free after ${ms} ms (first-packet timeout 2000 ms)`);
  assert.ok(freed, `slots still held after ${ms} ms: ${s.server.stats().active}`);
  const timeouts = s.transfers.filter((x: TransferStats) => x.outcome === 'timeout');
  assert.ok(timeouts.length >= DAEMON.maxTransfers);
  assert.ok(timeouts.every((x) => x.detail === 'first packet never acknowledged' && x.ms < 3500), 'ended by the first-packet timeout');
  assert.ok(timeouts.some((x) => x.retransmits >= 1), 'the OACK was retransmitted before giving up');
  const lines = s.lines.filter((l) => l.msg === 'transfer timed out');
  assert.ok(lines.length <= 51, `timeout lines rate-limited: ${lines.length}`);
  // A client that does answer is unaffected (its ACKs arrive in milliseconds).
  if (haveTools(t, 'curl')) assert.ok((await curlFrom('127.0.0.1', s.port, 'boot.bin')).data?.equals(FILE));
});

test('per-/24 budget: 640 never-ACKing RRQs from 40 addresses of one /24 hold at most maxPerSubnet slots', async (t) => {
  if (!haveTools(t, 'curl')) return;
  const s = await startServer(t, new MapResolver(new Map([['boot.bin', FILE]])), { ...DAEMON, maxPerSubnet: 64 });
  const attack = await NeverAck.open(Array.from({ length: 40 }, (_, i) => `127.0.9.${i + 1}`), 16);
  t.after(() => attack.close());
  attack.sustain(s.port, 'boot.bin');
  await new Promise((r) => setTimeout(r, 600));
  const held = s.server.stats().active;
  assert.ok(held > 0 && held <= 64, `held by 127.0.9.0/24: ${held}`);
  // Another /24 is not affected at all: first try, no waiting.
  const got = await curlFrom('127.0.0.1', s.port, 'boot.bin', 3000);
  assert.ok(got.data?.equals(FILE), `downloaded at once: ${got.err}`);
  console.log(`# 640 RRQs from one /24 held ${held} slots; a client of another /24 downloaded in ${got.ms} ms`);
});

test('configured clients first: unknown ones hold at most their share; a known client gets a slot at once', async (t) => {
  if (!haveTools(t, 'curl')) return;
  const files = new Map([['boot.bin', FILE], ['1a2b3c4d/start4.elf', FILE]]);
  const s = await startServer(t, new PriorityResolver(new MapResolver(files)), { ...DAEMON, unknownSharePercent: 50 });
  const attack = await NeverAck.open(spreadAddresses(17), 16);
  t.after(() => attack.close());
  attack.sustain(s.port, 'boot.bin');
  await new Promise((r) => setTimeout(r, 600));
  const held = s.server.stats().active;
  assert.ok(held > 0 && held <= DAEMON.maxTransfers / 2, `unknown clients hold at most half: ${held}`);
  const got = await curlFrom('127.0.0.1', s.port, '1a2b3c4d/start4.elf', 3000);
  assert.ok(got.data?.equals(FILE), `the known client is served at once: ${got.err}`);
  console.log(`# unknown attackers held ${held}/${DAEMON.maxTransfers} slots; a known client downloaded in ${got.ms} ms`);
});

test('a known client takes the slot of a stalled unknown transfer when every slot is taken', async (t) => {
  if (!haveTools(t, 'curl')) return;
  const files = new Map([['boot.bin', FILE], ['1a2b3c4d/start4.elf', FILE]]);
  // Unknown clients may take every slot here; 256 addresses holding one slot each (no fair-share victim).
  const s = await startServer(t, new PriorityResolver(new MapResolver(files)), { ...DAEMON, unknownSharePercent: 100, maxPerSubnet: 256 });
  const addresses = Array.from({ length: 256 }, (_, i) => `127.0.5.${i + 1}`).slice(0, 254).concat(['127.0.6.1', '127.0.6.2']);
  const attack = await NeverAck.open(addresses, 1);
  t.after(() => attack.close());
  attack.sustain(s.port, 'boot.bin');
  assert.ok(await until(() => s.server.stats().active >= DAEMON.maxTransfers, 3000), `slots filled: ${s.server.stats().active}`);
  await new Promise((r) => setTimeout(r, 700));
  const got = await curlFrom('127.0.7.2', s.port, '1a2b3c4d/start4.elf', 3000);
  assert.ok(got.data?.equals(FILE), `the known client is served: ${got.err}`);
  assert.ok(s.server.stats().preempted >= 1, 'by preempting a stalled transfer');
  // (An unknown client of another /24 may get in too: its /24 holds fewer slots than the attackers'.)
  const unknown = await curlFrom('127.0.7.1', s.port, 'boot.bin', 2000);
  console.log(`# all slots held by 256 one-slot attackers: unknown client ${unknown.data ? 'served' : `refused (${unknown.err})`}, known client served in ${got.ms} ms`);
});

test('priority callbacks that throw count as unknown; the server keeps serving', async (t) => {
  const resolver = {
    resolve: async () => new BufferSource(Buffer.from('x')),
    priority: (): 'known' => {
      throw new Error('boom');
    },
  };
  const s = await startServer(t, resolver);
  const { download } = await import('./raw-client.js');
  assert.equal((await download(s.port, 'f')).data.toString(), 'x');
});
