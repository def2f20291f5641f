/**
 * The NBD transmission phase of one connection: requests framed from the stream (framer.ts) are admitted
 * against the in-flight budgets, validated, dispatched to the block device and answered as they complete.
 *
 * Hot path: READs and WRITEs that arrive in one event-loop turn are submitted together at its end, and
 * contiguous ones go to the disk as one vectored operation. A READ reply is one pooled buffer (header +
 * data, the data read straight into it) written with one `write()`; WRITE payloads are the socket's own
 * chunks (views), never copied together when the device has `writev`.
 *
 * Memory: a request's bytes count as in flight from its admission until the kernel has taken its reply
 * (the write callback), per connection (`maxInflightBytes`, `maxInflightRequests`) and server-wide (the
 * InflightBudget). A request that does not fit is held (framing and socket reads stop) until budget comes
 * back; a connection with nothing in flight may always start one request of up to `guaranteedRequestBytes`,
 * so no client starves. A WRITE's payload is taken from the socket only once the WRITE is admitted, and an
 * admitted WRITE always receives its whole payload. Replies queued without write progress for
 * `stallTimeoutMs` end the connection.
 */
import type { Duplex } from 'node:stream';
import type { Logger } from '../util/log.js';
import type { BlockDevice } from '../disk/blockdev.js';
import * as P from './packet.js';
import { BufferPool } from './bufpool.js';
import type { BudgetWaiter } from './budget.js';
import { type NbdContext, warnLimited } from './context.js';
import type { NbdClient } from './exports.js';
import { type FramedRequest, RequestFramer } from './framer.js';
import { META_ID_BASE_ALLOCATION, type Negotiated } from './negotiation.js';

/** What a request without payload is charged at admission (its reply's real size is charged once built). */
const SMALL_COST = 512;
/** A BLOCK_STATUS reply: at most 1024 extents. */
const BLOCK_STATUS_COST = 1024 * 8 + 64;
/** Most requests / bytes merged into one vectored disk operation. */
const MAX_GROUP_REQUESTS = 64;
const MAX_GROUP_BYTES = 8 << 20;
const ZERO_CHUNK = Buffer.alloc(1 << 20);

/** What transmission needs of its connection. */
export interface TransmissionHost {
  readonly client: NbdClient;
  readonly closed: boolean;
  /** Queues bytes for the client (writes of one event-loop turn are coalesced); `done` runs once the kernel took them. */
  send(buf: Buffer, done: (e?: Error | null) => void): void;
  destroy(): void;
  /** Ends our side gracefully (keeps reading until the peer's FIN). */
  end(): void;
}

export class Transmission implements BudgetWaiter {
  private readonly dev: BlockDevice;
  private readonly structured: boolean;
  private readonly framer: RequestFramer;
  /** Requests admitted whose reply the kernel has not taken yet. */
  private inflight = 0;
  /** Their bytes (payload estimate until the reply is built, then the reply's size); also in the server's budget. */
  private inflightBytes = 0;
  /** Replies handed to the socket and not flushed yet; flush callbacks so far; stall detection state. */
  private queuedReplies = 0;
  private flushes = 0;
  private flushesSeen = 0;
  private stallSince = 0;
  private writeBlocked: boolean;
  private paused: boolean;
  /** No more requests are taken (DISC, the client's half-close, shutdown). */
  private disc = false;
  private finishing = false;
  private flushOnEnd = false;
  private parsing = false;
  private batch: FramedRequest[] = [];
  private batchScheduled = false;

  bytesRead = 0;
  bytesWritten = 0;
  requests = 0;
  private errors = 0;

  constructor(
    private readonly ctx: NbdContext,
    private readonly host: TransmissionHost,
    private readonly stream: Duplex,
    private readonly log: Logger,
    private readonly neg: Negotiated,
  ) {
    this.dev = neg.exp.device;
    this.structured = neg.structured;
    this.framer = new RequestFramer(ctx.limits.maxPayload, (r) => this.admitRequest(r));
    this.writeBlocked = stream.writableNeedDrain;
    this.paused = stream.isPaused();
  }

  /** Takes the bytes that came with the final option (the first requests), then reads the stream. */
  start(): void {
    if (this.neg.rest) this.onData(this.neg.rest);
    else this.pauseOrResume();
  }

  get exportName(): string {
    return this.neg.exp.name;
  }

  onData(chunk: Buffer): void {
    if (this.disc) return; // nothing may follow NBD_CMD_DISC
    // Bytes arriving while earlier ones wait (pause() is advisory) are framed once those have gone.
    const idle = !this.framer.buffered;
    this.framer.push(chunk);
    if (idle && !this.parsing) this.parse();
  }

  onDrain(): void {
    this.writeBlocked = false;
    this.updateFlow();
  }

  onWriteBlocked(): void {
    this.writeBlocked = true;
    this.updateFlow();
  }

  /** The client half-closed: finish what is in flight, then close our side. */
  onEnd(): void {
    this.disc = true;
    this.dropInput();
    this.maybeFinish();
  }

  /** The connection closed: what it still counts goes back to the server's budget; the export is released. */
  close(ms: number): void {
    this.framer.clear();
    this.ctx.budget.unwait(this);
    this.ctx.budget.charge(-this.inflightBytes);
    this.inflightBytes = 0;
    this.log.info(
      {
        export: this.neg.exp.name, bytesRead: this.bytesRead, bytesWritten: this.bytesWritten, requests: this.requests,
        errors: this.errors, ms,
      },
      'nbd disconnect',
    );
    this.neg.exp.release();
  }

  /** Server shutdown: stop reading, finish in-flight requests, flush, close. */
  shutdown(): void {
    if (this.finishing) return;
    this.flushOnEnd = true;
    this.disc = true;
    this.dropInput();
    if (!this.paused) {
      this.paused = true;
      this.stream.pause();
    }
    this.maybeFinish();
  }

  /** Server sweep: a connection whose queued replies made no progress for stallTimeoutMs is destroyed. */
  checkStall(now: number): void {
    if (this.queuedReplies === 0) {
      this.stallSince = 0;
      return;
    }
    if (this.flushes !== this.flushesSeen || this.stallSince === 0) {
      this.flushesSeen = this.flushes;
      this.stallSince = now;
      return;
    }
    if (now - this.stallSince < this.ctx.limits.stallTimeoutMs) return;
    this.warn('stall', {
      export: this.neg.exp.name, queuedReplies: this.queuedReplies, inflightBytes: this.inflightBytes, ms: now - this.stallSince,
    }, 'nbd client stopped reading its replies; closing');
    this.host.destroy();
  }

  private warn(what: string, obj: object, msg: string): void {
    warnLimited(this.ctx.rate, this.log, `${what}:${this.host.client.address}`, obj, msg);
  }

  // ================================================ flow control ================================================

  private blocked(): boolean {
    const l = this.ctx.limits;
    return this.disc || this.writeBlocked || this.inflightBytes >= l.maxInflightBytes || this.inflight >= l.maxInflightRequests;
  }

  /** Frames held-back bytes (or a held request) if the connection may take requests again; else pauses or resumes reading. */
  private updateFlow(): void {
    if (this.host.closed) return;
    if (this.framer.buffered && !this.parsing && !this.blocked()) return this.parse();
    this.pauseOrResume();
  }

  /** Reading stops while bytes wait to be framed, or while blocked, except to complete an admitted WRITE's payload. */
  private pauseOrResume(): void {
    if (this.host.closed || this.finishing) return; // finishing: reading on, to see the peer's FIN
    const stop = this.framer.buffered || (this.blocked() && this.framer.partial === null);
    if (stop && !this.paused) {
      this.paused = true;
      this.stream.pause();
    } else if (!stop && this.paused) {
      this.paused = false;
      this.stream.resume();
    }
  }

  /** Frames and dispatches requests until the bytes are used up or the next request is not admitted. */
  private parse(): void {
    this.parsing = true;
    try {
      const f = this.framer;
      while (!this.host.closed && !this.disc) {
        const r = f.next();
        if (r === null) {
          if (f.error !== null) this.frameError();
          break;
        }
        this.requests++;
        if (r.type === P.CMD_DISC) {
          this.disc = true;
          this.dropInput(); // nothing may follow NBD_CMD_DISC
          this.log.debug({ export: this.neg.exp.name, inflight: this.inflight }, 'nbd disc');
          this.maybeFinish();
          break;
        }
        if (r.type === P.CMD_WRITE) this.bytesWritten += r.length;
        this.dispatch(r);
      }
    } finally {
      this.parsing = false;
    }
    this.pauseOrResume();
  }

  private frameError(): void {
    const f = this.framer;
    if (f.error === 'magic') {
      this.warn('magic', { export: this.neg.exp.name }, 'nbd bad request magic; closing');
    } else {
      this.warn('big', { export: this.neg.exp.name, length: f.rejected?.length }, 'nbd write larger than the maximum; closing');
    }
    this.host.destroy();
  }

  /**
   * The framer's admission check for a parsed header: not while blocked; DISC always; others when they fit
   * (counted in flight from here).
   */
  private admitRequest(r: FramedRequest): boolean {
    if (r.type === P.CMD_DISC) return !this.blocked();
    if (r.cost === 0) r.cost = this.costOf(r);
    return !this.blocked() && this.admit(r);
  }

  /** What a request is charged at admission: its payload, or a small reply's estimate. */
  private costOf(r: FramedRequest): number {
    if (r.type === P.CMD_READ || r.type === P.CMD_WRITE) {
      return r.length > SMALL_COST && r.length <= this.ctx.limits.maxPayload ? r.length : SMALL_COST;
    }
    return r.type === P.CMD_BLOCK_STATUS ? BLOCK_STATUS_COST : SMALL_COST;
  }

  /**
   * Counts a request in flight if it fits: always when nothing is in flight here and it is small enough
   * (guaranteedRequestBytes), else within this connection's limit and the server's budget. When it does not
   * fit it is held: its connection's own flushes, or the server (budget given back), try it again.
   */
  private admit(r: FramedRequest): boolean {
    const l = this.ctx.limits;
    const budget = this.ctx.budget;
    const n = r.cost;
    if (this.inflightBytes === 0 && n <= l.guaranteedRequestBytes) {
      budget.unwait(this);
      budget.charge(n);
    } else if (this.inflightBytes > 0 && this.inflightBytes + n > l.maxInflightBytes) {
      budget.unwait(this);
      return false;
    } else if (!budget.reserve(this, n)) {
      return false;
    }
    this.inflight++;
    this.inflightBytes += n;
    return true;
  }

  /** Budget was given back and this connection is first in line. */
  retry(): void {
    const r = this.framer.waiting;
    if (this.host.closed || r === null || this.parsing || this.blocked() || (this.inflightBytes > 0 && this.inflightBytes + r.cost > this.ctx.limits.maxInflightBytes)) {
      this.ctx.budget.unwait(this); // its own flushes will try again
      return;
    }
    this.updateFlow();
  }

  /** Unframed bytes, a held request and a half-received write are dropped: none was acknowledged. */
  private dropInput(): void {
    const w = this.framer.clear();
    this.ctx.budget.unwait(this);
    if (w === null || this.host.closed) return;
    this.inflight--;
    this.inflightBytes -= w.cost;
    this.ctx.budget.charge(-w.cost);
  }

  // ================================================== requests ==================================================

  private dispatch(r: FramedRequest): void {
    const bad = this.validate(r);
    if (bad) {
      this.errors++;
      this.warn(`req:${bad.errno}`, {
        export: this.neg.exp.name, cmd: P.commandName(r.type), offset: r.offset, length: r.length, flags: r.flags, errno: bad.errno,
      }, `nbd request refused: ${bad.message}`);
      this.fail(r, bad.errno, bad.message);
      return;
    }
    const dev = this.dev;
    switch (r.type) {
      case P.CMD_READ:
      case P.CMD_WRITE:
        // Submitted at the end of this event-loop turn, so that contiguous requests that arrived
        // together go to the disk as one vectored operation.
        this.batch.push(r);
        if (!this.batchScheduled) {
          this.batchScheduled = true;
          setImmediate(this.flushBatch);
        }
        return;
      case P.CMD_FLUSH:
        dev.flush((e) => (e ? this.ioFail(r, e) : this.ok(r)));
        return;
      case P.CMD_TRIM:
        // A hint; the file is not punched (Node has no fallocate). FUA still means durable.
        this.afterWrite(r);
        return;
      case P.CMD_WRITE_ZEROES:
        if (r.flags & P.CMD_FLAG_FAST_ZERO) return this.fail(r, P.NBD_ENOTSUP, 'zeroing is not faster than writing here');
        this.writeZeroes(r.offset, r.length, (e) => (e ? this.ioFail(r, e) : this.afterWrite(r)));
        return;
      case P.CMD_CACHE:
        this.ok(r);
        return;
      case P.CMD_BLOCK_STATUS:
        return this.blockStatus(r);
    }
  }

  /** Returns the error for an invalid request, or null. */
  private validate(r: FramedRequest): { errno: number; message: string } | null {
    const size = this.dev.size;
    const ro = (this.neg.flags & P.TFLAG_READ_ONLY) !== 0;
    let allowed = P.CMD_FLAG_FUA;
    switch (r.type) {
      case P.CMD_READ:
        if (this.structured) allowed |= P.CMD_FLAG_DF;
        break;
      case P.CMD_WRITE_ZEROES:
        allowed |= P.CMD_FLAG_NO_HOLE | P.CMD_FLAG_FAST_ZERO;
        break;
      case P.CMD_BLOCK_STATUS:
        allowed |= P.CMD_FLAG_REQ_ONE;
        break;
      case P.CMD_WRITE:
      case P.CMD_FLUSH:
      case P.CMD_TRIM:
      case P.CMD_CACHE:
        break;
      default:
        return { errno: P.NBD_EINVAL, message: `unknown command ${r.type}` };
    }
    if (r.flags & ~allowed) return { errno: P.NBD_EINVAL, message: `flags 0x${r.flags.toString(16)} not valid for ${P.commandName(r.type)}` };
    if (r.type === P.CMD_FLUSH) {
      return r.offset !== 0 || r.length !== 0 ? { errno: P.NBD_EINVAL, message: 'FLUSH offset and length must be zero' } : null;
    }
    const writes = r.type === P.CMD_WRITE || r.type === P.CMD_TRIM || r.type === P.CMD_WRITE_ZEROES;
    if (writes && ro) return { errno: P.NBD_EPERM, message: 'export is read-only' };
    if (r.length === 0) return { errno: P.NBD_EINVAL, message: 'zero-length request' };
    if (r.offset > size || r.offset + r.length > size) {
      return writes
        ? { errno: P.NBD_ENOSPC, message: `${r.offset}+${r.length} is past the end (${size} bytes)` }
        : { errno: P.NBD_EINVAL, message: `${r.offset}+${r.length} is past the end (${size} bytes)` };
    }
    if (r.type === P.CMD_READ && r.length > this.ctx.limits.maxPayload) {
      return { errno: P.NBD_EOVERFLOW, message: `read of ${r.length} bytes exceeds the maximum ${this.ctx.limits.maxPayload}` };
    }
    if (r.type === P.CMD_BLOCK_STATUS && !this.neg.baseAllocation) {
      return { errno: P.NBD_EINVAL, message: 'no metadata context negotiated' };
    }
    return null;
  }

  /** Submits this turn's READs and WRITEs: runs of contiguous same-type requests as one disk operation each. */
  private readonly flushBatch = (): void => {
    this.batchScheduled = false;
    const batch = this.batch;
    this.batch = [];
    const dev = this.dev;
    let i = 0;
    while (i < batch.length) {
      const first = batch[i]!;
      const read = first.type === P.CMD_READ;
      let j = i + 1;
      if (read ? dev.readv : dev.writev) {
        let end = first.offset + first.length;
        let bytes = first.length;
        while (j < batch.length && j - i < MAX_GROUP_REQUESTS) {
          const r = batch[j]!;
          if (r.type !== first.type || r.offset !== end || bytes + r.length > MAX_GROUP_BYTES) break;
          end += r.length;
          bytes += r.length;
          j++;
        }
      }
      if (read) this.read(batch, i, j);
      else this.write(j === i + 1 ? [first] : batch.slice(i, j));
      i = j;
    }
  };

  /**
   * READs batch[i..j) (contiguous): each straight into its own reply buffer, past the reply header; one
   * request with `read`, several with one `readv`.
   */
  private read(batch: FramedRequest[], i: number, j: number): void {
    const hl = this.structured ? P.OFFSET_DATA_PREFIX : P.SIMPLE_REPLY_LENGTH;
    const pool = this.ctx.pool;
    const first = batch[i]!;
    if (j === i + 1) {
      const out = pool.get(hl + first.length);
      this.dev.read(out, hl, first.length, first.offset, (e) => this.readDone(first, out, e));
      return;
    }
    const group = batch.slice(i, j);
    const outs = group.map((r) => pool.get(hl + r.length));
    const views = outs.map((o, k) => o.subarray(hl, hl + group[k]!.length));
    this.dev.readv!(views, first.offset, (e) => {
      for (let k = 0; k < group.length; k++) this.readDone(group[k]!, outs[k]!, e);
    });
  }

  /** A READ's data is in `out` (past the header) or failed: fills the header and sends the reply. */
  private readDone(r: FramedRequest, out: Buffer, e: Error | null): void {
    if (e) {
      this.ctx.pool.put(out);
      return this.ioFail(r, e);
    }
    if (this.structured) P.writeOffsetDataPrefix(out, 0, P.REPLY_FLAG_DONE, r.handleHi, r.handleLo, r.offset, r.length);
    else P.writeSimpleReply(out, 0, 0, r.handleHi, r.handleLo);
    this.bytesRead += r.length;
    this.complete(r, out, out.length >= BufferPool.MIN_SIZE);
  }

  /** WRITEs (contiguous; payloads spread over socket chunks included) as one writev, no copying. */
  private write(group: FramedRequest[]): void {
    const dev = this.dev;
    const done = (e: Error | null): void => {
      let fua = false;
      for (const r of group) {
        r.payload = null;
        r.parts = null;
        if (r.flags & P.CMD_FLAG_FUA) fua = true;
      }
      if (e) {
        for (const r of group) this.ioFail(r, e);
        return;
      }
      if (!fua) {
        for (const r of group) this.ok(r);
        return;
      }
      dev.flush((e2) => {
        for (const r of group) {
          if (e2) this.ioFail(r, e2);
          else this.ok(r);
        }
      });
    };
    const first = group[0]!;
    if (group.length === 1 && first.payload) {
      dev.write(first.payload, 0, first.length, first.offset, done);
      return;
    }
    if (dev.writev) {
      const bufs: Buffer[] = [];
      for (const r of group) {
        if (r.payload) bufs.push(r.payload);
        else for (const b of r.parts!) bufs.push(b);
      }
      dev.writev(bufs, first.offset, done);
      return;
    }
    // A device without writev (one request here): gather the parts into one pooled buffer.
    const pool = this.ctx.pool;
    const buf = pool.get(first.length);
    let p = 0;
    for (const b of first.parts!) p += b.copy(buf, p);
    dev.write(buf, 0, first.length, first.offset, (e) => {
      pool.put(buf);
      done(e);
    });
  }

  private afterWrite(r: FramedRequest): void {
    if (r.flags & P.CMD_FLAG_FUA) this.dev.flush((e) => (e ? this.ioFail(r, e) : this.ok(r)));
    else this.ok(r);
  }

  private writeZeroes(offset: number, length: number, cb: (e: Error | null) => void): void {
    if (length === 0) return cb(null);
    const n = Math.min(length, ZERO_CHUNK.length);
    this.dev.write(ZERO_CHUNK, 0, n, offset, (e) => (e ? cb(e) : this.writeZeroes(offset + n, length - n, cb)));
  }

  private blockStatus(r: FramedRequest): void {
    const reqOne = (r.flags & P.CMD_FLAG_REQ_ONE) !== 0;
    const whole = (): void => {
      // Not invalid usage: the spec allows one extent of status 0 instead of an error.
      this.complete(r, P.buildBlockStatus(r.handleHi, r.handleLo, META_ID_BASE_ALLOCATION, [{ length: r.length, flags: 0 }]));
    };
    const dev = this.dev;
    if (!dev.blockStatus) return whole();
    dev.blockStatus(r.offset, r.length, (e, ext) => {
      if (e || !ext || ext.length === 0) return whole();
      const out: P.Extent[] = [];
      let total = 0;
      for (const x of ext) {
        const len = Math.min(x.length, r.length - total);
        if (len <= 0) break;
        out.push({ length: len, flags: (x.hole ? P.STATE_HOLE : 0) | (x.zero ? P.STATE_ZERO : 0) });
        total += len;
        if (reqOne || out.length >= 1024) break;
      }
      this.complete(r, P.buildBlockStatus(r.handleHi, r.handleLo, META_ID_BASE_ALLOCATION, out));
    });
  }

  // =================================================== replies ===================================================

  private ok(r: FramedRequest): void {
    this.complete(r, P.buildSimpleReply(0, r.handleHi, r.handleLo));
  }

  private ioFail(r: FramedRequest, e: Error): void {
    this.errors++;
    const code = (e as NodeJS.ErrnoException).code;
    const errno = P.nbdErrno(code);
    this.warn(`io:${code}`, {
      export: this.neg.exp.name, cmd: P.commandName(r.type), offset: r.offset, length: r.length, err: e.message,
    }, 'nbd i/o error');
    this.fail(r, errno, e.message, true);
  }

  private fail(r: FramedRequest, errno: number, message: string, withOffset = false): void {
    if (this.structured) {
      const off = withOffset && (r.type === P.CMD_READ || r.type === P.CMD_WRITE || r.type === P.CMD_TRIM || r.type === P.CMD_BLOCK_STATUS)
        ? r.offset : undefined;
      this.complete(r, P.buildStructuredError(r.handleHi, r.handleLo, errno, message, off));
    } else {
      this.complete(r, P.buildSimpleReply(errno, r.handleHi, r.handleLo));
    }
  }

  /** Sends a reply; from now on its real size is what is in flight, until the kernel has taken it (flushed()). */
  private complete(r: FramedRequest, reply: Buffer, recycle = false): void {
    if (this.host.closed) {
      if (recycle) this.ctx.pool.put(reply); // never written
      return;
    }
    const d = reply.length - r.cost;
    this.inflightBytes += d;
    this.ctx.budget.charge(d);
    this.queuedReplies++;
    this.host.send(reply, (e) => this.flushed(reply, recycle, e));
    if (!this.disc) this.updateFlow();
  }

  /** The kernel took a reply (or the stream failed): its request is no longer in flight. */
  private flushed(buf: Buffer, recycle: boolean, e: Error | null | undefined): void {
    if (this.host.closed) return; // close() gave everything back
    this.queuedReplies--;
    this.flushes++;
    this.inflight--;
    this.inflightBytes -= buf.length;
    this.ctx.budget.charge(-buf.length);
    if (recycle && !e) this.ctx.pool.put(buf);
    if (this.disc) this.maybeFinish();
    else this.updateFlow();
  }

  /** After DISC, the client's half-close or a shutdown: once nothing is in flight, (flush and) close our side. */
  private maybeFinish(): void {
    if (this.host.closed || this.finishing || this.inflight > 0) return;
    this.finishing = true;
    const dev = this.dev;
    if (this.flushOnEnd && !dev.readOnly) dev.flush(() => this.host.end());
    else this.host.end();
  }
}
