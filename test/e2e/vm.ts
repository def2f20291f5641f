/**
 * QEMU launcher for the end-to-end boots: a PC (TCG by default) network-booting from a tap device on the
 * test bridge, BIOS (SeaBIOS + iPXE ROM from ipxe-qemu, e1000) or UEFI (OVMF, virtio-net with its option
 * ROM disabled so EDK2's own PXE client runs). The serial console is followed line by line: the
 * initramfs prints `E2E: ...` markers (scripts/e2e/init.sh; `netboot: ...` when built with --boot for a
 * real system), which give the boot's phases and outcome.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import { run } from '../helpers/tools.js';
import type { NetLab, NetHost } from '../helpers/netns.js';
import { OVMF } from './artifacts.js';

export type Firmware = 'bios' | 'uefi';

export interface VmOptions {
  lab: NetLab;
  /** Tap device name in the switch namespace (made by `addTap`). */
  tap: string;
  firmware: Firmware;
  mac: string;
  /** Whole-boot limit: the VM is killed (by pid) and the boot reported failed after it. */
  timeoutMs: number;
  memMb?: number;
  /** Serial console copy (for failure reports). */
  serialLog?: string;
  /** `tcg` (default, what CI has) or `kvm` (E2E_ACCEL=kvm, local speed-ups). */
  accel?: string;
  /**
   * For a system that stays up (it does not power off): the boot is done when a console line (or the
   * unfinished last line, e.g. a `login: ` prompt) matches; the VM is then stopped. A FAIL marker stops it
   * at once too.
   */
  until?: RegExp;
  /**
   * UEFI only: switch OVMF's PXE boot options off (fw_cfg opt/org.tianocore/IPv4PXESupport and
   * IPv6PXESupport = no), so that its first network boot option is UEFI HTTP boot over IPv4 (HttpBootDxe).
   * By default OVMF tries PXEv4, PXEv6, then HTTPv4, about a minute each when nothing answers.
   */
  uefiHttp?: boolean;
}

export interface BootPhases {
  /** First byte on the serial console (firmware alive). */
  firstOutput?: number;
  /**
   * The boot loader's banner (PXELINUX / SYSLINUX, or iPXE on UEFI, where OVMF copies the EFI console to the
   * serial port): DHCP done, first file loaded and running. QEMU's BIOS iPXE ROM prints nothing on serial.
   */
  loader?: number;
  /** "Linux version": the kernel and initrd arrived over TFTP and the kernel started. */
  kernel?: number;
  /** `E2E: INIT`: the initramfs runs. */
  init?: number;
  /** `E2E: NBD attached`. */
  nbd?: number;
  /** `E2E: DONE`. */
  done?: number;
}

export interface BootReport {
  ok: boolean;
  /** From qemu start to qemu exit (or to the timeout). */
  wallMs: number;
  /** Milliseconds from qemu start. */
  phases: BootPhases;
  /** Every `E2E: ...` marker line, in order. */
  markers: string[];
  /** Why it failed (FAIL marker, timeout, qemu exit status). */
  error?: string;
  /** Last lines of the console (for failure messages). */
  tail: string;
}

/** Adds a tap device plugged into the lab's bridge; QEMU opens it by name (script=no). */
export async function addTap(lab: NetLab, name: string): Promise<string> {
  if (name.length > 15) throw new Error(`tap name ${name} longer than 15 characters`);
  await run('ip', ['-n', lab.switchNs, 'tuntap', 'add', name, 'mode', 'tap']);
  await run('ip', ['-n', lab.switchNs, 'link', 'set', name, 'master', 'br0', 'up']);
  return name;
}

/** The switch namespace as a NetHost, so `lab.start` can run QEMU there (next to the taps). */
export function switchHost(lab: NetLab): NetHost {
  return { name: 'sw', ns: lab.switchNs, ifname: 'br0', mac: '' };
}

export function qemuArgs(o: VmOptions): string[] {
  const args = [
    '-accel', o.accel ?? process.env.E2E_ACCEL ?? 'tcg',
    '-m', String(o.memMb ?? 512),
    '-display', 'none', '-vga', 'none', '-monitor', 'none', '-serial', 'stdio',
    '-no-reboot', '-boot', 'n',
    '-netdev', `tap,id=n0,ifname=${o.tap},script=no,downscript=no`,
  ];
  if (o.firmware === 'bios') {
    args.push('-device', `e1000,netdev=n0,mac=${o.mac}`);
  } else {
    args.push('-bios', OVMF, '-device', `virtio-net-pci,netdev=n0,mac=${o.mac},romfile=`);
    if (o.uefiHttp) {
      args.push('-fw_cfg', 'name=opt/org.tianocore/IPv4PXESupport,string=no', '-fw_cfg', 'name=opt/org.tianocore/IPv6PXESupport,string=no');
    }
  }
  return args;
}

// Terminal escapes OVMF writes on the serial console.
// eslint-disable-next-line no-control-regex
const ESCAPES = /\x1b\[[0-9;=?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r/g;

/** Boots one VM to power-off (or failure, or timeout) and reports its phases. Never rejects. */
export function bootVm(o: VmOptions): Promise<BootReport> {
  const t0 = performance.now();
  const phases: BootPhases = {};
  const markers: string[] = [];
  const lines: string[] = [];
  let failure: string | undefined;
  let pending = '';
  let log: WriteStream | undefined;
  if (o.serialLog) log = createWriteStream(o.serialLog);
  const proc = o.lab.start(switchHost(o.lab), 'qemu-system-x86_64', qemuArgs(o), { stdio: ['ignore', 'pipe', 'pipe'] });
  const since = (): number => Math.round(performance.now() - t0);

  const onLine = (raw: string): void => {
    const line = raw.replace(ESCAPES, '');
    lines.push(line);
    if (lines.length > 60) lines.shift();
    // PXELINUX prints its banner on the serial port; syslinux.efi prints "My IP is" once it runs.
    if (phases.loader === undefined && /(PXE|SYS)LINUX \d|My IP is \d|iPXE initialising devices/.test(line)) phases.loader = since();
    if (phases.kernel === undefined && /Linux version \d/.test(line)) phases.kernel = since();
    // A crash in the firmware or the EFI stub (e.g. a kernel corrupted in transit) hangs the VM: stop it now.
    if (failure === undefined && /^!!!! X64 Exception/.test(line.trim())) {
      failure = `firmware: ${line.trim().slice(0, 160)}`;
      void proc.stop();
    }
    if (o.until && phases.done === undefined && o.until.test(line)) {
      phases.done = since();
      void proc.stop();
    }
    const m = /(?:E2E|netboot): (?:\[[\d.]+\] )?(.*)$/.exec(line);
    if (!m) return;
    const text = m[1]!.trim();
    markers.push(text);
    if (text.startsWith('INIT') && phases.init === undefined) phases.init = since();
    else if (text.startsWith('NBD attached')) phases.nbd = since();
    else if (text === 'DONE') phases.done = since();
    else if (text.startsWith('FAIL') && failure === undefined) {
      failure = text;
      if (o.until) void proc.stop();
    }
  };
  const onData = (chunk: Buffer): void => {
    if (phases.firstOutput === undefined) phases.firstOutput = since();
    log?.write(chunk);
    pending += chunk.toString('latin1');
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      onLine(pending.slice(0, nl));
      pending = pending.slice(nl + 1);
    }
    if (pending.length > 65536) pending = pending.slice(-4096);
    // A prompt (`login: `) is a line without its end yet.
    if (o.until && phases.done === undefined && pending && o.until.test(pending.replace(ESCAPES, ''))) {
      lines.push(pending.replace(ESCAPES, ''));
      phases.done = since();
      void proc.stop();
    }
  };
  proc.stdout?.on('data', onData);
  proc.stderr?.on('data', (c: Buffer) => {
    log?.write(c);
    lines.push(`[qemu] ${c.toString().trim()}`);
  });

  return new Promise((resolve) => {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      void proc.stop();
    }, o.timeoutMs);
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (pending) onLine(pending);
      log?.end();
      const wallMs = since();
      let error = failure;
      if (timedOut) error ??= `timed out after ${o.timeoutMs} ms (last marker: ${markers.at(-1) ?? 'none'})`;
      else if (o.until && phases.done !== undefined) { /* stopped by us once up */ }
      else if (code !== 0) error ??= `qemu exited ${code ?? signal}`;
      else if (phases.done === undefined) error ??= `powered off without E2E: DONE (last marker: ${markers.at(-1) ?? 'none'})`;
      resolve({ ok: error === undefined, wallMs, phases, markers, tail: lines.slice(-25).join('\n'), ...(error ? { error } : {}) });
    });
    proc.once('error', (e) => {
      failure ??= `qemu did not start: ${e.message}`;
    });
  });
}

/** One line for humans: total and phases in seconds. */
export function formatBoot(label: string, r: BootReport): string {
  const s = (ms?: number): string => (ms === undefined ? '-' : (ms / 1000).toFixed(1));
  return `${label}: ${r.ok ? 'booted' : 'FAILED'} in ${s(r.wallMs)} s ` +
    `(loader at ${s(r.phases.loader)} s, kernel ${s(r.phases.kernel)} s, initramfs ${s(r.phases.init)} s, NBD root ${s(r.phases.nbd)} s, done ${s(r.phases.done)} s)` +
    (r.error ? ` — ${r.error}` : '');
}
