/**
 * Builds FAT images for tests with the real Debian tools (mkfs.vfat, mtools) and reads them back with
 * mtools, the reference the FAT reader is compared against. Reusable by any test that needs a FAT
 * image (TFTP, CLI, ...). Every mtools call sets MTOOLS_SKIP_CHECK=1 and addresses the image with
 * `-i image` (or `-i image@@offset` for a FAT inside a bigger file).
 */
import { closeSync, mkdirSync, openSync, readSync, writeFileSync, writeSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { run } from './tools.js';

export const MTOOLS_ENV: NodeJS.ProcessEnv = { ...process.env, MTOOLS_SKIP_CHECK: '1', LC_ALL: 'C.UTF-8', TZ: 'UTC' };

/** The tools these helpers need (pass to `haveTools`). */
export const FAT_TOOLS = ['mkfs.vfat', 'mcopy', 'mmd', 'mdel', 'mdir', 'mattrib'];

export interface MkfsOptions {
  fat: 12 | 16 | 32;
  /** Logical sector size (-S), default 512. */
  sectorSize?: number;
  /** Sectors per cluster (-s). */
  clusterSectors?: number;
  /** Size of the image in KiB. */
  sizeKiB: number;
  label?: string;
  /** Root directory entries (-r, FAT12/16). */
  rootEntries?: number;
}

/** Creates `path` (must not exist) as a fresh FAT file system of `sizeKiB` KiB. */
export async function mkfsVfat(path: string, o: MkfsOptions): Promise<void> {
  const args = ['-C', '-F', String(o.fat), '-S', String(o.sectorSize ?? 512)];
  if (o.clusterSectors) args.push('-s', String(o.clusterSectors));
  if (o.label) args.push('-n', o.label);
  if (o.rootEntries) args.push('-r', String(o.rootEntries));
  args.push('-i', '12345678', path, String(o.sizeKiB));
  await run('mkfs.vfat', args, { env: MTOOLS_ENV });
}

/** `image` or `image@@offset` for mtools' -i. */
export function mtoolsTarget(image: string, offset = 0): string {
  return offset ? `${image}@@${offset}` : image;
}

async function mt(cmd: string, image: string, args: string[], offset = 0): Promise<Buffer> {
  const r = await run(cmd, ['-i', mtoolsTarget(image, offset), ...args], { env: MTOOLS_ENV });
  return r.stdout;
}

/** Copies host files (or, with recursive, folders) into `dest` (e.g. '::/dir/'). */
export async function mcopyIn(
  image: string, sources: string[], dest: string,
  opts: { recursive?: boolean; offset?: number; overwrite?: boolean } = {},
): Promise<void> {
  const args = ['-n', '-m'];
  if (opts.recursive) args.push('-s');
  if (opts.overwrite) args.push('-o');
  // mcopy takes many sources per call: one process for 2000 files, not 2000 processes.
  for (let i = 0; i < sources.length; i += 500) {
    await mt('mcopy', image, [...args, ...sources.slice(i, i + 500), dest], opts.offset);
  }
}

export async function mmd(image: string, dirs: string[], offset = 0): Promise<void> {
  await mt('mmd', image, dirs.map((d) => `::${d}`), offset);
}

export async function mdel(image: string, paths: string[], offset = 0): Promise<void> {
  for (let i = 0; i < paths.length; i += 500) await mt('mdel', image, paths.slice(i, i + 500).map((p) => `::${p}`), offset);
}

/** A file's bytes as mtools reads them. */
export async function mcopyOut(image: string, path: string, offset = 0): Promise<Buffer> {
  return mt('mcopy', image, ['-n', `::${path}`, '-'], offset);
}

/** Extracts the whole volume into `hostDir` with mtools (long names). */
export async function mcopyTree(image: string, hostDir: string, offset = 0): Promise<void> {
  mkdirSync(hostDir, { recursive: true });
  await mt('mcopy', image, ['-s', '-n', '-m', '::/', `${hostDir}/`], offset);
}

/** Sets or clears attributes, e.g. mattrib(img, ['+h', '+s', '-a'], ['/x']). */
export async function mattrib(image: string, flags: string[], paths: string[], offset = 0): Promise<void> {
  await mt('mattrib', image, [...flags, ...paths.map((p) => `::${p}`)], offset);
}

/**
 * Attributes of every file and directory as `mattrib -/ -X` prints them: path → letters among
 * 'A' (archive), 'S' (system), 'H' (hidden), 'R' (read-only), 'D' (directory).
 */
export async function mattribAll(image: string, offset = 0): Promise<Map<string, string>> {
  const out = (await mt('mattrib', image, ['-/', '-X', '::/'], offset)).toString('utf8');
  const map = new Map<string, string>();
  for (const line of out.split('\n')) {
    const m = /^([ADSHR]*) ::(.*)$/.exec(line);
    if (m && m[2] !== '/') map.set(m[2]!, [...m[1]!].sort().join(''));
  }
  return map;
}

/** The same letters for an attribute byte. */
export function attributeLetters(attr: number): string {
  let s = '';
  if (attr & 0x20) s += 'A';
  if (attr & 0x10) s += 'D';
  if (attr & 0x02) s += 'H';
  if (attr & 0x01) s += 'R';
  if (attr & 0x04) s += 'S';
  return s;
}

export interface MdirEntry {
  /** The long name, else the short name as mdir displays it (base.ext). */
  name: string;
  isDirectory: boolean;
  size: number;
  /** As printed: 'YYYY-MM-DD' and 'HH:MM'. */
  date: string;
  time: string;
}

export interface MdirListing {
  label: string;
  /** Directory path ('/', '/sub', ...) → its entries, without '.' and '..'. */
  dirs: Map<string, MdirEntry[]>;
}

const ENTRY_RE = /^(.{8}) (.{3})\s+(<DIR>|\d+)\s+(\d{4}-\d\d-\d\d)\s+(\d{1,2}:\d\d)(?: {2}(.*))? ?$/u;

/** Parses the output of `mdir -a -/ ::/` (recursive listing, hidden files included). */
export function parseMdir(out: string): MdirListing {
  const dirs = new Map<string, MdirEntry[]>();
  let label = '';
  let cur: MdirEntry[] | undefined;
  for (const line of out.split('\n')) {
    const lm = /^ Volume in drive . is (.*)$/.exec(line);
    if (lm) {
      label = lm[1]!.trim();
      continue;
    }
    if (/^ Volume in drive . has no label/.test(line)) continue;
    const dm = /^Directory for ::(.*)$/.exec(line);
    if (dm) {
      const p = dm[1]! === '' ? '/' : dm[1]!;
      cur = [];
      dirs.set(p, cur);
      continue;
    }
    const m = ENTRY_RE.exec(line);
    if (!m || !cur) continue;
    const base = m[1]!.trimEnd();
    const ext = m[2]!.trimEnd();
    const short = ext ? `${base}.${ext}` : base;
    if (short === '.' || short === '..') continue;
    cur.push({
      name: m[6] !== undefined && m[6] !== '' ? m[6] : short,
      isDirectory: m[3] === '<DIR>',
      size: m[3] === '<DIR>' ? 0 : Number(m[3]),
      date: m[4]!,
      time: m[5]!.padStart(5, '0'),
    });
  }
  return { label, dirs };
}

/** mdir's recursive listing of the whole volume. */
export async function mdirAll(image: string, offset = 0): Promise<MdirListing> {
  const out = await mt('mdir', image, ['-a', '-/', '::/'], offset);
  return parseMdir(out.toString('utf8'));
}

/** A small deterministic PRNG (xorshift32) for reproducible file contents. */
export function prng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

export function randomBytes(rand: () => number, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  let i = 0;
  for (; i + 4 <= n; i += 4) b.writeUInt32LE(rand(), i);
  for (; i < n; i++) b[i] = rand() & 0xff;
  return b;
}

/**
 * FAT32 keeps a "next free cluster" hint in its FSInfo sector, and mtools allocates from it, so freed
 * holes are not reused. Pointing the hint back at cluster 2 makes the next copy fill the holes.
 */
export function resetNextFreeHint(image: string, offset = 0): void {
  const fd = openSync(image, 'r+');
  try {
    const boot = Buffer.alloc(512);
    readSync(fd, boot, 0, 512, offset);
    const fat16Size = boot.readUInt16LE(22);
    if (fat16Size !== 0) return; // FAT12/16: no FSInfo
    const fsinfo = boot.readUInt16LE(48);
    if (fsinfo === 0 || fsinfo === 0xffff) return;
    const at = offset + fsinfo * boot.readUInt16LE(11) + 492;
    const two = Buffer.alloc(4);
    two.writeUInt32LE(2);
    writeSync(fd, two, 0, 4, at);
  } finally {
    closeSync(fd);
  }
}

function put(root: string, rel: string, data: Buffer): void {
  const p = join(root, rel);
  mkdirSync(dirname(p), { recursive: true });
  writeFileSync(p, data);
}

export interface PopulateOptions {
  /** Add a directory '/many' with this many files (e.g. 2000). */
  manyFiles?: number;
  /** Size of the fragmented file in bytes (copied after deleting every other small file). */
  fragmentedSize?: number;
  /** Cluster size in bytes, to size the small files that get deleted (one cluster + a bit each). */
  clusterSize: number;
  seed?: number;
  offset?: number;
}

/**
 * Fills a fresh FAT image with what the reader must get right: nested directories, long and non-ASCII
 * names, case variants, 0-byte files, a big directory, and a file fragmented by deleting every other
 * small file before copying it. `work` is a scratch folder on the host.
 */
export async function populate(image: string, work: string, o: PopulateOptions): Promise<void> {
  const rand = prng(o.seed ?? 0x2f6e);
  const src = join(work, 'src');
  put(src, 'start4.elf', randomBytes(rand, 3 * o.clusterSize + 17));
  put(src, 'UPPER.TXT', Buffer.from('upper case 8.3\n'));
  put(src, 'MiXeD.TxT', Buffer.from('mixed case needs a long name\n'));
  put(src, 'Ünïcødé ファイル.txt', randomBytes(rand, 1234));
  put(src, 'a rather long file name that is far beyond eight dot three.binary', randomBytes(rand, o.clusterSize));
  put(src, 'empty', Buffer.alloc(0));
  put(src, 'config.txt', Buffer.from('arm_64bit=1\nkernel=kernel8.img\n'));
  put(src, 'nested/level2/level3/deep file.dat', randomBytes(rand, 2 * o.clusterSize - 1));
  put(src, 'nested/level2/zero.bin', Buffer.alloc(0));
  put(src, 'nested/readme', Buffer.from('no extension\n'));
  put(src, 'overlays/vc4-kms-v3d.dtbo', randomBytes(rand, 2500));
  put(src, 'overlays/README', Buffer.from('overlays\n'));
  put(src, 'hidden.sys', Buffer.from('hidden, system, read-only\n'));
  put(src, 'name.with.many.dots.tar.gz', randomBytes(rand, 77));
  put(src, ' leading space', Buffer.from('a name that starts with a space\n'));
  await mcopyIn(image, ['start4.elf', 'UPPER.TXT', 'MiXeD.TxT', 'Ünïcødé ファイル.txt',
    'a rather long file name that is far beyond eight dot three.binary', 'empty', 'config.txt', 'nested', 'overlays', 'hidden.sys',
    'name.with.many.dots.tar.gz', ' leading space']
    .map((n) => join(src, n)), '::/', { recursive: true, offset: o.offset });
  await mattrib(image, ['+h', '+s', '+r'], ['/hidden.sys'], o.offset);
  await mattrib(image, ['-a'], ['/overlays/README'], o.offset);

  // Fragmentation: small files, delete every other one, then one big file fills the holes.
  const frag = join(work, 'frag');
  const smalls: string[] = [];
  for (let i = 0; i < 24; i++) {
    const name = `s${String(i).padStart(2, '0')}.bin`;
    put(frag, name, randomBytes(rand, o.clusterSize + 100));
    smalls.push(join(frag, name));
  }
  await mmd(image, ['/frag'], o.offset);
  await mcopyIn(image, smalls, '::/frag/', { offset: o.offset });
  await mdel(image, smalls.filter((_, i) => i % 2 === 0).map((p) => `/frag/${p.slice(frag.length + 1)}`), o.offset);
  resetNextFreeHint(image, o.offset ?? 0);
  put(work, 'big/fragmented.bin', randomBytes(rand, o.fragmentedSize ?? 20 * o.clusterSize + 333));
  await mcopyIn(image, [join(work, 'big/fragmented.bin')], '::/frag/', { offset: o.offset });

  if (o.manyFiles) {
    const many = join(work, 'many');
    const files: string[] = [];
    for (let i = 0; i < o.manyFiles; i++) {
      // Long names whose first six characters differ: mtools' numeric-tail search is quadratic otherwise.
      const name = i % 3 === 0 ? `${i} with a long name.txt` : `F${i}.TXT`;
      put(many, name, Buffer.from(`${i}\n`));
      files.push(join(many, name));
    }
    await mmd(image, ['/many'], o.offset);
    await mcopyIn(image, files, '::/many/', { offset: o.offset });
  }
}
