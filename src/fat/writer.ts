/**
 * Writing FAT12/16/32 volumes: create, overwrite, write in place (grow), truncate, rename and delete files;
 * create and remove (empty) directories. Every byte goes through the `BlockDevice`, so its `written`
 * events reach every `FatVolume` (and TFTP) over the same device.
 *
 * It shares the reader's engine: the BPB codec (bpb.ts), the directory-entry codec (dir.ts: every entry is
 * built and edited as decoded slots, then encoded), the FAT entry codec and chain walker (table.ts), and
 * the tree (tree.ts: paths, loading directories, lookups).
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
import { BufferSource, type FileSource } from '../util/source.js';
import {
  FSINFO_COUNTS, clusterOffset, encodeFsInfoCounts, fatArea, parseFsInfo, readBootSector, type Bpb, type FatType,
} from './bpb.js';
import {
  ATTR_ARCHIVE, ATTR_DIRECTORY, DIR_ENTRY_SIZE, MAX_DIR_BYTES, decodeLongSlot, decodeShortSlot, encodeSlot,
  deleteSlot, isFreeSlot, isLongSlot, longNameEntries, newShortSlot, setSlotCluster, shortNameChecksum, stampSlot, type DirEntry, type ShortSlot,
} from './dir.js';
import { checkLongName, makeShortName, shortKey } from './names.js';
import { endOfChain, entryByteRange, extentClusters, fatEntry, fatUsedBytes, setFatEntry, walkChain, type ChainOptions } from './table.js';
import {
  MAX_PATH_DEPTH, ROOT, decodeDirectory, findEntry, listing, loadDirectory, pathOf, resolveParent, splitPath, statOf, subdirectory,
  walkDirectories, type FatStat, type Listing,
} from './tree.js';

/** A write that cannot be done: ENOSPC, EEXIST, ENOTEMPTY, EISDIR, ENOTDIR, EINVAL, EBUSY. */
export class FatWriteError extends NetbootError {}

/** The largest FAT the writer holds in memory. */
export const MAX_FAT_BYTES = 256 * 1024 * 1024;
const IO_CHUNK = 4 * 1024 * 1024;

/** A loaded directory the writer edits: its bytes, its clusters, and its listing (kept in step with the bytes). */
interface Dir extends Listing {
  /** ROOT for the root directory, else its first cluster. */
  first: number;
  /** The directory's clusters; empty for the fixed FAT12/16 root. */
  clusters: number[];
  buf: Buffer;
  entries: DirEntry[];
  byName: Map<string, DirEntry>;
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

const notDirectory = (code: string, message: string): FatWriteError => new FatWriteError(code, message);

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
    /** Byte offset of the FSInfo sector, or -1. */
    private readonly fsinfoOffset: number,
  ) {
    this.type = bpb.type;
    this.usedBytes = fatUsedBytes(bpb);
    const [fatLo, fatHi] = fatArea(bpb);
    this.unsubscribe = dev.onWritten((off, len) => {
      if (this.writing === 0 && off < fatHi && off + len > fatLo) this.stale = true;
    });
  }

  /** Opens the FAT volume on `dev` for writing; rejects with ParseError/CorruptError like `FatVolume.open`. */
  static async open(dev: BlockDevice, opts: { name?: string } = {}): Promise<FatWriter> {
    const name = opts.name ?? dev.name;
    if (dev.readOnly) throw new IoError('EPERM', `${name}: opened read-only`);
    const { bpb } = await readBootSector(dev, name);
    let fsinfoOffset = -1;
    let hint = 2;
    if (bpb.fsInfoSector !== 0) {
      const at = bpb.fsInfoSector * bpb.bytesPerSector;
      const fsInfo = parseFsInfo(await readAt(dev, at, 512));
      if (fsInfo) {
        fsinfoOffset = at;
        hint = fsInfo.nextFree;
      }
    }
    const w = new FatWriter(dev, bpb, name, fsinfoOffset);
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

  private readonly get = (cluster: number): number => fatEntry(this.type, this.fat, cluster);

  private set(cluster: number, value: number): void {
    this.journal.push([cluster, this.get(cluster)]);
    setFatEntry(this.type, this.fat, cluster, value);
    const [lo, hi] = entryByteRange(this.type, cluster);
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
    const [first] = fatArea(bpb);
    const copies = !bpb.fatMirrored ? [bpb.activeFat] : Array.from({ length: bpb.numFats }, (_, i) => i);
    for (const i of copies) await this.put(first + i * bpb.fatBytes + lo, slice);
    this.journal = [];
    this.dirtyLo = Infinity;
    this.dirtyHi = -Infinity;
    this.saved = { freeCount: this.freeCount, nextFree: this.nextFree };
  }

  private async writeFsInfo(): Promise<void> {
    if (this.fsinfoOffset < 0) return;
    await this.put(this.fsinfoOffset + FSINFO_COUNTS, encodeFsInfoCounts(this.freeCount, this.nextFree));
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

  /** Walks chains through the FAT in memory (the walker of table.ts: range, free links, loops). */
  private readonly chains = {
    chain: (start: number, opts: ChainOptions) => walkChain(this.bpb, this.get, start, opts, this.name),
  };

  /** The chain from `start` as cluster numbers, at most `limit` (see `ChainWalk`). */
  private chain(start: number, limit: number, what: string, onLonger: 'stop' | 'error' = 'stop'): number[] {
    return extentClusters(this.chains.chain(start, { limit, onLonger, what }).extents);
  }

  /** A file's whole chain (for freeing): every cluster up to the end mark, bounded by the volume. */
  private fileChain(e: DirEntry, what: string): number[] {
    if (e.firstCluster === 0) return [];
    return this.chain(e.firstCluster, this.bpb.clusterCount, what, 'error');
  }

  private clusterOffset(c: number): number {
    return clusterOffset(this.bpb, c);
  }

  // -------------------------------------------------------------------------------------------------------
  // Directories

  private async loadDir(first: number, path: string): Promise<Dir> {
    const d = await loadDirectory(this.dev, this.bpb, this.chains, first, this.name, path);
    return { first, clusters: extentClusters(d.extents), buf: d.buf, entries: d.entries, byName: d.byName, path };
  }

  private readonly openDir = (first: number, path: string): Promise<Dir> => this.loadDir(first, path);

  /** Resolves the directory at `parts` (each a directory); `trail` receives the clusters passed. */
  private async walk(parts: readonly string[], trail?: number[]): Promise<Dir> {
    return walkDirectories(await this.loadDir(ROOT, '/'), parts, this.openDir, this.name, { trail, notDirectory });
  }

  private async parentOf(path: string): Promise<{ dir: Dir; name: string; parts: string[]; entry: DirEntry | undefined }> {
    const parts = splitPath(path, this.name);
    if (parts.length === 0) throw new FatWriteError('EINVAL', `${this.name}: the root directory cannot be ${'changed this way'}`);
    const { parent, entry } = await resolveParent(await this.loadDir(ROOT, '/'), parts, this.openDir, this.name, { notDirectory });
    return { dir: parent, name: parts[parts.length - 1]!, parts, entry };
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

  /** The index of the first of the long-name slots that belong to the 8.3 entry `e`. */
  private runStart(dir: Dir, e: DirEntry): number {
    const sum = shortNameChecksum(dir.buf, e.index * DIR_ENTRY_SIZE);
    let i = e.index;
    while (i > 0) {
      const off = (i - 1) * DIR_ENTRY_SIZE;
      if (isFreeSlot(dir.buf, off) || !isLongSlot(dir.buf, off)) break;
      const part = decodeLongSlot(dir.buf, off);
      if (part.checksum !== sum) break;
      i--;
      if (part.order & 0x40) break; // the first (highest) part of the run
    }
    return i;
  }

  /** Marks an entry and its long name deleted and writes them. */
  private async deleteEntry(dir: Dir, e: DirEntry): Promise<void> {
    const from = this.runStart(dir, e);
    for (let i = from; i <= e.index; i++) deleteSlot(dir.buf, i * DIR_ENTRY_SIZE);
    await this.flushEntries(dir, from, e.index + 1);
    Object.assign(dir, listing(dir.entries.filter((x) => x !== e)));
  }

  /**
   * Removes the entry `e` (at `p`) from `dir`, then frees its clusters: the entry goes first, so a crash
   * leaves lost clusters, never an entry over free ones. A corrupt chain is freed up to where it goes
   * wrong (fsck reclaims the rest).
   */
  private async unlink(dir: Dir, e: DirEntry, p: string): Promise<void> {
    const chain = this.fileChainLenient(e, p);
    await this.deleteEntry(dir, e);
    this.release(chain);
    await this.commitFat();
    await this.writeFsInfo();
  }

  /** Changes the 8.3 entry of `e` through the codec and writes it. */
  private async editEntry(dir: Dir, e: DirEntry, change: (s: ShortSlot) => void): Promise<void> {
    const off = e.index * DIR_ENTRY_SIZE;
    const slot = decodeShortSlot(dir.buf, off);
    change(slot);
    encodeSlot(slot, dir.buf, off);
    await this.flushEntries(dir, e.index, e.index + 1);
  }

  /** A run of `n` free slots, or -1. */
  private freeRun(dir: Dir, n: number): number {
    const count = dir.buf.length / DIR_ENTRY_SIZE;
    let run = 0;
    for (let i = 0; i < count; i++) {
      if (isFreeSlot(dir.buf, i * DIR_ENTRY_SIZE)) {
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
    while (tail < count && isFreeSlot(dir.buf, (count - 1 - tail) * DIR_ENTRY_SIZE)) tail++;
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
   * Builds the slots of `name` (long name + 8.3; `fill` sets the 8.3 entry's fields besides its name and
   * case bits), reserves room for them, and returns a function that writes them (call it after committing
   * the FAT). Entries for which `ignore` is true do not keep their short names from being chosen.
   */
  private async prepareEntry(
    dir: Dir, name: string, fill: (s: ShortSlot) => void, ignore?: (e: DirEntry) => boolean,
  ): Promise<{ write: () => Promise<void> }> {
    const bad = checkLongName(name);
    if (bad) throw new FatWriteError('EINVAL', `${this.name}: ${bad}`);
    const taken = new Set<string>();
    for (const e of dir.entries) {
      if (!ignore?.(e)) taken.add(shortKey(dir.buf.subarray(e.index * DIR_ENTRY_SIZE, e.index * DIR_ENTRY_SIZE + 11)));
    }
    const sn = makeShortName(name, taken);
    const lfn = sn.needsLongName ? longNameEntries(name, sn.raw) : Buffer.alloc(0);
    const slot = newShortSlot(shortKey(sn.raw));
    fill(slot);
    slot.ntCase = sn.ntCase;
    const n = lfn.length / DIR_ENTRY_SIZE + 1;
    const at = await this.reserveSlots(dir, n);
    return {
      write: async () => {
        lfn.copy(dir.buf, at * DIR_ENTRY_SIZE);
        encodeSlot(slot, dir.buf, (at + n - 1) * DIR_ENTRY_SIZE);
        await this.flushEntries(dir, at, at + n);
        Object.assign(dir, decodeDirectory(dir.buf, this.bpb, this.name, dir.path));
      },
    };
  }

  /** Sets the first cluster of an 8.3 entry. */
  private setCluster(s: ShortSlot, cluster: number): void {
    setSlotCluster(s, cluster, this.type === 'FAT32');
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

  // -------------------------------------------------------------------------------------------------------
  // Operations

  /** The stat of a file or directory (the root: a directory with an empty name), as `FatVolume.stat` gives it. */
  stat(path: string): Promise<FatStat> {
    return this.serial(async () => {
      const parts = splitPath(path, this.name);
      if (parts.length === 0) return statOf(undefined);
      const { entry } = await resolveParent(await this.loadDir(ROOT, '/'), parts, this.openDir, this.name);
      if (!entry) throw new NotFoundError('ENOENT', `${this.name}: ${pathOf(parts)}: no such file or directory`);
      return statOf(entry);
    });
  }

  /** Creates or replaces a file with `data` (a Buffer, or a FileSource streamed through 1 MiB). */
  writeFile(path: string, data: Buffer | FileSource, opts: WriteOptions = {}): Promise<void> {
    return this.serial(async () => {
      const src = Buffer.isBuffer(data) ? new BufferSource(data) : data;
      const { dir, name, parts, entry: old } = await this.parentOf(path);
      const p = pathOf(parts);
      if (old && old.kind === 'directory') throw new FatWriteError('EISDIR', `${this.name}: ${p}: is a directory`);
      if (src.size > 0xffffffff) throw new FatWriteError('EFBIG', `${this.name}: ${p}: ${src.size} bytes is more than FAT's 4 GiB - 1`);
      const oldChain = old ? this.fileChain(old, p) : [];
      const n = Math.ceil(src.size / this.bpb.clusterSize);
      const clusters = this.allocate(n);
      const when = opts.mtime ?? new Date();
      let entryWrite: (() => Promise<void>) | undefined;
      if (!old) {
        const prepared = await this.prepareEntry(dir, name, (s) => {
          s.attributes = ATTR_ARCHIVE;
          this.setCluster(s, clusters[0] ?? 0);
          s.size = src.size;
          stampSlot(s, when, true);
        });
        entryWrite = prepared.write;
      }
      await this.writeData(clusters, src);
      await this.commitFat();
      if (old) {
        await this.editEntry(dir, old, (s) => {
          s.attributes |= ATTR_ARCHIVE;
          this.setCluster(s, clusters[0] ?? 0);
          s.size = src.size;
          stampSlot(s, when, false);
        });
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
    const { dir, parts, entry: e } = await this.parentOf(path);
    const p = pathOf(parts);
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
    const when = opts.mtime ?? new Date();
    const update = (first: number | undefined) => (s: ShortSlot): void => {
      if (first !== undefined) this.setCluster(s, first);
      s.size = newSize;
      stampSlot(s, when, false);
      s.attributes |= ATTR_ARCHIVE;
    };
    if (newSize < oldSize) {
      // Shrink: the entry first, then free the tail.
      const tail = this.fileChain(e, p).slice(need);
      await this.editEntry(dir, e, update(need === 0 ? 0 : undefined));
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
    await this.editEntry(dir, e, update(clusters.length === 0 && added.length > 0 ? added[0]! : undefined));
    await this.writeFsInfo();
  }

  /** Creates a directory (with '.' and '..'); with `parents`, missing parents too and no error if it exists. */
  mkdir(path: string, opts: WriteOptions & { parents?: boolean } = {}): Promise<void> {
    return this.serial(async () => {
      const parts = splitPath(path, this.name);
      if (parts.length === 0) {
        if (opts.parents) return;
        throw new FatWriteError('EEXIST', `${this.name}: /: exists`);
      }
      let dir = await this.loadDir(ROOT, '/');
      for (let i = 0; i < parts.length; i++) {
        const walked = pathOf(parts.slice(0, i + 1));
        const e = findEntry(dir, parts[i]!);
        const last = i === parts.length - 1;
        if (e) {
          if (e.kind !== 'directory') throw new FatWriteError(last ? 'EEXIST' : 'ENOTDIR', `${this.name}: ${walked}: ${last ? 'exists' : 'not a directory'}`);
          if (last && !opts.parents) throw new FatWriteError('EEXIST', `${this.name}: ${walked}: exists`);
          dir = await this.loadDir(subdirectory(e, this.name, walked), walked);
          continue;
        }
        if (!last && !opts.parents) throw new NotFoundError('ENOENT', `${this.name}: ${walked}: no such directory`);
        const first = await this.makeDir(dir, parts[i]!, opts.mtime ?? new Date());
        dir = await this.loadDir(first, walked);
      }
    });
  }

  private async makeDir(parent: Dir, name: string, when: Date): Promise<number> {
    const [c] = this.allocate(1);
    const cluster = c!;
    const directory = (s: ShortSlot, target: number): void => {
      s.attributes = ATTR_DIRECTORY;
      this.setCluster(s, target);
      stampSlot(s, when, true);
    };
    const prepared = await this.prepareEntry(parent, name, (s) => directory(s, cluster));
    const body = Buffer.alloc(this.bpb.clusterSize);
    const dot = (off: number, n: string, target: number): void => {
      const s = newShortSlot(n.padEnd(11, ' '));
      directory(s, target);
      encodeSlot(s, body, off);
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
      const { dir, parts, entry: e } = await this.parentOf(path);
      const p = pathOf(parts);
      if (!e) throw new NotFoundError('ENOENT', `${this.name}: ${p}: no such file`);
      if (e.kind === 'directory') throw new FatWriteError('EISDIR', `${this.name}: ${p}: is a directory (use rmdir)`);
      await this.unlink(dir, e, p);
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
      const { dir, parts, entry: e } = await this.parentOf(path);
      const p = pathOf(parts);
      if (!e) throw new NotFoundError('ENOENT', `${this.name}: ${p}: no such directory`);
      if (e.kind !== 'directory') throw new FatWriteError('ENOTDIR', `${this.name}: ${p}: not a directory`);
      if (e.firstCluster !== 0) {
        const sub = await this.loadDir(e.firstCluster, p);
        if (sub.entries.some((x) => x.kind === 'file' || x.kind === 'directory')) {
          throw new FatWriteError('ENOTEMPTY', `${this.name}: ${p}: directory not empty`);
        }
      }
      await this.unlink(dir, e, p);
    });
  }

  /** Removes a file, or a directory and everything in it. */
  removeTree(path: string): Promise<void> {
    return this.serial(async () => {
      const parts = splitPath(path, this.name);
      if (parts.length === 0) throw new FatWriteError('EINVAL', `${this.name}: refusing to remove the root directory`);
      await this.removeTreeParts(parts, 0);
    });
  }

  private async removeTreeParts(parts: string[], depth: number): Promise<void> {
    if (depth > MAX_PATH_DEPTH) throw new CorruptError('ELOOP', `${this.name}: directories nest deeper than ${MAX_PATH_DEPTH}`);
    const p = pathOf(parts);
    const e = findEntry(await this.walk(parts.slice(0, -1)), parts[parts.length - 1]!);
    if (!e) throw new NotFoundError('ENOENT', `${this.name}: ${p}: no such file or directory`);
    if (e.kind === 'directory' && e.firstCluster !== 0) {
      const sub = await this.loadDir(e.firstCluster, p);
      for (const x of sub.entries) {
        if (x.kind === 'file' || x.kind === 'directory') await this.removeTreeParts([...parts, x.name], depth + 1);
      }
    }
    // The parent again: removing the children may have changed what was loaded.
    const again = await this.walk(parts.slice(0, -1));
    await this.unlink(again, findEntry(again, parts[parts.length - 1]!)!, p);
  }

  /** Renames or moves a file or directory. An existing target file is replaced; a target directory is an error. */
  rename(from: string, to: string): Promise<void> {
    return this.serial(async () => {
      const src = await this.parentOf(from);
      const fromP = pathOf(src.parts);
      const e = src.entry;
      if (!e) throw new NotFoundError('ENOENT', `${this.name}: ${fromP}: no such file or directory`);
      const dstParts = splitPath(to, this.name);
      const toP = pathOf(dstParts);
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
      let replaced: DirEntry | undefined = findEntry(dst, dstName);
      if (replaced && same && replaced.index === e.index) replaced = undefined; // a change of case
      if (replaced) {
        if (replaced.kind === 'directory') throw new FatWriteError('EEXIST', `${this.name}: ${toP}: is a directory`);
        if (e.kind === 'directory') throw new FatWriteError('ENOTDIR', `${this.name}: ${toP}: exists and is not a directory`);
      }
      // The new entry keeps every field of the old one but its name and case bits. Neither the entry
      // being renamed nor the replaced one keeps its short name from being chosen; their slots are not
      // free (prepareEntry looks at bytes), so the new entry cannot land on them.
      const old = decodeShortSlot(src.dir.buf, e.index * DIR_ENTRY_SIZE);
      const prepared = await this.prepareEntry(
        dst, dstName, (s) => Object.assign(s, old, { name: s.name }), (x) => (same && x.index === e.index) || x === replaced,
      );
      // A replaced target's entry goes first (its slots may then be reused later).
      const replacedChain = replaced ? this.fileChainLenient(replaced, toP) : [];
      await this.commitFat(); // a grown destination directory
      if (replaced) await this.deleteEntry(dst, replaced);
      await prepared.write();
      // Re-find the source entry (the directory was re-parsed if it is the same one).
      const srcNow = same ? dst.entries.find((x) => x.index === e.index) : e;
      if (srcNow) await this.deleteEntry(same ? dst : src.dir, srcNow);
      if (e.kind === 'directory' && !same && e.firstCluster !== 0) {
        // The moved directory's '..' now points at its new parent.
        const at = this.clusterOffset(e.firstCluster) + DIR_ENTRY_SIZE;
        const dotdot = decodeShortSlot(await readAt(this.dev, at, DIR_ENTRY_SIZE), 0);
        if (dotdot.name.startsWith('..')) {
          this.setCluster(dotdot, dst.first === ROOT ? 0 : dst.first);
          const b = Buffer.alloc(DIR_ENTRY_SIZE);
          encodeSlot(dotdot, b, 0);
          await this.put(at, b);
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

