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
/** How an image file changed under the daemon. */
export type ImageChange = 'deleted' | 'replaced' | 'truncated';
export type StaleListener = (change: ImageChange, detail: string) => void;
/** `change`: what happened to the file (null: unchanged). */
export type CheckCallback = (err: Error | null, change: ImageChange | null) => void;
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
  /**
   * Optional: set once the device can no longer be used (its image file was deleted, replaced or
   * truncated under the daemon): the error every operation now fails with.
   */
  readonly stale?: Error | null;
  /** Optional: checks whether the backing file(s) changed under the daemon (marks the device stale if so). */
  check?(cb: CheckCallback): void;
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

/**
 * What a file-backed device (an image file, a copy-on-write overlay) keeps about its own life: whether its
 * files changed under the daemon (stale: every later operation fails with that error; listeners are told
 * once), and which operations have a system call in flight, so its fds are closed only when none has (a
 * reused fd number must never get a late write).
 */
export class DeviceLife {
  private error: IoError | null = null;
  private what: ImageChange | null = null;
  private listeners: StaleListener[] = [];
  private busy = 0;
  private idle: Array<() => void> = [];

  constructor(private readonly name: string, private readonly advice: string) {}

  /** The error every operation fails with since the files changed, or null. */
  get stale(): IoError | null {
    return this.error;
  }

  get change(): ImageChange | null {
    return this.what;
  }

  /** Called once when the device becomes stale. Returns the unsubscribe function. */
  onStale(listener: StaleListener): () => void {
    this.listeners = [...this.listeners, listener];
    return () => {
      this.listeners = this.listeners.filter((l) => l !== listener);
    };
  }

  markStale(change: ImageChange, detail: string): IoError {
    if (!this.error) {
      this.what = change;
      this.error = new IoError('EIO', `${this.name}: ${detail}; ${this.advice}`);
      for (const l of this.listeners) l(change, detail);
    }
    return this.error;
  }

  /** An operation with a system call starts. */
  begin(): void {
    this.busy++;
  }

  /** It has ended. */
  end(): void {
    if (--this.busy === 0 && this.idle.length > 0) for (const f of this.idle.splice(0)) f();
  }

  /** An operation starts; the callback returned ends it, then calls `cb`. */
  enter(cb: IoCallback): IoCallback {
    this.busy++;
    return (e) => {
      this.end();
      cb(e);
    };
  }

  /** Runs `fn` once no operation is in flight. */
  whenIdle(fn: () => void): void {
    if (this.busy === 0) fn();
    else this.idle.push(fn);
  }
}

/**
 * A block device over an image file. Sparse files are fine: holes read as zeros.
 *
 * The file is remembered by identity (device and inode) at open. An image file that is deleted, replaced
 * (a new file renamed over its name) or truncated under the daemon makes the device *stale*: that is found
 * by `check()` (reloads, the periodic check, every open through the pool), by every FLUSH (after the
 * fdatasync the fd and the name are stat'ed, so a write that landed in a file without a name is never
 * acknowledged as durable) and by a read past the file's new end. A stale device fails every later read,
 * write and flush with an `IoError` (`EIO`) saying what happened: its users are told, never switched to
 * another file behind their back, and never given zeros for bytes that are gone.
 */
export class FileBlockDevice implements BlockDevice {
  private readonly emitter = new WrittenEmitter();
  private closed = false;
  private closing: Promise<void> | null = null;
  private readonly life: DeviceLife;
  private checking: CheckCallback[] | null = null;

  private constructor(
    readonly fd: number,
    readonly size: number,
    readonly readOnly: boolean,
    readonly name: string,
    private readonly ident: { dev: number; ino: number; regular: boolean },
  ) {
    this.life = new DeviceLife(name, 'this connection can no longer use it (reconnect to use the current file)');
  }

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
          resolve(new FileBlockDevice(fd, st.size, readOnly, path, { dev: st.dev, ino: st.ino, regular: st.isFile() }));
        });
      });
    });
  }

  /** The error every operation fails with since the image file changed, or null. */
  get stale(): IoError | null {
    return this.life.stale;
  }

  /** What happened to the image file (once stale). */
  get change(): ImageChange | null {
    return this.life.change;
  }

  /** Called once when the device becomes stale. Returns the unsubscribe function. */
  onStale(listener: StaleListener): () => void {
    return this.life.onStale(listener);
  }

  private unusable(): IoError | null {
    return this.life.stale ?? (this.closed ? new IoError('EBADF', `${this.name}: closed`) : null);
  }

  /** Compares the open file with what its name now holds; marks the device stale on a change. */
  private verify(cb: CheckCallback): void {
    fs.fstat(this.fd, (err, st) => {
      if (err) return cb(err, null);
      fs.stat(this.name, (err2, named) => {
        let change: ImageChange | null = null;
        let detail = '';
        const sameFile = !err2 && named.dev === this.ident.dev && named.ino === this.ident.ino;
        if (!sameFile && !err2) {
          change = 'replaced';
          detail = 'the image file was replaced while in use (another file now has its name)';
        } else if (!sameFile && (err2?.code === 'ENOENT' || err2?.code === 'ENOTDIR' || st.nlink === 0)) {
          change = 'deleted';
          detail = 'the image file was deleted while in use';
        } else if (sameFile && this.ident.regular && st.size < this.size) {
          change = 'truncated';
          detail = `the image shrank while in use (${st.size} bytes, ${this.size} when opened)`;
        }
        if (change) this.life.markStale(change, detail);
        cb(null, this.life.change);
      });
    });
  }

  /**
   * Checks the image file: one fstat of the fd and one stat of the name. Concurrent checks share one.
   * Reports (and marks the device stale on) a deletion, a replacement or a truncation.
   */
  check(cb: CheckCallback): void {
    if (this.life.stale) return process.nextTick(cb, null, this.life.change);
    if (this.closed) return process.nextTick(cb, null, null);
    if (this.checking) {
      this.checking.push(cb);
      return;
    }
    const waiters = [cb];
    this.checking = waiters;
    this.life.begin();
    this.verify((err, change) => {
      this.checking = null;
      this.life.end();
      for (const w of waiters) w(err, change);
    });
  }

  /** `check` as a promise. */
  checkNow(): Promise<ImageChange | null> {
    return new Promise((resolve, reject) => this.check((e, c) => (e ? reject(e) : resolve(c))));
  }

  read(buf: Buffer, offset: number, length: number, position: number, cb: IoCallback): void {
    const bad = this.unusable() ?? checkRange(this, length, position);
    if (bad) return process.nextTick(cb, bad);
    this.readLoop(buf, offset, length, position, this.life.enter(cb));
  }

  /** A read found the end of the file before the device's end: the image shrank under us. */
  private shrank(position: number): IoError {
    return this.life.markStale('truncated', `the image shrank while in use (it ends before byte ${position}; it had ${this.size} bytes when opened)`);
  }

  private readLoop(buf: Buffer, offset: number, length: number, position: number, cb: IoCallback): void {
    if (length === 0) return process.nextTick(cb, null);
    fs.read(this.fd, buf, offset, length, position, (err, n) => {
      if (err) return cb(err);
      if (n === 0) return cb(this.shrank(position)); // never zeros reported as data
      if (n === length) return cb(null);
      this.readLoop(buf, offset + n, length - n, position + n, cb);
    });
  }

  write(buf: Buffer, offset: number, length: number, position: number, cb: IoCallback): void {
    const unusable = this.unusable();
    if (unusable) return process.nextTick(cb, unusable);
    if (this.readOnly) return process.nextTick(cb, new IoError('EPERM', `${this.name}: read-only`));
    if (position + length > this.size && Number.isSafeInteger(position) && position >= 0 && length >= 0) {
      return process.nextTick(cb, new IoError('ENOSPC', `${this.name}: write ${position}+${length} past the end (${this.size} bytes)`));
    }
    const bad = checkRange(this, length, position);
    if (bad) return process.nextTick(cb, bad);
    this.writeLoop(buf, offset, length, position, position, length, this.life.enter(cb));
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
    const bad = this.unusable() ?? checkRange(this, length, position);
    if (bad) return process.nextTick(cb, bad);
    this.readvLoop(bufs, length, position, this.life.enter(cb));
  }

  private readvLoop(bufs: Buffer[], length: number, position: number, cb: IoCallback): void {
    if (length === 0) return process.nextTick(cb, null);
    fs.readv(this.fd, bufs, position, (err, n) => {
      if (err) return cb(err);
      if (n === length) return cb(null);
      if (n === 0) return cb(this.shrank(position));
      this.readvLoop(skipBytes(bufs, n), length - n, position + n, cb);
    });
  }

  writev(bufs: Buffer[], position: number, cb: IoCallback): void {
    const length = totalLength(bufs);
    const unusable = this.unusable();
    if (unusable) return process.nextTick(cb, unusable);
    if (this.readOnly) return process.nextTick(cb, new IoError('EPERM', `${this.name}: read-only`));
    if (position + length > this.size && Number.isSafeInteger(position) && position >= 0) {
      return process.nextTick(cb, new IoError('ENOSPC', `${this.name}: write ${position}+${length} past the end (${this.size} bytes)`));
    }
    const bad = checkRange(this, length, position);
    if (bad) return process.nextTick(cb, bad);
    this.writevLoop(bufs, length, position, position, length, this.life.enter(cb));
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

  /**
   * fdatasync, then a check that the file still is the image (named, same inode, not shorter): a write
   * that landed in a deleted or replaced file is reported as an error, never acknowledged as durable.
   */
  flush(cb: IoCallback): void {
    const bad = this.unusable();
    if (bad) return process.nextTick(cb, bad);
    if (this.readOnly) return process.nextTick(cb, null);
    const done = this.life.enter(cb);
    fs.fdatasync(this.fd, (err) => {
      if (err) return done(err);
      // A fresh check (not one started before this flush's writes): the name must hold this file now.
      this.verify((err2, change) => done(err2 ?? (change ? this.life.stale : null)));
    });
  }

  onWritten(listener: WrittenListener): () => void {
    return this.emitter.add(listener);
  }

  /** Closes the fd once no operation is in flight (later operations fail). */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closed = true;
    this.closing = new Promise((resolve, reject) => {
      this.life.whenIdle(() => fs.close(this.fd, (err) => (err ? reject(err) : resolve())));
    });
    return this.closing;
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
