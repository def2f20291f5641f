/**
 * netbootd's proxy DHCP next to a real DHCP server, with real clients, in network namespaces:
 *
 *   [rtr 198.18.0.1: dnsmasq, authoritative, hands out 198.18.0.100-200]
 *   [srv 198.18.0.2: netbootd ProxyDhcpServer]            all on one bridge (namespace "sw")
 *   [c*: busybox udhcpc posing as BIOS / UEFI / Pi 4 / a plain client, plus a raw probe on :68]
 *
 * Each client must take its address from the router and its boot information from netbootd. The probe
 * sees both offers (udhcpc -B asks for broadcast replies so dnsmasq's offer is visible too).
 *
 * About udhcpc and proxy offers: udhcpc is not a PXE client. It takes the first DHCPOFFER it sees whatever
 * its yiaddr (busybox networking/udhcp/dhcpc.c, INIT_SELECTING), so it would also take dnsmasq's own proxy
 * offers. PXE firmware does not: it recognises an offer with yiaddr 0.0.0.0 and `PXEClient` as a proxy offer
 * and merges it with the address offer (EDK2 PxeBcDhcp4.c "The offer with zero yiaddr is a proxy offer"). So
 * netbootd runs here with a 300 ms reply delay (dnsmasq's dhcp-reply-delay) to let the router's offer reach
 * udhcpc first; this models the PXE client's choice, it is not a property of our reply.
 *
 * The server namespace has no default route on purpose: replies to 255.255.255.255 must still leave
 * (netbootd sends them from a socket bound to its own address; see src/dhcp/server.ts).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, chmodSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { NetLab, type NetHost } from '../helpers/netns.js';
import { IN_CI, REPO_ROOT, haveTools, tempDir } from '../helpers/tools.js';
import { PERSONAS } from '../dhcp/client.js';

const PI_43 = Buffer.concat([Buffer.from('0601030a04005058450914000011', 'hex'), Buffer.from('Raspberry Pi Boot'), Buffer.from([0xff])]).toString('hex');
const ip2hex = (ip: string): string => Buffer.from(ip.split('.').map(Number)).toString('hex');

interface Reply {
  event: string;
  from: string;
  port: number;
  type: number;
  xid: number;
  mac: string;
  yiaddr: string;
  siaddr: string;
  ciaddr: string;
  file: string;
  options: Record<string, string>;
}

/** Collects JSON lines from a child's stdout. */
function jsonLines(p: ChildProcess): { lines: Record<string, unknown>[]; waitFor(pred: (l: Record<string, unknown>) => boolean, ms: number): Promise<Record<string, unknown>> } {
  const lines: Record<string, unknown>[] = [];
  const waiters: { pred: (l: Record<string, unknown>) => boolean; res: (l: Record<string, unknown>) => void }[] = [];
  let buf = '';
  p.stdout!.setEncoding('utf8');
  p.stdout!.on('data', (d: string) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      let o: Record<string, unknown>;
      try {
        o = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      lines.push(o);
      for (const w of waiters.slice()) if (w.pred(o)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.res(o);
      }
    }
  });
  return {
    lines,
    waitFor(pred, ms) {
      const found = lines.find(pred);
      if (found) return Promise.resolve(found);
      return new Promise((res, rej) => {
        const timer = setTimeout(() => rej(new Error(`timed out after ${ms} ms waiting for a line`)), ms);
        waiters.push({ pred, res: (l) => { clearTimeout(timer); res(l); } });
      });
    },
  };
}

const NODE_TSX = (script: string): [string, string[]] => [process.execPath, ['--import', 'tsx', join(REPO_ROOT, script)]];

test('proxy DHCP in network namespaces: dnsmasq leases, netbootd boots', { timeout: 120_000 }, async (t: TestContext) => {
  if (!haveTools(t, 'ip', 'dnsmasq', 'busybox')) return;
  if (!NetLab.available()) {
    if (IN_CI) throw new Error('CI must run this as root: it creates network namespaces');
    t.skip('needs root to create network namespaces');
    return;
  }
  const dir = tempDir(t, 'netbootd-dhcp-ns-');
  const lab = await NetLab.create('dhcp');
  t.after(() => lab.destroy());

  const rtr = await lab.addHost('rtr', { address: '198.18.0.1/24' });
  const srv = await lab.addHost('srv', { address: '198.18.0.2/24' });

  const dnsmasq = lab.start(rtr, 'dnsmasq', [
    '--no-daemon', '--port=0', '--dhcp-range=198.18.0.100,198.18.0.200,1h', '--interface=eth0', '--bind-interfaces',
    '--dhcp-authoritative', '--log-dhcp', `--dhcp-leasefile=${join(dir, 'leases')}`, `--pid-file=${join(dir, 'dnsmasq.pid')}`,
    '--conf-file=/dev/null', '--no-ping',
  ]);
  let dnsmasqLog = '';
  dnsmasq.stderr!.on('data', (d: Buffer) => (dnsmasqLog += d.toString()));

  const [node, pre] = NODE_TSX('test/dhcp/fixtures/serve.ts');
  const serveCfg = {
    replyDelayMs: 300,
    interfaceName: 'eth0', // the address is detected from the namespace's only interface
    policy: { defaults: { bios: 'pxelinux.0', uefi64: 'grubx64.efi' }, answerPis: true, answerUnknown: true },
  };
  const serve = lab.start(srv, node, [...pre, JSON.stringify(serveCfg)], { cwd: REPO_ROOT });
  let serveErr = '';
  serve.stderr!.on('data', (d: Buffer) => (serveErr += d.toString()));
  const serveLog = jsonLines(serve);
  const listening = await serveLog.waitFor((l) => l.event === 'listening', 30_000).catch((e: Error) => {
    throw new Error(`${e.message}; serve stderr: ${serveErr}`);
  });
  assert.equal(listening.serverAddress, '198.18.0.2', 'server address detected from eth0');

  let n = 0;
  /** Runs udhcpc as `persona` in a fresh client namespace, with the probe listening alongside. */
  async function boot(name: string, mac: string, udhcpcArgs: string[]) {
    const host: NetHost = await lab.addHost(name, { mac });
    const envFile = join(dir, `${name}.env`);
    const script = join(dir, `${name}.sh`);
    writeFileSync(
      script,
      `#!/bin/sh\nif [ "$1" = bound ]; then\n  env | grep -E '^(ip|mask|serverid|siaddr|boot_file|opt[0-9]+)=' | sort > ${envFile}\n  ip addr add "$ip/$mask" dev "$interface"\nfi\nexit 0\n`,
    );
    chmodSync(script, 0o755);
    const [pnode, ppre] = NODE_TSX('test/dhcp/fixtures/probe.ts');
    const probe = lab.start(host, pnode, [...ppre, JSON.stringify({ mode: 'listen', ms: 30_000 })], { cwd: REPO_ROOT });
    const probeOut = jsonLines(probe);
    await probeOut.waitFor((l) => l.event === 'ready', 30_000);
    const udhcpc = await lab.exec(host, 'busybox', ['udhcpc', '-i', 'eth0', '-f', '-q', '-n', '-t', '4', '-T', '1', '-B', '-s', script, ...udhcpcArgs], {
      allowFail: true,
      timeoutMs: 30_000,
    });
    await new Promise((r) => setTimeout(r, 800)); // let delayed proxy replies land
    await probe.stop();
    const env: Record<string, string> = {};
    if (existsSync(envFile)) {
      for (const l of readFileSync(envFile, 'utf8').split('\n')) {
        const i = l.indexOf('=');
        if (i > 0) env[l.slice(0, i)] = l.slice(i + 1);
      }
    }
    const replies = (probeOut.lines.filter((l) => l.event === 'reply') as unknown as Reply[]).filter((r) => r.mac === host.mac);
    n++;
    return { host, env, replies, udhcpc: udhcpc.stderr, router: replies.filter((r) => r.from === '198.18.0.1'), proxy: replies.filter((r) => r.from === '198.18.0.2') };
  }

  function assertLeaseFromRouter(r: Awaited<ReturnType<typeof boot>>): void {
    assert.match(r.env.ip ?? '', /^198\.18\.0\.(1\d\d|200)$/, `udhcpc got a lease from the router; udhcpc said: ${r.udhcpc}`);
    assert.equal(r.env.serverid, '198.18.0.1');
    const offer = r.router.find((x) => x.type === 2);
    assert.ok(offer, 'the router offer was seen');
    assert.equal(offer.yiaddr, r.env.ip);
  }

  function assertProxyOffer(r: Awaited<ReturnType<typeof boot>>): Reply {
    const offers = r.proxy.filter((x) => x.type === 2);
    assert.ok(offers.length >= 1, 'netbootd sent a proxy offer');
    const o = offers[0]!;
    assert.equal(o.port, 67);
    assert.equal(o.yiaddr, '0.0.0.0', 'never a lease');
    assert.equal(o.siaddr, '198.18.0.2');
    assert.equal(o.options['54'], ip2hex('198.18.0.2'));
    assert.equal(Buffer.from(o.options['60']!, 'hex').toString(), 'PXEClient');
    assert.equal(o.options['51'], undefined, 'no lease time');
    assert.ok(!r.proxy.some((x) => x.type === 5), 'no ACK on 67');
    return o;
  }

  await t.test('BIOS PXE client: address from the router, pxelinux.0 with discovery control 8 from netbootd', async () => {
    const r = await boot('cbios', PERSONAS.bios.mac, ['-V', PERSONAS.bios.vendorClass, '-x', '0x5d:0000']);
    assertLeaseFromRouter(r);
    const o = assertProxyOffer(r);
    assert.equal(o.file, 'pxelinux.0');
    assert.equal(o.options['43'], '060108ff');
    assert.equal(o.options['93'], undefined);
  });

  await t.test('UEFI x64 client: proxy offer without option 43, then DHCPACK on 4011 with the boot file', async () => {
    const r = await boot('cuefi', PERSONAS.uefi.mac, ['-V', PERSONAS.uefi.vendorClass, '-x', '0x5d:0007']);
    assertLeaseFromRouter(r);
    const o = assertProxyOffer(r);
    assert.equal(o.options['43'], undefined, 'no option 43 for UEFI on 67');
    assert.equal(o.file, 'grubx64.efi');
    // The firmware's next step: DHCPREQUEST to the boot server on 4011, from its new address.
    const [pnode, ppre] = NODE_TSX('test/dhcp/fixtures/probe.ts');
    const req = lab.start(r.host, pnode, [...ppre, JSON.stringify({
      mode: 'request', ms: 5000, server: '198.18.0.2', ciaddr: r.env.ip, xid: 0x0ef10001,
      persona: { mac: PERSONAS.uefi.mac, vendorClass: PERSONAS.uefi.vendorClass, arch: 7, uuidHex: PERSONAS.uefi.uuid.toString('hex') },
    })], { cwd: REPO_ROOT });
    const out = jsonLines(req);
    const ack = (await out.waitFor((l) => l.event === 'reply', 10_000)) as unknown as Reply;
    await req.stop();
    assert.equal(ack.type, 5, 'DHCPACK');
    assert.equal(ack.from, '198.18.0.2');
    assert.equal(ack.port, 4011);
    assert.equal(ack.xid, 0x0ef10001);
    assert.equal(ack.file, 'grubx64.efi');
    assert.equal(ack.ciaddr, r.env.ip);
    assert.equal(ack.yiaddr, '0.0.0.0');
    assert.equal(ack.options['43'], undefined);
    assert.equal(ack.options['97'], PERSONAS.uefi.uuid.toString('hex'), 'option 97 echoed');
  });

  await t.test('Raspberry Pi 4: option 43 "Raspberry Pi Boot" and option 66 from netbootd', async () => {
    const uuid = PERSONAS.pi4.uuid.toString('hex');
    const r = await boot('cpi4', PERSONAS.pi4.mac, ['-V', PERSONAS.pi4.vendorClass, '-x', '0x5d:0000', '-x', `0x61:${uuid}`]);
    assertLeaseFromRouter(r);
    const o = assertProxyOffer(r);
    assert.equal(o.options['43'], PI_43);
    assert.equal(Buffer.from(o.options['66']!, 'hex').toString(), '198.18.0.2');
    assert.equal(o.options['97'], uuid, 'option 97 (RPi4 FourCC) echoed');
    assert.equal(o.file, '');
  });

  await t.test('a client that is not PXE gets nothing from netbootd', async () => {
    const r = await boot('cplain', PERSONAS.plain.mac, []);
    assertLeaseFromRouter(r);
    await new Promise((res) => setTimeout(res, 1000));
    assert.deepEqual(r.proxy, [], 'no reply from 198.18.0.2');
  });

  // netbootd logged one line per offer/ack with mac, firmware and boot file.
  await new Promise((res) => setTimeout(res, 300));
  const offers = serveLog.lines.filter((l) => l.event === 'offer');
  const acks = serveLog.lines.filter((l) => l.event === 'ack');
  const byMac = (m: string) => offers.filter((l) => l.mac === m);
  assert.ok(byMac(PERSONAS.bios.mac).some((l) => l.firmware === 'bios' && l.bootFile === 'pxelinux.0'));
  assert.ok(byMac(PERSONAS.uefi.mac).some((l) => l.firmware === 'uefi64' && l.bootFile === 'grubx64.efi'));
  assert.ok(byMac(PERSONAS.pi4.mac).some((l) => l.pi === true));
  assert.equal(byMac(PERSONAS.plain.mac).length, 0);
  assert.ok(acks.some((l) => l.mac === PERSONAS.uefi.mac && l.ip !== undefined));
  assert.equal(n, 4);
  assert.match(dnsmasqLog, /DHCPACK\(eth0\)/);
});
