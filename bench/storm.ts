/**
 * Boot storm: N clients power on at once, against netbootd and against the reference stack (dnsmasq proxy
 * DHCP + TFTP from a directory, nbd-server), one after the other in the same run, on the same image and
 * network (test/helpers/storm-lab.ts; the clients: test/helpers/storm-load.ts).
 *
 *   npm run bench:storm -- --clients 50 [--mix pi4=1,pi5=1,pxelinux=1,ipxe=1 (or pxe=1: a PXE ROM chained to iPXE)] [--loss 0.05] [--vanish 2]
 *                          [--reload-at 5000] [--stacks netbootd,reference] [--small] [--spread 1000]
 *                          [--timeout 1000] [--tries 8] [--profile DIR] [--json FILE]
 *
 * Root (network namespaces). Per stack: time until all N booted, p50/p95/p99 per-client boot time,
 * failures, retransmissions, server CPU seconds and peak RSS; then the ratios netbootd / reference.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir, availableParallelism, loadavg } from 'node:os';
import { execFileSync } from 'node:child_process';
import { NetLab } from '../test/helpers/netns.js';
import {
  buildStormImage, createLab, makeClients, runStorm, startNetbootd, startReference,
  type StackName, type StormFigures,
} from '../test/helpers/storm-lab.js';
import { KINDS, type Kind } from '../test/helpers/storm-load.js';

function arg(name: string, def?: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return def;
  const v = process.argv[i + 1];
  return v === undefined || v.startsWith('--') ? 'true' : v;
}

function parseMix(s: string): Partial<Record<Kind, number>> {
  const out: Partial<Record<Kind, number>> = {};
  for (const part of s.split(',')) {
    const [k, w] = part.split('=');
    if (!KINDS.includes(k as Kind)) throw new Error(`--mix: unknown kind ${k} (${KINDS.join(', ')})`);
    out[k as Kind] = Number(w ?? 1);
  }
  return out;
}

const f1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : '-');
const f2 = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : '-');

async function main(): Promise<void> {
  if (!NetLab.available()) throw new Error('bench:storm needs root (network namespaces) and iproute2');
  const n = Number(arg('clients', '10'));
  const mix = parseMix(arg('mix', 'pi4=1,pi5=1,pxelinux=1,ipxe=1')!);
  const loss = Number(arg('loss', '0'));
  const vanish = Number(arg('vanish', '0'));
  const reloadAt = arg('reload-at');
  const stacks = arg('stacks', 'netbootd,reference')!.split(',') as StackName[];
  const small = arg('small') === 'true';
  const profile = arg('profile');
  const jsonOut = arg('json');
  const daemon = import.meta.url.endsWith('.js') ? 'dist' : 'tsx';
  const qemu = (() => {
    try {
      return execFileSync('pgrep', ['-f', 'qemu-system'], { encoding: 'utf8' }).trim().split('\n').filter(Boolean).length;
    } catch {
      return 0;
    }
  })();
  const work = mkdtempSync(join(tmpdir(), 'netbootd-storm-'));
  console.log(`# boot storm: ${n} clients, mix ${JSON.stringify(mix)}, loss ${loss}, vanish ${vanish}${reloadAt ? `, reload at ${reloadAt} ms` : ''}, ${small ? 'small' : 'full'} boot files`);
  console.log(`# ${availableParallelism()} cores, load average ${loadavg().map((x) => x.toFixed(1)).join(' ')}, ${qemu} QEMU process(es) running${qemu ? ' (figures taken under load)' : ''}`);
  const img = await buildStormImage(join(work, 'image'), !small);
  console.log(`# boot bytes per client: ${Object.entries(img.bootBytes).map(([k, v]) => `${k} ${(v / 1e6).toFixed(1)} MB`).join(', ')}`);
  const clients = makeClients(n, mix, vanish);
  const l = await createLab(work, clients);
  const figures: StormFigures[] = [];
  try {
    for (const name of stacks) {
      const stack = name === 'netbootd'
        ? await startNetbootd(l, img, clients, work, { daemon, ...(profile ? { cpuProf: profile } : {}) })
        : await startReference(l, img, clients, work);
      try {
        const fig = await runStorm(l, stack, img, work, {
          clients, loss, daemon,
          timeoutMs: Number(arg('timeout', '1000')), tries: Number(arg('tries', '8')), spreadMs: Number(arg('spread', '1000')),
          ...(reloadAt ? { reloadAtMs: Number(reloadAt) } : {}),
        });
        figures.push(fig);
        console.log(`${name}: ${fig.booted}/${n} booted in ${f1(fig.allBootedS)} s` +
          (fig.failed ? `, ${fig.failed} FAILED (${fig.errors.slice(0, 3).join('; ')})` : '') + (fig.vanished ? `, ${fig.vanished} vanished on purpose` : '') + (fig.lossBy !== 'none' ? `, ${fig.lost} packets dropped (${fig.lossBy === 'kernel' ? 'nftables in the load namespace, UDP and TCP' : 'by the clients, UDP only: no nft'})` : '') + ` (at most ${fig.tftpOpenMax} TFTP transfers open at once; ${fig.serverDrops} UDP datagrams dropped by the server's full buffers; load process ${f1(fig.loadCpuS)} CPU s)`);
      } finally {
        await stack.stop();
      }
    }
  } finally {
    await l.destroy();
  }
  console.log('');
  console.log('stack       booted  all-booted s   p50 s   p95 s   p99 s  failed  udp-retrans  dupes  tcp-retrans  lost   CPU s  CPU-s/boot  peak RSS MB  MB/boot');
  for (const f of figures) {
    console.log(`${f.stack.padEnd(10)} ${`${f.booted}/${f.n}`.padStart(7)} ${f1(f.allBootedS).padStart(12)} ${f2(f.p50).padStart(7)} ${f2(f.p95).padStart(7)} ${f2(f.p99).padStart(7)} ${String(f.failed).padStart(7)} ${String(f.retrans).padStart(12)} ${String(f.dupes).padStart(6)} ${String(f.tcpRetrans).padStart(12)} ${String(f.lost).padStart(5)} ${f1(f.cpuS).padStart(7)} ${f2(f.booted ? f.cpuS / f.booted : NaN).padStart(11)} ${f1(f.peakRssMB).padStart(12)} ${(f.bytesPerBoot / 1e6).toFixed(1).padStart(8)}`);
  }
  const nb = figures.find((f) => f.stack === 'netbootd');
  const ref = figures.find((f) => f.stack === 'reference');
  if (nb && ref) {
    console.log(`\nratio netbootd/reference: all-booted ${f2(nb.allBootedS / ref.allBootedS)}x, p50 ${f2(nb.p50 / ref.p50)}x, p95 ${f2(nb.p95 / ref.p95)}x, p99 ${f2(nb.p99 / ref.p99)}x, ` +
      `CPU-s per boot ${f2((nb.cpuS / nb.booted) / (ref.cpuS / ref.booted))}x, peak RSS ${f2(nb.peakRssMB / ref.peakRssMB)}x (< 1: netbootd better)`);
  }
  console.log(`# load average ${loadavg().map((x) => x.toFixed(1)).join(' ')} at end`);
  if (jsonOut) writeFileSync(jsonOut, JSON.stringify(figures, null, 1));
  if (!process.env.STORM_KEEP) rmSync(work, { recursive: true, force: true });
  else console.log(`# work folder kept: ${work}`);
}

main().then(() => process.exit(0), (e: unknown) => {
  console.error((e as Error).stack ?? e);
  process.exit(1);
});
