/**
 * Proxy DHCP benchmark: netbootd vs dnsmasq in proxy mode, same namespaces, same load.
 *
 *   npm run bench:dhcp        (root: it creates network namespaces; tsc-built, runs dist/bench/dhcp.js)
 *
 * Namespaces on one bridge: srv 198.18.0.2 (netbootd ProxyDhcpServer, StaticDhcpPolicy), dnsm 198.18.0.3
 * (dnsmasq --dhcp-range=198.18.0.0,proxy --pxe-service=x86PC,...), load 198.18.0.10 (this script in
 * --load mode). The load generator sends BIOS PXE DISCOVERs (a new MAC and xid each) to one server at a
 * time (unicast to its :67, so only the target works), at increasing rates for a fixed time per step, and
 * matches the broadcast replies it gets on :68 by xid. For each server: the highest rate with no loss,
 * and p50/p99 reply latency per step. Both servers log one line per reply to /dev/null. Total ≤ ~30 s.
 */
import { createSocket } from 'node:dgram';
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { buildRequest, PERSONAS } from '../test/dhcp/client.js';

interface LoadArgs {
  target: string;
  rate: number;
  durationMs: number;
  graceMs: number;
  seed: number;
}

interface LoadResult {
  rate: number;
  sent: number;
  received: number;
  loss: number;
  p50: number;
  p99: number;
  achieved: number;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** Load generator, run inside the load namespace. Prints one JSON LoadResult. */
async function load(args: LoadArgs): Promise<void> {
  const sock = createSocket({ type: 'udp4', reuseAddr: true });
  await new Promise<void>((r) => sock.bind(68, '0.0.0.0', () => r()));
  sock.setRecvBufferSize(8 << 20);
  const total = Math.ceil((args.rate * args.durationMs) / 1000);
  const base = (args.seed * 0x01000000) >>> 0;
  const sentAt = new Float64Array(total);
  const lat = new Float64Array(total);
  let received = 0;
  const seen = new Uint8Array(total);
  sock.on('message', (buf) => {
    const now = performance.now();
    if (buf.length < 240 || buf[0] !== 2) return;
    const i = (buf.readUInt32BE(4) - base) >>> 0;
    if (i >= total || seen[i]) return;
    seen[i] = 1;
    lat[received++] = now - sentAt[i]!;
  });
  const template = buildRequest(PERSONAS.bios, 0);
  let sent = 0;
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    const tick = (): void => {
      const due = Math.min(total, Math.floor(((performance.now() - t0) / 1000) * args.rate));
      while (sent < due) {
        const b = Buffer.from(template);
        b.writeUInt32BE((base + sent) >>> 0, 4);
        b.writeUInt32BE(sent, 30); // chaddr 02:42:xx:xx:xx:xx, a new client each time
        sentAt[sent] = performance.now();
        sock.send(b, 67, args.target);
        sent++;
      }
      if (sent >= total) resolve();
      else setTimeout(tick, 1); // bursts every ~1 ms; never spin (the machine has 2 cores to share)
    };
    tick();
  });
  const sendTime = performance.now() - t0;
  await new Promise((r) => setTimeout(r, args.graceMs));
  sock.close();
  const sorted = lat.slice(0, received).sort();
  const res: LoadResult = {
    rate: args.rate,
    sent,
    received,
    loss: sent - received,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    achieved: (sent / sendTime) * 1000,
  };
  process.stdout.write(JSON.stringify(res) + '\n');
}

async function main(): Promise<void> {
  const { NetLab } = await import('../test/helpers/netns.js');
  if (!NetLab.available()) {
    console.error('bench:dhcp needs root (network namespaces) and iproute2');
    process.exit(1);
  }
  const self = fileURLToPath(import.meta.url);
  const built = self.endsWith('.js');
  const nodeArgs = built ? [] : ['--import', 'tsx'];
  const serveScript = join(dirname(self), '..', 'test', 'dhcp', 'fixtures', built ? 'serve.js' : 'serve.ts');
  const tmp = mkdtempSync(join(tmpdir(), 'netbootd-bench-dhcp-'));
  const lab = await NetLab.create('bench');
  const cleanup = async (): Promise<void> => {
    await lab.destroy();
    rmSync(tmp, { recursive: true, force: true });
  };
  process.once('SIGINT', () => void cleanup().then(() => process.exit(130)));
  try {
    const srv = await lab.addHost('srv', { address: '198.18.0.2/24' });
    const dnsm = await lab.addHost('dnsm', { address: '198.18.0.3/24' });
    const loadHost = await lab.addHost('load', { address: '198.18.0.10/24' });

    const serve = lab.start(srv, process.execPath, [
      ...nodeArgs,
      serveScript,
      JSON.stringify({ serverAddress: '198.18.0.2', policy: { defaults: { bios: 'pxelinux.0' }, answerUnknown: true } }),
    ], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      let buf = '';
      const timer = setTimeout(() => reject(new Error('netbootd did not start')), 30_000);
      serve.stdout!.on('data', (d: Buffer) => {
        buf += d.toString();
        if (buf.includes('"listening"')) {
          clearTimeout(timer);
          serve.stdout!.removeAllListeners('data');
          serve.stdout!.resume(); // from now on its log lines go nowhere
          resolve();
        }
      });
    });
    lab.start(dnsm, 'dnsmasq', [
      '--no-daemon', '--port=0', '--dhcp-range=198.18.0.0,proxy', '--pxe-service=x86PC,"boot",pxelinux',
      '--interface=eth0', '--bind-interfaces', '--conf-file=/dev/null', '--log-facility=-',
      `--pid-file=${join(tmp, 'dnsmasq.pid')}`, `--dhcp-leasefile=${join(tmp, 'leases')}`,
    ], { stdio: ['ignore', 'ignore', 'ignore'] });
    await new Promise((r) => setTimeout(r, 500));

    const runLoad = (target: string, rate: number, durationMs: number, seed: number): Promise<LoadResult> =>
      new Promise((resolve, reject) => {
        const args: LoadArgs = { target, rate, durationMs, graceMs: 400, seed };
        const p = spawn('ip', ['netns', 'exec', loadHost.ns, process.execPath, ...nodeArgs, self, '--load', JSON.stringify(args)], {
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        let out = '';
        p.stdout.on('data', (d: Buffer) => (out += d.toString()));
        p.on('exit', (code) => {
          try {
            resolve(JSON.parse(out.trim().split('\n').pop()!) as LoadResult);
          } catch {
            reject(new Error(`load generator exited ${code}: ${out}`));
          }
        });
      });

    const rates = [1000, 2000, 4000, 8000, 16000, 32000];
    const stepMs = 1200;
    const results: Record<string, LoadResult[]> = { netbootd: [], dnsmasq: [] };
    const targets: [string, string][] = [['netbootd', '198.18.0.2'], ['dnsmasq', '198.18.0.3']];
    let seed = 1;
    for (const [name, addr] of targets) {
      await runLoad(addr, 500, 400, seed++); // warm-up (JIT, caches)
      for (const rate of rates) {
        const r = await runLoad(addr, rate, stepMs, seed++);
        results[name]!.push(r);
        if (r.loss > 0) break;
      }
    }

    const fmt = (x: number): string => (Number.isFinite(x) ? x.toFixed(3) : '-');
    console.log(`\nproxy DHCP: BIOS PXE DISCOVER -> OFFER, ${stepMs} ms per step, unicast to the server, replies broadcast`);
    console.log('server     rate/s  sent   recv   loss   p50 ms  p99 ms');
    for (const [name] of targets) {
      for (const r of results[name]!) {
        console.log(`${name.padEnd(9)} ${String(r.rate).padStart(6)} ${String(r.sent).padStart(6)} ${String(r.received).padStart(6)} ${String(r.loss).padStart(6)}  ${fmt(r.p50).padStart(6)}  ${fmt(r.p99).padStart(6)}`);
      }
    }
    const best = (name: string): LoadResult | undefined => results[name]!.filter((r) => r.loss === 0).pop();
    const nb = best('netbootd');
    const dm = best('dnsmasq');
    console.log('\nsustained rate with no loss, and latency at that rate:');
    for (const [name, b] of [['netbootd', nb], ['dnsmasq', dm]] as const) {
      console.log(`  ${name.padEnd(9)} ${b ? `${b.rate}/s  p50 ${fmt(b.p50)} ms  p99 ${fmt(b.p99)} ms` : 'loss at every rate tried'}`);
    }
    const cap = rates[rates.length - 1]!;
    if (nb && dm) {
      console.log(`  ratio netbootd/dnsmasq: rate ${(nb.rate / dm.rate).toFixed(2)}x` +
        ((nb.rate === cap || dm.rate === cap) ? ` (capped at ${cap}/s, the top step)` : ''));
      // Latency compared at the same rate (the highest both sustained).
      const common = Math.min(nb.rate, dm.rate);
      const a = results.netbootd!.find((r) => r.rate === common)!;
      const b = results.dnsmasq!.find((r) => r.rate === common)!;
      console.log(`  at ${common}/s: p50 ${(a.p50 / b.p50).toFixed(2)}x, p99 ${(a.p99 / b.p99).toFixed(2)}x (netbootd/dnsmasq; < 1 is faster)`);
    }
  } finally {
    await cleanup();
  }
}

const i = process.argv.indexOf('--load');
if (i >= 0) {
  load(JSON.parse(process.argv[i + 1]!) as LoadArgs).then(
    () => process.exit(0),
    (e: Error) => {
      console.error(e.message);
      process.exit(1);
    },
  );
} else {
  main().then(
    () => process.exit(0),
    (e: Error) => {
      console.error(e.stack ?? e.message);
      process.exit(1);
    },
  );
}
