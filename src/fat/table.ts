/**
 * The file allocation table: reading entries of FAT12/16/32 and turning cluster chains into extents
 * (runs of contiguous clusters), so that a file's chain is walked once per open, not once per read.
 *
 * The FAT is cached in chunks (the whole used part of a FAT12/16 table, 64 KiB chunks of a FAT32 table),
 * bounded by an LRU. One chain walker (`ChainWalk`) serves this cache and the writer's in-memory FAT.
 * Every walk is bounded: by the number of clusters a file needs, by the 65536-entry limit of a directory,
 * and never past the cluster count; a cluster reached twice (a cycle inside the walked part) is a
 * `CorruptError`.
 */
import type { BlockDevice } from '../disk/blockdev.js';
import { CorruptError } from '../util/errors.js';
import type { Bpb, FatType } from './bpb.js';

/** A run of `count` contiguous clusters starting at `cluster`. */
export interface Extent {
  readonly cluster: number;
  readonly count: number;
}

/**
 * Reads the FAT entry of `cluster` from `buf`, which holds the FAT bytes starting at byte `base` of the
 * table. Pure; the caller makes sure the entry lies inside `buf` (see `entryByteRange`).
 */
export function fatEntry(type: FatType, buf: Buffer, cluster: number, base = 0): number {
  switch (type) {
    case 'FAT12': {
      const off = entryOffset(type, cluster) - base;
      const v = buf[off]! | (buf[off + 1]! << 8);
      return cluster & 1 ? v >>> 4 : v & 0xfff;
    }
    case 'FAT16':
      return buf.readUInt16LE(cluster * 2 - base);
    case 'FAT32':
      return buf.readUInt32LE(cluster * 4 - base) & 0x0fffffff;
  }
}

/**
 * Writes the FAT entry of `cluster` into `buf` (FAT bytes starting at byte `base`): the other nibble of a
 * FAT12 pair and the reserved top 4 bits of a FAT32 entry are kept. Pure; the caller checks the range.
 */
export function setFatEntry(type: FatType, buf: Buffer, cluster: number, value: number, base = 0): void {
  switch (type) {
    case 'FAT12': {
      const off = entryOffset(type, cluster) - base;
      const v = buf[off]! | (buf[off + 1]! << 8);
      const nv = cluster & 1 ? (v & 0x000f) | ((value & 0xfff) << 4) : (v & 0xf000) | (value & 0xfff);
      buf[off] = nv & 0xff;
      buf[off + 1] = nv >>> 8;
      return;
    }
    case 'FAT16':
      buf.writeUInt16LE(value & 0xffff, cluster * 2 - base);
      return;
    case 'FAT32': {
      const off = cluster * 4 - base;
      const keep = buf.readUInt32LE(off) & 0xf0000000;
      buf.writeUInt32LE((keep | (value & 0x0fffffff)) >>> 0, off);
      return;
    }
  }
}

/** The end-of-chain mark written by the writer. */
export function endOfChain(type: FatType): number {
  return type === 'FAT12' ? 0xfff : type === 'FAT16' ? 0xffff : 0x0fffffff;
}

/** Byte offset, in the FAT, of the entry of `cluster`. */
export function entryOffset(type: FatType, cluster: number): number {
  return type === 'FAT12' ? cluster + (cluster >>> 1) : type === 'FAT16' ? cluster * 2 : cluster * 4;
}

/** The byte range [start, end) of the FAT that holds the entry of `cluster`. */
export function entryByteRange(type: FatType, cluster: number): [number, number] {
  const off = entryOffset(type, cluster);
  return [off, off + (type === 'FAT32' ? 4 : 2)];
}

/** Bytes of the FAT that hold the entries of clusters 0..maxCluster (never more than one FAT). */
export function fatUsedBytes(bpb: Pick<Bpb, 'type' | 'maxCluster' | 'fatBytes'>): number {
  const n = bpb.maxCluster + 1;
  return Math.min(bpb.fatBytes, bpb.type === 'FAT12' ? Math.ceil((n * 3) / 2) + 1 : bpb.type === 'FAT16' ? n * 2 : n * 4);
}

/** End-of-chain values: 0xFF8.., 0xFFF8.., 0x0FFFFFF8.. */
export function isEndOfChain(type: FatType, v: number): boolean {
  return type === 'FAT12' ? v >= 0xff8 : type === 'FAT16' ? v >= 0xfff8 : v >= 0x0ffffff8;
}

/** The "bad cluster" marker. */
export function isBadCluster(type: FatType, v: number): boolean {
  return type === 'FAT12' ? v === 0xff7 : type === 'FAT16' ? v === 0xfff7 : v === 0x0ffffff7;
}

/** Checks that no cluster appears in two extents (a cycle in the chain). Sorts a copy: O(n log n). */
export function extentsOverlap(extents: readonly Extent[]): boolean {
  if (extents.length < 2) return false;
  const sorted = extents.slice().sort((a, b) => a.cluster - b.cluster);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    if (sorted[i]!.cluster < prev.cluster + prev.count) return true;
  }
  return false;
}

export interface ChainOptions {
  /** Stop after this many clusters. */
  readonly limit: number;
  /**
   * What to do when the chain continues past `limit`: 'stop' (files: the extra clusters are ignored,
   * as Linux and mtools do) or 'error' (directories: a chain that long is a loop or corrupt).
   */
  readonly onLonger: 'stop' | 'error';
  /** Names the chain's owner in error messages. */
  readonly what: string;
}

/** A walked chain: its extents, and how many clusters they hold. */
export interface Chain {
  extents: Extent[];
  clusters: number;
}

/**
 * The checks and bookkeeping of one chain walk, fed one FAT entry at a time, so that the chunk-cached
 * reader and the writer's in-memory FAT walk chains the same way: `follow(entry of cur)` until it returns
 * false, then `result()`. Fails with `CorruptError` on a start outside the volume, a free/reserved/bad/
 * out-of-range link, a cycle, or (onLonger 'error') a chain longer than `limit`. A chain that ends
 * before `limit` is returned as is: the caller decides.
 */
export class ChainWalk {
  /** The cluster whose FAT entry `follow` wants next. */
  cur: number;
  private walked = 1;
  private runStart: number;
  private runLen = 1;
  private readonly extents: Extent[] = [];
  private readonly limit: number;

  constructor(
    private readonly bpb: Pick<Bpb, 'type' | 'maxCluster' | 'clusterCount'>,
    start: number,
    private readonly opts: ChainOptions,
    private readonly volumeName: string,
  ) {
    const max = bpb.maxCluster;
    if (!Number.isInteger(start) || start < 2 || start > max) {
      throw new CorruptError('EBADCLUSTER', `${volumeName}: ${opts.what} starts at cluster ${start}, outside 2..${max}`);
    }
    this.cur = start;
    this.runStart = start;
    this.limit = Math.min(opts.limit, bpb.clusterCount);
  }

  /** Takes the FAT entry of `cur`; true when the chain goes on (`cur` is then the next cluster). */
  follow(next: number): boolean {
    const { type, maxCluster } = this.bpb;
    if (isEndOfChain(type, next)) return false;
    if (next < 2 || next > maxCluster || isBadCluster(type, next)) {
      const what = next === 0 ? 'a free cluster' : isBadCluster(type, next) ? 'a bad-cluster mark' : `cluster ${next}, outside 2..${maxCluster}`;
      throw new CorruptError('EBADCHAIN', `${this.volumeName}: ${this.opts.what}: cluster ${this.cur} links to ${what}`);
    }
    if (this.walked >= this.limit) {
      if (this.opts.onLonger === 'stop') return false;
      throw new CorruptError('ELOOP', `${this.volumeName}: ${this.opts.what}: chain is longer than ${this.limit} clusters (a loop?)`);
    }
    this.walked++;
    if (next === this.cur + 1) {
      this.runLen++;
    } else {
      this.extents.push({ cluster: this.runStart, count: this.runLen });
      this.runStart = next;
      this.runLen = 1;
    }
    this.cur = next;
    return true;
  }

  /** The chain walked so far; `CorruptError` ELOOP when it comes back on itself. */
  result(): Chain {
    const extents = this.extents;
    extents.push({ cluster: this.runStart, count: this.runLen });
    if (extentsOverlap(extents)) {
      throw new CorruptError('ELOOP', `${this.volumeName}: ${this.opts.what}: cluster chain loops back on itself`);
    }
    return { extents, clusters: this.walked };
  }
}

/** Walks a chain through a FAT that answers at once (`entryOf(cluster)`: the writer's FAT in memory). */
export function walkChain(
  bpb: Pick<Bpb, 'type' | 'maxCluster' | 'clusterCount'>, entryOf: (cluster: number) => number, start: number, opts: ChainOptions, volumeName: string,
): Chain {
  const w = new ChainWalk(bpb, start, opts, volumeName);
  while (w.follow(entryOf(w.cur)));
  return w.result();
}

/** The cluster numbers of `extents`, in chain order. */
export function extentClusters(extents: readonly Extent[]): number[] {
  const out: number[] = [];
  for (const e of extents) for (let i = 0; i < e.count; i++) out.push(e.cluster + i);
  return out;
}

const FAT32_CHUNK = 64 * 1024;

export class FatTable {
  private readonly chunks = new Map<number, Buffer>();
  private readonly pending = new Map<number, Promise<Buffer>>();
  private generation = 0;
  /** Bytes of the table that hold entries 0..maxCluster. */
  private readonly usedBytes: number;
  private readonly chunkBytes: number;

  constructor(
    private readonly dev: BlockDevice,
    readonly bpb: Bpb,
    private readonly maxChunks = 128,
    private readonly volumeName = dev.name,
  ) {
    this.usedBytes = fatUsedBytes(bpb);
    // FAT12 entries straddle byte boundaries and FAT12/16 tables are small (< 128 KiB): one chunk.
    this.chunkBytes = bpb.type === 'FAT32' ? FAT32_CHUNK : this.usedBytes;
  }

  /** Drops every cached chunk (after a write to the FAT). Loads in flight are not cached. */
  invalidate(): void {
    this.generation++;
    this.chunks.clear();
    this.pending.clear();
  }

  get cachedChunks(): number {
    return this.chunks.size;
  }

  private loadChunk(index: number): Promise<Buffer> {
    const inflight = this.pending.get(index);
    if (inflight) return inflight;
    const start = index * this.chunkBytes;
    const len = Math.min(this.chunkBytes, this.usedBytes - start);
    const gen = this.generation;
    const p = new Promise<Buffer>((resolve, reject) => {
      const buf = Buffer.allocUnsafe(len);
      this.dev.read(buf, 0, len, this.bpb.fatOffset + start, (e) => {
        if (this.pending.get(index) === p) this.pending.delete(index);
        if (e) return reject(e);
        if (gen === this.generation) {
          this.chunks.set(index, buf);
          if (this.chunks.size > this.maxChunks) {
            const oldest = this.chunks.keys().next().value as number;
            this.chunks.delete(oldest);
          }
        }
        resolve(buf);
      });
    });
    this.pending.set(index, p);
    return p;
  }

  /** The entry of one cluster (2..maxCluster). */
  async entry(cluster: number): Promise<number> {
    if (!Number.isInteger(cluster) || cluster < 0 || cluster > this.bpb.maxCluster) {
      throw new CorruptError('EBADCLUSTER', `${this.volumeName}: cluster ${cluster} is outside 0..${this.bpb.maxCluster}`);
    }
    const index = Math.floor(entryOffset(this.bpb.type, cluster) / this.chunkBytes);
    const buf = this.chunks.get(index) ?? (await this.loadChunk(index));
    return fatEntry(this.bpb.type, buf, cluster, index * this.chunkBytes);
  }

  /** Walks the chain from `start` into extents, reading the FAT through the chunk cache (see `ChainWalk`). */
  async chain(start: number, opts: ChainOptions): Promise<Chain> {
    const type = this.bpb.type;
    const chunkBytes = this.chunkBytes;
    const walk = new ChainWalk(this.bpb, start, opts, this.volumeName);
    let chunkIndex = -1;
    let buf: Buffer | undefined;
    let next: number;
    do {
      const idx = Math.floor(entryOffset(type, walk.cur) / chunkBytes);
      if (idx !== chunkIndex || buf === undefined) {
        chunkIndex = idx;
        buf = this.chunks.get(idx) ?? (await this.loadChunk(idx));
      }
      next = fatEntry(type, buf, walk.cur, idx * chunkBytes);
    } while (walk.follow(next));
    return walk.result();
  }
}
