/**
 * Block sources. One `BlockDevice` per image file, opened once and shared by every user of that image
 * (NBD exports, FAT volumes, prep). Positional I/O uses the callback `fs` API (the promise FileHandle API
 * is ~3x slower on hot paths). Every completed write is announced with `written(offset, length)` so
 * caches above (FAT volumes, TFTP) can drop what it made stale.
 */
import fs from 'node:fs';
import { IoError } from '../util/errors.js';

export type IoCallback = (err: Error | null) => void;
export type WrittenListener = (offset: number, length: number) => void;

/** One run of a device's allocation map (NBD `base:allocation`): `hole` = not allocated, `zero` = reads as zeros. */
export interface AllocationExtent {
  length: number;
  hole: boolean;
  zero: boolean;
}
export type AllocationCallback = (err: Error | null, extents?: AllocationExtent[]) => void;

export interface BlockDevice {
  /** Size in bytes. */
  readonly size: number;
  readonly readOnly: boolean;
  /** A short human name for logs and errors (file path, `path#p1`, ...). */
  readonly name: string;
  /**
   * Read exactly `length` bytes at byte `position` into `buf[offset…]`. A range outside [0, size] is an
   * `IoError` (code `EINVAL`); it never returns a short read.
   */
  read(buf: Buffer, offset: number, length: number, position: number, cb: IoCallback): void;
  /** Write exactly `length` bytes; `IoError` `EPERM` when read-only, `ENOSPC` past the end. */
  write(buf: Buffer, offset: number, length: number, position: number, cb: IoCallback): void;
  /** Make every completed write durable (fdatasync for files). */
  flush(cb: IoCallback): void;
  /** Subscribe to completed writes (device-relative offsets). Returns the unsubscribe function. */
  onWritten(listener: WrittenListener): () => void;
  /**
   * Optional: the allocation status of [position, position+length) as consecutive extents starting at
   * `position` (they may cover only a prefix). Devices without it are reported fully allocated.
   */
  blockStatus?(position: number, length: number, cb: AllocationCallback): void;
  /** Optional vectored read: fills `bufs` in order from the consecutive bytes at `position`. */
  readv?(bufs: Buffer[], position: number, cb: IoCallback): void;
  /** Optional vectored write: writes `bufs` in order as consecutive bytes at `position` (one announcement). */
  writev?(bufs: Buffer[], position: number, cb: IoCallback): void;
}

/** Total length of a buffer list. */
export function totalLength(bufs: readonly Buffer[]): number {
  let n = 0;
  for (const b of bufs) n += b.length;
  return n;
}

/** The buffer list without its first `n` bytes (views, no copies). */
export function skipBytes(bufs: readonly Buffer[], n: number): Buffer[] {
  let i = 0;
  while (i < bufs.length && n >= bufs[i]!.length) n -= bufs[i++]!.length;
  const rest = bufs.slice(i);
  if (rest.length && n > 0) rest[0] = rest[0]!.subarray(n);
  return rest;
}

/** Checks a request against a device; returns the error to report, or null. */
export function checkRange(dev: { size: number; name: string }, length: number, position: number): IoError | null {
  if (!Number.isSafeInteger(position) || !Number.isSafeInteger(length) || position < 0 || length < 0) {
    return new IoError('EINVAL', `${dev.name}: bad I/O range offset=${position} length=${length}`);
  }
  if (position + length > dev.size) {
    return new IoError('EINVAL', `${dev.name}: I/O range ${position}+${length} past the end (${dev.size} bytes)`);
  }
  return null;
}

/** A small list of listeners, cheaper than EventEmitter on the write path and with no 'error' surprises. */
export class WrittenEmitter {
  private listeners: WrittenListener[] = [];
  add(listener: WrittenListener): () => void {
    this.listeners = [...this.listeners, listener];
    return () => {
      this.listeners = this.listeners.filter((l) => l !== listener);
    };
  }
  emit(offset: number, length: number): void {
    for (const l of this.listeners) l(offset, length);
  }
  get count(): number {
    return this.listeners.length;
  }
}

/** A block device over an image file. Sparse files are fine: holes read as zeros. */
export class FileBlockDevice implements BlockDevice {
  private readonly emitter = new WrittenEmitter();
  private closed = false;

  private constructor(
    readonly fd: number,
    readonly size: number,
    readonly readOnly: boolean,
    readonly name: string,
  ) {}

  static open(path: string, opts: { readOnly?: boolean } = {}): Promise<FileBlockDevice> {
    const readOnly = opts.readOnly ?? false;
    return new Promise((resolve, reject) => {
      fs.open(path, readOnly ? 'r' : 'r+', (err, fd) => {
        if (err) return reject(err);
        fs.fstat(fd, (err2, st) => {
          if (err2) {
            fs.close(fd, () => reject(err2));
            return;
          }
          if (!st.isFile() && !st.isBlockDevice()) {
            fs.close(fd, () => reject(new IoError('EINVAL', `${path}: not a regular file or block device`)));
            return;
          }
          resolve(new FileBlockDevice(fd, st.size, readOnly, path));
        });
      });
    });
  }

  read(buf: Buffer, offset: number, length: number, position: number, cb: IoCallback): void {
    const bad = this.closed ? new IoError('EBADF', `${this.name}: closed`) : checkRange(this, length, position);
    if (bad) return process.nextTick(cb, bad);
    this.readLoop(buf, offset, length, position, cb);
  }

  private readLoop(buf: Buffer, offset: number, length: number, position: number, cb: IoCallback): void {
    if (length === 0) return process.nextTick(cb, null);
    fs.read(this.fd, buf, offset, length, position, (err, n) => {
      if (err) return cb(err);
      if (n === 0) {
        // The file shrank under us (truncated by someone else): what is missing reads as zeros.
        buf.fill(0, offset, offset + length);
        return cb(null);
      }
      if (n === length) return cb(null);
      this.readLoop(buf, offset + n, length - n, position + n, cb);
    });
  }

  write(buf: Buffer, offset: number, length: number, position: number, cb: IoCallback): void {
    if (this.closed) return process.nextTick(cb, new IoError('EBADF', `${this.name}: closed`));
    if (this.readOnly) return process.nextTick(cb, new IoError('EPERM', `${this.name}: read-only`));
    if (position + length > this.size && Number.isSafeInteger(position) && position >= 0 && length >= 0) {
      return process.nextTick(cb, new IoError('ENOSPC', `${this.name}: write ${position}+${length} past the end (${this.size} bytes)`));
    }
    const bad = checkRange(this, length, position);
    if (bad) return process.nextTick(cb, bad);
    this.writeLoop(buf, offset, length, position, position, length, cb);
  }

  private writeLoop(
    buf: Buffer, offset: number, length: number, position: number,
    start: number, total: number, cb: IoCallback,
  ): void {
    if (length === 0) {
      if (total > 0) this.emitter.emit(start, total);
      return cb(null);
    }
    fs.write(this.fd, buf, offset, length, position, (err, n) => {
      if (err) {
        // Part of the range may have changed: announce it so caches do not keep stale bytes.
        if (position > start) this.emitter.emit(start, position - start);
        return cb(err);
      }
      this.writeLoop(buf, offset + n, length - n, position + n, start, total, cb);
    });
  }

  readv(bufs: Buffer[], position: number, cb: IoCallback): void {
    const length = totalLength(bufs);
    const bad = this.closed ? new IoError('EBADF', `${this.name}: closed`) : checkRange(this, length, position);
    if (bad) return process.nextTick(cb, bad);
    this.readvLoop(bufs, length, position, cb);
  }

  private readvLoop(bufs: Buffer[], length: number, position: number, cb: IoCallback): void {
    if (length === 0) return process.nextTick(cb, null);
    fs.readv(this.fd, bufs, position, (err, n) => {
      if (err) return cb(err);
      if (n === length) return cb(null);
      if (n === 0) {
        for (const b of bufs) b.fill(0); // the file shrank under us: the rest reads as zeros
        return cb(null);
      }
      this.readvLoop(skipBytes(bufs, n), length - n, position + n, cb);
    });
  }

  writev(bufs: Buffer[], position: number, cb: IoCallback): void {
    const length = totalLength(bufs);
    if (this.closed) return process.nextTick(cb, new IoError('EBADF', `${this.name}: closed`));
    if (this.readOnly) return process.nextTick(cb, new IoError('EPERM', `${this.name}: read-only`));
    if (position + length > this.size && Number.isSafeInteger(position) && position >= 0) {
      return process.nextTick(cb, new IoError('ENOSPC', `${this.name}: write ${position}+${length} past the end (${this.size} bytes)`));
    }
    const bad = checkRange(this, length, position);
    if (bad) return process.nextTick(cb, bad);
    this.writevLoop(bufs, length, position, position, length, cb);
  }

  private writevLoop(bufs: Buffer[], length: number, position: number, start: number, total: number, cb: IoCallback): void {
    if (length === 0) {
      if (total > 0) this.emitter.emit(start, total);
      return cb(null);
    }
    fs.writev(this.fd, bufs, position, (err, n) => {
      if (err || n === 0) {
        if (position > start) this.emitter.emit(start, position - start);
        return cb(err ?? new IoError('EIO', `${this.name}: write made no progress at ${position}`));
      }
      this.writevLoop(skipBytes(bufs, n), length - n, position + n, start, total, cb);
    });
  }

  flush(cb: IoCallback): void {
    if (this.closed) return process.nextTick(cb, new IoError('EBADF', `${this.name}: closed`));
    if (this.readOnly) return process.nextTick(cb, null);
    fs.fdatasync(this.fd, (err) => cb(err));
  }

  onWritten(listener: WrittenListener): () => void {
    return this.emitter.add(listener);
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    return new Promise((resolve, reject) => fs.close(this.fd, (err) => (err ? reject(err) : resolve())));
  }
}

/** A device held in memory: for tests, fuzzing, and small synthetic images. */
export class MemoryBlockDevice implements BlockDevice {
  private readonly emitter = new WrittenEmitter();
  readonly size: number;
  constructor(
    readonly data: Buffer,
    readonly readOnly = false,
    readonly name = 'memory',
  ) {
    this.size = data.length;
  }
  read(buf: Buffer, offset: number, length: number, position: number, cb: IoCallback): void {
    const bad = checkRange(this, length, position);
    if (bad) return process.nextTick(cb, bad);
    this.data.copy(buf, offset, position, position + length);
    process.nextTick(cb, null);
  }
  write(buf: Buffer, offset: number, length: number, position: number, cb: IoCallback): void {
    if (this.readOnly) return process.nextTick(cb, new IoError('EPERM', `${this.name}: read-only`));
    const bad = checkRange(this, length, position);
    if (bad) return process.nextTick(cb, bad);
    buf.copy(this.data, position, offset, offset + length);
    this.emitter.emit(position, length);
    process.nextTick(cb, null);
  }
  flush(cb: IoCallback): void {
    process.nextTick(cb, null);
  }
  onWritten(listener: WrittenListener): () => void {
    return this.emitter.add(listener);
  }
}

/**
 * A window [start, start+size) of another device: a partition. Reads and writes are translated and
 * bounds-checked; the parent's written events that overlap the window are re-announced window-relative.
 */
export class SliceBlockDevice implements BlockDevice {
  readonly readOnly: boolean;
  constructor(
    readonly parent: BlockDevice,
    readonly start: number,
    readonly size: number,
    readonly name = `${parent.name}@${start}`,
    readOnly?: boolean,
  ) {
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(size) || start < 0 || size < 0 || start + size > parent.size) {
      throw new IoError('EINVAL', `${parent.name}: window ${start}+${size} does not fit in ${parent.size} bytes`);
    }
    this.readOnly = readOnly ?? parent.readOnly;
  }
  read(buf: Buffer, offset: number, length: number, position: number, cb: IoCallback): void {
    const bad = checkRange(this, length, position);
    if (bad) return process.nextTick(cb, bad);
    this.parent.read(buf, offset, length, this.start + position, cb);
  }
  write(buf: Buffer, offset: number, length: number, position: number, cb: IoCallback): void {
    if (this.readOnly) return process.nextTick(cb, new IoError('EPERM', `${this.name}: read-only`));
    const bad = checkRange(this, length, position);
    if (bad) return process.nextTick(cb, bad);
    this.parent.write(buf, offset, length, this.start + position, cb);
  }
  flush(cb: IoCallback): void {
    this.parent.flush(cb);
  }
  onWritten(listener: WrittenListener): () => void {
    const { start, size } = this;
    return this.parent.onWritten((off, len) => {
      const lo = Math.max(off, start);
      const hi = Math.min(off + len, start + size);
      if (hi > lo) listener(lo - start, hi - lo);
    });
  }
}

/** Promise helper for cold paths (partition tables, boot sectors): reads `length` bytes at `position`. */
export function readAt(dev: BlockDevice, position: number, length: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const buf = Buffer.allocUnsafe(length);
    dev.read(buf, 0, length, position, (err) => (err ? reject(err) : resolve(buf)));
  });
}

/** Promise helper for cold paths. */
export function writeAt(dev: BlockDevice, position: number, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    dev.write(data, 0, data.length, position, (err) => (err ? reject(err) : resolve()));
  });
}

/** Promise helper for cold paths. */
export function flushDevice(dev: BlockDevice): Promise<void> {
  return new Promise((resolve, reject) => dev.flush((err) => (err ? reject(err) : resolve())));
}
