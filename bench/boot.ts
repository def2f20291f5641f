/**
 * Boot benchmark (issues 7, 15): wall time of a real-firmware network boot, netbootd by TFTP and by HTTP vs
 * the reference stack, side by side in one run.
 *
 *   npm run bench:boot [-- --runs N --firmware bios,uefi --stacks reference,netbootd,http,servers --no-ra]
 *   (root: network namespaces and taps; tsc-built, runs dist/bench/boot.js)
 *
 * The same QEMU PC (TCG; E2E_ACCEL=kvm to change) boots the same Debian kernel, initramfs and NBD root as
 * test/e2e/boot.test.ts, BIOS (SeaBIOS + QEMU's iPXE ROM, e1000) and UEFI (OVMF, virtio-net), on the same
 * namespaced network (router dnsmasq for addresses, IPv6 router advertisements unless --no-ra), through:
 *   reference — dnsmasq proxy DHCP + its TFTP server on a directory holding the image's FAT files, nbd-server;
 *               pxelinux.0 / syslinux.efi, then kernel + initrd by TFTP
 *   netbootd  — `node dist/src/cli/main.js serve` alone, TFTP: the same boot loaders, TFTP out of the FAT
 *   http      — the same daemon with `http.enabled` (issue 15): BIOS iPXE gets http://…/boot.ipxe (written
 *               from the image's pxelinux.cfg/default), UEFI boots by OVMF's own HTTP boot (PXE off) ->
 *               ipxe.efi -> the same script; kernel + initrd over HTTP
 *   servers   — interim (only until src/daemon.ts exists): netbootd's servers composed by test/e2e/servers-stack.ts
 * All run the same kernel command line, so the client does the same work on its NBD root.
 * Runs are interleaved (run 1: reference, netbootd, http; run 2: ...) so that load from elsewhere hits all
 * alike. Every boot gets a fresh copy of the image and a freshly started stack. Reported per firmware and
 * stack: median (min–max) of the whole boot, and of its phases from the serial console: until the boot loader
 * runs (PXELINUX/SYSLINUX banner, iPXE on UEFI; QEMU's BIOS iPXE ROM prints nothing there), until the kernel
 * starts (firmware, DHCP, loader, kernel + initrd transfer), and kernel start until the client is done on its
 * NBD root. Ratios are against the reference stack. Results also go to bench/out/boot.json.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildArtifacts, copyImage, daemonAvailable, DAEMON_MISSING, E2E_ROOT } from '../test/e2e/artifacts.js';
import { readExt4File } from '../test/e2e/image.js';
import { createTopology, startStack, EXPORT_NAME, SERVER_ADDRESS, type StackName } from '../test/e2e/stacks.js';
import { addTap, bootVm, formatBoot, type BootReport, type Firmware } from '../test/e2e/vm.js';
import { NetLab } from '../test/helpers/netns.js';
import { median } from './lib.js';

/** A bench column: a boot stack, and for netbootd whether it serves by HTTP (`http`). */
type Variant = StackName | 'http';
const VARIANTS: Variant[] = ['reference', 'netbootd', 'http', 'servers'];

interface Args {
  runs: number;
  firmware: Firmware[];
  stacks: Variant[];
  timeoutMs: number;
  ipv6Ra: boolean;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { runs: 3, firmware: ['bios', 'uefi'], stacks: ['reference', 'netbootd', 'http'], timeoutMs: 300_000, ipv6Ra: true };
  let stacksGiven = false;
  const usage = '--runs N --firmware bios,uefi --stacks reference,netbootd,http,servers --timeout S --no-ra';
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1];
    switch (argv[i]) {
      case '--runs': a.runs = Math.max(1, Number(v)); i++; break;
      case '--firmware': a.firmware = v!.split(',') as Firmware[]; i++; break;
      case '--stacks': a.stacks = v!.split(',') as Variant[]; stacksGiven = true; i++; break;
      case '--timeout': a.timeoutMs = Number(v) * 1000; i++; break;
      case '--no-ra': a.ipv6Ra = false; break;
      default: throw new Error(`unknown argument ${argv[i]} (${usage})`);
    }
  }
  const bad = a.stacks.filter((s) => !VARIANTS.includes(s));
  if (bad.length) throw new Error(`unknown stack ${bad.join(', ')} (${usage})`);
  // Until the daemon exists, compare with netbootd's servers composed by test/e2e/servers-stack.ts.
  if (!stacksGiven && !daemonAvailable()) a.stacks = ['reference', 'servers'];
  return a;
}

interface Sample {
  stack: Variant;
  firmware: Firmware;
  run: number;
  report: BootReport;
  verified: boolean;
}

const sec = (ms: number | undefined): string => (ms === undefined || Number.isNaN(ms) ? '   -  ' : (ms / 1000).toFixed(1).padStart(6));


function stat(xs: (number | undefined)[]): { med: number; min: number; max: number } {
  const v = xs.filter((x): x is number => x !== undefined);
  return { med: median(v), min: v.length ? Math.min(...v) : NaN, max: v.length ? Math.max(...v) : NaN };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (!NetLab.available()) throw new Error('bench:boot needs root (network namespaces, taps) and iproute2');
  let stacks = args.stacks;
  if (!daemonAvailable()) {
    console.log(`note: ${DAEMON_MISSING}; netbootd is represented by its three servers composed without the daemon ('servers': TFTP from a directory copy of the FAT)`);
    stacks = stacks.filter((s) => s !== 'netbootd' && s !== 'http');
  }
  const work = mkdtempSync(join(tmpdir(), 'netbootd-bench-boot-'));
  const topo = await createTopology('bboot', work, { ipv6Ra: args.ipv6Ra });
  const samples: Sample[] = [];
  try {
    console.log('building kernel/initramfs/image (scripts/e2e) ...');
    const art = await buildArtifacts(join(work, 'build'), { serverAddress: SERVER_ADDRESS, exportName: EXPORT_NAME });
    let n = 0;
    for (let run = 1; run <= args.runs; run++) {
      for (const firmware of args.firmware) {
        for (const stackName of stacks) {
          const dir = join(work, `b${n}`);
          mkdirSync(dir, { recursive: true });
          const image = await copyImage(art, join(dir, 'disk.img'));
          const mac = `52:54:00:be:${firmware === 'bios' ? '0b' : '0e'}:${(n % 256).toString(16).padStart(2, '0')}`;
          const http = stackName === 'http';
          const stack = await startStack(http ? 'netbootd' : stackName, { topo, image, hosts: [{ mac, firmware }], workDir: dir, daemon: 'dist', ...(http ? { http: {} } : {}) });
          let report: BootReport;
          try {
            const tap = await addTap(topo.lab, `tap${n}`);
            report = await bootVm({ lab: topo.lab, tap, firmware, mac, uefiHttp: http, timeoutMs: args.timeoutMs, serialLog: join(dir, 'console.log') });
          } finally {
            await stack.stop();
          }
          const result = report.ok ? await readExt4File(image, 2, '/boot-result', dir) : null;
          const verified = result !== null && result.includes(`mac: ${mac}`) && result.includes(`marker: ${art.marker}`);
          samples.push({ stack: stackName, firmware, run, report, verified });
          console.log(`  run ${run} ${formatBoot(`${firmware.toUpperCase()} ${stackName}`, report)}${report.ok && !verified ? ' (boot-result NOT verified)' : ''}`);
          if (!report.ok) console.log(report.tail.split('\n').map((l) => `      | ${l}`).join('\n'));
          rmSync(dir, { recursive: true, force: true });
          n++;
        }
      }
    }
  } finally {
    await topo.destroy();
    rmSync(work, { recursive: true, force: true });
  }

  const titles: Record<Variant, string> = {
    reference: 'reference (dnsmasq proxy + TFTP, nbd-server)',
    netbootd: 'netbootd, TFTP (pxelinux.0 / syslinux.efi)',
    http: `netbootd, HTTP (BIOS: iPXE ROM -> boot.ipxe; UEFI: OVMF HTTP boot -> ipxe.efi -> boot.ipxe)`,
    servers: 'interim: netbootd\'s servers without the daemon',
  };
  console.log(`\nBoot wall time, seconds: median (min-max) of ${args.runs} run(s); accel ${process.env.E2E_ACCEL ?? 'tcg'}, ${(await import('node:os')).cpus().length} CPUs, ` +
    `IPv6 router advertisements ${args.ipv6Ra ? 'on' : 'off (--no-ra: iPXE waits ~15 s for IPv6 autoconfiguration)'}`);
  for (const s of stacks) console.log(`  ${s.padEnd(10)} ${titles[s]}`);
  console.log('firmware  stack       ok   whole boot               to loader   to kernel  kernel->done');
  const rows: Record<string, unknown>[] = [];
  for (const firmware of args.firmware) {
    const med: Partial<Record<Variant, { whole: number; kernel: number; rest: number }>> = {};
    for (const stackName of stacks) {
      const ss = samples.filter((s) => s.firmware === firmware && s.stack === stackName && s.report.ok && s.verified);
      const all = samples.filter((s) => s.firmware === firmware && s.stack === stackName);
      const whole = stat(ss.map((s) => s.report.wallMs));
      const loader = stat(ss.map((s) => s.report.phases.loader));
      const kernel = stat(ss.map((s) => s.report.phases.kernel));
      const rest = stat(ss.map((s) => (s.report.phases.done !== undefined && s.report.phases.kernel !== undefined ? s.report.phases.done - s.report.phases.kernel : undefined)));
      med[stackName] = { whole: whole.med, kernel: kernel.med, rest: rest.med };
      console.log(`${firmware.padEnd(9)} ${stackName.padEnd(10)} ${`${ss.length}/${all.length}`.padEnd(4)} ${sec(whole.med)} (${sec(whole.min).trim()}-${sec(whole.max).trim()})`.padEnd(58) +
        `${sec(loader.med)}      ${sec(kernel.med)}      ${sec(rest.med)}`);
      rows.push({ firmware, stack: stackName, ok: ss.length, runs: all.length, wholeMs: whole, toLoaderMs: loader, toKernelMs: kernel, kernelToDoneMs: rest });
    }
    const r = med.reference;
    for (const other of ['netbootd', 'http', 'servers'] as const) {
      const nb = med[other];
      if (r && nb) {
        console.log(`${firmware.padEnd(9)} ratio ${other}/reference: whole boot ${(nb.whole / r.whole).toFixed(2)}, until the kernel starts ${(nb.kernel / r.kernel).toFixed(2)} (< 1: faster)`);
      }
    }
  }
  const outDir = join(E2E_ROOT, 'bench/out');
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'boot.json'), JSON.stringify({ date: new Date().toISOString(), args, rows, samples: samples.map((s) => ({ ...s, report: { ...s.report, tail: undefined } })) }, null, 2));
  console.log(`\n(details: ${join(outDir, 'boot.json')})`);
  if (samples.some((s) => !s.report.ok || !s.verified)) process.exitCode = 1;
}

main().catch((e: unknown) => {
  console.error(`bench:boot: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
  process.exitCode = 1;
});
