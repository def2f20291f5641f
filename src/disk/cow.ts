/**
 * Copy-on-write overlay: a `BlockDevice` over a read-only base device plus, per client, a sparse overlay
 * file (same size and layout as the base: block N of the device lives at offset N*blockSize in the overlay)
 * and an allocation map (which blocks the overlay holds).
 *
 * Files in the state directory, per export and client identity:
 *   <stateDir>/<export>/<client>.overlay   sparse, base-sized
 *   <stateDir>/<export>/<client>.map       4096-byte header ("NBDCOWv1", block size, base size) + bitmap
 *
 * Writes: blocks the overlay already holds are written in place (the fast path, fully concurrent). A
 * write touching a block the overlay does not hold yet goes through a per-device serial queue: partial
 * blocks are first filled from the base (read-modify-write), the data is written, then the map bits are
 * set in memory and the changed map bytes are written to the map file before the write is acknowledged,
 * so a killed daemon (kill -9) loses nothing it acknowledged. FLUSH fdatasyncs the overlay, then the map:
 * after a FLUSH both the data and the map that points at it are on stable storage.
 *
 * Limitation: after a power loss (not a process kill), a block first written but not yet flushed may read
 * as zeros where the map reached the disk before the data; the client never had that write confirmed.
 *
 * Allocation (`blockStatus`): a block the overlay holds is allocated (status 0). A block it does not hold
 * shows the base: Node has no lseek(SEEK_DATA/SEEK_HOLE), so base blocks that read as all zeros are
 * reported as hole+zero (found by reading the base, at most `scanLimit` bytes per query, reporting a
 * prefix as the NBD spec permits); other base blocks are allocated.
 */
import fs from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  type AllocationCallback, type AllocationExtent, type BlockDevice, type CheckCallback, type IoCallback,
  type StaleListener, type WrittenListener, DeviceLife, WrittenEmitter, checkRange,
} from './blockdev.js';
import { CorruptError, IoError } from '../util/errors.js';

const MAP_MAGIC = 'NBDCOWv1';
const MAP_HEADER = 4096;
const DEFAULT_BLOCK = 4096;

const pOpen = promisify(fs.open);
const pClose = promisify(fs.close);
const pFstat = promisify(fs.fstat);
const pFtruncate = promisify(fs.ftruncate);
const pRead = promisify(fs.read);
const pWrite = promisify(fs.write) as (fd: number, buf: Buffer, off: number, len: number, pos: number) => Promise<unknown>;
const pFsync = promisify(fs.fsync);

/** A client identity or export name made safe as one path component (no separators, no dot-names). */
export function safeComponent(s: string): string {
  const out = s.replace(/[^A-Za-z0-9._-]/g, (c) => `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return out === '' || out.startsWith('.') ? `%2e${out.slice(1)}` : out;
}

export function overlayPaths(stateDir: string, exportName: string, client: string): { dir: string; overlay: string; map: string } {
  const dir = join(stateDir, safeComponent(exportName));
  const base = safeComponent(client);
  return { dir, overlay: join(dir, `${base}.overlay`), map: join(dir, `${base}.map`) };
}

/** Deletes a client's overlay (the client sees the pristine base again). Returns whether one existed. */
export async function resetOverlay(stateDir: string, exportName: string, client: string): Promise<boolean> {
  const p = overlayPaths(stateDir, exportName, client);
  let existed = false;
  for (const f of [p.overlay, p.map]) {
    try {
      await fs.promises.unlink(f);
      existed = true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }
  return existed;
}

export interface CowOpenOptions {
  blockSize?: number;
  /** Most base bytes read per `blockStatus` query to find zero blocks (default 8 MiB). */
  scanLimit?: number;
}

type QueuedWrite = { buf: Buffer; offset: number; length: number; position: number; cb: IoCallback };

export class CowBlockDevice implements BlockDevice {
  readonly readOnly = false;
  readonly size: number;
  private readonly emitter = new WrittenEmitter();
  private readonly queue: QueuedWrite[] = [];
  private queueBusy = false;
  private closed = false;
  private closing: Promise<void> | null = null;
  /** Stale state of the overlay's own files; operations in flight (queued writes included). */
  private readonly life: DeviceLife;
  private readonly scanLimit: number;

  private constructor(
    readonly base: BlockDevice,
    readonly name: string,
    /** The overlay and map files; -1 until the first write makes them (`materialize`). */
    private overlayFd: number,
    private mapFd: number,
    readonly blockSize: number,
    private readonly bitmap: Buffer,
    scanLimit: number,
    private readonly paths: { dir: string; overlay: string; map: string },
  ) {
    this.size = base.size;
    this.scanLimit = scanLimit;
    this.life = new DeviceLife(name, 'this connection can no longer use it');
  }

  /**
   * Opens the overlay of `client` for `exportName` over `base`. One that exists is opened (and checked);
   * one that does not is made by the first write: a client that only reads (nbdinfo, a probe, a hostile
   * host opening exports from many addresses) leaves no files behind.
   */
  static async open(base: BlockDevice, stateDir: string, exportName: string, client: string, opts: CowOpenOptions = {}): Promise<CowBlockDevice> {
    const blockSize = opts.blockSize ?? DEFAULT_BLOCK;
    if (!Number.isInteger(blockSize) || blockSize < 512 || (blockSize & (blockSize - 1)) !== 0) {
      throw new IoError('EINVAL', `copy-on-write block size ${blockSize} must be a power of two ≥ 512`);
    }
    const p = overlayPaths(stateDir, exportName, client);
    const name = `${base.name}+cow:${client}`;
    const scanLimit = opts.scanLimit ?? 8 << 20;
    const exists = await fs.promises.access(p.map).then(() => true, () => false);
    if (!exists) return new CowBlockDevice(base, name, -1, -1, blockSize, Buffer.alloc(Math.ceil(Math.ceil(base.size / blockSize) / 8)), scanLimit, p);
    const f = await CowBlockDevice.openFiles(base, p, blockSize);
    return new CowBlockDevice(base, name, f.overlayFd, f.mapFd, blockSize, f.bitmap, scanLimit, p);
  }

  /** Opens, or creates, the overlay and map files; a failed attempt removes exactly what it created. */
  private static async openFiles(
    base: BlockDevice, p: { dir: string; overlay: string; map: string }, blockSize: number,
  ): Promise<{ overlayFd: number; mapFd: number; bitmap: Buffer }> {
    await fs.promises.mkdir(p.dir, { recursive: true });
    const nblocks = Math.ceil(base.size / blockSize);
    const mapBytes = Math.ceil(nblocks / 8);
    const C = fs.constants;
    // The files this attempt creates: removed again if it fails (ENOSPC half-way), so the next attempt
    // starts clean. A file that existed before (a client's overlay) is never removed here.
    const created: string[] = [];
    const openOrCreate = async (path: string): Promise<number> => {
      try {
        const fd = await pOpen(path, C.O_RDWR | C.O_CREAT | C.O_EXCL, 0o600);
        created.push(path);
        return fd;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        return pOpen(path, C.O_RDWR);
      }
    };
    let overlayFd = -1;
    let mapFd = -1;
    try {
      overlayFd = await openOrCreate(p.overlay);
      const st = await pFstat(overlayFd);
      if (st.size > base.size) throw new CorruptError('COW_SIZE', `${p.overlay}: overlay larger than the base (${st.size} > ${base.size})`);
      if (st.size < base.size) await pFtruncate(overlayFd, base.size);
      mapFd = await openOrCreate(p.map);
      const bitmap = Buffer.alloc(mapBytes);
      const mst = await pFstat(mapFd);
      const header = Buffer.alloc(MAP_HEADER);
      if (mst.size > 0) await readFull(mapFd, header, MAP_HEADER, 0);
      // A map of zeros (header and bitmap) was never initialised: its creation failed half-way (before
      // this version removed what a failed attempt made). It holds nothing: initialise it.
      const unwritten = mst.size === 0 || (isZero(header, 0, MAP_HEADER) && (await readFull(mapFd, bitmap, mapBytes, MAP_HEADER)) >= 0 && isZero(bitmap, 0, mapBytes));
      if (unwritten) {
        header.write(MAP_MAGIC, 0, 'latin1');
        header.writeUInt32BE(blockSize, 8);
        header.writeBigUInt64BE(BigInt(base.size), 16);
        await pFtruncate(mapFd, MAP_HEADER + mapBytes);
        await pWrite(mapFd, header, 0, MAP_HEADER, 0);
        await pFsync(mapFd);
      } else {
        if (header.toString('latin1', 0, 8) !== MAP_MAGIC) throw new CorruptError('COW_MAP', `${p.map}: not a netbootd overlay map`);
        const bs = header.readUInt32BE(8);
        const size = Number(header.readBigUInt64BE(16));
        if (bs !== blockSize || size !== base.size || mst.size < MAP_HEADER + mapBytes) {
          throw new CorruptError('COW_MAP', `${p.map}: made for block size ${bs} and base size ${size}, now ${blockSize}/${base.size}; reset the overlay`);
        }
        await readFull(mapFd, bitmap, mapBytes, MAP_HEADER);
      }
      return { overlayFd, mapFd, bitmap };
    } catch (e) {
      if (overlayFd >= 0) await pClose(overlayFd).catch(() => {});
      if (mapFd >= 0) await pClose(mapFd).catch(() => {});
      for (const f of created.reverse()) await fs.promises.unlink(f).catch(() => {});
      throw e;
    }
  }

  /** The error every operation fails with since this overlay or its base changed, or null. */
  get stale(): Error | null {
    return this.life.stale ?? this.base.stale ?? null;
  }

  /** Called once when the overlay's own files are found deleted or truncated. Returns the unsubscribe function. */
  onStale(listener: StaleListener): () => void {
    return this.life.onStale(listener);
  }

  private unusable(): Error | null {
    return this.life.stale ?? this.base.stale ?? (this.closed ? new IoError('EBADF', `${this.name}: closed`) : null);
  }

  private enter(cb: IoCallback): IoCallback {
    return this.life.enter(cb);
  }

  /** fstat of the overlay and map fds: a file without a name any more means the overlay was deleted. */
  private verifyOwn(cb: CheckCallback): void {
    if (this.overlayFd < 0) return process.nextTick(cb, null, this.life.change); // no files yet: nothing to lose
    const done = this.enter((err) => cb(err, this.life.change));
    fs.fstat(this.overlayFd, (e1, s1) => {
      if (e1) return done(e1);
      fs.fstat(this.mapFd, (e2, s2) => {
        if (e2) return done(e2);
        if (s1.nlink === 0 || s2.nlink === 0) this.life.markStale('deleted', 'the overlay files were deleted while in use');
        else if (s1.size < this.size) this.life.markStale('truncated', `the overlay file shrank while in use (${s1.size} bytes, ${this.size} expected)`);
        done(null);
      });
    });
  }

  /** Checks the base image file (when it can be checked) and the overlay's own files. */
  check(cb: CheckCallback): void {
    if (this.life.stale) return process.nextTick(cb, null, this.life.change);
    if (this.closed) return process.nextTick(cb, null, null);
    this.checkAll(cb);
  }

  private checkAll(cb: CheckCallback): void {
    const own = (): void => this.verifyOwn(cb);
    if (!this.base.check) return own();
    this.base.check((e, change) => (e || change ? cb(e, change) : own()));
  }

  private has(block: number): boolean {
    return (this.bitmap[block >>> 3]! & (1 << (block & 7))) !== 0;
  }

  /** Number of blocks the overlay holds (tests, status). */
  get allocatedBlocks(): number {
    let n = 0;
    for (let i = 0; i < this.bitmap.length; i++) {
      let v = this.bitmap[i]!;
      while (v) {
        n += v & 1;
        v >>>= 1;
      }
    }
    return n;
  }

  private blockEnd(block: number): number {
    return Math.min((block + 1) * this.blockSize, this.size);
  }

  /**
   * The run starting at byte `p` (before `end`) whose blocks are all in the overlay, or all not:
   * where it ends, and which it is.
   */
  private run(p: number, end: number): { q: number; held: boolean } {
    const b = Math.floor(p / this.blockSize);
    const held = this.has(b);
    let q = this.blockEnd(b);
    let nb = b + 1;
    while (q < end && this.has(nb) === held) {
      q = this.blockEnd(nb);
      nb++;
    }
    return { q: Math.min(q, end), held };
  }

  read(buf: Buffer, offset: number, length: number, position: number, cb0: IoCallback): void {
    const bad = this.unusable() ?? checkRange(this, length, position);
    if (bad) return process.nextTick(cb0, bad);
    if (length === 0) return process.nextTick(cb0, null);
    const cb = this.enter(cb0);
    const end = position + length;
    let pending = 1;
    let failed: Error | null = null;
    const done = (e: Error | null): void => {
      if (e && !failed) failed = e;
      if (--pending === 0) cb(failed);
    };
    let p = position;
    while (p < end) {
      const { q, held: inOverlay } = this.run(p, end);
      pending++;
      if (inOverlay) this.readOverlay(buf, offset + (p - position), q - p, p, done);
      else this.base.read(buf, offset + (p - position), q - p, p, done);
      p = q;
    }
    done(null);
  }

  private readOverlay(buf: Buffer, offset: number, length: number, position: number, cb: IoCallback): void {
    fs.read(this.overlayFd, buf, offset, length, position, (err, n) => {
      if (err) return cb(err);
      if (n === length) return cb(null);
      if (n === 0) {
        // The overlay is always as long as the base: someone truncated it. Never zeros as data.
        return cb(this.life.markStale('truncated', `the overlay file shrank while in use (it ends before byte ${position})`));
      }
      this.readOverlay(buf, offset + n, length - n, position + n, cb);
    });
  }

  write(buf: Buffer, offset: number, length: number, position: number, cb0: IoCallback): void {
    const unusable = this.unusable();
    if (unusable) return process.nextTick(cb0, unusable);
    if (Number.isSafeInteger(position) && Number.isSafeInteger(length) && position >= 0 && length >= 0 && position + length > this.size) {
      return process.nextTick(cb0, new IoError('ENOSPC', `${this.name}: write ${position}+${length} past the end (${this.size} bytes)`));
    }
    const bad = checkRange(this, length, position);
    if (bad) return process.nextTick(cb0, bad);
    if (length === 0) return process.nextTick(cb0, null);
    const cb = this.enter(cb0);
    if (this.allHeld(position, length)) {
      this.writeOverlay(buf, offset, length, position, (e) => {
        this.emitter.emit(position, length);
        cb(e);
      });
      return;
    }
    this.queue.push({ buf, offset, length, position, cb });
    if (!this.queueBusy) this.drainQueue();
  }

  private allHeld(position: number, length: number): boolean {
    const last = Math.floor((position + length - 1) / this.blockSize);
    for (let b = Math.floor(position / this.blockSize); b <= last; b++) if (!this.has(b)) return false;
    return true;
  }

  private drainQueue(): void {
    const w = this.queue.shift();
    if (!w) {
      this.queueBusy = false;
      return;
    }
    this.queueBusy = true;
    const next = (e: Error | null): void => {
      w.cb(e);
      this.drainQueue();
    };
    if (this.overlayFd < 0) {
      // The first write: make the files now (an error, ENOSPC say, fails this write; the next one tries again).
      this.materialize((e) => (e ? next(e) : this.copyOnWrite(w, next)));
      return;
    }
    this.copyOnWrite(w, next);
  }

  /** Creates the overlay and map files of an overlay opened without them (its bitmap is empty). */
  private materialize(cb: IoCallback): void {
    CowBlockDevice.openFiles(this.base, this.paths, this.blockSize).then(
      (f) => {
        if (this.closed) {
          fs.close(f.overlayFd, () => {});
          fs.close(f.mapFd, () => {});
          return cb(new IoError('EBADF', `${this.name}: closed`));
        }
        // Another process (a reset racing us) may have left files with blocks in them: take its map.
        f.bitmap.copy(this.bitmap);
        this.overlayFd = f.overlayFd;
        this.mapFd = f.mapFd;
        cb(null);
      },
      (e: Error) => cb(e),
    );
  }

  /** Whether the overlay's files exist yet (they are made by the first write). */
  get materialized(): boolean {
    return this.overlayFd >= 0;
  }

  /** The slow path: fills partial unheld edge blocks from the base, writes, then records the blocks. */
  private copyOnWrite(w: QueuedWrite, cb: IoCallback): void {
    const bs = this.blockSize;
    const { position, length } = w;
    const end = position + length;
    const first = Math.floor(position / bs);
    const last = Math.floor((end - 1) / bs);
    const headPartial = !this.has(first) && (position % bs !== 0 || (first === last && end < this.blockEnd(first)));
    const tailPartial = last !== first && !this.has(last) && end < this.blockEnd(last);

    let pending = 1;
    let failed: Error | null = null;
    const finish = (e: Error | null): void => {
      if (e && !failed) failed = e;
      if (--pending > 0) return;
      if (failed) {
        this.emitter.emit(position, length); // part of it may have changed in the overlay
        return cb(failed);
      }
      this.markHeld(first, last, (me) => {
        this.emitter.emit(position, length);
        cb(me);
      });
    };

    // A block filled from the base with the user's bytes merged in, written whole.
    const rmw = (block: number): void => {
      pending++;
      const bStart = block * bs;
      const bLen = this.blockEnd(block) - bStart;
      const tmp = Buffer.allocUnsafe(bLen);
      this.base.read(tmp, 0, bLen, bStart, (e) => {
        if (e) return finish(e);
        const lo = Math.max(bStart, position);
        const hi = Math.min(bStart + bLen, end);
        w.buf.copy(tmp, lo - bStart, w.offset + (lo - position), w.offset + (hi - position));
        this.writeOverlay(tmp, 0, bLen, bStart, finish);
      });
    };

    let midStart = position;
    let midEnd = end;
    if (headPartial) {
      rmw(first);
      midStart = Math.min(end, this.blockEnd(first));
    }
    if (tailPartial) {
      rmw(last);
      midEnd = Math.max(midStart, last * bs);
    }
    if (midEnd > midStart) {
      pending++;
      this.writeOverlay(w.buf, w.offset + (midStart - position), midEnd - midStart, midStart, finish);
    }
    finish(null);
  }

  /** Sets the bits of blocks [first, last] and writes the changed bitmap bytes to the map file. */
  private markHeld(first: number, last: number, cb: IoCallback): void {
    let changed = false;
    for (let b = first; b <= last; b++) {
      if (!this.has(b)) {
        this.bitmap[b >>> 3]! |= 1 << (b & 7);
        changed = true;
      }
    }
    if (!changed) return cb(null);
    const lo = first >>> 3;
    const hi = (last >>> 3) + 1;
    this.writeAll(this.mapFd, this.bitmap, lo, hi - lo, MAP_HEADER + lo, cb);
  }

  private writeOverlay(buf: Buffer, offset: number, length: number, position: number, cb: IoCallback): void {
    this.writeAll(this.overlayFd, buf, offset, length, position, cb);
  }

  private writeAll(fd: number, buf: Buffer, offset: number, length: number, position: number, cb: IoCallback): void {
    fs.write(fd, buf, offset, length, position, (err, n) => {
      if (err) return cb(err);
      if (n === length) return cb(null);
      this.writeAll(fd, buf, offset + n, length - n, position + n, cb);
    });
  }

  /**
   * fdatasync of the overlay, then of the map; then a check that the overlay files still have their names
   * and the base is still the image file: a FLUSH is never acknowledged for writes that would be lost.
   */
  flush(cb0: IoCallback): void {
    const bad = this.unusable();
    if (bad) return process.nextTick(cb0, bad);
    const cb = this.enter(cb0);
    this.sync((e) => {
      if (e) return cb(e);
      this.checkAll((e2) => cb(e2 ?? this.stale));
    });
  }

  private sync(cb: IoCallback): void {
    if (this.overlayFd < 0) return process.nextTick(cb, null); // nothing written yet
    fs.fdatasync(this.overlayFd, (e) => {
      if (e) return cb(e);
      fs.fdatasync(this.mapFd, (e2) => cb(e2));
    });
  }

  onWritten(listener: WrittenListener): () => void {
    return this.emitter.add(listener);
  }

  blockStatus(position: number, length: number, cb0: AllocationCallback): void {
    const bad = this.unusable() ?? checkRange(this, length, position);
    if (bad) return process.nextTick(cb0, bad);
    let extentsOut: AllocationExtent[] | undefined;
    const leave = this.enter((e) => (e ? cb0(e) : cb0(null, extentsOut)));
    const cb: AllocationCallback = (e, ext) => {
      extentsOut = ext;
      leave(e);
    };
    const bs = this.blockSize;
    const end = position + length;
    const extents: AllocationExtent[] = [];
    const push = (len: number, hole: boolean, zero: boolean): void => {
      const prev = extents[extents.length - 1];
      if (prev && prev.hole === hole && prev.zero === zero) prev.length += len;
      else extents.push({ length: len, hole, zero });
    };
    // Collect runs; base runs are scanned for zero blocks (bounded per query).
    let p = position;
    let scanned = 0;
    const step = (): void => {
      while (p < end) {
        const { q, held } = this.run(p, end);
        if (held) {
          push(q - p, false, false);
          p = q;
          continue;
        }
        if (scanned >= this.scanLimit) break;
        const n = Math.min(q - p, this.scanLimit - scanned, 4 << 20);
        const tmp = Buffer.allocUnsafe(n);
        const at = p;
        this.base.read(tmp, 0, n, at, (e) => {
          if (e) return cb(e);
          scanned += n;
          // Classify per block (aligned to the device's blocks).
          let s = 0;
          while (s < n) {
            const abs = at + s;
            const e2 = Math.min(n, this.blockEnd(Math.floor(abs / bs)) - at);
            const zero = isZero(tmp, s, e2);
            push(e2 - s, zero, zero);
            s = e2;
          }
          p = at + n;
          step();
        });
        return;
      }
      if (extents.length === 0) extents.push({ length: Math.min(length, bs), hole: false, zero: false });
      cb(null, extents);
    };
    step();
  }

  /** Waits for operations in flight, flushes (unless stale) and closes the files; later operations fail. */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closed = true;
    this.closing = (async () => {
      await new Promise<void>((res) => this.life.whenIdle(res));
      const flushed = this.stale ? null : await new Promise<Error | null>((res) => this.sync(res));
      if (this.overlayFd >= 0) await pClose(this.overlayFd);
      if (this.mapFd >= 0) await pClose(this.mapFd);
      if (flushed) throw flushed;
    })();
    return this.closing;
  }
}

/** Reads up to `length` bytes at `position` (fewer at the end of the file); returns how many. */
async function readFull(fd: number, buf: Buffer, length: number, position: number): Promise<number> {
  let got = 0;
  while (got < length) {
    const { bytesRead } = await pRead(fd, buf, got, length - got, position + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got;
}

const ZEROS = Buffer.alloc(64 * 1024);
function isZero(buf: Buffer, start: number, end: number): boolean {
  for (let p = start; p < end; p += ZEROS.length) {
    const n = Math.min(ZEROS.length, end - p);
    if (buf.compare(ZEROS, 0, n, p, p + n) !== 0) return false;
  }
  return true;
}
