/**
 * The file allocation table: reading entries of FAT12/16/32 and turning cluster chains into extents
 * (runs of contiguous clusters), so that a file's chain is walked once per open, not once per read.
 *
 * The FAT is cached in chunks (the whole used part of a FAT12/16 table, 64 KiB chunks of a FAT32 table),
 * bounded by an LRU. Every walk is bounded: by the number of clusters a file needs, by the 65536-entry
 * limit of a directory, and never past the cluster count; a cluster reached twice (a cycle inside the
 * walked part) is a `CorruptError`.
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
      const off = cluster + (cluster >>> 1) - base;
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
      const off = cluster + (cluster >>> 1) - base;
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

/** The byte range [start, end) of the FAT that holds the entry of `cluster`. */
export function entryByteRange(type: FatType, cluster: number): [number, number] {
  switch (type) {
    case 'FAT12': {
      const off = cluster + (cluster >>> 1);
      return [off, off + 2];
    }
    case 'FAT16':
      return [cluster * 2, cluster * 2 + 2];
    case 'FAT32':
      return [cluster * 4, cluster * 4 + 4];
  }
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
    const n = bpb.maxCluster + 1;
    this.usedBytes = Math.min(
      bpb.fatBytes,
      bpb.type === 'FAT12' ? Math.ceil((n * 3) / 2) + 1 : bpb.type === 'FAT16' ? n * 2 : n * 4,
    );
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
    const [lo] = entryByteRange(this.bpb.type, cluster);
    const index = Math.floor(lo / this.chunkBytes);
    const buf = this.chunks.get(index) ?? (await this.loadChunk(index));
    return fatEntry(this.bpb.type, buf, cluster, index * this.chunkBytes);
  }

  /**
   * Walks the chain from `start` and returns it as extents, with the number of clusters walked. Fails
   * with `CorruptError` on a free/reserved/bad/out-of-range link, a cycle, or (onLonger 'error') a chain
   * longer than `limit`. A chain that ends before `limit` is returned as is: the caller decides.
   */
  async chain(start: number, opts: ChainOptions): Promise<{ extents: Extent[]; clusters: number }> {
    const { type, maxCluster } = this.bpb;
    const name = this.volumeName;
    if (!Number.isInteger(start) || start < 2 || start > maxCluster) {
      throw new CorruptError('EBADCLUSTER', `${name}: ${opts.what} starts at cluster ${start}, outside 2..${maxCluster}`);
    }
    const limit = Math.min(opts.limit, this.bpb.clusterCount);
    const extents: Extent[] = [];
    const chunkBytes = this.chunkBytes;
    let runStart = start;
    let runLen = 1;
    let cur = start;
    let walked = 1;
    let chunkIndex = -1;
    let buf: Buffer | undefined;
    for (;;) {
      const [lo] = entryByteRange(type, cur);
      const idx = Math.floor(lo / chunkBytes);
      if (idx !== chunkIndex || buf === undefined) {
        chunkIndex = idx;
        buf = this.chunks.get(idx) ?? (await this.loadChunk(idx));
      }
      const next = fatEntry(type, buf, cur, idx * chunkBytes);
      if (isEndOfChain(type, next)) break;
      if (next < 2 || next > maxCluster || isBadCluster(type, next)) {
        const what = next === 0 ? 'a free cluster' : isBadCluster(type, next) ? 'a bad-cluster mark' : `cluster ${next}, outside 2..${maxCluster}`;
        throw new CorruptError('EBADCHAIN', `${name}: ${opts.what}: cluster ${cur} links to ${what}`);
      }
      if (walked >= limit) {
        if (opts.onLonger === 'stop') break;
        throw new CorruptError('ELOOP', `${name}: ${opts.what}: chain is longer than ${limit} clusters (a loop?)`);
      }
      walked++;
      if (next === cur + 1) {
        runLen++;
      } else {
        extents.push({ cluster: runStart, count: runLen });
        runStart = next;
        runLen = 1;
      }
      cur = next;
    }
    extents.push({ cluster: runStart, count: runLen });
    if (extentsOverlap(extents)) {
      throw new CorruptError('ELOOP', `${name}: ${opts.what}: cluster chain loops back on itself`);
    }
    return { extents, clusters: walked };
  }
}
