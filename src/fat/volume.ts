/**
 * A read-only FAT12/16/32 volume over a `BlockDevice` (usually a partition window of a disk image):
 * `stat`, `readdir`, and `open(path)` → a `FileSource` for random-access reads.
 *
 * Speed: a file's cluster chain is walked once, at open, into extents (runs of contiguous clusters); a
 * read binary-searches them and issues one device read per extent piece straight into the caller's
 * buffer (the pieces of a fragmented range run concurrently, a few at a time). Small reads (TFTP blocks,
 * HTTP's 64 KiB loops) are served from device chunks of 128 KiB shared by every file source of the volume
 * and bounded process-wide (SHARED_CACHE_BYTES, least recently used out first): a boot storm of hundreds
 * of clients reading the same kernel costs one device read per chunk, not one per client per window (a
 * thread-pool trip each, which under load delays every client's next packet). Concurrent misses of one
 * chunk share one read. The FAT (in chunks), parsed directories and recent chains are cached, each
 * bounded by count and size.
 *
 * Coherence: the volume listens to the device's `written` events. A write that touches the FAT drops the
 * cached FAT; any write inside the volume drops the cached directories and chains (coarse, but writes to a
 * boot partition are rare); it also retires the volume's shared data chunks (a chunk read before the write
 * is never kept after it). A `FileSource` opened before a write keeps its extents; one opened after sees
 * the new state. The boot sector (geometry, label) is
 * read once, at open: a write that changes it needs a new volume.
 *
 * Corruption never loops or crashes: chains are bounded and checked for cycles (see table.ts), a chain
 * shorter than the file's size is a `CorruptError` at open, a chain longer is cut at the file size (as
 * Linux and mtools do), and paths are bounded in depth.
 *
 * Paths, directory loading and lookups are tree.ts's, shared with the writer; this module adds the caches
 * and the file sources.
 */
import type { BlockDevice } from '../disk/blockdev.js';
import { CorruptError, IoError, NotFoundError } from '../util/errors.js';
import type { FileSource, ReadCallback } from '../util/source.js';
import { clusterOffset, fatArea, readBootSector, type Bpb, type FatType } from './bpb.js';
import type { DirEntry } from './dir.js';
import { BoundedLru } from './lru.js';
import { FatTable, type Chain, type ChainOptions, type Extent } from './table.js';
import {
  ROOT, loadDirectory, pathOf, resolveParent, splitPath, statOf, subdirectory, type FatStat, type Listing,
} from './tree.js';

export type { Extent } from './table.js';
export type { FatStat } from './tree.js';
export { MAX_PATH_DEPTH } from './tree.js';

export type { FatType } from './bpb.js';
export { isFat } from './bpb.js';

const DIR_CACHE_ENTRIES = 256;
const CHAIN_CACHE_ENTRIES = 256;
/** About 200 bytes per parsed entry: at most ~40 MiB of directories, whatever the image claims. */
const DIR_CACHE_TOTAL_ENTRIES = 200_000;
const CHAIN_CACHE_TOTAL_EXTENTS = 500_000;
/** Shared data chunks: size (device-aligned) and the process-wide bound on what they hold. */
export const CHUNK_BYTES = 128 * 1024;
export const SHARED_CACHE_BYTES = 64 * 1024 * 1024;
/** Kept for callers that size reads by it: a stream of small reads costs one device read per this many bytes. */
export const READAHEAD_BYTES = CHUNK_BYTES;
/** Device reads in flight for one request over a fragmented range (the thread pool has 4 threads). */
const PIECES_IN_FLIGHT = 8;
/** Requests up to this size go through the shared chunks; larger ones straight to the device. */
const CACHED_MAX_REQUEST = 64 * 1024;

/** Every volume's data chunks, keyed by volume, its cache generation and the chunk index. */
const sharedChunks = new BoundedLru<string, Buffer>(SHARED_CACHE_BYTES / CHUNK_BYTES, SHARED_CACHE_BYTES, (b) => b.length);
let volumeIds = 0;

/** What a file source asks its volume for: device chunks, shared, and the generation they belong to. */
interface ChunkSource {
  generation(): number;
  peek(index: number): Buffer | undefined;
  fetch(index: number, cb: (err: Error | null, chunk: Buffer | null) => void): void;
}

/** A file's bytes as extents in device coordinates; reads binary-search them. */
class FatFileSource implements FileSource {
  private closed = false;
  /** The chunk the last small read used (sequential reads stay in one for many requests), and its generation. */
  private memoIndex = -1;
  private memoGen = -1;
  private memo: Buffer | null = null;
  /** fileStart[i]: file offset where extent i begins; devStart[i]: device offset of that byte. */
  private readonly fileStart: Float64Array;
  private readonly devStart: Float64Array;
  private readonly extLen: Float64Array;

  constructor(
    private readonly dev: BlockDevice,
    readonly size: number,
    extents: readonly Extent[],
    bpb: Bpb,
    private readonly label: string,
    private readonly chunks: ChunkSource,
  ) {
    const n = extents.length;
    this.fileStart = new Float64Array(n);
    this.devStart = new Float64Array(n);
    this.extLen = new Float64Array(n);
    let pos = 0;
    for (let i = 0; i < n; i++) {
      const e = extents[i]!;
      this.fileStart[i] = pos;
      this.devStart[i] = clusterOffset(bpb, e.cluster);
      this.extLen[i] = e.count * bpb.clusterSize;
      pos += this.extLen[i]!;
    }
  }

  /** Index of the extent holding file offset `pos` (pos < size). */
  private find(pos: number): number {
    const fs = this.fileStart;
    let lo = 0;
    let hi = fs.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (fs[mid]! <= pos) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  read(buf: Buffer, bufOffset: number, length: number, position: number, cb: ReadCallback): void {
    if (this.closed) return process.nextTick(cb, new IoError('EBADF', `${this.label}: file is closed`), 0);
    if (
      !Number.isSafeInteger(position) || !Number.isSafeInteger(length) || !Number.isSafeInteger(bufOffset) ||
      position < 0 || length < 0 || bufOffset < 0 || bufOffset + length > buf.length
    ) {
      return process.nextTick(cb, new IoError('EINVAL', `${this.label}: bad read range`), 0);
    }
    const total = Math.max(0, Math.min(length, this.size - position));
    if (total === 0) return process.nextTick(cb, null, 0);

    if (total <= CACHED_MAX_REQUEST) return this.cached(buf, bufOffset, total, position, cb);
    this.direct(buf, bufOffset, total, position, cb);
  }

  /** A chunk already at hand: the memo, else the shared cache (then memoised). */
  private chunkAt(index: number): Buffer | undefined {
    const gen = this.chunks.generation();
    if (this.memo !== null && this.memoIndex === index && this.memoGen === gen) return this.memo;
    const c = this.chunks.peek(index);
    if (c !== undefined) {
      this.memo = c;
      this.memoIndex = index;
      this.memoGen = gen;
    }
    return c;
  }

  /**
   * Reads `total` bytes (inside the file, at most CACHED_MAX_REQUEST) from the shared chunks, piece by
   * piece (a piece lies in one extent and one chunk); a missing chunk is fetched (or joined) first. The
   * callback always runs asynchronously.
   */
  private cached(buf: Buffer, bufOffset: number, total: number, position: number, cb: ReadCallback): void {
    let done = 0;
    let sync = true;
    const step = (): void => {
      while (done < total) {
        const pos = position + done;
        const idx = this.find(pos);
        const within = pos - this.fileStart[idx]!;
        const devAt = this.devStart[idx]! + within;
        const index = Math.floor(devAt / CHUNK_BYTES);
        const inChunk = devAt - index * CHUNK_BYTES;
        const n = Math.min(total - done, this.extLen[idx]! - within, CHUNK_BYTES - inChunk);
        const hit = this.chunkAt(index);
        if (hit !== undefined && inChunk + n <= hit.length) {
          hit.copy(buf, bufOffset + done, inChunk, inChunk + n);
          done += n;
          continue;
        }
        if (hit !== undefined) {
          // A chunk cut short by the device's end cannot hold file bytes: read the piece directly.
          const at = done;
          this.direct(buf, bufOffset + at, n, pos, (e) => {
            if (e) return cb(e, 0);
            done = at + n;
            sync = false;
            step();
          });
          return;
        }
        this.chunks.fetch(index, (e) => {
          if (e) return cb(e, 0);
          if (this.closed) return cb(new IoError('EBADF', `${this.label}: file is closed`), 0);
          sync = false;
          // The chunk is in the cache now, or (a write retired it meanwhile, or the cache is full of
          // others) not: then the next round reads it again, which sees the write.
          const got = this.chunks.peek(index);
          if (got === undefined) return this.direct(buf, bufOffset + done, total - done, position + done, (e2) => (e2 ? cb(e2, 0) : cb(null, total)));
          step();
        });
        return;
      }
      if (sync) process.nextTick(cb, null, total);
      else cb(null, total);
    };
    step();
  }

  /**
   * Reads `total` bytes (inside the file) with one device read per extent piece. The pieces of a
   * fragmented range go to disjoint parts of `buf`, so up to PIECES_IN_FLIGHT of them run at once.
   */
  private direct(buf: Buffer, bufOffset: number, total: number, position: number, cb: ReadCallback): void {
    let idx = this.find(position);
    const within0 = position - this.fileStart[idx]!;
    const first = Math.min(total, this.extLen[idx]! - within0);
    if (first === total) {
      // The common case: one extent piece.
      this.dev.read(buf, bufOffset, total, this.devStart[idx]! + within0, (e) => (e ? cb(e, 0) : cb(null, total)));
      return;
    }
    let issued = 0; // bytes handed to the device so far
    let inflight = 0;
    let failed = false;
    let finished = false;
    const pump = (): void => {
      while (!failed && inflight < PIECES_IN_FLIGHT && issued < total) {
        const pos = position + issued;
        while (pos >= this.fileStart[idx]! + this.extLen[idx]!) idx++;
        const within = pos - this.fileStart[idx]!;
        const n = Math.min(total - issued, this.extLen[idx]! - within);
        const at = bufOffset + issued;
        issued += n;
        inflight++;
        this.dev.read(buf, at, n, this.devStart[idx]! + within, done);
      }
      if (!finished && inflight === 0 && (failed || issued >= total)) {
        finished = true;
        if (!failed) cb(null, total);
      }
    };
    const done = (e: Error | null): void => {
      inflight--;
      if (e && !failed) {
        failed = true;
        finished = true;
        cb(e, 0);
        return;
      }
      pump();
    };
    pump();
  }

  close(): void {
    this.closed = true;
    this.memo = null;
  }
}

export class FatVolume {
  readonly type: FatType;
  readonly label: string;
  readonly name: string;
  private readonly table: FatTable;
  /** Parsed directories by first cluster, bounded by count and by total entries. */
  private readonly dirs = new BoundedLru<number, Listing>(DIR_CACHE_ENTRIES, DIR_CACHE_TOTAL_ENTRIES, (d) => d.entries.length + 1);
  private readonly dirsPending = new Map<number, Promise<Listing>>();
  /** Recent chains by (first cluster, limit), bounded by count and by total extents. */
  private readonly chains = new BoundedLru<string, Extent[]>(CHAIN_CACHE_ENTRIES, CHAIN_CACHE_TOTAL_EXTENTS, (e) => e.length + 1);
  /** Directory chains are walked through the chain cache. */
  private readonly chainSource = { chain: (start: number, opts: ChainOptions) => this.chainOf(start, opts) };
  private readonly openDirectory = (first: number, path: string): Promise<Listing> => this.directory(first, path);
  private generation = 0;
  private unsubscribe: (() => void) | undefined;
  /** This volume's share of the process-wide data chunks, and the fetches in flight. */
  private readonly cacheId = ++volumeIds;
  private readonly fetching = new Map<string, Array<(err: Error | null, chunk: Buffer | null) => void>>();
  private readonly chunkSource: ChunkSource = {
    generation: () => this.generation,
    peek: (index) => sharedChunks.get(`${this.cacheId}:${this.generation}:${index}`),
    fetch: (index, cb) => this.fetchChunk(index, cb),
  };

  private constructor(
    private readonly dev: BlockDevice,
    readonly bpb: Bpb,
    name: string,
    label: string,
  ) {
    this.type = bpb.type;
    this.name = name;
    this.label = label;
    this.table = new FatTable(dev, bpb, 128, name);
    const [fatLo, fatHi] = fatArea(bpb);
    const volEnd = bpb.volumeBytes;
    this.unsubscribe = dev.onWritten((off, len) => {
      if (off >= volEnd || off + len <= 0) return;
      if (off < fatHi && off + len > fatLo) this.table.invalidate();
      this.dropCaches();
    });
  }

  /** Opens the FAT volume on `dev`; rejects with `ParseError` (not FAT, bad BPB) or `CorruptError`. */
  static async open(dev: BlockDevice, opts: { name?: string } = {}): Promise<FatVolume> {
    const name = opts.name ?? dev.name;
    const { bpb } = await readBootSector(dev, name);
    const vol = new FatVolume(dev, bpb, name, '');
    try {
      const root = await vol.directory(ROOT);
      const labelEntry = root.entries.find((e) => e.kind === 'label');
      let label = labelEntry ? labelEntry.shortName : bpb.bpbLabel;
      label = label.trim();
      if (label === 'NO NAME') label = '';
      (vol as { label: string }).label = label;
    } catch (e) {
      vol.close();
      throw e;
    }
    return vol;
  }

  /** Stops listening to the device's written events. The volume still answers, without coherence. */
  close(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  /** Reads device chunk `index` into the shared cache (one read for every concurrent asker). */
  private fetchChunk(index: number, cb: (err: Error | null, chunk: Buffer | null) => void): void {
    const gen = this.generation;
    const key = `${this.cacheId}:${gen}:${index}`;
    const waiting = this.fetching.get(key);
    if (waiting) {
      waiting.push(cb);
      return;
    }
    const cbs = [cb];
    this.fetching.set(key, cbs);
    const start = index * CHUNK_BYTES;
    const len = Math.max(0, Math.min(CHUNK_BYTES, this.dev.size - start));
    const chunk = Buffer.allocUnsafe(len);
    this.dev.read(chunk, 0, len, start, (e) => {
      this.fetching.delete(key);
      // Kept only if no write came in between (a write bumps the generation: the next read refetches).
      if (!e && gen === this.generation) sharedChunks.set(key, chunk);
      for (const f of cbs) f(e, e ? null : chunk);
    });
  }

  private dropCaches(): void {
    this.generation++;
    this.dirs.clear();
    this.dirsPending.clear();
    this.chains.clear();
  }

  /** A file's or directory's chain as extents, cached by (first cluster, limit, onLonger). */
  private async chainOf(first: number, opts: ChainOptions): Promise<Chain> {
    const key = `${first}:${opts.limit}:${opts.onLonger}`;
    const hit = this.chains.get(key);
    if (hit) {
      let clusters = 0;
      for (const e of hit) clusters += e.count;
      return { extents: hit, clusters };
    }
    const gen = this.generation;
    const res = await this.table.chain(first, opts);
    if (gen === this.generation) this.chains.set(key, res.extents);
    return res;
  }

  /** A directory (ROOT or its first cluster), parsed and cached; its bytes are not kept. */
  private directory(first: number, path = '/'): Promise<Listing> {
    const hit = this.dirs.get(first);
    if (hit) return Promise.resolve(hit);
    const inflight = this.dirsPending.get(first);
    if (inflight) return inflight;
    const gen = this.generation;
    const p = loadDirectory(this.dev, this.bpb, this.chainSource, first, this.name, path).then(
      ({ entries, byName }) => {
        const d: Listing = { entries, byName };
        if (this.dirsPending.get(first) === p) this.dirsPending.delete(first);
        if (gen === this.generation) this.dirs.set(first, d);
        return d;
      },
      (e: unknown) => {
        if (this.dirsPending.get(first) === p) this.dirsPending.delete(first);
        throw e;
      },
    );
    this.dirsPending.set(first, p);
    return p;
  }

  /** Looks a path up: its entry (undefined for the root) and its normalized form. */
  private async lookup(path: string): Promise<{ entry: DirEntry | undefined; path: string }> {
    const parts = splitPath(path, this.name);
    const p = pathOf(parts);
    if (parts.length === 0) return { entry: undefined, path: p };
    const { entry } = await resolveParent(await this.directory(ROOT), parts, this.openDirectory, this.name);
    if (!entry) throw new NotFoundError('ENOENT', `${this.name}: ${p}: no such file or directory`);
    return { entry, path: p };
  }

  async stat(path: string): Promise<FatStat> {
    return statOf((await this.lookup(path)).entry);
  }

  async readdir(path: string): Promise<FatStat[]> {
    const { entry: e, path: p } = await this.lookup(path);
    if (e && e.kind !== 'directory') throw new NotFoundError('ENOTDIR', `${this.name}: ${p}: not a directory`);
    const dir = await this.directory(e ? subdirectory(e, this.name, p) : ROOT, p);
    const out: FatStat[] = [];
    for (const d of dir.entries) if (d.kind === 'file' || d.kind === 'directory') out.push(statOf(d));
    return out;
  }

  async open(path: string): Promise<FileSource> {
    const { entry, path: p, extents } = await this.fileExtents(path);
    return new FatFileSource(this.dev, entry.size, extents, this.bpb, `${this.name}:${p}`, this.chunkSource);
  }

  /** The clusters of a file as runs of contiguous clusters (for tools and tests: shows fragmentation). */
  async extents(path: string): Promise<Extent[]> {
    return (await this.fileExtents(path)).extents;
  }

  private async fileExtents(path: string): Promise<{ entry: DirEntry; path: string; extents: Extent[] }> {
    const { entry: e, path: p } = await this.lookup(path);
    if (!e || e.kind === 'directory') throw new NotFoundError('EISDIR', `${this.name}: ${p}: is a directory`);
    const bpb = this.bpb;
    if (e.size === 0) return { entry: e, path: p, extents: [] };
    const need = Math.ceil(e.size / bpb.clusterSize);
    if (need > bpb.clusterCount) {
      throw new CorruptError('ESIZE', `${this.name}: ${p}: size ${e.size} is larger than the volume`);
    }
    if (e.firstCluster < 2 || e.firstCluster > bpb.maxCluster) {
      throw new CorruptError('EBADCLUSTER', `${this.name}: ${p}: first cluster ${e.firstCluster} is outside 2..${bpb.maxCluster}`);
    }
    const { extents, clusters } = await this.chainOf(e.firstCluster, { limit: need, onLonger: 'stop', what: p });
    if (clusters < need) {
      throw new CorruptError('ESHORT', `${this.name}: ${p}: cluster chain holds ${clusters} clusters, size ${e.size} needs ${need}`);
    }
    return { entry: e, path: p, extents };
  }
}
