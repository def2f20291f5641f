/**
 * What TFTP serves: a sized, positionally readable byte source. A file inside a FAT partition and a file
 * in a plain directory look the same through this.
 */
export type ReadCallback = (err: Error | null, bytesRead: number) => void;

export interface FileSource {
  /** Size in bytes at open time. */
  readonly size: number;
  /**
   * Read up to `length` bytes at file `position` into `buf[bufOffset…]`. `bytesRead` is short only at the
   * end of the file (0 at or past it).
   */
  read(buf: Buffer, bufOffset: number, length: number, position: number, cb: ReadCallback): void;
  /** Release what the source holds (an fd). Safe to call twice. */
  close(): void;
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
