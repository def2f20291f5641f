/**
 * `netbootd prep` as a library: makes a stock Raspberry Pi OS / Ubuntu / Debian image netbootable on the
 * image file itself (no root, no loop devices):
 *
 * 1. grows the file sparsely to `size` (and fits the partition table: GPT backup moved; optionally the last
 *    partition's entry grown to the end);
 * 2. in the boot partition (found as `serve` finds it, src/fat/boot.ts): rewrites cmdline.txt for a root
 *    on NBD, copies files and directories in, removes paths, edits cloud-init `user-data`;
 * 3. adds the image, with the boot partition it edited, (and a Pi serial) to the netbootd YAML, keeping
 *    its comments.
 *
 * Every change is reported as one line; `dryRun` reports them and writes nothing (the image is opened
 * read-only). A second run with the same options changes nothing: files whose bytes would stay the same
 * are not rewritten (so their timestamps stay too).
 */
import { readFile, stat, truncate, writeFile, rename, readdir } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { isIPv6 } from 'node:net';
import { parseDocument } from 'yaml';
import { loadConfig } from '../config/load.js';
import { FileBlockDevice, flushDevice } from '../disk/blockdev.js';
import { openPartition, readPartitionTable, type PartitionTable } from '../disk/partitions.js';
import { isLinuxRootType } from '../disk/parttypes.js';
import { openBootVolume } from '../fat/boot.js';
import { checkName, type Config } from '../config/schema.js';
import { humanSize } from '../util/format.js';
import { FatVolume } from '../fat/volume.js';
import { FatWriter } from '../fat/writer.js';
import { addImage, addPi } from '../config/edit.js';
import { NetbootError, NotFoundError } from '../util/errors.js';
import { fileSource, readAll, readFully, type FileSource } from '../util/source.js';
import { existingNbdroot, rewriteBootConfig } from './cmdline.js';
import { KERNEL_CONFIGS } from '../registry/cmdline.js';
import { planGrow } from './grow.js';
import { addPackages, mergeUserData } from './userdata.js';

export class PrepError extends NetbootError {}

export interface PrepOptions {
  image: string;
  /** Grow the image file to this many bytes (rounded up to whole MiB). */
  size?: number;
  /** Also grow the last partition's entry to the new end. */
  growPartition?: boolean;
  serial?: string;
  exportName?: string;
  server?: string;
  bootPartition?: number;
  rootPartition?: number;
  /** Host files or directories to put into the boot partition: `PATH` (→ /basename) or `PATH:/dest`. */
  copy?: string[];
  /** Paths to delete from the boot partition (files or whole directories). */
  remove?: string[];
  /** The command line file in the boot partition (default cmdline.txt). */
  cmdline?: string;
  /** A cloud-init user-data file whose keys are merged into the boot partition's user-data. */
  userData?: string;
  /** Packages to add to user-data (with package_update: true). */
  packages?: string[];
  /** The netbootd YAML to add the image (and the Pi) to; created when missing. */
  config?: string;
  dryRun?: boolean;
}

export interface PrepResult {
  /** What was (or, dry run, would be) changed, one line each. */
  changes: string[];
  /** Things worth knowing that are not changes (skipped steps). */
  notes: string[];
  bootPartition: number;
  rootPartition: number;
  exportName: string;
}

const MiB = 1024 * 1024;

/** `host:port`, `[v6]:port`: a port is given (a bare IPv6 address has colons but no port). */
function hasPort(server: string): boolean {
  return /^\[.*\]:\d+$/.test(server) || (!isIPv6(server) && /:\d+$/.test(server));
}

/**
 * How the config names the image file: as it already does when that is the same file (a relative path
 * stays relative); else relative to the config's folder when the user gave a relative path (the config
 * resolves paths from its own folder), else absolute.
 */
function configImagePath(configText: string, configFile: string, name: string, image: string): string {
  const base = dirname(resolve(configFile));
  const abs = resolve(image);
  const raw = parseDocument(configText, { schema: 'failsafe' }).getIn(['images', name, 'path']);
  if (typeof raw === 'string' && resolve(base, raw) === abs) return raw;
  if (isAbsolute(image)) return abs;
  const rel = relative(base, abs);
  return rel === '' ? abs : rel;
}

/** The image's name in the config / NBD export by default: the file name without extension, tamed. */
export function defaultExportName(image: string): string {
  const base = basename(image).replace(/\.(img|raw|iso|bin)(\.\w+)?$/i, '');
  const tamed = base.replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 64);
  return tamed === '' ? 'image' : tamed;
}


/** True when two sources hold the same bytes (compared 1 MiB at a time). */
async function sameBytes(a: FileSource, b: FileSource): Promise<boolean> {
  if (a.size !== b.size) return false;
  const ba = Buffer.allocUnsafe(Math.min(MiB, Math.max(1, a.size)));
  const bb = Buffer.allocUnsafe(ba.length);
  for (let pos = 0; pos < a.size; pos += ba.length) {
    const n = Math.min(ba.length, a.size - pos);
    const [x, y] = await Promise.all([readFully(a, ba, n, pos), readFully(b, bb, n, pos)]);
    if (x !== n || y !== n || !ba.subarray(0, n).equals(bb.subarray(0, n))) return false;
  }
  return true;
}

async function readFat(vol: FatVolume, path: string): Promise<Buffer | undefined> {
  let st;
  try {
    st = await vol.stat(path);
  } catch (e) {
    if (e instanceof NotFoundError) return undefined;
    throw e;
  }
  if (st.isDirectory) throw new PrepError('EISDIR', `${path} in the boot partition is a directory`);
  if (st.size > 16 * MiB) throw new PrepError('EFBIG', `${path} in the boot partition is ${st.size} bytes: too big to edit`);
  const src = await vol.open(path);
  try {
    return await readAll(src, 16 * MiB);
  } finally {
    src.close();
  }
}

/** The boot partition the config names for this image file (an image whose path is this file), if any. */
function configuredBootPartition(cfg: Config | undefined, image: string): { name: string; number: number } | undefined {
  const abs = resolve(image);
  for (const [name, i] of Object.entries(cfg?.images ?? {})) {
    if (i.path !== undefined && resolve(i.path) === abs && i.bootPartition !== undefined) return { name, number: i.bootPartition };
  }
  return undefined;
}

/** Expands `--copy` arguments into (host file, FAT path) pairs and FAT directories to create. */
export async function expandCopies(copies: readonly string[]): Promise<{ dirs: string[]; files: Array<{ host: string; dest: string }> }> {
  const dirs: string[] = [];
  const files: Array<{ host: string; dest: string }> = [];
  for (const arg of copies) {
    const m = /^(.*?):(\/.*)$/s.exec(arg);
    const host = m ? m[1]! : arg;
    let st;
    try {
      st = await stat(host);
    } catch {
      throw new PrepError('ENOENT', `--copy ${arg}: ${host}: no such file or directory`);
    }
    const dest = m ? m[2]!.replace(/\/+$/, '') || '/' : `/${basename(resolve(host))}`;
    if (st.isDirectory()) {
      const walk = async (h: string, d: string, depth: number): Promise<void> => {
        if (depth > 32) throw new PrepError('ELOOP', `--copy ${arg}: directories nest too deep`);
        if (d !== '/') dirs.push(d);
        for (const name of (await readdir(h)).sort()) {
          const hp = join(h, name);
          const s = await stat(hp);
          const dp = d === '/' ? `/${name}` : `${d}/${name}`;
          if (s.isDirectory()) await walk(hp, dp, depth + 1);
          else if (s.isFile()) files.push({ host: hp, dest: dp });
        }
      };
      await walk(host, dest, 0);
    } else if (st.isFile()) {
      files.push({ host, dest: dest === '/' ? `/${basename(host)}` : dest });
    } else throw new PrepError('EINVAL', `--copy ${arg}: not a file or directory`);
  }
  return { dirs, files };
}

export async function prepImage(o: PrepOptions): Promise<PrepResult> {
  const changes: string[] = [];
  const notes: string[] = [];
  const img = o.image;
  let st;
  try {
    st = await stat(img);
  } catch {
    throw new PrepError('ENOENT', `${img}: no such file`);
  }
  if (!st.isFile()) throw new PrepError('EINVAL', `${img}: not a regular file`);
  if (o.userData !== undefined && o.packages !== undefined && o.packages.length > 0) {
    throw new PrepError('EINVAL', 'give --user-data or --packages, not both');
  }

  // 1. Size.
  let newSize = st.size;
  if (o.size !== undefined) {
    const want = Math.ceil(o.size / MiB) * MiB;
    if (want < st.size) throw new PrepError('EINVAL', `--size ${humanSize(o.size)} is smaller than the image (${humanSize(st.size)}); netbootd prep never shrinks`);
    newSize = want;
  }
  const copies = await expandCopies(o.copy ?? []);
  const userDataIn = o.userData !== undefined ? await readFile(o.userData, 'utf8').catch(() => {
    throw new PrepError('ENOENT', `--user-data ${o.userData}: cannot read it`);
  }) : undefined;

  const cfg = o.config !== undefined ? await loadConfig(o.config).then((l) => (l.ok ? l.config : undefined), () => undefined) : undefined;
  const before = await FileBlockDevice.open(img, { readOnly: true });
  let table: PartitionTable;
  let boot: number;
  let root: number;
  let growPlan;
  try {
    table = await readPartitionTable(before);
    if (table.scheme === 'none') throw new PrepError('EINVAL', `${img}: no partition table (prep needs a boot and a root partition)`);
    // 2. Partitions. The boot FAT is found as `serve` finds it: --boot-partition, else the one the config
    // names for this image file, else the first FAT partition.
    const configured = o.bootPartition === undefined ? configuredBootPartition(cfg, img) : undefined;
    const preferred = o.bootPartition ?? configured?.number;
    try {
      const found = await openBootVolume(before, preferred, table);
      found.volume.close();
      boot = found.location.number;
    } catch (e) {
      if (e instanceof NotFoundError && e.code === 'NO_FAT_PARTITION') throw new PrepError('ENOENT', `${img}: no FAT partition (give --boot-partition)`);
      if (e instanceof NetbootError && preferred !== undefined) {
        const from = configured ? ` (images.${configured.name}.bootPartition in ${o.config})` : '';
        throw new PrepError('EINVAL', `${img}: partition ${preferred}${from} is not a FAT partition: ${e.message}`);
      }
      throw e;
    }
    if (o.rootPartition !== undefined) {
      if (!table.partitions.some((x) => x.number === o.rootPartition && !x.extended)) throw new PrepError('EINVAL', `${img}: there is no partition ${o.rootPartition}`);
      root = o.rootPartition;
    } else {
      const others = table.partitions.filter((p) => p.number !== boot && !p.extended);
      const r = others.find(isLinuxRootType) ?? others[0];
      if (!r) throw new PrepError('ENOENT', `${img}: no root partition besides the boot partition ${boot} (give --root-partition)`);
      root = r.number;
    }
    if (newSize > st.size) {
      changes.push(`${img}: grow the file from ${humanSize(st.size)} to ${humanSize(newSize)} (sparse)`);
    }
    growPlan = await planGrow(before, table, newSize, o.growPartition ?? false);
    for (const c of growPlan.changes) changes.push(`${img}: ${c}`);
  } finally {
    await before.close();
  }

  // The FAT edits, planned on a read-only view first (that is the dry run), then applied.
  const planDev = await FileBlockDevice.open(img, { readOnly: true });
  const fatName = `${img}:${boot}`;
  let vol: FatVolume;
  const edits: Array<{ line: string; apply: (w: FatWriter) => Promise<void> }> = [];
  let exportName: string;
  try {
    vol = await FatVolume.open(openPartition(planDev, table, boot), { name: fatName });
    // cmdline.txt
    // The file holding the kernel command line: the one named, else the first boot loader config present.
    let cmdPath = `/${(o.cmdline ?? 'cmdline.txt').replace(/^\/+/, '')}`;
    let cmdOld = await readFat(vol, cmdPath);
    for (const candidate of o.cmdline === undefined && cmdOld === undefined ? KERNEL_CONFIGS.map((c) => `/${c}`) : []) {
      cmdOld = await readFat(vol, candidate);
      if (cmdOld !== undefined) {
        cmdPath = candidate;
        break;
      }
    }
    if (cmdOld === undefined) cmdPath = `/${(o.cmdline ?? 'cmdline.txt').replace(/^\/+/, '')}`;
    const prior = cmdOld ? existingNbdroot(cmdOld.toString('utf8'), cmdPath) : undefined;
    exportName = o.exportName ?? prior?.exportName ?? defaultExportName(img);
    if (checkName(exportName) !== null) {
      throw new PrepError('EINVAL', `--export ${exportName}: use letters, digits, '.', '_' or '-' (at most 64)`);
    }
    if (cmdOld === undefined) {
      if (o.cmdline !== undefined) throw new PrepError('ENOENT', `${fatName}:${cmdPath}: no such file`);
      notes.push(`${fatName}: no cmdline.txt, pxelinux.cfg/default, syslinux/extlinux or GRUB config: no command line rewritten (name the file with --cmdline)`);
    } else {
      // The server: --server, else the config's server.address, else what the command line already names;
      // the port: the one given, else the config's nbd.port (the daemon's, which the client must dial).
      let server = o.server ?? cfg?.server.address ?? prior?.server;
      if (server === undefined || server === '') throw new PrepError('EINVAL', `--server HOST is needed to write nbdroot= into ${cmdPath}`);
      if (cfg && cfg.nbd.port !== 10809 && !hasPort(server)) server = `${isIPv6(server) ? `[${server}]` : server}:${cfg.nbd.port}`;
      const text = cmdOld.toString('utf8');
      const rewritten = rewriteBootConfig(cmdPath, text, { server, exportName, rootPartition: root });
      if ('error' in rewritten) throw new PrepError('EINVAL', `${fatName}:${rewritten.error.replace(/^\/+/, '/')}`);
      const next = rewritten.text;
      if (next !== text) {
        const data = Buffer.from(next, 'utf8');
        const was = text.split('\n');
        const now = next.split('\n');
        const multi = was.filter((l) => l.trim() !== '').length > 1;
        const changed = now.map((l, i) => (l !== was[i] ? `${multi ? `line ${i + 1}: ` : ''}${(was[i] ?? '').trim()}  →  ${l.trim()}` : null)).filter((l) => l !== null);
        edits.push({ line: `${fatName}:${cmdPath}: ${changed.join(`\n${fatName}:${cmdPath}:`)}`, apply: (w) => w.writeFile(cmdPath, data) });
      }
    }
    // --remove
    for (const r of o.remove ?? []) {
      const p = `/${r.replace(/^\/+/, '')}`;
      let exists = true;
      try {
        await vol.stat(p);
      } catch (e) {
        if (!(e instanceof NotFoundError)) throw e;
        exists = false;
      }
      if (p === '/') throw new PrepError('EINVAL', '--remove /: refusing to empty the boot partition');
      if (exists) edits.push({ line: `${fatName}:${p}: remove`, apply: (w) => w.removeTree(p) });
      else notes.push(`${fatName}:${p}: not present, nothing to remove`);
    }
    // --copy
    for (const d of copies.dirs) {
      let isDir = false;
      try {
        isDir = (await vol.stat(d)).isDirectory;
      } catch (e) {
        if (!(e instanceof NotFoundError)) throw e;
      }
      if (!isDir) edits.push({ line: `${fatName}:${d}/: create directory`, apply: (w) => w.mkdir(d, { parents: true }) });
    }
    for (const f of copies.files) {
      const src = await fileSource(f.host);
      try {
        let same = false;
        try {
          const st2 = await vol.stat(f.dest);
          if (!st2.isDirectory && st2.size === src.size) {
            const cur = await vol.open(f.dest);
            try {
              same = await sameBytes(cur, src);
            } finally {
              cur.close();
            }
          }
        } catch (e) {
          if (!(e instanceof NotFoundError)) throw e;
        }
        if (!same) {
          edits.push({
            line: `${fatName}:${f.dest}: copy ${f.host} (${src.size} bytes)`,
            apply: async (w) => {
              const s = await fileSource(f.host);
              try {
                await w.writeFile(f.dest, s, { mtime: s.mtime });
              } finally {
                s.close();
              }
            },
          });
        }
      } finally {
        src.close();
      }
    }
    // user-data
    if (userDataIn !== undefined || (o.packages !== undefined && o.packages.length > 0)) {
      const old = await readFat(vol, '/user-data');
      const text = old?.toString('utf8') ?? '';
      const next = userDataIn !== undefined ? mergeUserData(text, userDataIn) : addPackages(text, o.packages!);
      if (next !== text) {
        const what = userDataIn !== undefined ? `merge ${o.userData}` : `add packages ${o.packages!.join(', ')} (package_update: true)`;
        const data = Buffer.from(next, 'utf8');
        edits.push({ line: `${fatName}:/user-data: ${old ? '' : 'create, '}${what}`, apply: (w) => w.writeFile('/user-data', data) });
      }
    }
    vol.close();
  } finally {
    await planDev.close();
  }
  for (const e of edits) changes.push(e.line);

  // Config.
  let configText: string | undefined;
  let configNew: string | undefined;
  if (o.config !== undefined) {
    configText = await readFile(o.config, 'utf8').catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return '';
      throw new PrepError('EIO', `${o.config}: ${e.message}`);
    });
    const ri = addImage(configText, o.config, exportName, {
      path: configImagePath(configText, o.config, exportName, o.image),
      bootPartition: boot,
    });
    let text = ri.text;
    if (ri.text !== configText) changes.push(`${o.config}: ${ri.summary}`);
    if (o.serial !== undefined) {
      const rp = addPi(text, o.config, o.serial, exportName);
      if (rp.text !== text) changes.push(`${o.config}: ${rp.summary}`);
      for (const w of rp.warnings) notes.push(`${o.config}: ${w}`);
      text = rp.text;
    }
    if (text !== configText) configNew = text;
  } else if (o.serial !== undefined) {
    notes.push('--serial is used with --config (it adds the Pi to the netbootd YAML): ignored');
  }

  const result: PrepResult = { changes, notes, bootPartition: boot, rootPartition: root, exportName };
  if (o.dryRun || changes.length === 0) return result;

  // Apply: file size, partition table, FAT edits, config.
  if (newSize > st.size) await truncate(img, newSize);
  const dev = await FileBlockDevice.open(img);
  try {
    await growPlan.apply(dev);
    if (edits.length > 0) {
      const t2 = await readPartitionTable(dev);
      const w = await FatWriter.open(openPartition(dev, t2, boot), { name: fatName });
      try {
        for (const e of edits) await e.apply(w);
      } finally {
        w.close();
      }
    }
    await flushDevice(dev);
  } finally {
    await dev.close();
  }
  if (configNew !== undefined && o.config !== undefined) {
    const tmp = `${o.config}.netbootd-${process.pid}.tmp`;
    await writeFile(tmp, configNew, { mode: 0o644 });
    await rename(tmp, o.config);
  }
  return result;
}
