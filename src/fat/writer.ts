/**
 * Writing FAT12/16/32 volumes: create, overwrite, write in place (grow), truncate, rename and delete files;
 * create and remove (empty) directories. Every byte goes through the `BlockDevice`, so its `written`
 * events reach every `FatVolume` (and TFTP) over the same device.
 *
 * What it reuses from the reader: the BPB codec (bpb.ts), the directory codec (dir.ts: entries, long names,
 * checksum) and the FAT entry codec (table.ts).
 *
 * - The FAT in use is held in memory while the writer is open (a boot partition's FAT is small; a 16 GiB
 *   FAT32 volume of 4 KiB clusters has a 16 MiB FAT) and written back, range by range, to every FAT copy
 *   (only the active one when FAT32 mirroring is off). FSInfo's free count (recomputed at open, so it is
 *   always right) and next-free hint are updated after each operation; allocation is first-fit from that
 *   hint (FAT12/16: from an in-memory hint starting at cluster 2).
 * - Crash order: data clusters first, then the FAT chain, then the directory entry. Removing is the other
 *   way round: the entry is deleted first, then its clusters are freed. A crash leaves at worst lost
 *   clusters (which `fsck.fat` reclaims), never an entry pointing at unwritten or free clusters.
 * - Overwriting a whole file (`writeFile`) writes the new contents into newly allocated clusters, switches
 *   the entry over, then frees the old chain: it needs room for both (ENOSPC otherwise, nothing changed).
 * - ENOSPC (no free cluster, the fixed FAT12/16 root directory full, a directory at 65536 entries) is a
 *   `FatWriteError` with code `ENOSPC`, raised before anything is written: the in-memory FAT is rolled
 *   back, the volume is left as it was.
 * - Names: VFAT long names with a `~N` short name unique in the directory; NT lowercase bits for names
 *   that fit 8.3 in one case per part (see names.ts). Timestamps are stored from the UTC fields, as the
 *   reader decodes them.
 * - The writer assumes no one else writes the FAT while an operation runs; a write to the FAT by someone
 *   else between operations is noticed (the `written` event) and the FAT is reloaded before the next one.
 *   Operations are serialized.
 */
import { readAt, writeAt, flushDevice, type BlockDevice } from '../disk/blockdev.js';
import { CorruptError, NetbootError, NotFoundError, IoError } from '../util/errors.js';
import type { FileSource } from '../util/source.js';
import { readBootSector, type Bpb, type FatType } from './bpb.js';
import {
  ATTR_ARCHIVE, ATTR_DIRECTORY, ATTR_LONG_NAME, DIR_ENTRY_SIZE, MAX_DIR_BYTES, parseDirectory, shortNameChecksum, type DirEntry,
} from './dir.js';
import { checkLongName, encodeTimestamp, longNameEntries, makeShortName, shortKey } from './names.js';
import { endOfChain, fatEntry, isBadCluster, isEndOfChain, setFatEntry } from './table.js';

/** A write that cannot be done: ENOSPC, EEXIST, ENOTEMPTY, EISDIR, ENOTDIR, EINVAL, EBUSY. */
export class FatWriteError extends NetbootError {}

/** The largest FAT the writer holds in memory. */
export const MAX_FAT_BYTES = 256 * 1024 * 1024;
const IO_CHUNK = 4 * 1024 * 1024;
const MAX_PATH_DEPTH = 64;
const ROOT = 0;

interface Dir {
  /** ROOT for the root directory, else its first cluster. */
  first: number;
  /** The directory's clusters; empty for the fixed FAT12/16 root. */
  clusters: number[];
  buf: Buffer;
  entries: DirEntry[];
  path: string;
}

export interface WriteOptions {
  /** Modification time to store (default: now). */
  mtime?: Date;
}

export interface FatUsage {
  clusterSize: number;
  clusters: number;
  freeClusters: number;
}

/** Splits a path; '.' and empty parts dropped, '..' pops. */
function components(path: string): string[] {
  if (typeof path !== 'string' || path.length > 4096) throw new NotFoundError('ENAMETOOLONG', 'path is too long');
  const out: string[] = [];
  for (const part of path.split(/[/\\]+/)) {
    if (part === '' || part === '.') continue;
    if (part === '..') out.pop();
    else out.push(part);
  }
  if (out.length > MAX_PATH_DEPTH) throw new NotFoundError('ENAMETOOLONG', `path is deeper than ${MAX_PATH_DEPTH} levels`);
  return out;
}

export class FatWriter {
  readonly type: FatType;
  private fat!: Buffer;
  private usedBytes: number;
  /** Byte range of `fat` changed since the last commit. */
  private dirtyLo = Infinity;
  private dirtyHi = -Infinity;
  /** In-memory FAT changes since the last commit: [cluster, old value], for rollback. */
  private journal: Array<[number, number]> = [];
  private freeCount = 0;
  private nextFree = 2;
  private saved = { freeCount: 0, nextFree: 2 };
  private stale = false;
  private writing = 0;
  private queue: Promise<unknown> = Promise.resolve();
  private unsubscribe: (() => void) | undefined;

  private constructor(
    private readonly dev: BlockDevice,
    readonly bpb: Bpb,
    readonly name: string,
    /** FAT32 ExtFlags bit 7: only the active FAT is used (no mirroring). */
    private readonly mirrorOff: boolean,
    /** Byte offset of the FSInfo sector, or -1. */
    private readonly fsinfoOffset: number,
  ) {
    this.type = bpb.type;
    const n = bpb.maxCluster + 1;
    this.usedBytes = Math.min(bpb.fatBytes, bpb.type === 'FAT12' ? Math.ceil((n * 3) / 2) + 1 : bpb.type === 'FAT16' ? n * 2 : n * 4);
    const fatLo = bpb.reservedSectors * bpb.bytesPerSector;
    const fatHi = fatLo + bpb.numFats * bpb.fatBytes;
    this.unsubscribe = dev.onWritten((off, len) => {
      if (this.writing === 0 && off < fatHi && off + len > fatLo) this.stale = true;
    });
  }

  /** Opens the FAT volume on `dev` for writing; rejects with ParseError/CorruptError like `FatVolume.open`. */
  static async open(dev: BlockDevice, opts: { name?: string } = {}): Promise<FatWriter> {
    const name = opts.name ?? dev.name;
    if (dev.readOnly) throw new IoError('EPERM', `${name}: opened read-only`);
    const { bpb, boot } = await readBootSector(dev, name);
    let mirrorOff = false;
    let fsinfoOffset = -1;
    let hint = 2;
    if (bpb.type === 'FAT32') {
      mirrorOff = (boot.readUInt16LE(40) & 0x80) !== 0;
      const sector = boot.readUInt16LE(48);
      if (sector !== 0 && sector !== 0xffff && sector < bpb.reservedSectors) {
        const at = sector * bpb.bytesPerSector;
        const fi = await readAt(dev, at, 512);
        if (fi.readUInt32LE(0) === 0x41615252 && fi.readUInt32LE(484) === 0x61417272 && fi.readUInt32LE(508) === 0xaa550000) {
          fsinfoOffset = at;
          hint = fi.readUInt32LE(492);
        }
      }
    }
    const w = new FatWriter(dev, bpb, name, mirrorOff, fsinfoOffset);
    if (hint >= 2 && hint <= bpb.maxCluster) w.nextFree = hint;
    await w.loadFat();
    return w;
  }

  private async loadFat(): Promise<void> {
    if (this.usedBytes > MAX_FAT_BYTES) {
      throw new FatWriteError('EFBIG', `${this.name}: the FAT is ${this.usedBytes} bytes, more than the ${MAX_FAT_BYTES} the writer holds`);
    }
    this.fat = await readAt(this.dev, this.bpb.fatOffset, this.usedBytes);
    let free = 0;
    for (let c = 2; c <= this.bpb.maxCluster; c++) if (this.get(c) === 0) free++;
    this.freeCount = free;
    this.stale = false;
    this.journal = [];
    this.dirtyLo = Infinity;
    this.dirtyHi = -Infinity;
    if (this.nextFree < 2 || this.nextFree > this.bpb.maxCluster) this.nextFree = 2;
  }

  /** Stops listening to the device. */
  close(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  get usage(): FatUsage {
    return { clusterSize: this.bpb.clusterSize, clusters: this.bpb.clusterCount, freeClusters: this.freeCount };
  }

  /** Runs one operation at a time; reloads the FAT first if someone else wrote it. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = async (): Promise<T> => {
      if (this.stale) await this.loadFat();
      this.saved = { freeCount: this.freeCount, nextFree: this.nextFree };
      try {
        return await fn();
      } catch (e) {
        this.rollback();
        throw e;
      }
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }

  // -------------------------------------------------------------------------------------------------------
  // FAT in memory

  private get(cluster: number): number {
    return fatEntry(this.type, this.fat, cluster);
  }

  private set(cluster: number, value: number): void {
    this.journal.push([cluster, this.get(cluster)]);
    setFatEntry(this.type, this.fat, cluster, value);
    const lo = this.type === 'FAT12' ? cluster + (cluster >>> 1) : this.type === 'FAT16' ? cluster * 2 : cluster * 4;
    const hi = lo + (this.type === 'FAT32' ? 4 : 2);
    this.dirtyLo = Math.min(this.dirtyLo, lo);
    this.dirtyHi = Math.max(this.dirtyHi, Math.min(hi, this.usedBytes));
  }

  /** Undoes the uncommitted in-memory FAT changes (nothing of them reached the device). */
  private rollback(): void {
    for (let i = this.journal.length - 1; i >= 0; i--) {
      const [c, old] = this.journal[i]!;
      setFatEntry(this.type, this.fat, c, old);
    }
    if (this.journal.length > 0) {
      this.freeCount = this.saved.freeCount;
      this.nextFree = this.saved.nextFree;
    }
    this.journal = [];
    this.dirtyLo = Infinity;
    this.dirtyHi = -Infinity;
  }

  /** Writes the changed range of the FAT to every FAT copy. */
  private async commitFat(): Promise<void> {
    if (this.dirtyHi <= this.dirtyLo) {
      this.journal = [];
      return;
    }
    const bpb = this.bpb;
    // Whole sectors, so that the write is what a disk does atomically.
    const ss = bpb.bytesPerSector;
    const lo = Math.floor(this.dirtyLo / ss) * ss;
    const hi = Math.min(this.usedBytes, Math.ceil(this.dirtyHi / ss) * ss);
    const slice = this.fat.subarray(lo, hi);
    const first = bpb.reservedSectors * ss;
    const copies = this.mirrorOff ? [bpb.activeFat] : Array.from({ length: bpb.numFats }, (_, i) => i);
    for (const i of copies) await this.put(first + i * bpb.fatBytes + lo, slice);
    this.journal = [];
    this.dirtyLo = Infinity;
    this.dirtyHi = -Infinity;
    this.saved = { freeCount: this.freeCount, nextFree: this.nextFree };
  }

  private async writeFsInfo(): Promise<void> {
    if (this.fsinfoOffset < 0) return;
    const b = Buffer.alloc(8);
    b.writeUInt32LE(this.freeCount, 0);
    b.writeUInt32LE(this.nextFree, 4);
    await this.put(this.fsinfoOffset + 488, b);
  }

  private async put(pos: number, data: Buffer): Promise<void> {
    this.writing++;
    try {
      await writeAt(this.dev, pos, data);
    } finally {
      this.writing--;
    }
  }

  /** Allocates `n` clusters first-fit from the hint and chains them (in memory only). */
  private allocate(n: number): number[] {
    if (n === 0) return [];
    if (n > this.freeCount) {
      const have = this.freeCount * this.bpb.clusterSize;
      throw new FatWriteError('ENOSPC', `${this.name}: no space left: need ${n} clusters (${n * this.bpb.clusterSize} bytes), ${this.freeCount} free (${have} bytes)`);
    }
    const max = this.bpb.maxCluster;
    const out: number[] = [];
    let c = this.nextFree;
    for (let scanned = 0; out.length < n && scanned <= max; scanned++) {
      if (c > max) c = 2;
      if (this.get(c) === 0) out.push(c);
      c++;
    }
    if (out.length < n) throw new CorruptError('EBADFAT', `${this.name}: the FAT has fewer free clusters than counted`);
    const eoc = endOfChain(this.type);
    for (let i = 0; i < n; i++) this.set(out[i]!, i + 1 < n ? out[i + 1]! : eoc);
    this.freeCount -= n;
    this.nextFree = out[n - 1]! + 1 > max ? 2 : out[n - 1]! + 1;
    return out;
  }

  /** Marks clusters free (in memory). */
  private release(clusters: readonly number[]): void {
    for (const c of clusters) this.set(c, 0);
    this.freeCount += clusters.length;
  }

  /** The chain from `start` as cluster numbers, at most `limit` (checked: range, free links, loops). */
  private chain(start: number, limit: number, what: string, longer: 'stop' | 'error' = 'stop'): number[] {
    const max = this.bpb.maxCluster;
    if (start < 2 || start > max) throw new CorruptError('EBADCLUSTER', `${this.name}: ${what} starts at cluster ${start}, outside 2..${max}`);
    const out = [start];
    let cur = start;
    const bound = Math.min(limit, this.bpb.clusterCount);
    for (;;) {
      const next = this.get(cur);
      if (isEndOfChain(this.type, next)) break;
      if (next < 2 || next > max || isBadCluster(this.type, next)) {
        throw new CorruptError('EBADCHAIN', `${this.name}: ${what}: cluster ${cur} links to ${next === 0 ? 'a free cluster' : `bad value ${next}`}`);
      }
      if (out.length >= bound) {
        if (longer === 'stop') break;
        throw new CorruptError('ELOOP', `${this.name}: ${what}: chain is longer than ${bound} clusters (a loop?)`);
      }
      out.push(next);
      cur = next;
    }
    if (new Set(out).size !== out.length) throw new CorruptError('ELOOP', `${this.name}: ${what}: cluster chain loops`);
    return out;
  }

  /** A file's whole chain (for freeing): every cluster up to the end mark, bounded by the volume. */
  private fileChain(e: DirEntry, what: string): number[] {
    if (e.firstCluster === 0) return [];
    return this.chain(e.firstCluster, this.bpb.clusterCount, what, 'error');
  }

  private clusterOffset(c: number): number {
    return this.bpb.dataOffset + (c - 2) * this.bpb.clusterSize;
  }

  // -------------------------------------------------------------------------------------------------------
  // Directories

  private async loadDir(first: number, path: string): Promise<Dir> {
    const bpb = this.bpb;
    let buf: Buffer;
    let clusters: number[] = [];
    if (first === ROOT && bpb.type !== 'FAT32') {
      buf = await readAt(this.dev, bpb.rootDirOffset, bpb.rootDirBytes);
    } else {
      const start = first === ROOT ? bpb.rootCluster : first;
      clusters = this.chain(start, Math.max(1, Math.floor(MAX_DIR_BYTES / bpb.clusterSize)), `directory ${path}`, 'error');
      buf = Buffer.allocUnsafe(clusters.length * bpb.clusterSize);
      for (let i = 0; i < clusters.length; i++) {
        await new Promise<void>((res, rej) =>
          this.dev.read(buf, i * bpb.clusterSize, bpb.clusterSize, this.clusterOffset(clusters[i]!), (e) => (e ? rej(e) : res())),
        );
      }
    }
    const entries = this.parse(buf, path);
    return { first, clusters, buf, entries, path };
  }

  private parse(buf: Buffer, path: string): DirEntry[] {
    const parsed = parseDirectory(buf, { fat32: this.type === 'FAT32' });
    if (!parsed.ok) throw new CorruptError(parsed.error.code, `${this.name}: directory ${path}: ${parsed.error.message}`);
    return parsed.value;
  }

  private find(dir: Dir, name: string): DirEntry | undefined {
    const key = name.toUpperCase();
    for (const e of dir.entries) {
      if (e.kind !== 'file' && e.kind !== 'directory') continue;
      if (e.name.toUpperCase() === key || e.shortName.toUpperCase() === key) return e;
    }
    return undefined;
  }

  /** Resolves the directory holding the last component of `path`; `parts` are the path's components. */
  private async walk(parts: string[], trail?: number[]): Promise<Dir> {
    let dir = await this.loadDir(ROOT, '/');
    trail?.push(ROOT);
    let walked = '';
    for (const part of parts) {
      walked += `/${part}`;
      const e = this.find(dir, part);
      if (!e) throw new NotFoundError('ENOENT', `${this.name}: ${walked}: no such file or directory`);
      if (e.kind !== 'directory') throw new FatWriteError('ENOTDIR', `${this.name}: ${walked}: not a directory`);
      if (e.firstCluster === 0) throw new CorruptError('EBADCLUSTER', `${this.name}: directory ${walked} starts at cluster 0`);
      dir = await this.loadDir(e.firstCluster, walked);
      trail?.push(e.firstCluster);
    }
    return dir;
  }

  private async parentOf(path: string): Promise<{ dir: Dir; name: string; parts: string[] }> {
    const parts = components(path);
    if (parts.length === 0) throw new FatWriteError('EINVAL', `${this.name}: the root directory cannot be ${'changed this way'}`);
    const name = parts[parts.length - 1]!;
    const dir = await this.walk(parts.slice(0, -1));
    return { dir, name, parts };
  }

  /** Device offset of directory entry `i`. */
  private entryOffset(dir: Dir, i: number): number {
    const byte = i * DIR_ENTRY_SIZE;
    if (dir.clusters.length === 0) return this.bpb.rootDirOffset + byte;
    const cs = this.bpb.clusterSize;
    return this.clusterOffset(dir.clusters[Math.floor(byte / cs)]!) + (byte % cs);
  }

  /** Writes entries [from, to) of `dir.buf` to the device (split at cluster boundaries). */
  private async flushEntries(dir: Dir, from: number, to: number): Promise<void> {
    const per = dir.clusters.length === 0 ? Infinity : this.bpb.clusterSize / DIR_ENTRY_SIZE;
    let i = from;
    while (i < to) {
      const end = Math.min(to, per === Infinity ? to : (Math.floor(i / per) + 1) * per);
      await this.put(this.entryOffset(dir, i), dir.buf.subarray(i * DIR_ENTRY_SIZE, end * DIR_ENTRY_SIZE));
      i = end;
    }
  }

  /** The index of the first of the long-name entries that belong to the 8.3 entry `e`. */
  private runStart(dir: Dir, e: DirEntry): number {
    const sum = shortNameChecksum(dir.buf, e.index * DIR_ENTRY_SIZE);
    let i = e.index;
    while (i > 0) {
      const off = (i - 1) * DIR_ENTRY_SIZE;
      const b = dir.buf;
      if (b[off] === 0xe5 || b[off] === 0 || (b[off + 11]! & 0x3f) !== ATTR_LONG_NAME || b[off + 13] !== sum) break;
      i--;
      if (b[off]! & 0x40) break; // the first (highest) part of the run
    }
    return i;
  }

  /** Marks an entry and its long name deleted and writes them. */
  private async deleteEntry(dir: Dir, e: DirEntry): Promise<void> {
    const from = this.runStart(dir, e);
    for (let i = from; i <= e.index; i++) dir.buf[i * DIR_ENTRY_SIZE] = 0xe5;
    await this.flushEntries(dir, from, e.index + 1);
    dir.entries = dir.entries.filter((x) => x !== e);
  }

  /** A run of `n` free slots, or -1. */
  private freeRun(dir: Dir, n: number): number {
    const count = dir.buf.length / DIR_ENTRY_SIZE;
    let run = 0;
    for (let i = 0; i < count; i++) {
      const b = dir.buf[i * DIR_ENTRY_SIZE]!;
      if (b === 0xe5 || b === 0) {
        run++;
        if (run === n) return i - n + 1;
      } else run = 0;
    }
    return -1;
  }

  /**
   * Prepares a place for `n` entries: finds free slots or grows the directory by zeroed clusters (written
   * now, chained in memory; the caller commits the FAT before writing the entries). Returns the index.
   */
  private async reserveSlots(dir: Dir, n: number): Promise<number> {
    const at = this.freeRun(dir, n);
    if (at >= 0) return at;
    if (dir.clusters.length === 0) {
      throw new FatWriteError('ENOSPC', `${this.name}: the root directory is full (${this.bpb.rootEntries} entries on ${this.type}); use a subdirectory or shorter names`);
    }
    const cs = this.bpb.clusterSize;
    // Trailing free slots of the last cluster count towards the run.
    const count = dir.buf.length / DIR_ENTRY_SIZE;
    let tail = 0;
    while (tail < count && [0, 0xe5].includes(dir.buf[(count - 1 - tail) * DIR_ENTRY_SIZE]!)) tail++;
    const moreEntries = n - tail;
    const more = Math.ceil((moreEntries * DIR_ENTRY_SIZE) / cs);
    if ((dir.clusters.length + more) * cs > MAX_DIR_BYTES) {
      throw new FatWriteError('ENOSPC', `${this.name}: directory ${dir.path} is full (65536 entries)`);
    }
    const added = this.allocate(more);
    const zero = Buffer.alloc(cs);
    for (const c of added) await this.put(this.clusterOffset(c), zero);
    this.set(dir.clusters[dir.clusters.length - 1]!, added[0]!);
    dir.clusters.push(...added);
    dir.buf = Buffer.concat([dir.buf, Buffer.alloc(more * cs)]);
    return count - tail;
  }

  /**
   * Builds the entries of `name` (long name + 8.3) with `shortEntry` filling bytes 11..31 of the 8.3
   * entry, reserves slots, and returns a function that writes them (call it after committing the FAT).
   */
  private async prepareEntry(dir: Dir, name: string, fill: (e: Buffer) => void): Promise<{ write: () => Promise<void> }> {
    const bad = checkLongName(name);
    if (bad) throw new FatWriteError('EINVAL', `${this.name}: ${bad}`);
    const taken = new Set<string>();
    for (const e of dir.entries) taken.add(shortKey(dir.buf.subarray(e.index * DIR_ENTRY_SIZE, e.index * DIR_ENTRY_SIZE + 11)));
    const sn = makeShortName(name, taken);
    const lfn = sn.needsLongName ? longNameEntries(name, sn.raw) : Buffer.alloc(0);
    const entry = Buffer.alloc(DIR_ENTRY_SIZE);
    sn.raw.copy(entry, 0);
    fill(entry);
    entry[12] = sn.ntCase;
    const n = lfn.length / DIR_ENTRY_SIZE + 1;
    const at = await this.reserveSlots(dir, n);
    return {
      write: async () => {
        lfn.copy(dir.buf, at * DIR_ENTRY_SIZE);
        entry.copy(dir.buf, (at + n - 1) * DIR_ENTRY_SIZE);
        await this.flushEntries(dir, at, at + n);
        dir.entries = this.parse(dir.buf, dir.path);
      },
    };
  }

  private stamp(e: Buffer, when: Date, created: boolean): void {
    const t = encodeTimestamp(when);
    if (created) {
      e[13] = t.centis;
      e.writeUInt16LE(t.time, 14);
      e.writeUInt16LE(t.date, 16);
    }
    e.writeUInt16LE(t.date, 18);
    e.writeUInt16LE(t.time, 22);
    e.writeUInt16LE(t.date, 24);
  }

  private setCluster(e: Buffer, off: number, cluster: number): void {
    e.writeUInt16LE(this.type === 'FAT32' ? cluster >>> 16 : 0, off + 20);
    e.writeUInt16LE(cluster & 0xffff, off + 26);
  }

  // -------------------------------------------------------------------------------------------------------
  // Data

  /**
   * Writes `src` (size bytes) into `clusters` from the start; the tail of the last cluster is zeroed.
   * Two buffers: the next piece is read from the source while the previous one is being written.
   */
  private async writeData(clusters: readonly number[], src: FileSource): Promise<void> {
    const cs = this.bpb.clusterSize;
    const per = Math.max(1, Math.floor(IO_CHUNK / cs));
    const len = Math.min(per, clusters.length) * cs;
    const bufs = [Buffer.allocUnsafe(len), Buffer.allocUnsafe(len)];
    let pending: Promise<void> = Promise.resolve();
    let i = 0;
    let k = 0;
    try {
      while (i < clusters.length) {
        // A run of contiguous clusters, at most one buffer long.
        let n = 1;
        while (i + n < clusters.length && n < per && clusters[i + n] === clusters[i]! + n) n++;
        const buf = bufs[k++ & 1]!;
        const pos = i * cs;
        const want = Math.min(n * cs, Math.max(0, src.size - pos));
        let got = 0;
        while (got < want) {
          const r = await new Promise<number>((res, rej) => src.read(buf, got, want - got, pos + got, (e, m) => (e ? rej(e) : res(m))));
          if (r === 0) break;
          got += r;
        }
        if (got < want) throw new IoError('EIO', `${this.name}: the source ended after ${pos + got} of ${src.size} bytes`);
        buf.fill(0, got, n * cs);
        await pending; // the other buffer is free again once its write is done
        pending = this.put(this.clusterOffset(clusters[i]!), buf.subarray(0, n * cs));
        i += n;
      }
    } finally {
      await pending.catch(() => undefined);
    }
    await pending;
  }

  /** Writes `data` at byte `pos` of the file whose clusters are `clusters` (the range must be inside). */
  private async writeRange(clusters: readonly number[], pos: number, data: Buffer): Promise<void> {
    const cs = this.bpb.clusterSize;
    let done = 0;
    while (done < data.length) {
      const p = pos + done;
      const ci = Math.floor(p / cs);
      const within = p % cs;
      let n = Math.min(data.length - done, cs - within);
      // Extend over contiguous clusters.
      let k = ci;
      while (done + n < data.length && k + 1 < clusters.length && clusters[k + 1] === clusters[k]! + 1 && n < IO_CHUNK) {
        k++;
        n = Math.min(data.length - done, (k - ci + 1) * cs - within);
      }
      await this.put(this.clusterOffset(clusters[ci]!) + within, data.subarray(done, done + n));
      done += n;
    }
  }

  /** Zeroes [from, to) of the file whose clusters are `clusters`, in bounded pieces. */
  private async zeroRange(clusters: readonly number[], from: number, to: number): Promise<void> {
    const zero = Buffer.alloc(Math.min(IO_CHUNK, Math.max(0, to - from)));
    for (let p = from; p < to; p += zero.length) await this.writeRange(clusters, p, zero.subarray(0, Math.min(zero.length, to - p)));
  }

  private toSource(data: Buffer | FileSource): FileSource {
    if (Buffer.isBuffer(data)) {
      return {
        size: data.length,
        read: (buf, off, len, pos, cb) => {
          const n = Math.max(0, Math.min(len, data.length - pos));
          data.copy(buf, off, pos, pos + n);
          process.nextTick(cb, null, n);
        },
        close: () => undefined,
      };
    }
    return data;
  }

  // -------------------------------------------------------------------------------------------------------
  // Operations

  /** Creates or replaces a file with `data` (a Buffer, or a FileSource streamed through 1 MiB). */
  writeFile(path: string, data: Buffer | FileSource, opts: WriteOptions = {}): Promise<void> {
    return this.serial(async () => {
      const src = this.toSource(data);
      const { dir, name, parts } = await this.parentOf(path);
      const old = this.find(dir, name);
      const p = `/${parts.join('/')}`;
      if (old && old.kind === 'directory') throw new FatWriteError('EISDIR', `${this.name}: ${p}: is a directory`);
      if (src.size > 0xffffffff) throw new FatWriteError('EFBIG', `${this.name}: ${p}: ${src.size} bytes is more than FAT's 4 GiB - 1`);
      const oldChain = old ? this.fileChain(old, p) : [];
      const n = Math.ceil(src.size / this.bpb.clusterSize);
      const clusters = this.allocate(n);
      const when = opts.mtime ?? new Date();
      let entryWrite: (() => Promise<void>) | undefined;
      if (!old) {
        const prepared = await this.prepareEntry(dir, name, (e) => {
          e[11] = ATTR_ARCHIVE;
          this.setCluster(e, 0, clusters[0] ?? 0);
          e.writeUInt32LE(src.size, 28);
          this.stamp(e, when, true);
        });
        entryWrite = prepared.write;
      }
      await this.writeData(clusters, src);
      await this.commitFat();
      if (old) {
        const e = dir.buf.subarray(old.index * DIR_ENTRY_SIZE, (old.index + 1) * DIR_ENTRY_SIZE);
        e[11] = e[11]! | ATTR_ARCHIVE;
        this.setCluster(e, 0, clusters[0] ?? 0);
        e.writeUInt32LE(src.size, 28);
        this.stamp(e, when, false);
        await this.flushEntries(dir, old.index, old.index + 1);
        this.release(oldChain);
        await this.commitFat();
      } else {
        await entryWrite!();
      }
      await this.writeFsInfo();
    });
  }

  /**
   * Writes `data` at byte `position` of an existing file, in place; the file grows as needed (a gap
   * between the old end and `position` reads as zeros). New clusters are written before they are chained.
   */
  write(path: string, position: number, data: Buffer, opts: WriteOptions = {}): Promise<void> {
    return this.serial(async () => {
      if (!Number.isSafeInteger(position) || position < 0) throw new FatWriteError('EINVAL', `${this.name}: bad position ${position}`);
      await this.resize(path, position, data, opts);
    });
  }

  /** Sets a file's size: shrinking frees the tail clusters, growing appends zeros. */
  truncate(path: string, size: number, opts: WriteOptions = {}): Promise<void> {
    return this.serial(async () => {
      if (!Number.isSafeInteger(size) || size < 0 || size > 0xffffffff) throw new FatWriteError('EINVAL', `${this.name}: bad size ${size}`);
      await this.resize(path, size, undefined, opts);
    });
  }

  /** write (data given: at `at`) or truncate (no data: to size `at`). */
  private async resize(path: string, at: number, data: Buffer | undefined, opts: WriteOptions): Promise<void> {
    const { dir, name, parts } = await this.parentOf(path);
    const p = `/${parts.join('/')}`;
    const e = this.find(dir, name);
    if (!e) throw new NotFoundError('ENOENT', `${this.name}: ${p}: no such file`);
    if (e.kind === 'directory') throw new FatWriteError('EISDIR', `${this.name}: ${p}: is a directory`);
    const cs = this.bpb.clusterSize;
    const oldSize = e.size;
    const newSize = data ? Math.max(oldSize, at + data.length) : at;
    if (newSize > 0xffffffff) throw new FatWriteError('EFBIG', `${this.name}: ${p}: ${newSize} bytes is more than FAT's 4 GiB - 1`);
    const have = Math.ceil(oldSize / cs);
    const need = Math.ceil(newSize / cs);
    let clusters = e.firstCluster === 0 ? [] : this.chain(e.firstCluster, have, p);
    if (clusters.length < have) throw new CorruptError('ESHORT', `${this.name}: ${p}: chain holds ${clusters.length} clusters, size ${oldSize} needs ${have}`);
    clusters = clusters.slice(0, have);
    const ent = dir.buf.subarray(e.index * DIR_ENTRY_SIZE, (e.index + 1) * DIR_ENTRY_SIZE);
    const when = opts.mtime ?? new Date();
    if (newSize < oldSize) {
      // Shrink: the entry first, then free the tail.
      const tail = this.fileChain(e, p).slice(need);
      if (need === 0) this.setCluster(ent, 0, 0);
      ent.writeUInt32LE(newSize, 28);
      this.stamp(ent, when, false);
      ent[11] = ent[11]! | ATTR_ARCHIVE;
      await this.flushEntries(dir, e.index, e.index + 1);
      if (need > 0) this.set(clusters[need - 1]!, endOfChain(this.type));
      this.release(tail);
      await this.commitFat();
      await this.writeFsInfo();
      return;
    }
    const added = this.allocate(need - have);
    const all = [...clusters, ...added];
    // Whatever lies between the old end and the new data must read as zeros (the slack of the old last
    // cluster may hold old bytes); new clusters are zeroed where no data lands.
    const dataStart = data ? at : newSize;
    if (dataStart > oldSize) await this.zeroRange(all, oldSize, dataStart);
    if (data && data.length > 0) await this.writeRange(all, at, data);
    const end = data ? at + data.length : newSize;
    if (added.length > 0 && end < need * cs) await this.zeroRange(all, Math.max(end, oldSize), need * cs);
    if (added.length > 0 && clusters.length > 0) this.set(clusters[clusters.length - 1]!, added[0]!);
    await this.commitFat();
    if (clusters.length === 0 && added.length > 0) this.setCluster(ent, 0, added[0]!);
    ent.writeUInt32LE(newSize, 28);
    this.stamp(ent, when, false);
    ent[11] = ent[11]! | ATTR_ARCHIVE;
    await this.flushEntries(dir, e.index, e.index + 1);
    await this.writeFsInfo();
  }

  /** Creates a directory (with '.' and '..'); with `parents`, missing parents too and no error if it exists. */
  mkdir(path: string, opts: WriteOptions & { parents?: boolean } = {}): Promise<void> {
    return this.serial(async () => {
      const parts = components(path);
      if (parts.length === 0) {
        if (opts.parents) return;
        throw new FatWriteError('EEXIST', `${this.name}: /: exists`);
      }
      let dir = await this.loadDir(ROOT, '/');
      for (let i = 0; i < parts.length; i++) {
        const walked = `/${parts.slice(0, i + 1).join('/')}`;
        const e = this.find(dir, parts[i]!);
        const last = i === parts.length - 1;
        if (e) {
          if (e.kind !== 'directory') throw new FatWriteError(last ? 'EEXIST' : 'ENOTDIR', `${this.name}: ${walked}: ${last ? 'exists' : 'not a directory'}`);
          if (last && !opts.parents) throw new FatWriteError('EEXIST', `${this.name}: ${walked}: exists`);
          dir = await this.loadDir(e.firstCluster, walked);
          continue;
        }
        if (!last && !opts.parents) throw new NotFoundError('ENOENT', `${this.name}: /${parts.slice(0, i + 1).join('/')}: no such directory`);
        const first = await this.makeDir(dir, parts[i]!, opts.mtime ?? new Date());
        dir = await this.loadDir(first, walked);
      }
    });
  }

  private async makeDir(parent: Dir, name: string, when: Date): Promise<number> {
    const [c] = this.allocate(1);
    const cluster = c!;
    const prepared = await this.prepareEntry(parent, name, (e) => {
      e[11] = ATTR_DIRECTORY;
      this.setCluster(e, 0, cluster);
      this.stamp(e, when, true);
    });
    const body = Buffer.alloc(this.bpb.clusterSize);
    const dot = (off: number, n: string, target: number): void => {
      body.write(n.padEnd(11, ' '), off, 'latin1');
      body[off + 11] = ATTR_DIRECTORY;
      this.setCluster(body, off, target);
      this.stamp(body.subarray(off, off + DIR_ENTRY_SIZE), when, true);
    };
    dot(0, '.', cluster);
    dot(DIR_ENTRY_SIZE, '..', parent.first === ROOT ? 0 : parent.first);
    await this.put(this.clusterOffset(cluster), body);
    await this.commitFat();
    await prepared.write();
    await this.writeFsInfo();
    return cluster;
  }

  /** Deletes a file. */
  remove(path: string): Promise<void> {
    return this.serial(async () => {
      const { dir, name, parts } = await this.parentOf(path);
      const p = `/${parts.join('/')}`;
      const e = this.find(dir, name);
      if (!e) throw new NotFoundError('ENOENT', `${this.name}: ${p}: no such file`);
      if (e.kind === 'directory') throw new FatWriteError('EISDIR', `${this.name}: ${p}: is a directory (use rmdir)`);
      const chain = this.fileChainLenient(e, p);
      await this.deleteEntry(dir, e);
      this.release(chain);
      await this.commitFat();
      await this.writeFsInfo();
    });
  }

  /** A chain to free: a corrupt chain is freed up to where it goes wrong (fsck reclaims the rest). */
  private fileChainLenient(e: DirEntry, p: string): number[] {
    try {
      return this.fileChain(e, p);
    } catch (err) {
      if (err instanceof CorruptError) return [];
      throw err;
    }
  }

  /** Removes an empty directory. */
  rmdir(path: string): Promise<void> {
    return this.serial(async () => {
      const { dir, name, parts } = await this.parentOf(path);
      const p = `/${parts.join('/')}`;
      const e = this.find(dir, name);
      if (!e) throw new NotFoundError('ENOENT', `${this.name}: ${p}: no such directory`);
      if (e.kind !== 'directory') throw new FatWriteError('ENOTDIR', `${this.name}: ${p}: not a directory`);
      if (e.firstCluster !== 0) {
        const sub = await this.loadDir(e.firstCluster, p);
        if (sub.entries.some((x) => x.kind === 'file' || x.kind === 'directory')) {
          throw new FatWriteError('ENOTEMPTY', `${this.name}: ${p}: directory not empty`);
        }
      }
      const chain = this.fileChainLenient(e, p);
      await this.deleteEntry(dir, e);
      this.release(chain);
      await this.commitFat();
      await this.writeFsInfo();
    });
  }

  /** Removes a file, or a directory and everything in it. */
  removeTree(path: string): Promise<void> {
    return this.serial(async () => {
      const parts = components(path);
      if (parts.length === 0) throw new FatWriteError('EINVAL', `${this.name}: refusing to remove the root directory`);
      await this.removeTreeParts(parts, 0);
    });
  }

  private async removeTreeParts(parts: string[], depth: number): Promise<void> {
    if (depth > MAX_PATH_DEPTH) throw new CorruptError('ELOOP', `${this.name}: directories nest deeper than ${MAX_PATH_DEPTH}`);
    const dir = await this.walk(parts.slice(0, -1));
    const p = `/${parts.join('/')}`;
    const e = this.find(dir, parts[parts.length - 1]!);
    if (!e) throw new NotFoundError('ENOENT', `${this.name}: ${p}: no such file or directory`);
    if (e.kind === 'directory' && e.firstCluster !== 0) {
      const sub = await this.loadDir(e.firstCluster, p);
      for (const x of sub.entries) {
        if (x.kind === 'file' || x.kind === 'directory') await this.removeTreeParts([...parts, x.name], depth + 1);
      }
    }
    const again = await this.walk(parts.slice(0, -1));
    const e2 = this.find(again, parts[parts.length - 1]!)!;
    const chain = this.fileChainLenient(e2, p);
    await this.deleteEntry(again, e2);
    this.release(chain);
    await this.commitFat();
    await this.writeFsInfo();
  }

  /** Renames or moves a file or directory. An existing target file is replaced; a target directory is an error. */
  rename(from: string, to: string): Promise<void> {
    return this.serial(async () => {
      const src = await this.parentOf(from);
      const fromP = `/${src.parts.join('/')}`;
      const e = this.find(src.dir, src.name);
      if (!e) throw new NotFoundError('ENOENT', `${this.name}: ${fromP}: no such file or directory`);
      const dstParts = components(to);
      const toP = `/${dstParts.join('/')}`;
      if (dstParts.length === 0) throw new FatWriteError('EEXIST', `${this.name}: /: exists`);
      const trail: number[] = [];
      const dstDirRaw = await this.walk(dstParts.slice(0, -1), trail);
      // A directory cannot go inside itself (checked by cluster, so short and long spellings agree).
      if (e.kind === 'directory' && e.firstCluster !== 0 && trail.includes(e.firstCluster)) {
        throw new FatWriteError('EINVAL', `${this.name}: cannot move ${fromP} into itself (${toP})`);
      }
      const same = dstDirRaw.first === src.dir.first;
      const dst = same ? src.dir : dstDirRaw;
      const dstName = dstParts[dstParts.length - 1]!;
      let replaced: DirEntry | undefined = this.find(dst, dstName);
      if (replaced && same && replaced.index === e.index) replaced = undefined; // a change of case
      if (replaced) {
        if (replaced.kind === 'directory') throw new FatWriteError('EEXIST', `${this.name}: ${toP}: is a directory`);
        if (e.kind === 'directory') throw new FatWriteError('ENOTDIR', `${this.name}: ${toP}: exists and is not a directory`);
      }
      const old = Buffer.from(src.dir.buf.subarray(e.index * DIR_ENTRY_SIZE, (e.index + 1) * DIR_ENTRY_SIZE));
      // The entry being renamed must not block its own new short name: leave it out of `taken` by
      // deleting it from the in-memory list only (the device still has it until the new one is written).
      const keepEntries = dst.entries;
      dst.entries = dst.entries.filter((x) => !(same && x.index === e.index) && x !== replaced);
      let prepared: { write: () => Promise<void> };
      try {
        prepared = await this.prepareEntry(dst, dstName, (n) => old.copy(n, 11, 11, 32));
      } catch (err) {
        dst.entries = keepEntries;
        throw err;
      }
      // Slots the entry itself occupies are not free: prepareEntry looked only at bytes, so it cannot
      // have picked them. Replaced target: its entry goes first (its slots may then be reused later).
      dst.entries = keepEntries;
      const replacedChain = replaced ? this.fileChainLenient(replaced, toP) : [];
      await this.commitFat(); // a grown destination directory
      if (replaced) await this.deleteEntry(dst, replaced);
      await prepared.write();
      // Re-find the source entry (the directory was re-parsed if it is the same one).
      const srcNow = same ? dst.entries.find((x) => x.index === e.index) : e;
      if (srcNow) await this.deleteEntry(same ? dst : src.dir, srcNow);
      if (e.kind === 'directory' && !same && e.firstCluster !== 0) {
        // The moved directory's '..' now points at its new parent.
        const dotdot = Buffer.alloc(DIR_ENTRY_SIZE);
        await new Promise<void>((res, rej) =>
          this.dev.read(dotdot, 0, DIR_ENTRY_SIZE, this.clusterOffset(e.firstCluster) + DIR_ENTRY_SIZE, (x) => (x ? rej(x) : res())),
        );
        if (dotdot[0] === 0x2e && dotdot[1] === 0x2e) {
          this.setCluster(dotdot, 0, dst.first === ROOT ? 0 : dst.first);
          await this.put(this.clusterOffset(e.firstCluster) + DIR_ENTRY_SIZE, dotdot);
        }
      }
      if (replacedChain.length > 0) {
        this.release(replacedChain);
        await this.commitFat();
      }
      await this.writeFsInfo();
    });
  }

  /** Makes the writes durable (fdatasync). */
  async flush(): Promise<void> {
    await this.queue;
    await flushDevice(this.dev);
  }
}

