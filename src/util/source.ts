/**
 * What TFTP serves: a sized, positionally readable byte source. A file inside a FAT partition and a file
 * in a plain directory look the same through this. Here: the interface, the fd-backed source (a file in a
 * directory root), a source over bytes in memory, and `readAll` for the cold paths that want a whole
 * (small) file.
 */
import fs from 'node:fs';

export type ReadCallback = (err: Error | null, bytesRead: number) => void;

export interface FileSource {
  /** Size in bytes at open time. */
  readonly size: number;
  /**
   * Read up to `length` bytes at file `position` into `buf[bufOffset…]`. `bytesRead` is short only at the
   * end of the file (0 at or past it).
   */
  read(buf: Buffer, bufOffset: number, length: number, position: number, cb: ReadCallback): void;
  /**
   * Optional scatter read: fills `buffers` in order from `position` in one call (the TFTP engine reads a
   * window of blocks at once when a source offers this). `bytesRead` is short only at the end of the file.
   */
  readv?(buffers: NodeJS.ArrayBufferView[], position: number, cb: ReadCallback): void;
  /** Release what the source holds (an fd). Safe to call twice. */
  close(): void;
}

/** A FileSource over an open file descriptor (callback fs.read; the fd is closed once). */
export class FdSource implements FileSource {
  private closed = false;
  constructor(
    readonly fd: number,
    readonly size: number,
  ) {}
  read(buf: Buffer, bufOffset: number, length: number, position: number, cb: ReadCallback): void {
    if (this.closed) return process.nextTick(cb, new Error('source closed'), 0);
    fs.read(this.fd, buf, bufOffset, length, position, cb);
  }
  /**
   * Scatter read into several buffers in one system call (the engine reads a window of blocks at once
   * when a source offers this).
   */
  readv(buffers: NodeJS.ArrayBufferView[], position: number, cb: ReadCallback): void {
    if (this.closed) return process.nextTick(cb, new Error('source closed'), 0);
    fs.readv(this.fd, buffers, position, cb);
  }
  close(): void {
    if (this.closed) return;
    this.closed = true;
    fs.close(this.fd, () => {});
  }
}

/** Reads up to `length` bytes at `position` into `buf` (fewer only at the end); resolves to how many. */
export function readFully(source: FileSource, buf: Buffer, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let got = 0;
    const step = (): void => {
      if (got >= length) return resolve(got);
      source.read(buf, got, length - got, position + got, (e, n) => {
        if (e) return reject(e);
        if (n <= 0) return resolve(got);
        got += n;
        step();
      });
    };
    step();
  });
}

/** Reads a whole source of at most `max` bytes (cold paths: configs, command lines); longer is an error. */
export async function readAll(source: FileSource, max: number): Promise<Buffer> {
  if (source.size > max) throw new Error(`${source.size} bytes: larger than the ${max} bytes allowed here`);
  const buf = Buffer.allocUnsafe(source.size);
  return buf.subarray(0, await readFully(source, buf, buf.length, 0));
}

/** A file on the host as a FileSource (with its modification time). */
export async function fileSource(path: string): Promise<FdSource & { mtime: Date }> {
  const fd = await new Promise<number>((res, rej) => fs.open(path, 'r', (e, f) => (e ? rej(e) : res(f))));
  try {
    const st = await new Promise<fs.Stats>((res, rej) => fs.fstat(fd, (e, s) => (e ? rej(e) : res(s))));
    return Object.assign(new FdSource(fd, st.size), { mtime: st.mtime });
  } catch (e) {
    fs.close(fd, () => {});
    throw e;
  }
}

/** A source over bytes in memory (tests, generated files such as a rewritten config). */
export class BufferSource implements FileSource {
  constructor(private readonly data: Buffer) {}
  get size(): number {
    return this.data.length;
  }
  read(buf: Buffer, bufOffset: number, length: number, position: number, cb: ReadCallback): void {
    const n = Math.max(0, Math.min(length, this.data.length - position));
    if (n > 0) this.data.copy(buf, bufOffset, position, position + n);
    process.nextTick(cb, null, n);
  }
  close(): void {}
}
