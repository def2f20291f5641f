/**
 * Sequential block readers for the transfer engine. A transfer reads its file once, front to back, into the
 * payload area of its block buffers (header room in front); retransmissions are served from the buffers
 * still held, so a reader never rewinds. That is what lets netascii be a stream conversion with carry-over
 * (an expanded CR LF may straddle two blocks).
 */
import type { FileSource } from '../util/source.js';

export type FillCallback = (err: Error | null, total: number) => void;

export interface BlockReader {
  /**
   * Fills `bufs` in order (each completely, until the end of the data). `total` is the byte count across
   * them; less than their combined length means the data ended.
   */
  fill(bufs: Buffer[], cb: FillCallback): void;
  close(): void;
}

/** A source that can scatter-read in one call (FdSource). */
type VectorSource = FileSource & Required<Pick<FileSource, 'readv'>>;

function hasReadv(s: FileSource): s is VectorSource {
  return typeof s.readv === 'function';
}

/** Octet mode: the file's bytes as they are. */
export class OctetReader implements BlockReader {
  private pos = 0;
  private readonly vector: boolean;
  constructor(private readonly source: FileSource) {
    this.vector = hasReadv(source);
  }

  fill(bufs: Buffer[], cb: FillCallback): void {
    const remaining = this.source.size - this.pos;
    if (remaining <= 0) return process.nextTick(cb, null, 0);
    if (this.vector && bufs.length > 1) {
      const want = Math.min(remaining, bufs.reduce((a, b) => a + b.length, 0));
      (this.source as VectorSource).readv(bufs, this.pos, (e, n) => {
        if (e) return cb(e, 0);
        this.pos += n;
        if (n >= want || n === 0) return cb(null, n);
        // A short vector read before the end: finish the rest one buffer at a time.
        this.fillFrom(bufs, n, n, cb);
      });
      return;
    }
    this.fillFrom(bufs, 0, 0, cb);
  }

  /** Continues filling at byte `at` across `bufs` (already `total` bytes in). */
  private fillFrom(bufs: Buffer[], at: number, total: number, cb: FillCallback): void {
    let i = 0;
    let skip = at;
    while (i < bufs.length && skip >= bufs[i]!.length) skip -= bufs[i++]!.length;
    if (i >= bufs.length || this.pos >= this.source.size) return cb(null, total);
    const b = bufs[i]!;
    this.source.read(b, skip, b.length - skip, this.pos, (e, n) => {
      if (e) return cb(e, 0);
      if (n <= 0) return cb(null, total);
      this.pos += n;
      this.fillFrom(bufs, at + n, total + n, cb);
    });
  }

  close(): void {
    this.source.close();
  }
}

const CR = 0x0d;
const LF = 0x0a;
const RAW_CHUNK = 16 * 1024;

/**
 * Netascii mode (RFC 764 conventions): LF becomes CR LF and a bare CR becomes CR NUL. The output length is
 * not known in advance (hence no tsize in netascii) and block boundaries fall anywhere in the expansion:
 * the second byte of a pair is carried into the next block.
 */
export class NetasciiReader implements BlockReader {
  private pos = 0;
  private readonly raw = Buffer.allocUnsafe(RAW_CHUNK);
  private rawStart = 0;
  private rawEnd = 0;
  private pending = -1;
  constructor(private readonly source: FileSource) {}

  fill(bufs: Buffer[], cb: FillCallback): void {
    this.convert(bufs, 0, 0, 0, cb);
  }

  private convert(bufs: Buffer[], bi: number, off: number, total: number, cb: FillCallback): void {
    for (;;) {
      if (bi >= bufs.length) return cb(null, total);
      const out = bufs[bi]!;
      while (off < out.length) {
        if (this.pending >= 0) {
          out[off++] = this.pending;
          this.pending = -1;
          total++;
          continue;
        }
        if (this.rawStart >= this.rawEnd) break;
        const c = this.raw[this.rawStart++]!;
        if (c === LF) {
          out[off++] = CR;
          this.pending = LF;
        } else if (c === CR) {
          out[off++] = CR;
          this.pending = 0;
        } else {
          out[off++] = c;
        }
        total++;
      }
      if (off >= out.length) {
        bi++;
        off = 0;
        continue;
      }
      // Out of raw bytes with room left: read more, or stop at the end of the file.
      if (this.pos >= this.source.size) return cb(null, total);
      const len = Math.min(RAW_CHUNK, this.source.size - this.pos);
      this.source.read(this.raw, 0, len, this.pos, (e, n) => {
        if (e) return cb(e, 0);
        if (n <= 0) {
          this.pos = this.source.size;
        } else {
          this.pos += n;
          this.rawStart = 0;
          this.rawEnd = n;
        }
        this.convert(bufs, bi, off, total, cb);
      });
      return;
    }
  }

  close(): void {
    this.source.close();
  }
}
