/**
 * The boot storm's lab (bench/storm.ts, test/storm/storm.test.ts): an image, a network, the two boot stacks
 * one after the other, a load process playing N clients (test/helpers/storm-load.ts), and each stack's
 * figures.
 *
 *   switch ns: bridge
 *   router ns: 198.18.0.1/16, dnsmasq giving each client MAC its fixed address (the classroom's DHCP server)
 *   srv ns:    198.18.0.2/16, the stack under test: `netbootd serve` (proxy DHCP, TFTP from the FAT inside the
 *              image, HTTP, NBD copy-on-write per client), or the reference stack (dnsmasq proxy DHCP + TFTP
 *              from a directory copy of the FAT; nbd-server with copyonwrite = true)
 *   load ns:   198.18.0.10/16 plus every client's address (198.18.1.1, 198.18.1.2, …)
 *
 * Packet loss: this kernel has no netem (no sch_netem, no tc classifiers for a gact drop), so an nftables
 * table in the load namespace drops a random share of every packet the clients send and receive, UDP and
 * TCP alike (`numgen random`, counted); without `nft` (Debian package nftables) the load process drops
 * a share of its UDP datagrams itself (storm-load.ts `loss`) and TCP is loss-free.
 *
 * Server cost: CPU seconds (utime + stime from /proc, the reference's nbd-server children included through
 * the parent's cutime/cstime once it has reaped them) over the storm only (startup excluded); peak RSS:
 * netbootd's VmHWM; for the reference, the highest sum of VmRSS of dnsmasq, nbd-server and its per-client
 * children seen in 100 ms samples (shared pages counted once per process: an over-estimate).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, openSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { stringify } from 'yaml';
import { NetLab, type NetHost } from './netns.js';
import { run, startProcess } from './tools.js';
import { waitListening } from '../e2e/stacks.js';
import { E2E_ROOT, SCRIPTS } from '../e2e/artifacts.js';
import { extractFat } from '../e2e/image.js';
import { mcopyIn } from './fatimg.js';
import { usesHttp, type ClientResult, type ClientSpec, type Kind, type LoadJob, type LoadReport } from './storm-load.js';

export type StackName = 'netbootd' | 'reference';

export const SERVER = '198.18.0.2';
export const ROUTER = '198.18.0.1';
export const EXPORT = 'storm';
export const HTTP_PORT = 8080;
export const TRACE = join(E2E_ROOT, 'bench/fixtures/boot-trace.txt');
/** The config default of `http.ipxeBios`. */
export const IPXE_BIOS = '/usr/lib/ipxe/undionly.kpxe';

// ---------------------------------------------------------------- image

export interface StormImage {
  image: string;
  /** The FAT's files, extracted (the reference stack's TFTP root). */
  fatDir: string;
  /** FAT path → SHA-256. */
  files: Record<string, string>;
  /** Bytes a client of each kind fetches to boot (boot files only). */
  bootBytes: Record<Kind, number>;
}

function seeded(name: string, size: number): Buffer {
  const out = Buffer.alloc(size);
  let block = createHash('sha256').update(name).digest();
  for (let o = 0; o < size; o += 32) {
    block.copy(out, o, 0, Math.min(32, size - o));
    block = createHash('sha256').update(block).digest();
  }
  return out;
}

function walk(dir: string, base = dir): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...walk(p, base));
    else if (e.isFile()) out.push(relative(base, p));
  }
  return out;
}

/**
 * The e2e disk layout (scripts/lib/pc-disk.sh: FAT32 64 MiB at 1 MiB with PXELINUX, vmlinuz, initrd.img; ext4
 * 32 MiB after it, the layout the boot trace was recorded on) with a Pi's boot files added to the FAT.
 * `full`: the e2e's Debian kernel and initramfs (scripts/e2e/fetch-debs.sh, build-initramfs.sh), Pi kernels
 * of the same size; else small seeded files (tests).
 */
export async function buildStormImage(dir: string, full: boolean): Promise<StormImage> {
  mkdirSync(dir, { recursive: true });
  const src = join(dir, 'src');
  mkdirSync(join(src, 'root'), { recursive: true });
  writeFileSync(join(src, 'root', 'e2e-marker'), 'netbootd-storm\n');
  let kernel: string, initrd: string;
  if (full) {
    const fetched = await run('bash', [join(SCRIPTS, 'fetch-debs.sh')], { timeoutMs: 600_000 });
    const kroot = fetched.stdout.toString().trim().split('\n').pop()!;
    const kver = readdirSync(join(kroot, 'lib/modules'))[0]!;
    kernel = join(kroot, 'boot', `vmlinuz-${kver}`);
    initrd = join(src, 'initrd.img');
    await run('bash', [join(SCRIPTS, 'build-initramfs.sh'), initrd, kroot], { timeoutMs: 600_000 });
  } else {
    kernel = join(src, 'vmlinuz');
    initrd = join(src, 'initrd.img');
    writeFileSync(kernel, seeded('vmlinuz', 96 * 1024 + 77));
    writeFileSync(initrd, seeded('initrd', 64 * 1024 + 5));
  }
  const image = join(dir, 'storm.img');
  const cmdline = `console=ttyS0,115200 nbdroot=${SERVER}/${EXPORT} root=/dev/nbd0p2`;
  await run('bash', [join(E2E_ROOT, 'scripts/lib/pc-disk.sh'), image, '--kernel', kernel, '--initrd', initrd, '--append', cmdline,
    '--root-dir', join(src, 'root'), '--boot-sectors', '131072', '--root-sectors', '65536', '--entry', 'storm',
    '--fat-label', 'NETBOOT', '--root-label', 'stormroot'], { timeoutMs: 300_000 });
  // The Pi's files (start4.elf as large as the real one; kernels the size of the PC's).
  const pi = join(src, 'pi');
  mkdirSync(pi, { recursive: true });
  const ksize = statSync(kernel).size;
  writeFileSync(join(pi, 'start4.elf'), seeded('start4.elf', full ? 2281760 : 40_000));
  writeFileSync(join(pi, 'fixup4.dat'), seeded('fixup4.dat', 5446));
  writeFileSync(join(pi, 'bcm2711-rpi-4-b.dtb'), seeded('bcm2711', full ? 52_593 : 9_000));
  writeFileSync(join(pi, 'bcm2712-rpi-5-b.dtb'), seeded('bcm2712', full ? 76_750 : 9_000));
  writeFileSync(join(pi, 'kernel8.img'), seeded('kernel8.img', ksize));
  writeFileSync(join(pi, 'kernel_2712.img'), seeded('kernel_2712.img', ksize + 4096));
  writeFileSync(join(pi, 'config.txt'), '[all]\narm_64bit=1\nkernel=kernel8.img\n[pi5]\nkernel=kernel_2712.img\n[all]\ninitramfs initrd.img followkernel\n');
  writeFileSync(join(pi, 'cmdline.txt'), `${cmdline} rootwait\n`);
  await mcopyIn(image, readdirSync(pi).map((f) => join(pi, f)), '::/', { offset: 1024 * 1024 });
  const fatDir = join(dir, 'fat');
  mkdirSync(fatDir, { recursive: true });
  await extractFat(image, 1, fatDir);
  const files: Record<string, string> = {};
  const sizes: Record<string, number> = {};
  for (const f of walk(fatDir)) {
    const data = readFileSync(join(fatDir, f));
    files[f] = createHash('sha256').update(data).digest('hex');
    sizes[f] = data.length;
  }
  // What netbootd's `http.chainIpxe` sends a PXE ROM (config default `http.ipxeBios`, Debian package ipxe).
  if (existsSync(IPXE_BIOS)) files['undionly.kpxe'] = createHash('sha256').update(readFileSync(IPXE_BIOS)).digest('hex');
  const sum = (fs: string[]): number => fs.reduce((n, f) => n + (sizes[f] ?? 0), 0);
  const pxelinux = sum(['pxelinux.0', 'ldlinux.c32', 'pxelinux.cfg/default', 'vmlinuz', 'initrd.img']);
  const bootBytes: Record<Kind, number> = {
    pi4: sum(['start4.elf', 'config.txt', 'fixup4.dat', 'cmdline.txt', 'bcm2711-rpi-4-b.dtb', 'kernel8.img', 'initrd.img']),
    pi5: sum(['config.txt', 'cmdline.txt', 'bcm2712-rpi-5-b.dtb', 'kernel_2712.img', 'initrd.img']),
    pxelinux,
    ipxe: sum(['vmlinuz', 'initrd.img']),
    // From the reference stack; from netbootd undionly.kpxe (about 70 KB) instead of PXELINUX's files.
    pxe: pxelinux,
  };
  return { image, fatDir, files, bootBytes };
}

// ---------------------------------------------------------------- clients and network

export function clientAddress(i: number): string {
  return `198.18.${1 + Math.floor(i / 250)}.${1 + (i % 250)}`;
}

/** N clients, kinds dealt round-robin by the weights of `mix` (e.g. { pi4: 2, pxelinux: 1 }). */
export function makeClients(n: number, mix: Partial<Record<Kind, number>>, vanish: number): ClientSpec[] {
  const deck: Kind[] = [];
  for (const [k, w] of Object.entries(mix) as [Kind, number][]) for (let j = 0; j < w; j++) deck.push(k);
  if (deck.length === 0) throw new Error('empty --mix');
  const out: ClientSpec[] = [];
  for (let i = 0; i < n; i++) {
    const kind = deck[i % deck.length]!;
    const hex = (0x1000 + i).toString(16).padStart(6, '0');
    const pi = kind === 'pi4' || kind === 'pi5';
    const mac = `${pi ? 'dc:a6:32' : '02:53:54'}:${hex.slice(0, 2)}:${hex.slice(2, 4)}:${hex.slice(4, 6)}`;
    out.push({ i, kind, ip: clientAddress(i), mac, ...(pi ? { serial: (0x5a000000 + i).toString(16) } : {}) });
  }
  // Vanishing clients: spread over the run, alternately mid-TFTP and mid-NBD.
  for (let v = 0; v < vanish && v < n; v++) out[Math.floor(((v + 0.5) * n) / vanish)]!.vanish = v % 2 === 0 ? 'tftp' : 'nbd';
  return out;
}

export interface Lab {
  lab: NetLab;
  srv: NetHost;
  load: NetHost;
  router: NetHost;
  destroy(): Promise<void>;
}

export async function createLab(work: string, clients: ClientSpec[]): Promise<Lab> {
  const lab = await NetLab.create('storm');
  try {
    const router = await lab.addHost('router', { address: `${ROUTER}/16` });
    const srv = await lab.addHost('srv', { address: `${SERVER}/16` });
    const load = await lab.addHost('load', { address: '198.18.0.10/16' });
    const batch = join(work, 'addrs.batch');
    writeFileSync(batch, clients.map((c) => `addr add ${c.ip}/16 dev eth0 noprefixroute\n`).join(''));
    await run('ip', ['-n', load.ns, '-batch', batch]);
    // Broadcasts (DHCP DISCOVER to 255.255.255.255) need a route out.
    await run('ip', ['-n', load.ns, 'route', 'add', 'default', 'dev', 'eth0']);
    // Many clients behind one interface: room in the neighbour tables of every namespace.
    for (const h of [router, srv, load]) {
      await lab.exec(h, 'sysctl', ['-q', '-w', 'net.ipv4.neigh.default.gc_thresh1=4096', 'net.ipv4.neigh.default.gc_thresh2=8192', 'net.ipv4.neigh.default.gc_thresh3=16384'], { allowFail: true });
    }
    const hosts = join(work, 'router.hosts');
    writeFileSync(hosts, clients.map((c) => `${c.mac},${c.ip}\n`).join(''));
    const p = lab.start(router, 'dnsmasq', [
      '--keep-in-foreground', '--no-daemon', '--conf-file=/dev/null', '--port=0', '--user=root', '--interface=eth0',
      '--bind-interfaces', '--dhcp-authoritative', '--no-ping', '--quiet-dhcp', '--log-facility=/dev/null',
      '--dhcp-range=198.18.0.0,static,255.255.0.0,1h', `--dhcp-hostsfile=${hosts}`, `--dhcp-leasefile=${join(work, 'router.leases')}`,
      '--dhcp-lease-max=10000',
    ], { stdio: ['ignore', 'ignore', 'ignore'] });
    void p;
    await waitListening(lab, router, [['udp', 67]], 15_000);
    return { lab, srv, load, router, destroy: () => lab.destroy() };
  } catch (e) {
    await lab.destroy();
    throw e;
  }
}

// ---------------------------------------------------------------- process accounting

const TICK = 100; // USER_HZ

function procStat(pid: number): { cpu: number; ccpu: number; ppid: number } | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return { ppid: Number(f[1]), cpu: (Number(f[11]) + Number(f[12])) / TICK, ccpu: (Number(f[13]) + Number(f[14])) / TICK };
  } catch {
    return null;
  }
}

function statusKb(pid: number, key: 'VmRSS' | 'VmHWM'): number {
  try {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    if (procStat(Number(d))?.ppid === pid) out.push(Number(d));
  }
  return out;
}

/** CPU seconds of a process tree's roots (own + reaped children) and its live children. */
function cpuOf(roots: number[], withChildren: boolean): number {
  let s = 0;
  for (const r of roots) {
    const st = procStat(r);
    if (!st) continue;
    s += st.cpu + st.ccpu;
    if (withChildren) for (const k of childrenOf(r)) s += procStat(k)?.cpu ?? 0;
  }
  return s;
}

const NFT = ['/usr/sbin/nft', '/sbin/nft', '/usr/bin/nft'].find((p) => existsSync(p));
const LOSS_TABLE = 'storm_loss';

/**
 * Drops `loss` (0..1) of the packets `h` sends and of those it receives, each independently, in the kernel
 * (nftables). False without nft.
 */
async function setKernelLoss(lab: NetLab, h: NetHost, loss: number, work: string): Promise<boolean> {
  if (!NFT) return false;
  const per = Math.round(loss * 1_000_000);
  const chain = (name: string, hook: string): string =>
    `  chain ${name} { type filter hook ${hook} priority 0; policy accept; numgen random mod 1000000 < ${per} counter drop; }\n`;
  const file = join(work, 'loss.nft');
  writeFileSync(file, `table inet ${LOSS_TABLE} {\n${chain('in', 'input')}${chain('out', 'output')}}\n`);
  await lab.exec(h, NFT, ['-f', file]);
  return true;
}

/** Packets the loss table dropped, and removes it. */
async function clearKernelLoss(lab: NetLab, h: NetHost): Promise<number> {
  const r = await lab.exec(h, NFT!, ['list', 'table', 'inet', LOSS_TABLE], { allowFail: true });
  await lab.exec(h, NFT!, ['delete', 'table', 'inet', LOSS_TABLE], { allowFail: true });
  return [...r.stdout.toString().matchAll(/counter packets (\d+)/g)].reduce((n, m) => n + Number(m[1]), 0);
}

/** A counter of the namespace's /proc/net/snmp (e.g. Tcp RetransSegs, Udp RcvbufErrors). */
async function snmp(lab: NetLab, h: NetHost, proto: 'Tcp' | 'Udp', key: string): Promise<number> {
  const r = await lab.exec(h, 'cat', ['/proc/net/snmp'], { allowFail: true });
  const lines = r.stdout.toString().split('\n').filter((l) => l.startsWith(`${proto}:`));
  if (lines.length < 2) return 0;
  const keys = lines[0]!.split(/\s+/);
  const vals = lines[1]!.split(/\s+/);
  return Number(vals[keys.indexOf(key)] ?? 0);
}

// ---------------------------------------------------------------- stacks

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').slice(-2000);
  } catch {
    return `(no ${file})`;
  }
}

export interface RunningStack {
  name: StackName;
  /** Processes whose CPU and memory count (roots). */
  pids(): number[];
  /** Whether per-connection children count (nbd-server forks). */
  children: boolean;
  /** netbootd: exact peak RSS (VmHWM) in kB. */
  hwm?: () => number;
  reload(): void;
  logs: string[];
  stop(): Promise<void>;
}

function netbootdYaml(img: StormImage, clients: ClientSpec[], stateDir: string, httpOn: boolean): string {
  const pis: Record<string, unknown> = {};
  const hosts: Record<string, unknown> = {};
  for (const c of clients) {
    if (c.serial) pis[c.serial] = { image: EXPORT };
    else hosts[c.mac] = { image: EXPORT, bootFile: { bios: 'pxelinux.0' }, ...(httpOn ? { http: usesHttp(c.kind) } : {}) };
  }
  const cfg = {
    server: { address: SERVER, stateDir },
    dhcp: { enabled: true },
    tftp: { enabled: true, port: 69 },
    // Every client holds an NBD connection while it is attached; past 256 clients the config check asks for
    // this (the reference's nbd-server has no cap).
    nbd: { enabled: true, port: 10809, ...(clients.length > 256 ? { maxConnections: clients.length } : {}) },
    status: { enabled: false },
    // `pxe` clients: their PXE ROM is sent iPXE by TFTP, which boots over HTTP (hosts with `http: false`, the
    // `pxelinux` clients, still get pxelinux.0).
    ...(httpOn ? { http: { enabled: true, port: HTTP_PORT, ...(clients.some((c) => c.kind === 'pxe') ? { chainIpxe: true } : {}) } } : {}),
    images: { [EXPORT]: { path: img.image, mode: 'cow', export: EXPORT } },
    ...(Object.keys(pis).length ? { pis } : {}),
    ...(Object.keys(hosts).length ? { hosts } : {}),
    logging: { level: 'info', pretty: false },
  };
  return `# netbootd storm config (test/helpers/storm-lab.ts)\n${stringify(cfg, { defaultKeyType: 'PLAIN', defaultStringType: 'QUOTE_DOUBLE' })}`;
}

export interface StackOptions {
  daemon: 'tsx' | 'dist';
  /** netbootd: write a V8 CPU profile into this folder (--cpu-prof). */
  cpuProf?: string;
  /** Extra environment for netbootd. */
  env?: NodeJS.ProcessEnv;
}

export async function startNetbootd(l: Lab, img: StormImage, clients: ClientSpec[], work: string, o: StackOptions): Promise<RunningStack> {
  const dir = join(work, 'netbootd');
  const stateDir = join(dir, 'state');
  mkdirSync(stateDir, { recursive: true });
  const cfgFile = join(dir, 'netbootd.yaml');
  writeFileSync(cfgFile, netbootdYaml(img, clients, stateDir, clients.some((c) => usesHttp(c.kind))));
  const entry = o.daemon === 'dist' ? [join(E2E_ROOT, 'dist/src/cli/main.js')] : ['--import', 'tsx', join(E2E_ROOT, 'src/cli/main.ts')];
  const prof = o.cpuProf ? [`--cpu-prof`, `--cpu-prof-dir=${o.cpuProf}`] : [];
  const log = join(dir, 'netbootd.log');
  const fd = openSync(log, 'w');
  const proc = l.lab.start(l.srv, process.execPath, [...prof, ...entry, 'serve', '--config', cfgFile], {
    cwd: E2E_ROOT, stdio: ['ignore', fd, fd], ...(o.env ? { env: { ...process.env, ...o.env } } : {}),
  });
  const ports: [('udp' | 'tcp'), number][] = [['udp', 67], ['udp', 4011], ['udp', 69], ['tcp', 10809]];
  if (clients.some((c) => usesHttp(c.kind))) ports.push(['tcp', HTTP_PORT]);
  let onExit: ((c: number | null) => void) | undefined;
  try {
    await Promise.race([
      waitListening(l.lab, l.srv, ports, 60_000),
      new Promise((_, rej) => {
        onExit = (c) => rej(new Error(`netbootd exited ${c}: ${tail(log)}`));
        proc.once('exit', onExit);
      }),
    ]);
  } finally {
    if (onExit) proc.off('exit', onExit);
  }
  return {
    name: 'netbootd', children: false, logs: [log],
    pids: () => [proc.pid!],
    hwm: () => statusKb(proc.pid!, 'VmHWM'),
    reload: () => process.kill(proc.pid!, 'SIGHUP'),
    // SIGINT: a --cpu-prof profile is written at a clean exit (the daemon drains on SIGTERM/SIGINT).
    stop: () => new Promise<void>((res) => {
      if (proc.exitCode !== null) return res();
      proc.once('exit', () => res());
      process.kill(proc.pid!, 'SIGINT');
      setTimeout(() => proc.exitCode === null && proc.kill('SIGKILL'), 15_000).unref();
    }),
  };
}

export async function startReference(l: Lab, img: StormImage, clients: ClientSpec[], work: string): Promise<RunningStack> {
  const dir = join(work, 'reference');
  mkdirSync(dir, { recursive: true });
  // Each Pi reads `<serial>/…`: one link per serial to the TFTP root.
  for (const c of clients) if (c.serial && !existsSync(join(img.fatDir, c.serial))) symlinkSync('.', join(img.fatDir, c.serial));
  const dnsLog = join(dir, 'dnsmasq.log');
  const dnsmasq = l.lab.start(l.srv, 'dnsmasq', [
    '--keep-in-foreground', '--no-daemon', '--conf-file=/dev/null', '--port=0', '--user=root', '--interface=eth0', '--bind-interfaces',
    `--dhcp-range=${SERVER},proxy,255.255.0.0`, `--dhcp-leasefile=${join(dir, 'proxy.leases')}`,
    // One service for both: the Pi bootloader wants this menu text; PXE ROMs take pxelinux(.0) from it.
    '--pxe-service=x86PC,"Raspberry Pi Boot",pxelinux',
    '--enable-tftp', `--tftp-root=${img.fatDir}`, '--tftp-max=2000', `--log-facility=${dnsLog}`,
  ], { stdio: ['ignore', 'ignore', 'ignore'] });
  // nbd-server: copy-on-write per connection (its diff files next to this config), like netbootd's `cow`.
  const conf = join(dir, 'nbd-server.conf');
  const pidFile = join(dir, 'nbd-server.pid');
  writeFileSync(conf, `[generic]\nport = 10809\nallowlist = true\nmaxconnections = 0\n[${EXPORT}]\nexportname = ${img.image}\ncopyonwrite = true\n`);
  await l.lab.exec(l.srv, 'nbd-server', ['-C', conf, '-p', pidFile]);
  await waitListening(l.lab, l.srv, [['udp', 67], ['udp', 4011], ['udp', 69], ['tcp', 10809]], 15_000);
  const nbdPid = Number(readFileSync(pidFile, 'utf8').trim());
  return {
    name: 'reference', children: true, logs: [dnsLog],
    pids: () => [dnsmasq.pid!, nbdPid],
    reload: () => {
      process.kill(dnsmasq.pid!, 'SIGHUP');
      process.kill(nbdPid, 'SIGHUP');
    },
    async stop() {
      await dnsmasq.stop();
      const kids = childrenOf(nbdPid);
      for (const p of [nbdPid, ...kids]) {
        try {
          process.kill(p, 'SIGTERM');
        } catch {
          /* gone */
        }
      }
      await new Promise((r) => setTimeout(r, 300));
    },
  };
}

// ---------------------------------------------------------------- one storm against one stack

export interface StormFigures {
  stack: StackName;
  n: number;
  booted: number;
  failed: number;
  vanished: number;
  /** Seconds from the first power-on until the last (non-vanishing) client booted. */
  allBootedS: number;
  p50: number;
  p95: number;
  p99: number;
  /** Client UDP retransmissions, duplicates received, TCP segments the server retransmitted, datagrams dropped by the loss emulation. */
  retrans: number;
  dupes: number;
  tcpRetrans: number;
  /** UDP datagrams the server's namespace dropped for a full receive buffer (Udp RcvbufErrors). */
  serverDrops: number;
  lost: number;
  /** Where the loss was made: in the kernel for every packet (nftables), or by the clients for UDP only. */
  lossBy: 'kernel' | 'client' | 'none';
  /** Most TFTP transfers the clients had open at once. */
  tftpOpenMax: number;
  cpuS: number;
  /** The load process's own CPU seconds (it shares the machine's cores with the stack under test). */
  loadCpuS: number;
  peakRssMB: number;
  /** Boot-file and NBD bytes moved per booted client. */
  bytesPerBoot: number;
  errors: string[];
  results: ClientResult[];
}

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

export interface StormRun {
  clients: ClientSpec[];
  loss: number;
  timeoutMs: number;
  tries: number;
  spreadMs: number;
  /** SIGHUP the stack this long after the storm starts. */
  reloadAtMs?: number;
  daemon: 'tsx' | 'dist';
}

export async function runStorm(l: Lab, stack: RunningStack, img: StormImage, work: string, r: StormRun): Promise<StormFigures> {
  const job: LoadJob = {
    server: SERVER, router: ROUTER, clients: r.clients, files: img.files, image: img.image, exportName: EXPORT, trace: TRACE,
    http: stack.name === 'netbootd', httpPort: HTTP_PORT, timeoutMs: r.timeoutMs, tries: r.tries, spreadMs: r.spreadMs, loss: r.loss,
  };
  const kernelLoss = r.loss > 0 && await setKernelLoss(l.lab, l.load, r.loss, work);
  if (kernelLoss) job.loss = 0;
  const jobFile = join(work, `job-${stack.name}.json`);
  writeFileSync(jobFile, JSON.stringify(job));
  const entry = r.daemon === 'dist'
    ? [join(E2E_ROOT, 'dist/test/helpers/storm-load.js')]
    : ['--import', 'tsx', join(E2E_ROOT, 'test/helpers/storm-load.ts')];
  const tcp0 = await snmp(l.lab, l.srv, 'Tcp', 'RetransSegs');
  const drop0 = await snmp(l.lab, l.srv, 'Udp', 'RcvbufErrors');
  const cpu0 = cpuOf(stack.pids(), stack.children);
  let peakKb = 0;
  const sample = (): void => {
    let kb = 0;
    for (const p of stack.pids()) {
      kb += statusKb(p, 'VmRSS');
      if (stack.children) for (const k of childrenOf(p)) kb += statusKb(k, 'VmRSS');
    }
    peakKb = Math.max(peakKb, kb);
  };
  const sampler = setInterval(sample, 100);
  const reload = r.reloadAtMs !== undefined ? setTimeout(() => stack.reload(), r.reloadAtMs) : undefined;
  // STORM_LOAD_PROF=DIR: a V8 CPU profile of the load process (is the generator the bottleneck?).
  const prof = process.env.STORM_LOAD_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.STORM_LOAD_PROF}`] : [];
  const proc = startProcess('ip', ['netns', 'exec', l.load.ns, process.execPath, ...prof, ...entry, jobFile], { cwd: E2E_ROOT });
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const code = await new Promise<number | null>((res) => proc.once('exit', (c) => res(c)));
  clearInterval(sampler);
  clearTimeout(reload);
  const kernelLost = kernelLoss ? await clearKernelLoss(l.lab, l.load) : 0;
  if (code !== 0) throw new Error(`load process exited ${code}: ${err.slice(-2000)}`);
  const rep = JSON.parse(out.trim().split('\n').pop()!) as LoadReport;
  // Let nbd-server reap its per-connection children before its CPU is read.
  await new Promise((res) => setTimeout(res, 500));
  sample();
  const cpuS = cpuOf(stack.pids(), stack.children) - cpu0;
  const peakRssMB = (stack.hwm ? Math.max(stack.hwm(), peakKb) : peakKb) / 1024;
  const tcp1 = await snmp(l.lab, l.srv, 'Tcp', 'RetransSegs');
  const drop1 = await snmp(l.lab, l.srv, 'Udp', 'RcvbufErrors');
  const ok = rep.results.filter((x) => x.ok);
  const times = ok.map((x) => x.ms / 1000).sort((a, b) => a - b);
  return {
    stack: stack.name, n: r.clients.length, booted: ok.length,
    failed: rep.results.filter((x) => !x.ok && !x.vanished).length,
    vanished: rep.results.filter((x) => x.vanished).length,
    allBootedS: rep.wallMs / 1000,
    p50: pct(times, 50), p95: pct(times, 95), p99: pct(times, 99),
    retrans: rep.results.reduce((n, x) => n + x.retrans, 0),
    dupes: rep.results.reduce((n, x) => n + x.dupes, 0),
    tcpRetrans: tcp1 - tcp0,
    serverDrops: drop1 - drop0,
    lost: kernelLoss ? kernelLost : rep.lost,
    lossBy: r.loss <= 0 ? 'none' : kernelLoss ? 'kernel' : 'client',
    tftpOpenMax: rep.tftpOpenMax,
    cpuS, loadCpuS: rep.cpuS, peakRssMB,
    bytesPerBoot: ok.length ? ok.reduce((n, x) => n + x.bytes, 0) / ok.length : 0,
    errors: rep.results.filter((x) => !x.ok && !x.vanished).map((x) => `client ${x.i} (${x.kind}): ${x.error}`),
    results: rep.results,
  };
}
