/**
 * Attacks on client identity: another machine on the LAN asks for files under a victim's Pi serial or
 * looks up a PC's PXELINUX config by its MAC, then attaches NBD, hoping to get the victim's copy-on-write
 * overlay (its disk). Each attack must leave the attacker with its own overlay: the victim's bytes are
 * not visible to it and its bytes are not visible to the victim — whether the victim is idle or attached.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { haveTools, tempDir } from '../helpers/tools.js';
import { buildPiOsImage } from '../helpers/piimage.js';
import { run } from '../helpers/tools.js';
import { startDaemon, testConfig, type RunningDaemon } from '../daemon/harness.js';
import { RawNbd } from '../nbd/client.js';
import * as P from '../../src/nbd/packet.js';
import { parseConfig } from '../../src/config/load.js';
import { ClientTable } from '../../src/registry/clients.js';
import { ImagePool } from '../../src/registry/pool.js';
import { Registry } from '../../src/registry/registry.js';
import { createLogger } from '../../src/util/log.js';
import { Writable } from 'node:stream';

const VICTIM = '127.0.0.2';
const ATTACKER = '127.0.0.3';
/** Offsets in the root partition area of the demo image, away from the boot FAT. */
const VICTIM_AT = 150 * 1024 * 1024;
const ATTACKER_AT = VICTIM_AT + 1024 * 1024;

/** A real NBD session from a chosen source address. */
class Session {
  private handle = 1n;
  private constructor(readonly c: RawNbd) {}
  static async open(port: number, from: string, exportName: string): Promise<Session> {
    const c = await RawNbd.connect(port, { localAddress: from });
    await c.handshake();
    await c.go(exportName);
    return new Session(c);
  }
  async write(offset: number, data: Buffer): Promise<void> {
    this.c.request(P.CMD_WRITE, P.CMD_FLAG_FUA, this.handle++, offset, data.length, data);
    const r = await this.c.simpleReply();
    assert.equal(r.error, 0, 'write acknowledged');
  }
  async read(offset: number, length: number): Promise<Buffer> {
    this.c.request(P.CMD_READ, 0, this.handle++, offset, length);
    const r = await this.c.simpleReply(length);
    assert.equal(r.error, 0, 'read answered');
    return r.data;
  }
  async close(): Promise<void> {
    this.c.destroy();
    await this.c.closed;
  }
}

const mark = (s: string): Buffer => Buffer.concat([Buffer.from(s), Buffer.alloc(512 - s.length)]);

async function tftpFrom(d: RunningDaemon, source: string, path: string): Promise<Buffer | null> {
  const r = await run('curl', ['-sS', '--interface', source, `tftp://127.0.0.1:${d.tftpPort}/${path}`], { allowFail: true });
  return r.code === 0 ? r.stdout : null;
}

/** Waits until the daemon has seen the NBD connections from `ip` close (a test closes its socket first). */
async function settle(): Promise<void> {
  await new Promise((r) => setTimeout(r, 150));
}

async function cowDaemon(t: TestContext, body: string): Promise<{ d: RunningDaemon; dir: string }> {
  const dir = tempDir(t);
  const image = join(dir, 'disk.img');
  await buildPiOsImage(image);
  const d = await startDaemon(t, dir, testConfig(join(dir, 'state'), `images:\n  disk: { path: ${image}, mode: cow }\n${body}`));
  return { d, dir };
}

/** The attacker's NBD view is its own: the victim's mark is not there, its own mark does not reach the victim. */
async function assertIsolated(d: RunningDaemon, victim: Session | null): Promise<void> {
  const a = await Session.open(d.nbdPort, ATTACKER, 'disk');
  assert.notDeepEqual(await a.read(VICTIM_AT, 512), mark('VICTIM'), 'the attacker does not read the victim\'s writes');
  await a.write(ATTACKER_AT, mark('ATTACKER'));
  await a.close();
  await settle();
  const v = victim ?? (await Session.open(d.nbdPort, VICTIM, 'disk'));
  assert.deepEqual(await v.read(VICTIM_AT, 512), mark('VICTIM'), 'the victim still has its own writes');
  assert.notDeepEqual(await v.read(ATTACKER_AT, 512), mark('ATTACKER'), 'the attacker\'s writes do not reach the victim');
  if (!victim) await v.close();
}

test('attack: a TFTP request under a Pi serial from another address does not take its overlay (idle victim)', async (t) => {
  if (!haveTools(t, 'curl', 'sfdisk', 'mkfs.vfat', 'mcopy', 'mkfs.ext4')) return;
  const { d } = await cowDaemon(t, 'pis:\n  "11111111": { image: disk }\n');
  // The victim boots: its first file binds serial 11111111 to its address; it writes to its disk.
  assert.ok(await tftpFrom(d, VICTIM, '11111111/start4.elf'), 'the victim boots');
  const v = await Session.open(d.nbdPort, VICTIM, 'disk');
  await v.write(VICTIM_AT, mark('VICTIM'));
  await v.close();
  await settle();

  // Idle victim: the attacker asks for files under its serial, a boot start included.
  const cmdline = await tftpFrom(d, ATTACKER, '11111111/cmdline.txt');
  const start = await tftpFrom(d, ATTACKER, '11111111/start4.elf');
  await assertIsolated(d, null);
  assert.equal(cmdline, null, 'not served: it is not the attacker\'s serial');
  assert.equal(start, null, 'a boot start right after the victim\'s activity moves nothing');
  const refused = d.lines.filter((l) => l.msg === 'client identity not given to this address');
  assert.ok(refused.some((l) => l.ip === ATTACKER && l.holder === VICTIM && l.serial === '11111111'), 'the refusal is logged with both addresses');
  assert.ok(!d.lines.some((l) => l.msg === 'client identity moved to a new address'));
});

test('attack: a TFTP boot start under a Pi serial from another address does not take the overlay of an attached victim', async (t) => {
  if (!haveTools(t, 'curl', 'sfdisk', 'mkfs.vfat', 'mcopy', 'mkfs.ext4')) return;
  const { d } = await cowDaemon(t, 'pis:\n  "11111111": { image: disk }\n');
  assert.ok(await tftpFrom(d, VICTIM, '11111111/start4.elf'), 'the victim boots');
  const attached = await Session.open(d.nbdPort, VICTIM, 'disk');
  await attached.write(VICTIM_AT, mark('VICTIM'));
  // Even once the victim's address has been quiet for a minute, a boot start moves nothing while it is attached.
  d.daemon.clients.get(VICTIM)!.lastSeen -= 120_000;
  const start = await tftpFrom(d, ATTACKER, '11111111/start4.elf');
  await assertIsolated(d, attached);
  assert.equal(start, null);
  assert.ok(d.lines.some((l) => l.msg === 'client identity not given to this address' && l.ip === ATTACKER && l.holder === VICTIM && l.why === 'attached to NBD from its address'));
  await attached.close();
});

test('attack: a pxelinux.cfg/01-<mac> lookup from another address does not take a PC\'s overlay (idle victim)', async (t) => {
  if (!haveTools(t, 'curl', 'sfdisk', 'mkfs.vfat', 'mcopy', 'mkfs.ext4')) return;
  const { d } = await cowDaemon(t, 'hosts:\n  "52:54:00:aa:bb:01": { image: disk, name: desk }\n');
  // The victim's PXELINUX looks up its config by MAC (file not found): that binds its unbound MAC.
  assert.equal(await tftpFrom(d, VICTIM, 'pxelinux.cfg/01-52-54-00-aa-bb-01'), null);
  assert.ok(await tftpFrom(d, VICTIM, 'cmdline.txt'), 'the victim is served as host desk');
  const v = await Session.open(d.nbdPort, VICTIM, 'disk');
  await v.write(VICTIM_AT, mark('VICTIM'));
  await v.close();
  await settle();

  assert.equal(await tftpFrom(d, ATTACKER, 'pxelinux.cfg/01-52-54-00-aa-bb-01'), null);
  const asDesk = await tftpFrom(d, ATTACKER, 'cmdline.txt');
  await assertIsolated(d, null);
  assert.equal(asDesk, null, 'the attacker is not host desk');
  assert.ok(d.lines.some((l) => l.msg === 'PXELINUX lookup of another client\'s MAC refused' && l.ip === ATTACKER && l.holder === VICTIM));
});

test('attack: a pxelinux.cfg/01-<mac> lookup from another address does not take the overlay of an attached PC', async (t) => {
  if (!haveTools(t, 'curl', 'sfdisk', 'mkfs.vfat', 'mcopy', 'mkfs.ext4')) return;
  const { d } = await cowDaemon(t, 'hosts:\n  "52:54:00:aa:bb:01": { image: disk, name: desk }\n');
  assert.equal(await tftpFrom(d, VICTIM, 'pxelinux.cfg/01-52-54-00-aa-bb-01'), null);
  const attached = await Session.open(d.nbdPort, VICTIM, 'disk');
  await attached.write(VICTIM_AT, mark('VICTIM'));
  assert.equal(await tftpFrom(d, ATTACKER, 'pxelinux.cfg/01-52-54-00-aa-bb-01'), null);
  await assertIsolated(d, attached);
  await attached.close();
});

test('attack: a pinned Pi cannot be claimed from outside its pin, even before it ever booted', async (t) => {
  if (!haveTools(t, 'curl', 'sfdisk', 'mkfs.vfat', 'mcopy', 'mkfs.ext4')) return;
  const { d } = await cowDaemon(t, `pis:\n  "11111111": { image: disk, address: ${VICTIM} }\n  "22222222": { image: disk, address: 127.0.0.0/30 }\n`);
  // Unbound, but pinned: the attacker's boot start is refused, and gives it no identity.
  assert.equal(await tftpFrom(d, ATTACKER, '11111111/start4.elf'), null);
  assert.equal(d.daemon.clients.get(ATTACKER)?.serial, undefined);
  assert.ok(d.lines.some((l) => l.msg === 'client identity not given to this address' && l.ip === ATTACKER && l.why === 'pinned to another address'));
  // Inside its pin (an address, or a CIDR) it boots.
  assert.ok(await tftpFrom(d, VICTIM, '11111111/start4.elf'));
  assert.ok(await tftpFrom(d, '127.0.0.1', '22222222/start4.elf'));
  assert.equal(await tftpFrom(d, ATTACKER, '22222222/start4.elf'), null, 'inside the pin, but the serial is bound to an active address');
  const v = await Session.open(d.nbdPort, VICTIM, 'disk');
  await v.write(VICTIM_AT, mark('VICTIM'));
  await v.close();
  await settle();
  await assertIsolated(d, null);
});

test('attack: pins hold against DHCP evidence and stale bindings; legit moves are logged with both addresses', async (t) => {
  const dir = tempDir(t);
  const img = join(dir, 'a.img');
  writeFileSync(img, Buffer.alloc(1 << 20));
  const r = parseConfig(`server: { stateDir: ${dir}/state }
images: { a: { path: ${img}, mode: cow } }
pis: { "11111111": { image: a }, "33333333": { image: a, address: 198.18.0.0/24 } }
hosts:
  "52:54:00:aa:bb:01": { image: a, address: 198.18.0.10 }
  "52:54:00:aa:bb:02": { image: a }
`, '/x.yaml');
  assert.ok(r.ok, r.ok ? '' : JSON.stringify(r.errors));
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({ write: (c: Buffer, _e, cb) => (c.toString().split('\n').filter(Boolean).forEach((l) => lines.push(JSON.parse(l))), cb()) });
  const pool = new ImagePool();
  t.after(() => pool.close());
  const clients = new ClientTable();
  const reg = new Registry(r.config, pool, clients, createLogger({ level: 'debug', destination: sink }));
  /** The overlay an NBD connection from `ip` gets (the device is named `<image>+cow:<identity>`). */
  const nbdKey = async (ip: string) => {
    const o = await reg.open('a', { address: ip, tls: false });
    assert.ok(!('refused' in o));
    o.release();
    return o.device.name;
  };

  // DHCP evidence from outside a pin is refused; inside it binds.
  assert.equal(reg.dhcpSeen('198.18.1.10', '52:54:00:aa:bb:01'), false);
  assert.equal(clients.holder('mac', '52:54:00:aa:bb:01'), undefined);
  assert.equal(reg.dhcpSeen('198.18.0.10', '52:54:00:aa:bb:01'), true);
  // A stale binding (restored from clients.json, made before the pin) gives no identity outside the pin.
  clients.learn('198.18.2.33', { serial: '33333333' });
  assert.match(await nbdKey('198.18.2.33'), /ip-198\.18\.2\.33/);
  assert.equal(reg.target('198.18.2.33', '33333333/start4.elf'), null);

  // An unpinned MAC moves on DHCP evidence when not attached — logged as a move with both addresses.
  assert.equal(reg.dhcpSeen('198.18.0.20', '52:54:00:aa:bb:02'), true);
  assert.match(await nbdKey('198.18.0.20'), /mac-52-54-00-aa-bb-02/);
  assert.equal(reg.dhcpSeen('198.18.0.21', '52:54:00:aa:bb:02'), true);
  assert.ok(lines.some((l) => l.msg === 'client identity moved to a new address' && l.from === '198.18.0.20' && l.to === '198.18.0.21' && l.mac === '52:54:00:aa:bb:02' && l.level === 40));
  // … but not while attached from its address.
  const held = await reg.open('a', { address: '198.18.0.21', tls: false });
  assert.ok(!('refused' in held));
  assert.equal(reg.dhcpSeen('198.18.0.22', '52:54:00:aa:bb:02'), false);
  assert.equal(clients.holder('mac', '52:54:00:aa:bb:02'), '198.18.0.21');
  held.release();

  // A Pi: bound by its first boot; another address's Pi-looking DHCP exchange and boot start move it.
  assert.ok(reg.target('198.18.0.30', '11111111/start4.elf'));
  assert.equal(reg.target('198.18.0.31', '11111111/start4.elf'), null, 'no DHCP seen, holder active: refused');
  assert.equal(reg.dhcpSeen('198.18.0.31', 'dc:a6:32:00:00:01', { firmware: 'pi' }), true);
  assert.equal(reg.target('198.18.0.31', '11111111/cmdline.txt'), null, 'not the start of a boot');
  assert.ok(reg.target('198.18.0.31', '11111111/start4.elf'), 'a real Pi boot moves it');
  assert.equal(clients.holder('serial', '11111111'), '198.18.0.31');
  // Without DHCP, a boot start moves it only after its address was quiet for a minute.
  assert.equal(reg.target('198.18.0.32', '11111111//config.txt'), null);
  clients.get('198.18.0.31')!.lastSeen -= 61_000;
  assert.ok(reg.target('198.18.0.32', '11111111//config.txt'), 'a Pi 5 boot start after a quiet minute');
  assert.ok(lines.some((l) => l.msg === 'client identity moved to a new address' && l.from === '198.18.0.31' && l.to === '198.18.0.32' && l.serial === '11111111'));
});

test('attack: an NBD refusal never names the client holding the export', async (t) => {
  const dir = tempDir(t);
  const img = join(dir, 'rw.img');
  writeFileSync(img, Buffer.alloc(1 << 20));
  const d = await startDaemon(t, dir, testConfig(join(dir, 'state'), `images:\n  rw: { path: ${img} }\n`));
  const holder = await RawNbd.connect(d.nbdPort, { localAddress: VICTIM });
  await holder.handshake();
  await holder.go('rw');
  const asker = await RawNbd.connect(d.nbdPort, { localAddress: ATTACKER });
  await asker.handshake();
  const err = await asker.go('rw').then(() => null, (e: Error & { type: number }) => e);
  assert.ok(err, 'the second writer is refused');
  assert.equal(err.type, P.REP_ERR_POLICY);
  assert.match(err.message, /in use by another client/);
  assert.ok(!err.message.includes(VICTIM), `the refusal names no address: ${err.message}`);
  asker.destroy();
  holder.destroy();
  await Promise.all([asker.closed, holder.closed]);
});

test('attack: a flood of TFTP requests from unserved clients writes a bounded number of log lines', async (t) => {
  const dir = tempDir(t);
  const r = parseConfig(`server: { stateDir: ${dir}/state }\nimages: { a: { path: /nonexistent.img } }\n`, '/x.yaml');
  assert.ok(r.ok);
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({ write: (c: Buffer, _e, cb) => (c.toString().split('\n').filter(Boolean).forEach((l) => lines.push(JSON.parse(l))), cb()) });
  const pool = new ImagePool();
  t.after(() => pool.close());
  const reg = new Registry(r.config, pool, new ClientTable(), createLogger({ level: 'debug', destination: sink }));
  for (let i = 0; i < 2000; i++) assert.equal(await reg.resolve({ address: `198.18.${i >> 8}.${i & 255}`, port: 1000 + i, path: `x${i}` }), null);
  const unserved = lines.filter((l) => l.msg === 'TFTP request from a client this config does not serve');
  // One line per client and 10 s, and at most 20 such lines per 10 s overall (spoofed sources are many).
  assert.ok(unserved.length >= 1 && unserved.length <= 21, `${unserved.length} lines for 2000 requests`);
});

test('check suggests pinning each unpinned Pi and host, with the address it was last seen at', async (t) => {
  const { mkdirSync } = await import('node:fs');
  const { checkConfig, formatReport } = await import('../../src/registry/check.js');
  const dir = tempDir(t);
  mkdirSync(join(dir, 'state'));
  writeFileSync(join(dir, 'state', 'clients.json'), JSON.stringify([{ ip: '198.18.0.41', serial: '4b5c6d7e', lastSeen: 1 }, { ip: 'junk', mac: '52:54:00:aa:bb:09' }]));
  const file = join(dir, 'netbootd.yaml');
  writeFileSync(file, `server: { address: 127.0.0.1, stateDir: ${dir}/state }
images: { a: { path: ${dir}/a.img } }
pis: { "4b5c6d7e": { image: a }, "5c6d7e8f": { image: a, address: 198.18.0.42 } }
hosts: { "52:54:00:aa:bb:09": { image: a } }
`);
  const report = await checkConfig(file);
  const hints = report.lines.filter((l) => l.level === 'hint');
  assert.deepEqual(hints.map((l) => l.subject), ['pi 4b5c6d7e', 'host 52:54:00:aa:bb:09']);
  assert.match(hints[0]!.message, /address: 198\.18\.0\.41/);
  assert.doesNotMatch(hints[1]!.message, /junk/);
  assert.match(formatReport(report), /^hint  pi 4b5c6d7e: not pinned/m);
  assert.doesNotMatch(formatReport(report, true), /hint/, '--quiet shows problems only');
});
