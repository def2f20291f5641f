/**
 * The network the e2e VMs boot on, and the two interchangeable boot-service stacks:
 *
 *   switch ns: bridge br0 + the VMs' taps (QEMU runs here)
 *   router ns: 198.18.0.1, dnsmasq as the only address-giving DHCP server (no boot options at all), and
 *              IPv6 router advertisements (fd00:198:18::/64, no DHCPv6) unless E2E_RA=0: iPXE (QEMU's BIOS ROM,
 *              ipxe.efi) configures IPv4 and IPv6 together and, on a network without a router advertisement,
 *              waits ~15 s for its router solicitations to time out before it loads anything
 *   server ns: 198.18.0.2, the boot services:
 *     'reference' — dnsmasq in proxy-DHCP mode with its TFTP server on a directory holding the files of the
 *                   image's FAT partition (extracted with mtools), plus nbd-server exporting the image file
 *     'netbootd'  — `netbootd serve --config FILE` alone (proxy DHCP, TFTP from the FAT inside the image, NBD)
 *
 * Everything lives in namespaces named with the pid (test/helpers/netns.ts), removed by `destroy()`;
 * processes are stopped by pid.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { NetLab, type NetHost } from '../helpers/netns.js';
import { E2E_ROOT, daemonAvailable, DAEMON_MISSING } from './artifacts.js';
import { extractFat } from './image.js';
import type { Firmware } from './vm.js';

export type StackName = 'reference' | 'netbootd' | 'servers';

export const ROUTER_ADDRESS = '198.18.0.1';
export const SERVER_ADDRESS = '198.18.0.2';
export const PREFIX = 24;
export const EXPORT_NAME = 'e2e';

/**
 * The stacks the e2e tests run: those named in E2E_STACKS (e.g. `E2E_STACKS=netbootd`), else the reference
 * stack and netbootd — and, while `netbootd serve` does not exist yet, the interim `servers` stack (netbootd's
 * three servers composed by test/e2e/servers-stack.ts) so that netbootd's code still meets real firmware.
 */
export function selectedStacks(): StackName[] {
  const all: StackName[] = ['reference', 'netbootd', 'servers'];
  const env = process.env.E2E_STACKS?.split(',').map((x) => x.trim()).filter(Boolean);
  if (env?.length) return all.filter((s) => env.includes(s));
  return daemonAvailable() ? ['reference', 'netbootd'] : ['reference', 'netbootd', 'servers'];
}

export const STACK_TITLES: Record<StackName, string> = {
  reference: 'reference stack (dnsmasq proxy DHCP + TFTP from a directory, nbd-server)',
  netbootd: 'netbootd serve (proxy DHCP, TFTP from the FAT inside the image, NBD)',
  servers: 'interim stack: netbootd\'s DHCP, TFTP and NBD servers composed without the daemon (TFTP from a directory)',
};

export interface Topology {
  lab: NetLab;
  router: NetHost;
  server: NetHost;
  routerLog: string;
  /** The router sends IPv6 router advertisements (see the top of this file). */
  ipv6Ra: boolean;
  destroy(): Promise<void>;
}

export const ROUTER_ADDRESS6 = 'fd00:198:18::1';

/** Whether topologies send IPv6 router advertisements: yes unless E2E_RA=0. */
export function ipv6RaDefault(): boolean {
  return process.env.E2E_RA !== '0';
}

/**
 * Bridge + router (dnsmasq handing out 198.18.0.100-199, nothing else; IPv6 router advertisements unless
 * `ipv6Ra` is false) + an empty server namespace.
 */
export async function createTopology(tag: string, workDir: string, opts: { ipv6Ra?: boolean } = {}): Promise<Topology> {
  const ipv6Ra = opts.ipv6Ra ?? ipv6RaDefault();
  const lab = await NetLab.create(tag);
  try {
    const router = await lab.addHost('router', { address: `${ROUTER_ADDRESS}/${PREFIX}` });
    const server = await lab.addHost('server', { address: `${SERVER_ADDRESS}/${PREFIX}` });
    const routerLog = join(workDir, 'router-dnsmasq.log');
    // Stateless: a prefix and no M/O flags, so iPXE's IPv6 configuration completes at the first advertisement.
    if (ipv6Ra) await lab.exec(router, 'ip', ['addr', 'add', `${ROUTER_ADDRESS6}/64`, 'dev', 'eth0', 'nodad']);
    const p = lab.start(router, 'dnsmasq', [
      '--keep-in-foreground', '--no-daemon', '--conf-file=/dev/null', '--port=0', '--user=root',
      '--interface=eth0', '--bind-interfaces', '--dhcp-authoritative', '--no-ping', '--log-dhcp',
      '--dhcp-range=198.18.0.100,198.18.0.199,255.255.255.0,1h',
      ...(ipv6Ra ? ['--enable-ra', '--dhcp-range=::,constructor:eth0,ra-only'] : []),
      `--dhcp-leasefile=${join(workDir, 'router.leases')}`,
    ]);
    pipeToFile(p, routerLog);
    await waitListening(lab, router, [['udp', 67]], 15_000);
    return { lab, router, server, routerLog, ipv6Ra, destroy: () => lab.destroy() };
  } catch (e) {
    await lab.destroy();
    throw e;
  }
}

export interface StackHost {
  mac: string;
  firmware: Firmware;
  /** HTTP boot (netbootd): the host's kernel / initrd / cmdline keys, for the iPXE script netbootd writes. */
  kernel?: string;
  initrd?: string[];
  cmdline?: string;
  /** netbootd `hosts.<mac>.http` (false keeps the host on TFTP when HTTP is on). */
  http?: boolean;
}

/** netbootd's HTTP boot listener (issue 15), in the server namespace. */
export interface StackHttp {
  port?: number;
  /** `http.chainIpxe`: plain PXE ROMs get iPXE by TFTP first. */
  chainIpxe?: boolean;
  /** `http.ipxeUefi` (default Debian's /usr/lib/ipxe/ipxe.efi). */
  ipxeUefi?: string;
}

export const HTTP_PORT = 8080;
export const STATUS_PORT = 9810;

export interface StackOptions {
  topo: Topology;
  /** Disk image served (for `cow`, the shared base). */
  image: string;
  exportName?: string;
  /** netbootd image mode (the reference stack always exports the file read-write). */
  mode?: 'readwrite' | 'cow';
  hosts: StackHost[];
  workDir: string;
  /** How to run netbootd: TypeScript source through tsx (tests) or the built dist/ (benchmarks). */
  daemon?: 'tsx' | 'dist';
  /** Raspberry Pi serials (8 hex digits) that boot `image` (the Pi scenario). */
  pis?: string[];
  /** netbootd only: serve boot files over HTTP too (`http.enabled`) and steer iPXE / UEFI HTTP clients to it. */
  http?: StackHttp;
  /** netbootd only: the status endpoint on 127.0.0.1:STATUS_PORT in the server namespace (off by default). */
  status?: boolean;
}

export interface BootStack {
  name: StackName;
  /** TFTP serves a directory copy of the FAT (reference, servers), not the FAT inside the image. */
  tftpRoot?: string;
  /** netbootd's state folder (copy-on-write overlays). */
  stateDir?: string;
  /** Log files of the servers, for failure messages. */
  logs: string[];
  stop(): Promise<void>;
}

type Proc = ReturnType<NetLab['start']>;

function pipeToFile(p: Proc, file: string): void {
  const chunks: string[] = [];
  const flush = (): void => {
    try {
      writeFileSync(file, chunks.join(''));
    } catch {
      /* scratch gone */
    }
  };
  p.stdout?.on('data', (c: Buffer) => chunks.push(c.toString()));
  p.stderr?.on('data', (c: Buffer) => chunks.push(c.toString()));
  p.once('exit', flush);
  const t = setInterval(flush, 2000);
  t.unref();
  p.once('exit', () => clearInterval(t));
}

/** Waits until the namespace has sockets listening on every (proto, port) (ss), or throws. */
export async function waitListening(lab: NetLab, host: NetHost, ports: [('udp' | 'tcp'), number][], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await lab.exec(host, 'ss', ['-H', '-lnut'], { allowFail: true });
    const lines = r.stdout.toString().split('\n');
    const missing = ports.filter(([proto, port]) =>
      !lines.some((l) => l.startsWith(proto) && new RegExp(`[:*]${port}\\s`).test(l)));
    if (missing.length === 0) return;
    if (Date.now() > deadline) throw new Error(`${host.ns}: nothing listening on ${missing.map(([p, n]) => `${p}/${n}`).join(', ')}`);
    await new Promise((r2) => setTimeout(r2, 200));
  }
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(d));
    } catch {
      /* exited */
    }
  }
  return out;
}

function killPid(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* gone */
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Daemons started here (pid files), killed at process exit if a test did not get to stop them. */
const daemonPidFiles = new Set<string>();
process.on('exit', () => {
  for (const f of daemonPidFiles) {
    try {
      const pid = Number(readFileSync(f, 'utf8').trim());
      if (!Number.isInteger(pid) || pid <= 1) continue;
      for (const k of childrenOf(pid)) killPid(k, 'SIGKILL');
      killPid(pid, 'SIGKILL');
    } catch {
      /* never started or already gone */
    }
  }
});

/** nbd-server daemonizes (its -d mode serves a single connection): stop it and its per-client children by pid. */
async function stopDaemonByPidFile(pidFile: string): Promise<void> {
  daemonPidFiles.delete(pidFile);
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  if (!Number.isInteger(pid) || pid <= 1) return;
  const kids = childrenOf(pid);
  killPid(pid, 'SIGTERM');
  for (const k of kids) killPid(k, 'SIGTERM');
  const deadline = Date.now() + 3000;
  while ((alive(pid) || kids.some(alive)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  killPid(pid, 'SIGKILL');
  for (const k of kids) killPid(k, 'SIGKILL');
}

/** A directory copy of the FAT: PCs read it at the TFTP root; each Pi under its serial, as the bootloader asks. */
async function fillTftpRoot(o: StackOptions, tftpRoot: string): Promise<void> {
  mkdirSync(tftpRoot, { recursive: true });
  if (o.pis?.length) {
    for (const serial of o.pis) {
      mkdirSync(join(tftpRoot, serial));
      await extractFat(o.image, 1, join(tftpRoot, serial));
    }
  } else {
    await extractFat(o.image, 1, tftpRoot);
  }
}

async function startServers(o: StackOptions): Promise<BootStack> {
  const { lab, server } = o.topo;
  const dir = join(o.workDir, 'servers');
  const tftpRoot = join(dir, 'tftp');
  await fillTftpRoot(o, tftpRoot);
  const clients: Record<string, { bios: string; uefi64: string }> = {};
  for (const h of o.hosts) clients[h.mac] = { bios: 'pxelinux.0', uefi64: 'syslinux.efi' };
  const cfg = { serverAddress: SERVER_ADDRESS, tftpRoot, image: o.image, exportName: o.exportName ?? EXPORT_NAME, clients, pis: Boolean(o.pis?.length) };
  const entry = (o.daemon ?? 'tsx') === 'dist'
    ? [join(E2E_ROOT, 'dist/test/e2e/servers-stack.js')]
    : ['--import', 'tsx', join(E2E_ROOT, 'test/e2e/servers-stack.ts')];
  const log = join(dir, 'servers.log');
  const proc = lab.start(server, process.execPath, [...entry, JSON.stringify(cfg)], { cwd: E2E_ROOT });
  pipeToFile(proc, log);
  try {
    await Promise.race([
      waitListening(lab, server, [['udp', 67], ['udp', 4011], ['udp', 69], ['tcp', 10809]], 30_000),
      new Promise((_, reject) => proc.once('exit', (c) => reject(new Error(`servers-stack exited ${c}`)))),
    ]);
  } catch (e) {
    await proc.stop();
    await new Promise((r) => setTimeout(r, 100));
    throw new Error(`${(e as Error).message}\n--- ${log} ---\n${tailOf(log, 40)}`);
  }
  return { name: 'servers', tftpRoot, logs: [log], stop: () => proc.stop() };
}

async function startReference(o: StackOptions): Promise<BootStack> {
  const { lab, server } = o.topo;
  const exportName = o.exportName ?? EXPORT_NAME;
  const dir = join(o.workDir, 'reference');
  const tftpRoot = join(dir, 'tftp');
  await fillTftpRoot(o, tftpRoot);
  const pxeServices = o.pis?.length
    // The Pi bootloader looks for this menu text (and has the x86PC architecture, 0).
    ? ['--pxe-service=0,Raspberry Pi Boot']
    : ['--pxe-service=x86PC,netboot,pxelinux', '--pxe-service=x86-64_EFI,netboot,syslinux.efi'];
  const dnsmasqLog = join(dir, 'dnsmasq-proxy.log');
  const dnsmasq = lab.start(server, 'dnsmasq', [
    '--keep-in-foreground', '--no-daemon', '--conf-file=/dev/null', '--port=0', '--user=root',
    '--interface=eth0', '--bind-interfaces', '--log-dhcp',
    `--dhcp-range=${SERVER_ADDRESS},proxy,255.255.255.0`,
    `--dhcp-leasefile=${join(dir, 'proxy.leases')}`,
    ...pxeServices,
    '--enable-tftp', `--tftp-root=${tftpRoot}`,
  ]);
  pipeToFile(dnsmasq, dnsmasqLog);
  const nbdConf = join(dir, 'nbd-server.conf');
  const nbdPid = join(dir, 'nbd-server.pid');
  writeFileSync(nbdConf, `[generic]\nport = 10809\nallowlist = true\n[${exportName}]\nexportname = ${o.image}\n`);
  daemonPidFiles.add(nbdPid);
  try {
    await lab.exec(server, 'nbd-server', ['-C', nbdConf, '-p', nbdPid]);
    await waitListening(lab, server, [['udp', 67], ['udp', 4011], ['udp', 69], ['tcp', 10809]], 15_000);
  } catch (e) {
    await dnsmasq.stop();
    await stopDaemonByPidFile(nbdPid);
    throw e;
  }
  return {
    name: 'reference',
    tftpRoot,
    logs: [dnsmasqLog],
    async stop() {
      await dnsmasq.stop();
      await stopDaemonByPidFile(nbdPid);
    },
  };
}

/** The YAML netbootd is started with (also checked against the config schema by a fast test). */
export function netbootdConfig(o: Omit<StackOptions, 'topo'>, stateDir: string): string {
  const exportName = o.exportName ?? EXPORT_NAME;
  const images: Record<string, unknown> = {
    [exportName]: { path: o.image, mode: o.mode ?? 'readwrite', export: exportName },
  };
  const hosts: Record<string, unknown> = {};
  for (const h of o.hosts) {
    hosts[h.mac] = {
      name: `e2e-${h.firmware}-${h.mac.slice(-2)}`, image: exportName, bootFile: { bios: 'pxelinux.0', uefi: 'syslinux.efi' },
      ...(h.kernel !== undefined ? { kernel: h.kernel } : {}),
      ...(h.initrd !== undefined ? { initrd: h.initrd } : {}),
      ...(h.cmdline !== undefined ? { cmdline: h.cmdline } : {}),
      ...(h.http !== undefined ? { http: h.http } : {}),
    };
  }
  const pis: Record<string, unknown> = {};
  for (const serial of o.pis ?? []) pis[serial] = { image: exportName };
  const cfg = {
    server: { address: SERVER_ADDRESS, stateDir },
    dhcp: { enabled: true },
    tftp: { enabled: true, port: 69 },
    nbd: { enabled: true, port: 10809 },
    status: o.status ? { enabled: true, address: '127.0.0.1', port: STATUS_PORT } : { enabled: false },
    ...(o.http ? { http: { enabled: true, port: o.http.port ?? HTTP_PORT, ...(o.http.chainIpxe ? { chainIpxe: true } : {}), ...(o.http.ipxeUefi ? { ipxeUefi: o.http.ipxeUefi } : {}) } } : {}),
    images,
    ...(Object.keys(pis).length ? { pis } : {}),
    ...(Object.keys(hosts).length ? { hosts } : {}),
    logging: { level: 'info', pretty: false },
  };
  // Keys that YAML could read as numbers (serials like 12345678) are quoted by the stringifier.
  return `# netbootd e2e config (generated by test/e2e/stacks.ts)\n${stringify(cfg, { defaultKeyType: 'PLAIN', defaultStringType: 'QUOTE_DOUBLE' })}`;
}

async function startNetbootd(o: StackOptions): Promise<BootStack> {
  if (!daemonAvailable()) throw new Error(DAEMON_MISSING);
  const { lab, server } = o.topo;
  const dir = join(o.workDir, 'netbootd');
  const stateDir = join(dir, 'state');
  mkdirSync(stateDir, { recursive: true });
  const configFile = join(dir, 'netbootd.yaml');
  writeFileSync(configFile, netbootdConfig(o, stateDir));
  const entry = (o.daemon ?? 'tsx') === 'dist'
    ? [join(E2E_ROOT, 'dist/src/cli/main.js')]
    : ['--import', 'tsx', join(E2E_ROOT, 'src/cli/main.ts')];
  const log = join(dir, 'netbootd.log');
  const proc = lab.start(server, process.execPath, [...entry, 'serve', '--config', configFile], { cwd: E2E_ROOT });
  pipeToFile(proc, log);
  const ports: [('udp' | 'tcp'), number][] = [['udp', 67], ['udp', 4011], ['udp', 69], ['tcp', 10809]];
  if (o.http) ports.push(['tcp', o.http.port ?? HTTP_PORT]);
  if (o.status) ports.push(['tcp', STATUS_PORT]);
  try {
    await Promise.race([
      waitListening(lab, server, ports, 30_000),
      new Promise((_, reject) => proc.once('exit', (c) => reject(new Error(`netbootd serve exited ${c}`)))),
    ]);
  } catch (e) {
    await proc.stop();
    await new Promise((r) => setTimeout(r, 100));
    throw new Error(`${(e as Error).message}\n--- netbootd serve --config ${configFile} ---\n${tailOf(log, 40)}`);
  }
  return {
    name: 'netbootd',
    stateDir,
    logs: [log],
    async stop() {
      await proc.stop();
    },
  };
}

/** Starts the chosen boot stack in the topology's server namespace, ready to serve when it resolves. */
export function startStack(name: StackName, o: StackOptions): Promise<BootStack> {
  return name === 'reference' ? startReference(o) : name === 'servers' ? startServers(o) : startNetbootd(o);
}

/** The last lines of a log file (for assertion messages). */
export function tailOf(file: string, n = 30): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-n).join('\n');
  } catch {
    return `(no ${file})`;
  }
}
