/**
 * `netbootd check`: everything that can be known before a client boots. The config loads; every image
 * opens, has a partition table and a boot FAT; each Pi's image holds the files the Pi firmware asks
 * for; each PC's boot files exist; and the kernel command lines (cmdline.txt, pxelinux.cfg/default)
 * point their NBD root at this server, port and export — the most common way a netboot fails silently.
 */
import { FileBlockDevice } from '../disk/blockdev.js';
import { formatIssue, loadConfig } from '../config/load.js';
import type { Config, ImageConfig } from '../config/schema.js';
import type { FatVolume } from '../fat/volume.js';
import { openBootVolume } from '../fat/boot.js';
import { cmdlineValue, parseNbdDevice, parseNbdroot, splitCmdline } from './cmdline.js';
import { DEFAULT_BOOT_FILES } from './policy.js';
import type { Partition, PartitionTable } from '../disk/partitions.js';

export interface CheckLine {
  level: 'ok' | 'warn' | 'error';
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

  const opened = new Map<string, OpenedImage | null>();
  for (const [name, img] of Object.entries(config.images)) {
    opened.set(name, await inspectImage(name, img, add));
  }

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
    const missing4: string[] = [];
    for (const f of PI4_FILES) if (!(await exists(volume, f))) missing4.push(f);
    if (missing4.length) add('warn', subject, `no ${missing4.join(', ')}: a Pi 4 will not boot from it (a Pi 5 does not need them)`);
    if (!missing.length) add('ok', subject, `boots image \`${pi.image}\` (partition ${pi.partition ?? img.bootNumber})`);
    const cmdline = await readText(volume, 'cmdline.txt');
    if (cmdline !== null) checkCmdline(config, pi.image, img, cmdline.split('\n')[0] ?? '', `${subject} cmdline.txt`, add);
    await closeExtra?.();
  }

  for (const [mac, host] of Object.entries(config.hosts)) await checkPc(config, `host ${mac}`, host, opened, add);
  if (config.defaults) await checkPc(config, 'defaults', config.defaults, opened, add);

  for (const img of opened.values()) await img?.close();
  return summarize(lines);
}

async function checkPc(
  config: Config,
  subject: string,
  t: { image?: string; tftpRoot?: string; bootFile?: Config['hosts'][string]['bootFile'] },
  opened: Map<string, OpenedImage | null>,
  add: (l: CheckLine['level'], s: string, m: string) => void,
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
  const files = new Set<string>();
  if (typeof t.bootFile === 'string') files.add(t.bootFile);
  else if (t.bootFile === undefined) Object.values(DEFAULT_BOOT_FILES).forEach((f) => files.add(f));
  else Object.entries(t.bootFile).forEach(([k, f]) => k !== 'http' && f && !/^[a-z]+:\/\//i.test(f) && files.add(f));
  {
    const missing: string[] = [];
    for (const f of files) if (!(await exists(img.volume, f))) missing.push(f);
    if (missing.length) add(t.bootFile === undefined ? 'warn' : 'error', subject, `boot file${missing.length > 1 ? 's' : ''} ${missing.join(', ')} not in image \`${name}\``);
    else add('ok', subject, `boots image \`${name}\` (${[...files].join(', ')})`);
    const cfg = await readText(img.volume, 'pxelinux.cfg/default');
    if (cfg !== null) {
      for (const line of cfg.split('\n')) {
        const m = /^\s*append\s+(.*)$/i.exec(line);
        if (m && /nbdroot=|root=\/dev\/nbd/.test(m[1]!)) checkCmdline(config, name, img, m[1]!, `${subject} pxelinux.cfg/default`, add);
      }
    }
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
  add: (l: CheckLine['level'], s: string, m: string) => void,
): void {
  const args = splitCmdline(text);
  const image = config.images[imageName]!;
  const nbdroot = cmdlineValue(args, 'nbdroot');
  const root = cmdlineValue(args, 'root');
  if (nbdroot === undefined) {
    add('error', subject, `no nbdroot=: the client will not attach its root from this server (root=${root ?? 'unset'}); run: netbootd prep ${image.path} --export ${image.export}${config.server.address ? ` --server ${config.server.address}` : ''}`);
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
    add('warn', subject, `nbdroot=${nbdroot} names no export (old server,port form); write nbdroot=SERVER/${image.export}`);
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
  if (!bad) add('ok', subject, `nbdroot=${nbdroot} root=${root} match export \`${image.export}\` on port ${config.nbd.port}`);
}

async function exists(volume: FatVolume, path: string): Promise<boolean> {
  try {
    const st = await volume.stat(path);
    return !st.isDirectory;
  } catch {
    return false;
  }
}

async function readText(volume: FatVolume, path: string, max = 64 * 1024): Promise<string | null> {
  try {
    const src = await volume.open(path);
    const len = Math.min(src.size, max);
    const buf = Buffer.alloc(len);
    let got = 0;
    while (got < len) {
      const n = await new Promise<number>((res, rej) => src.read(buf, got, len - got, got, (e, k) => (e ? rej(e) : res(k))));
      if (n === 0) break;
      got += n;
    }
    src.close();
    return buf.subarray(0, got).toString('utf8');
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
  const mark = { ok: 'ok   ', warn: 'WARN ', error: 'ERROR' } as const;
  const shown = quiet ? r.lines.filter((l) => l.level !== 'ok') : r.lines;
  const body = shown.map((l) => `${mark[l.level]} ${l.subject}: ${l.message}`).join('\n');
  const tail = r.errors ? `${r.errors} error${r.errors > 1 ? 's' : ''}, ${r.warnings} warning${r.warnings === 1 ? '' : 's'}` : `no errors, ${r.warnings} warning${r.warnings === 1 ? '' : 's'}`;
  return `${body}${body ? '\n' : ''}${tail}\n`;
}
