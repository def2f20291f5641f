/**
 * The directory tree of a FAT volume, one implementation for the reader (volume.ts) and the writer
 * (writer.ts): splitting paths, loading a directory (the fixed FAT12/16 root, or a directory's cluster
 * chain) into entries indexed by name, walking a path from the root, and the `FatStat` of an entry.
 *
 * Each caller brings its own way of walking chains (`ChainSource`): the reader its chunk-cached FAT, the
 * writer its FAT in memory. The reader caches what it loads; the writer edits the loaded bytes.
 *
 * Bounds: a path is at most 4096 characters and 64 levels deep; a directory is at most 65536 entries
 * (its chain is walked with that limit and a longer one is an error); a subdirectory starting at cluster
 * 0 is corrupt (only '..' may point at the root that way).
 */
import type { BlockDevice } from '../disk/blockdev.js';
import { CorruptError, NotFoundError, type NetbootError } from '../util/errors.js';
import { clusterOffset, type Bpb } from './bpb.js';
import { ATTR_DIRECTORY, MAX_DIR_BYTES, parseDirectory, type DirEntry } from './dir.js';
import type { Chain, ChainOptions, Extent } from './table.js';

/** The first-cluster key of the root directory (the fixed area on FAT12/16, the root chain on FAT32). */
export const ROOT = 0;
/** Paths deeper than this are refused (a directory cycle cannot make a lookup run forever anyway). */
export const MAX_PATH_DEPTH = 64;
const MAX_PATH_LENGTH = 4096;

export interface FatStat {
  /** Long name if present, else the 8.3 name as displayed (with NT lowercase bits applied). */
  name: string;
  /** 8.3 as stored, e.g. 'START4.ELF'. */
  shortName: string;
  isDirectory: boolean;
  size: number;
  mtime: Date;
  ctime?: Date;
  atime?: Date;
  attributes: number;
}

/** The stat of an entry; `undefined` stands for the root directory. */
export function statOf(e: DirEntry | undefined): FatStat {
  if (!e) {
    return { name: '', shortName: '', isDirectory: true, size: 0, mtime: new Date(Date.UTC(1980, 0, 1)), attributes: ATTR_DIRECTORY };
  }
  const s: FatStat = {
    name: e.name,
    shortName: e.shortName,
    isDirectory: e.kind === 'directory',
    size: e.size,
    mtime: e.mtime,
    attributes: e.attributes,
  };
  if (e.ctime) s.ctime = e.ctime;
  if (e.atime) s.atime = e.atime;
  return s;
}

/** Splits a path into components: '/' and '\' separate, '.' and empty parts are dropped, '..' pops (never above the root). */
export function splitPath(path: string, volume: string): string[] {
  if (typeof path !== 'string' || path.length > MAX_PATH_LENGTH) {
    throw new NotFoundError('ENAMETOOLONG', `${volume}: path is too long`);
  }
  const out: string[] = [];
  for (const part of path.split(/[/\\]+/)) {
    if (part === '' || part === '.') continue;
    if (part === '..') out.pop();
    else out.push(part);
  }
  if (out.length > MAX_PATH_DEPTH) {
    throw new NotFoundError('ENAMETOOLONG', `${volume}: path is deeper than ${MAX_PATH_DEPTH} levels`);
  }
  return out;
}

/** The absolute path of split components, for messages: '/a/b', '/' for none. */
export function pathOf(parts: readonly string[]): string {
  return `/${parts.join('/')}`;
}

/** A directory's entries and their index by upper-cased long and short name (the first entry wins). */
export interface Listing {
  readonly entries: DirEntry[];
  readonly byName: Map<string, DirEntry>;
}

export function listing(entries: DirEntry[]): Listing {
  const byName = new Map<string, DirEntry>();
  for (const e of entries) {
    if (e.kind === 'label' || e.kind === 'dot') continue;
    const long = e.name.toUpperCase();
    if (!byName.has(long)) byName.set(long, e);
    const short = e.shortName.toUpperCase();
    if (!byName.has(short)) byName.set(short, e);
  }
  return { entries, byName };
}

/** The file or directory called `name` (long or short, any case) in `dir`. */
export function findEntry(dir: Listing, name: string): DirEntry | undefined {
  return dir.byName.get(name.toUpperCase());
}

/** Parses a directory's bytes into a listing; a malformed directory is a `CorruptError` naming it. */
export function decodeDirectory(buf: Buffer, bpb: Bpb, volume: string, path: string): Listing {
  const parsed = parseDirectory(buf, { fat32: bpb.type === 'FAT32' });
  if (!parsed.ok) throw new CorruptError(parsed.error.code, `${volume}: directory ${path}: ${parsed.error.message}`);
  return listing(parsed.value);
}

/** How a directory's chain is walked (see `ChainWalk` in table.ts). */
export interface ChainSource {
  chain(start: number, opts: ChainOptions): Chain | Promise<Chain>;
}

/** A directory as loaded: its listing, its bytes, and its extents (none for the fixed FAT12/16 root). */
export interface LoadedDirectory extends Listing {
  readonly buf: Buffer;
  readonly extents: Extent[];
}

function readInto(dev: BlockDevice, buf: Buffer, at: number, len: number, pos: number): Promise<void> {
  return new Promise((resolve, reject) => dev.read(buf, at, len, pos, (e) => (e ? reject(e) : resolve())));
}

/** Reads and parses the directory whose first cluster is `first` (ROOT: the root directory). */
export async function loadDirectory(
  dev: BlockDevice, bpb: Bpb, chains: ChainSource, first: number, volume: string, path: string,
): Promise<LoadedDirectory> {
  let buf: Buffer;
  let extents: Extent[] = [];
  if (first === ROOT && bpb.type !== 'FAT32') {
    buf = Buffer.allocUnsafe(bpb.rootDirBytes);
    await readInto(dev, buf, 0, buf.length, bpb.rootDirOffset);
  } else {
    const start = first === ROOT ? bpb.rootCluster : first;
    const limit = Math.max(1, Math.floor(MAX_DIR_BYTES / bpb.clusterSize));
    const chain = await chains.chain(start, { limit, onLonger: 'error', what: `directory ${path}` });
    extents = chain.extents;
    buf = Buffer.allocUnsafe(chain.clusters * bpb.clusterSize);
    let at = 0;
    for (const e of extents) {
      const len = e.count * bpb.clusterSize;
      await readInto(dev, buf, at, len, clusterOffset(bpb, e.cluster));
      at += len;
    }
  }
  return { ...decodeDirectory(buf, bpb, volume, path), buf, extents };
}

/** The first cluster of the subdirectory `e` (at `path`); cluster 0 is corrupt. */
export function subdirectory(e: DirEntry, volume: string, path: string): number {
  if (e.firstCluster === 0) throw new CorruptError('EBADCLUSTER', `${volume}: directory ${path} starts at cluster 0`);
  return e.firstCluster;
}

export interface WalkOptions {
  /** Receives the first cluster of every directory passed (ROOT first). */
  trail?: number[];
  /** The error for a component that is not a directory (default: `NotFoundError`). */
  notDirectory?: (code: string, message: string) => NetbootError;
}

/**
 * Walks from `root` down `parts`, each of which must be a directory, and returns the last one.
 * `open(first, path)` loads (or finds cached) the directory starting at cluster `first`.
 */
export async function walkDirectories<D extends Listing>(
  root: D, parts: readonly string[], open: (first: number, path: string) => Promise<D>, volume: string, opts: WalkOptions = {},
): Promise<D> {
  let dir = root;
  opts.trail?.push(ROOT);
  let walked = '';
  for (const part of parts) {
    walked += `/${part}`;
    const e = findEntry(dir, part);
    if (!e) throw new NotFoundError('ENOENT', `${volume}: ${walked}: no such file or directory`);
    if (e.kind !== 'directory') {
      const message = `${volume}: ${walked}: not a directory`;
      throw opts.notDirectory ? opts.notDirectory('ENOTDIR', message) : new NotFoundError('ENOTDIR', message);
    }
    const first = subdirectory(e, volume, walked);
    dir = await open(first, walked);
    opts.trail?.push(first);
  }
  return dir;
}

/** Walks to the directory holding the last of `parts` (not empty) and finds that name there (undefined: absent). */
export async function resolveParent<D extends Listing>(
  root: D, parts: readonly string[], open: (first: number, path: string) => Promise<D>, volume: string, opts: WalkOptions = {},
): Promise<{ parent: D; entry: DirEntry | undefined }> {
  const parent = await walkDirectories(root, parts.slice(0, -1), open, volume, opts);
  return { parent, entry: findEntry(parent, parts[parts.length - 1]!) };
}
