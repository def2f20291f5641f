/**
 * `netbootd check`: everything that can be known before a client boots. The config loads; every image
 * opens, has a partition table and a boot FAT; each Pi's image holds the files the Pi firmware asks
 * for; each PC's boot files exist; and the kernel command lines (cmdline.txt, pxelinux.cfg/default)
 * point their NBD root at this server, port and export — the most common way a netboot fails silently.
 */
import fs from 'node:fs';
import { isIP } from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { FileBlockDevice } from '../disk/blockdev.js';
import { formatIssue, loadConfig } from '../config/load.js';
import type { Config, ImageConfig } from '../config/schema.js';
import type { FatVolume } from '../fat/volume.js';
import { openBootVolume } from '../fat/boot.js';
import { KERNEL_CONFIGS, cmdlineValue, parseBootConfig, parseNbdDevice, parseNbdroot, splitCmdline } from './cmdline.js';
import { defaultServerAddress } from '../dhcp/address.js';
import { DEFAULT_BOOT_FILES, IPXE_FILES, IPXE_SCRIPT } from './policy.js';
import { kernelFromPxelinux, type KernelSpec } from './ipxe.js';
import { missingForModel, type PiFamilyNumber } from './pi-needs.js';
import { isLoopbackAddress } from '../util/net.js';
import { readAll } from '../util/source.js';
import type { Partition, PartitionTable } from '../disk/partitions.js';

export interface CheckLine {
  /** `hint`: a suggestion (pin a client, …), neither a warning nor an error; hidden by --quiet. */
  level: 'ok' | 'hint' | 'warn' | 'error';
  /** What the line is about: `config`, `image jammy`, `pi 89025d75`, `host 52:54:…`. */
  subject: string;
  message: string;
}

export interface CheckReport {
  lines: CheckLine[];
  errors: number;
  warnings: number;
}

/** Files the Raspberry Pi 4 firmware fetches first; a Pi 5 needs none of start*.elf but cmdline.txt and config.txt. */
const PI_FILES = ['config.txt', 'cmdline.txt'];
const PI4_FILES = ['start4.elf', 'fixup4.dat'];

interface OpenedImage {
  table: PartitionTable;
  boot: Partition | null;
  bootNumber: number;
  volume: FatVolume;
  close: () => Promise<void>;
}

export async function checkConfig(configPath: string): Promise<CheckReport> {
  const lines: CheckLine[] = [];
  const add = (level: CheckLine['level'], subject: string, message: string): void => {
    lines.push({ level, subject, message });
  };
  const loaded = await loadConfig(configPath);
  for (const w of loaded.warnings) add('warn', 'config', formatIssue(w));
  if (!loaded.ok) {
    for (const e of loaded.errors) add('error', 'config', formatIssue(e));
    return summarize(lines);
  }
  const config = loaded.config;
  add('ok', 'config', `${configPath} is valid: ${Object.keys(config.images).length} images, ${Object.keys(config.pis).length} Pis, ${Object.keys(config.hosts).length} hosts`);
  if (!config.server.address) {
    add('warn', 'config', 'server.address is not set: it will be detected from the network interfaces at start; cmdline checks below cannot compare the NBD server address');
  }

  if (config.status.enabled && !isLoopbackAddress(config.status.address) && !config.status.token) {
    add('warn', 'config', `status.address ${config.status.address} is not loopback and status.token is not set: the status endpoint will refuse every request; set status.token (e.g. \`openssl rand -hex 16\`) or listen on 127.0.0.1`);
  }

  // Only what the config uses is checked: an image whose boot partition nobody boots from (an NBD-only root
  // disk, a bare ext4 file behind a tftpRoot host) needs no partition table nor FAT.
  const bootedFrom = new Set<string>([
    ...Object.values(config.pis).map((p) => p.image),
    ...Object.values(config.hosts).flatMap((h) => (h.image !== undefined ? [h.image] : [])),
    ...(config.defaults?.image !== undefined ? [config.defaults.image] : []),
  ]);
  const opened = new Map<string, OpenedImage | null>();
  for (const [name, img] of Object.entries(config.images)) {
    if (bootedFrom.has(name)) opened.set(name, await inspectImage(name, img, add));
    else await inspectExportOnly(name, img, add);
  }
  const fix = prepCommand(config);

  for (const [serial, pi] of Object.entries(config.pis)) {
    const subject = `pi ${serial}`;
    const img = opened.get(pi.image);
    if (!img) {
      add('error', subject, `its image \`${pi.image}\` cannot be used (see above)`);
      continue;
    }
    let volume = img.volume;
    let closeExtra: (() => Promise<void>) | null = null;
    if (pi.partition !== undefined && pi.partition !== img.bootNumber) {
      try {
        const dev = await FileBlockDevice.open(config.images[pi.image]!.path!, { readOnly: true });
        volume = (await openBootVolume(dev, pi.partition)).volume;
        closeExtra = () => dev.close();
      } catch (e) {
        add('error', subject, `partition ${pi.partition} of image \`${pi.image}\`: ${(e as Error).message}`);
        continue;
      }
    }
    const missing: string[] = [];
    for (const f of PI_FILES) if (!(await exists(volume, f))) missing.push(f);
    if (missing.length) add('error', subject, `the boot partition lacks ${missing.join(', ')} (the Pi firmware asks for them)`);
    if (pi.model !== undefined) {
      // What this model's firmware asks for (src/registry/pi-needs.ts).
      const lacks = missingForModel(pi.model as PiFamilyNumber, await bootNames(volume, await readText(volume, 'config.txt')), await readText(volume, 'config.txt'));
      if (lacks.length) add('warn', subject, `a Pi ${pi.model} will not boot from it: no ${lacks.join(', ')}`);
    } else {
      const missing4: string[] = [];
      for (const f of PI4_FILES) if (!(await exists(volume, f))) missing4.push(f);
      if (missing4.length) add('warn', subject, `no ${missing4.join(', ')}: a Pi 4 will not boot from it (a Pi 5 does not need them; set \`model:\` to check what its model needs)`);
    }
    if (!missing.length) add('ok', subject, `boots image \`${pi.image}\` (partition ${pi.partition ?? img.bootNumber})`);
    const cmdline = await readText(volume, 'cmdline.txt');
    if (cmdline !== null) checkBootConfig(config, pi.image, img, 'cmdline.txt', cmdline, subject, fix, add);
    const configTxt = await readText(volume, 'config.txt');
    if (configTxt !== null && cmdline !== null && /(^|\s)nbdroot=/.test(cmdline)) await checkPiInitramfs(volume, configTxt, subject, add);
    await closeExtra?.();
  }

  await checkIpxeFiles(config, add);
  for (const [mac, host] of Object.entries(config.hosts)) await checkPc(config, `host ${mac}`, host, opened, fix, add, mac);
  if (config.defaults) await checkPc(config, 'defaults', config.defaults, opened, fix, add);
  await suggestPins(config, add);

  for (const img of opened.values()) await img?.close();
  return summarize(lines);
}

/**
 * A Pi or host without `address:` can have its identity (and so its copy-on-write disk) claimed from
 * another address by whoever boots as it first after a quiet minute: suggest pinning it, with the address
 * stateDir/clients.json last saw it at.
 */
async function suggestPins(config: Config, add: (l: CheckLine['level'], s: string, m: string) => void): Promise<void> {
  const lastSeen = new Map<string, string>();
  try {
    const records = JSON.parse(await fs.promises.readFile(join(config.server.stateDir, 'clients.json'), 'utf8')) as unknown;
    if (Array.isArray(records)) {
      for (const r of records as Array<Record<string, unknown>>) {
        if (typeof r?.ip !== 'string' || isIP(r.ip) !== 4) continue;
        if (typeof r.serial === 'string') lastSeen.set(`serial:${r.serial}`, r.ip);
        if (typeof r.mac === 'string') lastSeen.set(`mac:${r.mac}`, r.ip);
      }
    }
  } catch {
    // No state yet (or unreadable): suggest without an address.
  }
  const hint = (subject: string, key: string): void => {
    const ip = lastSeen.get(key);
    add('hint', subject, ip
      ? `not pinned: add \`address: ${ip}\` (where it was last seen) so no other machine can claim its identity and disk`
      : 'not pinned: add `address: <its IPv4 or CIDR>` so no other machine can claim its identity and disk');
  };
  for (const [serial, pi] of Object.entries(config.pis)) if (pi.address === undefined) hint(`pi ${serial}`, `serial:${serial}`);
  for (const [mac, host] of Object.entries(config.hosts)) if (host.address === undefined) hint(`host ${mac}`, `mac:${mac}`);
}

async function checkPc(
  config: Config,
  subject: string,
  t: Pick<Config['hosts'][string], 'image' | 'tftpRoot' | 'bootFile' | 'kernel' | 'initrd' | 'cmdline' | 'http'>,
  opened: Map<string, OpenedImage | null>,
  fix: PrepCommand,
  add: (l: CheckLine['level'], s: string, m: string) => void,
  mac?: string,
): Promise<void> {
  if (t.tftpRoot !== undefined) {
    add('ok', subject, `served from directory ${t.tftpRoot}`);
    return;
  }
  const name = t.image!;
  const img = opened.get(name);
  if (!img) {
    add('error', subject, `its image \`${name}\` cannot be used (see above)`);
    return;
  }
  const overHttp = config.http.enabled && t.http !== false;
  if (overHttp) await checkHttpBoot(config, name, img, t, subject, add, mac);
  const files = new Set<string>();
  if (typeof t.bootFile === 'string') files.add(t.bootFile);
  // Chain-loading iPXE, plain PXE ROMs get iPXE (not PXELINUX): the default boot files are not needed.
  else if (t.bootFile === undefined && !(overHttp && config.http.chainIpxe)) Object.values(DEFAULT_BOOT_FILES).forEach((f) => files.add(f));
  else if (t.bootFile !== undefined) Object.entries(t.bootFile).forEach(([k, f]) => k !== 'http' && f && !/^[a-z]+:\/\//i.test(f) && files.add(f));
  {
    const missing: string[] = [];
    for (const f of files) if (!(await exists(img.volume, f))) missing.push(f);
    if (missing.length) add(t.bootFile === undefined ? 'warn' : 'error', subject, `boot file${missing.length > 1 ? 's' : ''} ${missing.join(', ')} not in image \`${name}\``);
    else add('ok', subject, `boots image \`${name}\`${files.size ? ` (${[...files].join(', ')})` : ''}`);
    // The kernel command line: PXELINUX's file for this MAC, else its default, else the other boot loader configs.
    const candidates = [...(mac ? [`pxelinux.cfg/01-${mac.replace(/:/g, '-')}`] : []), ...KERNEL_CONFIGS];
    for (const path of candidates) {
      const text = await readText(img.volume, path);
      if (text === null) continue;
      checkBootConfig(config, name, img, path, text, subject, fix, add);
      break;
    }
  }
}

/**
 * HTTP boot of a PC: its iPXE script is the boot partition's boot.ipxe, else one written from the host's
 * `kernel`/`initrd`/`cmdline` keys, else from its PXELINUX entry; every file the script loads must be in
 * the image, and the command line must point its NBD root here.
 */
async function checkHttpBoot(
  config: Config,
  name: string,
  img: OpenedImage,
  t: Pick<Config['hosts'][string], 'kernel' | 'initrd' | 'cmdline'>,
  subject: string,
  add: (l: CheckLine['level'], s: string, m: string) => void,
  mac?: string,
): Promise<void> {
  const where = `${subject} http`;
  if (await exists(img.volume, IPXE_SCRIPT)) {
    add('ok', where, `iPXE clients run ${IPXE_SCRIPT} from image \`${name}\``);
    return;
  }
  let spec: KernelSpec | null = null;
  let from = 'the `kernel` key';
  if (t.kernel !== undefined) spec = { kernel: t.kernel, initrds: t.initrd ?? [], cmdline: t.cmdline ?? '' };
  else {
    for (const path of [...(mac ? [`pxelinux.cfg/01-${mac.replace(/:/g, '-')}`] : []), 'pxelinux.cfg/default']) {
      const text = await readText(img.volume, path);
      if (text === null) continue;
      spec = kernelFromPxelinux(text);
      from = path;
      break;
    }
  }
  if (!spec) {
    add('error', where, `iPXE clients get nothing: image \`${name}\` has no ${IPXE_SCRIPT}, and there is no \`kernel\` key (with \`initrd\`, \`cmdline\`) nor a PXELINUX entry naming a kernel`);
    return;
  }
  const missing: string[] = [];
  for (const f of [spec.kernel, ...spec.initrds]) if (!(await exists(img.volume, f))) missing.push(f);
  if (missing.length) {
    add('error', where, `the iPXE script from ${from} loads ${missing.join(', ')}, not in image \`${name}\``);
    return;
  }
  add('ok', where, `iPXE clients get a script from ${from}: ${[spec.kernel, ...spec.initrds].join(', ')} over HTTP`);
  if (t.kernel !== undefined) {
    checkCmdline(config, name, img, spec.cmdline, `${subject} cmdline`, () => `set \`cmdline\` under ${subject} in the config (nbdroot=SERVER/${config.images[name]!.export})`, add);
  }
}

/** The iPXE builds the config serves (chain-loading, UEFI HTTP boot) must be readable regular files. */
async function checkIpxeFiles(config: Config, add: (l: CheckLine['level'], s: string, m: string) => void): Promise<void> {
  if (!config.http.enabled) return;
  const wanted: Array<[string, string, boolean]> = [
    [config.http.ipxeBios, `${IPXE_FILES.bios} (BIOS PXE ROMs chain-load it)`, config.http.chainIpxe],
    [config.http.ipxeUefi, `${IPXE_FILES.uefi} (UEFI PXE ROMs chain-load it; UEFI HTTP boot loads it)`, true],
  ];
  for (const [path, what, required] of wanted) {
    try {
      const st = await fs.promises.stat(path);
      if (!st.isFile()) throw Object.assign(new Error('not a regular file'), { code: 'EISDIR' });
      await fs.promises.access(path, fs.constants.R_OK);
      add('ok', 'http', `${what}: ${path}`);
    } catch (e) {
      const why = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message;
      add(required ? 'error' : 'warn', 'http', `${what}: ${path}: ${why} (install Debian's ipxe package, or set http.${path === config.http.ipxeBios ? 'ipxeBios' : 'ipxeUefi'})`);
    }
  }
}

/** The initramfs names `auto_initramfs=1` makes the Pi firmware look for (Pi 5, Pi 4 64-bit, Pi 4 32-bit, older). */
const AUTO_INITRAMFS = ['initramfs_2712', 'initramfs8', 'initramfs7l', 'initramfs7', 'initramfs'];

/**
 * A root on NBD needs an initramfs (nbd-client attaches the disk before the root is mounted): the file that
 * config.txt loads (`initramfs FILE`, or `auto_initramfs=1`'s names) must be in the boot partition.
 */
async function checkPiInitramfs(volume: FatVolume, configTxt: string, subject: string, add: (l: CheckLine['level'], s: string, m: string) => void): Promise<void> {
  const lines = configTxt.split(/\r?\n/).map((l) => l.replace(/#.*/, '').trim()).filter(Boolean);
  const named = lines.map((l) => /^initramfs\s+(\S+)/i.exec(l)?.[1]).filter((f): f is string => f !== undefined);
  const auto = lines.some((l) => /^auto_initramfs\s*=\s*1$/i.test(l));
  if (named.length) {
    for (const f of named) {
      if (await exists(volume, f)) add('ok', subject, `config.txt loads initramfs ${f}`);
      else add('error', `${subject} config.txt`, `\`initramfs ${f}\` names a file the boot partition does not have: the kernel cannot attach its NBD root (copy it in: netbootd prep … --copy ${f})`);
    }
    return;
  }
  if (auto) {
    const present: string[] = [];
    for (const f of AUTO_INITRAMFS) if (await exists(volume, f)) present.push(f);
    if (present.length) add('ok', subject, `config.txt loads an initramfs by auto_initramfs (${present.join(', ')})`);
    else add('error', `${subject} config.txt`, `auto_initramfs=1 but none of ${AUTO_INITRAMFS.join(', ')} is in the boot partition: the kernel cannot attach its NBD root (copy the image's initramfs in under the name its model loads, e.g. --copy initrd.img:/initramfs8 for a Pi 4)`);
    return;
  }
  add('error', `${subject} config.txt`, 'loads no initramfs (no `initramfs FILE` line, no auto_initramfs=1): the kernel cannot attach its NBD root without one (add `initramfs initrd.img followkernel` and copy it in)');
}

/** A `netbootd prep` command line that makes an image's command line right for this config, copy-paste ready. */
type PrepCommand = (imageName: string, cmdlinePath: string) => string;

function prepCommand(config: Config): PrepCommand {
  let server = config.server.address;
  if (server === undefined) {
    const d = defaultServerAddress({ ...(config.dhcp.interface ? { interfaceName: config.dhcp.interface } : {}) }, os.networkInterfaces());
    if (d.ok) server = d.address;
  }
  const host = server === undefined ? null : config.nbd.port === 10809 ? server : `${server}:${config.nbd.port}`;
  return (imageName, cmdlinePath) => {
    const img = config.images[imageName]!;
    const args = [`netbootd prep ${shellWord(img.path!)} --export ${shellWord(img.export!)}`];
    args.push(host === null ? "--server THIS-SERVER'S-ADDRESS" : `--server ${host}`);
    if (img.bootPartition !== undefined) args.push(`--boot-partition ${img.bootPartition}`);
    if (cmdlinePath !== 'cmdline.txt') args.push(`--cmdline ${shellWord(cmdlinePath)}`);
    return args.join(' ');
  };
}

function shellWord(w: string): string {
  return /^[A-Za-z0-9_./:@%+=,-]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`;
}

/** Checks the kernel command line(s) of a boot loader config (a Pi cmdline.txt, PXELINUX, GRUB). */
function checkBootConfig(
  config: Config,
  imageName: string,
  img: OpenedImage,
  path: string,
  text: string,
  subject: string,
  fix: PrepCommand,
  add: (l: CheckLine['level'], s: string, m: string) => void,
): void {
  const where = `${subject} ${path}`;
  const cfg = parseBootConfig(path, text);
  if ('error' in cfg) {
    add('error', where, `${cfg.error}; the client will not boot from it`);
    return;
  }
  if (cfg.lines.length === 0) {
    add('error', where, `no kernel command line (no ${cfg.kind === 'grub' ? '`linux`' : '`APPEND`'} line); run: ${fix(imageName, path)}`);
    return;
  }
  // Entries that boot from NBD are checked; with none, the first entry shows what is missing.
  const nbd = cfg.lines.filter((l) => /(^|\s)(nbdroot=|root=\/dev\/nbd)/.test(l.args));
  for (const l of nbd.length ? nbd : cfg.lines.slice(0, 1)) {
    checkCmdline(config, imageName, img, l.args, cfg.kind === 'cmdline' ? where : `${where}:${l.line}`, () => fix(imageName, path), add);
  }
}

/** An image exported over NBD only: it must open; its content is the client's business. */
async function inspectExportOnly(name: string, img: ImageConfig, add: (l: CheckLine['level'], s: string, m: string) => void): Promise<void> {
  const subject = `image ${name}`;
  try {
    const dev = await FileBlockDevice.open(img.path!, { readOnly: true });
    add('ok', subject, `${img.path}: ${(dev.size / 2 ** 30).toFixed(2)} GiB, ${img.mode}, export \`${img.export}\` (NBD only: no Pi or host boots from its boot partition)`);
    await dev.close();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    add('error', subject, `${img.path}: ${code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (e as Error).message}`);
  }
}

async function inspectImage(
  name: string,
  img: ImageConfig,
  add: (l: CheckLine['level'], s: string, m: string) => void,
): Promise<OpenedImage | null> {
  const subject = `image ${name}`;
  let dev: FileBlockDevice;
  try {
    dev = await FileBlockDevice.open(img.path!, { readOnly: true });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    add('error', subject, `${img.path}: ${code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (e as Error).message}`);
    return null;
  }
  try {
    const { volume, location } = await openBootVolume(dev, img.bootPartition);
    for (const w of location.table.warnings) add('warn', subject, w);
    const where = location.partition ? `partition ${location.number} (${location.table.scheme.toUpperCase()})` : 'the whole image (no partition table)';
    add('ok', subject, `${img.path}: ${(dev.size / 2 ** 30).toFixed(2)} GiB, ${img.mode}, export \`${img.export}\`, boot FAT ${volume.type} in ${where}${volume.label ? ` labelled ${volume.label}` : ''}`);
    return { table: location.table, boot: location.partition, bootNumber: location.number, volume, close: () => dev.close() };
  } catch (e) {
    add('error', subject, `${img.path}: ${(e as Error).message}`);
    await dev.close();
    return null;
  }
}

function checkCmdline(
  config: Config,
  imageName: string,
  img: OpenedImage,
  text: string,
  subject: string,
  fix: () => string,
  add: (l: CheckLine['level'], s: string, m: string) => void,
): void {
  const args = splitCmdline(text);
  const image = config.images[imageName]!;
  const nbdroot = cmdlineValue(args, 'nbdroot');
  const root = cmdlineValue(args, 'root');
  if (nbdroot === undefined) {
    add('error', subject, `no nbdroot=: the client will not attach its root from this server (root=${root ?? 'unset'}); run: ${fix()}`);
    return;
  }
  const parsed = parseNbdroot(nbdroot);
  if ('error' in parsed) {
    add('error', subject, parsed.error);
    return;
  }
  let bad = false;
  if (parsed.exportName !== undefined && parsed.exportName !== image.export) {
    const other = Object.entries(config.images).find(([, i]) => i.export === parsed.exportName);
    add('error', subject, `nbdroot=${nbdroot} names export \`${parsed.exportName}\`, but this image is exported as \`${image.export}\`${other ? ` (\`${parsed.exportName}\` is image \`${other[0]}\`)` : ''}`);
    bad = true;
  }
  if (parsed.exportName === undefined) {
    add('warn', subject, `nbdroot=${nbdroot} names no export (old server,port form); write nbdroot=SERVER/${image.export}: ${fix()}`);
  }
  const port = parsed.port ?? 10809;
  if (port !== config.nbd.port) {
    add('error', subject, `nbdroot=${nbdroot} uses port ${port}, but NBD listens on ${config.nbd.port}`);
    bad = true;
  }
  if (config.server.address && parsed.server !== '' && parsed.server !== config.server.address) {
    add('warn', subject, `nbdroot=${nbdroot} names server \`${parsed.server}\`, not server.address ${config.server.address} (fine only if that name resolves to this server)`);
  }
  if (!args.some((a) => a.startsWith('ip='))) {
    add('warn', subject, 'no ip= argument: the initramfs may not configure the network before attaching NBD (add ip=dhcp)');
  }
  const dev = parseNbdDevice(root);
  if (!dev) {
    add('error', subject, `root=${root ?? '(none)'} is not an NBD device: write root=/dev/nbd0pN`);
    bad = true;
  } else if (dev.partition !== undefined) {
    const p = img.table.partitions.find((x) => x.number === dev.partition);
    if (!p) {
      add('error', subject, `root=${root}: the image has no partition ${dev.partition} (it has ${img.table.partitions.map((x) => x.number).join(', ') || 'none'})`);
      bad = true;
    } else if (p.number === img.bootNumber) {
      add('error', subject, `root=${root} is the boot (FAT) partition, not the root file system`);
      bad = true;
    }
  }
  if (bad) add('error', subject, `to fix it, run: ${fix()}`);
  else add('ok', subject, `nbdroot=${nbdroot} root=${root} match export \`${image.export}\` on port ${config.nbd.port}`);
}

/** Lowercase names at the root of a boot partition, and under config.txt's `os_prefix` directory if any. */
async function bootNames(volume: FatVolume, configTxt: string | null): Promise<Set<string>> {
  const names = new Set<string>();
  const list = async (dir: string): Promise<void> => {
    try {
      for (const e of await volume.readdir(dir)) if (!e.isDirectory) names.add(`${dir ? `${dir}/` : ''}${e.name}`.toLowerCase());
    } catch {
      /* no such directory */
    }
  };
  await list('');
  const prefix = /^\s*os_prefix\s*=\s*(\S+?)\/?\s*$/m.exec(configTxt ?? '')?.[1];
  if (prefix) await list(prefix);
  return names;
}

async function exists(volume: FatVolume, path: string): Promise<boolean> {
  try {
    const st = await volume.stat(path);
    return !st.isDirectory;
  } catch {
    return false;
  }
}

/** A small text file of a volume (a boot loader config), or null when it is missing, unreadable or huge. */
async function readText(volume: FatVolume, path: string, max = 1024 * 1024): Promise<string | null> {
  try {
    const src = await volume.open(path);
    try {
      return (await readAll(src, max)).toString('utf8');
    } finally {
      src.close();
    }
  } catch {
    return null;
  }
}

function summarize(lines: CheckLine[]): CheckReport {
  return {
    lines,
    errors: lines.filter((l) => l.level === 'error').length,
    warnings: lines.filter((l) => l.level === 'warn').length,
  };
}

export function formatReport(r: CheckReport, quiet = false): string {
  const mark = { ok: 'ok   ', hint: 'hint ', warn: 'WARN ', error: 'ERROR' } as const;
  const shown = quiet ? r.lines.filter((l) => l.level === 'warn' || l.level === 'error') : r.lines;
  const body = shown.map((l) => `${mark[l.level]} ${l.subject}: ${l.message}`).join('\n');
  const tail = r.errors ? `${r.errors} error${r.errors > 1 ? 's' : ''}, ${r.warnings} warning${r.warnings === 1 ? '' : 's'}` : `no errors, ${r.warnings} warning${r.warnings === 1 ? '' : 's'}`;
  return `${body}${body ? '\n' : ''}${tail}\n`;
}
