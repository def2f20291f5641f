/**
 * The transmission-phase request framer: socket chunks in, requests out. Pure (no sockets, no timers):
 * `push(chunk)` queues bytes, `next()` returns the next complete request or null when it needs more bytes.
 *
 * Zero copy: a 28-byte header lying inside one chunk is parsed in place (one straddling chunks is copied into
 * a 28-byte scratch buffer); a WRITE payload lying inside one chunk is a view of it (`payload`), one spread
 * over several chunks is the list of views in order (`parts`), never concatenated.
 *
 * Admission comes before payload: when a header is parsed, `admit(r)` decides whether the request may start.
 * Refused, the request stays queued with every byte after it (`waiting`), and the next `next()` offers it
 * again; so a WRITE's payload is only taken from the stream once the request is admitted, and the owner
 * stops reading its socket while `buffered` is true. An admitted WRITE whose payload is still arriving is
 * `partial`: its payload is taken from what is pushed next, without asking again.
 */
import * as P from './packet.js';

export interface FramedRequest extends P.Request {
  /** WRITE payload lying inside one chunk (a view). */
  payload: Buffer | null;
  /** WRITE payload spread over several chunks (views, in order). */
  parts: Buffer[] | null;
  /** What the request is charged while in flight (set by the admitting side). */
  cost: number;
}

/** Why framing stopped for good: the byte stream cannot be resynchronised. */
export type FrameError = 'magic' | 'too-big';

const EMPTY = Buffer.alloc(0);
const ADMIT_ALL = (): boolean => true;

export class RequestFramer {
  /** Set when framing stopped for good (bad magic, or a WRITE longer than maxPayload): `next()` returns null. */
  error: FrameError | null = null;
  /** The request whose header stopped framing ('too-big'). */
  rejected: FramedRequest | null = null;
  /** The chunk being framed, from `pos`; then the chunks queued after it. */
  private cur: Buffer | null = null;
  private pos = 0;
  private queue: Buffer[] = [];
  private readonly hdr = Buffer.allocUnsafe(P.REQUEST_HEADER_LENGTH);
  private hdrFill = 0;
  private held: FramedRequest | null = null;
  private wreq: FramedRequest | null = null;
  private wfill = 0;

  /**
   * @param maxPayload a WRITE longer than this stops framing ('too-big'): its payload is never gathered.
   * @param admit called with each parsed header before its payload is taken; false keeps it waiting.
   */
  constructor(private readonly maxPayload: number, private readonly admit: (r: FramedRequest) => boolean = ADMIT_ALL) {}

  /** Queues a chunk (no parsing). */
  push(chunk: Buffer): void {
    if (this.error !== null || chunk.length === 0) return;
    if (this.cur === null) {
      this.cur = chunk;
      this.pos = 0;
    } else {
      this.queue.push(chunk);
    }
  }

  /** Bytes, or a parsed request that was not admitted, wait to be framed. */
  get buffered(): boolean {
    return this.cur !== null || this.held !== null;
  }

  /** A parsed request that `admit` refused (offered again by the next `next()`). */
  get waiting(): FramedRequest | null {
    return this.held;
  }

  /** An admitted WRITE whose payload is still arriving. */
  get partial(): FramedRequest | null {
    return this.wreq;
  }

  /** Drops everything queued; returns the admitted WRITE that was still gathering its payload, if any. */
  clear(): FramedRequest | null {
    const w = this.wreq;
    this.cur = null;
    this.pos = 0;
    this.queue = [];
    this.hdrFill = 0;
    this.held = null;
    this.wreq = null;
    this.wfill = 0;
    return w;
  }

  /** The next complete request, or null: more bytes are needed, the next request is not admitted, or `error`. */
  next(): FramedRequest | null {
    for (;;) {
      const w = this.wreq;
      if (w !== null) {
        if (!this.gather(w)) return null;
        this.wreq = null;
        return w;
      }
      let r = this.held;
      if (r === null) {
        r = this.header();
        if (r === null) return null;
      }
      if (!this.admit(r)) {
        this.held = r;
        return null;
      }
      this.held = null;
      if (r.type !== P.CMD_WRITE) return r;
      if (r.length === 0) {
        r.payload = EMPTY;
        return r;
      }
      const chunk = this.cur;
      const pos = this.pos;
      if (chunk !== null && chunk.length - pos >= r.length) {
        r.payload = chunk.subarray(pos, pos + r.length);
        this.consumed(pos + r.length);
        return r;
      }
      r.parts = [];
      this.wreq = r;
      this.wfill = 0;
    }
  }

  /** Parses the next header from the queued bytes, or returns null (fewer than 28 bytes queued, or `error`). */
  private header(): FramedRequest | null {
    let hbuf: Buffer;
    let hoff: number;
    for (;;) {
      const chunk = this.cur;
      if (chunk === null || this.error !== null) return null;
      const pos = this.pos;
      const avail = chunk.length - pos;
      if (this.hdrFill === 0 && avail >= P.REQUEST_HEADER_LENGTH) {
        hbuf = chunk;
        hoff = pos;
        this.consumed(pos + P.REQUEST_HEADER_LENGTH);
        break;
      }
      const n = Math.min(P.REQUEST_HEADER_LENGTH - this.hdrFill, avail);
      chunk.copy(this.hdr, this.hdrFill, pos, pos + n);
      this.hdrFill += n;
      this.consumed(pos + n);
      if (this.hdrFill === P.REQUEST_HEADER_LENGTH) {
        this.hdrFill = 0;
        hbuf = this.hdr;
        hoff = 0;
        break;
      }
    }
    const r: FramedRequest = { flags: 0, type: 0, handleHi: 0, handleLo: 0, offset: 0, length: 0, payload: null, parts: null, cost: 0 };
    if (!P.parseRequestInto(hbuf, hoff, r)) return this.fail('magic', null);
    if (r.type === P.CMD_WRITE && r.length > this.maxPayload) return this.fail('too-big', r);
    return r;
  }

  /** Takes queued bytes into `w.parts`; true once its payload is complete. */
  private gather(w: FramedRequest): boolean {
    for (;;) {
      const need = w.length - this.wfill;
      if (need === 0) return true;
      const chunk = this.cur;
      if (chunk === null) return false;
      const pos = this.pos;
      const avail = chunk.length - pos;
      const n = need < avail ? need : avail;
      w.parts!.push(pos === 0 && n === chunk.length ? chunk : chunk.subarray(pos, pos + n));
      this.wfill += n;
      this.consumed(pos + n);
    }
  }

  /** The current chunk is used up to `pos`: moves on to the next queued one when it is all used. */
  private consumed(pos: number): void {
    if (pos < this.cur!.length) {
      this.pos = pos;
      return;
    }
    this.cur = this.queue.length > 0 ? this.queue.shift()! : null;
    this.pos = 0;
  }

  private fail(e: FrameError, r: FramedRequest | null): null {
    this.clear();
    this.error = e;
    this.rejected = r;
    return null;
  }
}
