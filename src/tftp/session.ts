/**
 * One TFTP transfer (its own socket: its TID): option negotiation (RFC 2347-2349, 7440) and the engine.
 *
 * Engine: a ring of block buffers (4-byte header room + blksize payload) is filled ahead of the client by
 * one sequential reader (scatter reads where the source allows), so an ACK is answered synchronously from
 * memory. The window [base, base+W) is what may be in flight; everything unacked stays in the ring, so
 * retransmissions never re-read. One timer per transfer, refreshed on every send; retransmission happens
 * only when it fires (never on a duplicate ACK: Sorcerer's Apprentice).
 */
import dgram from 'node:dgram';
import type { FileSource } from '../util/source.js';
import {
  parsePacket, writeDataHeader, buildError, buildOack,
  OP_ACK, OP_ERROR, DATA_HEADER, ERR_UNDEFINED, ERR_UNKNOWN_TID,
  type RequestPacket, type RequestOption,
} from './packet.js';
import { OctetReader, NetasciiReader, type BlockReader } from './reader.js';
import type { TftpLimits } from './server.js';

/** What a transfer needs of its server: the limits, the counters it bumps, rate-limited stray-packet lines. */
export interface SessionHost {
  readonly limits: TftpLimits;
  readonly counters: { firstAckTimeouts: number };
  noteStray(key: string, fields: Record<string, unknown>, msg: string): void;
}

/** A running transfer, for status pages. */
export interface ActiveTransfer {
  ip: string;
  port: number;
  path: string;
  size: number;
  /** Payload bytes acknowledged so far (approximate for netascii). */
  bytes: number;
  since: number;
}

export type TransferOutcome = 'complete' | 'client-error' | 'timeout' | 'error' | 'aborted';

/** One finished transfer (the daemon logs or exports these). */
export interface TransferStats {
  address: string;
  port: number;
  path: string;
  mode: string;
  outcome: TransferOutcome;
  /** Payload bytes acknowledged by the client. */
  bytes: number;
  size: number;
  ms: number;
  /** MiB/s over the transfer. */
  rate: number;
  blksize: number;
  windowsize: number;
  retransmits: number;
  detail?: string;
}

export interface Negotiated {
  blksize: number;
  windowsize: number;
  timeoutMs: number;
  /** The client asked for this timeout (RFC 2349): use it exactly, no backoff. */
  timeoutNegotiated: boolean;
  oack: { name: string; value: string }[];
}

/** Applies RFC 2347-2349/7440 to the requested options; only understood, valid ones are answered. */
export function negotiate(
  options: RequestOption[],
  mode: string,
  size: number,
  limits: TftpLimits,
): Negotiated {
  const res: Negotiated = { blksize: 512, windowsize: 1, timeoutMs: limits.defaultTimeoutMs, timeoutNegotiated: false, oack: [] };
  const intOf = (v: string): number => (/^\s*\d{1,10}\s*$/.test(v) ? Number.parseInt(v, 10) : NaN);
  let windowReq = 0;
  for (const o of options) {
    const n = intOf(o.value);
    switch (o.key) {
      case 'blksize':
        if (n >= 8) {
          res.blksize = Math.min(n, 65464, Math.max(8, limits.maxBlksize));
          res.oack.push({ name: o.name, value: String(res.blksize) });
        }
        break;
      case 'timeout':
        if (n >= 1 && n <= 255) {
          res.timeoutMs = n * 1000;
          res.timeoutNegotiated = true;
          res.oack.push({ name: o.name, value: String(n) });
        }
        break;
      case 'tsize':
        if (mode === 'octet') res.oack.push({ name: o.name, value: String(size) });
        break;
      case 'windowsize':
        if (mode === 'octet' && n >= 1 && n <= 65535) {
          windowReq = n;
          res.oack.push({ name: o.name, value: '' });
        }
        break;
      default:
        break;
    }
  }
  if (windowReq > 0) {
    const byBytes = Math.max(1, Math.floor(limits.maxWindowBytes / (res.blksize + DATA_HEADER)));
    res.windowsize = Math.max(1, Math.min(windowReq, limits.maxWindowsize, byBytes));
    const entry = res.oack.find((e) => e.name.toLowerCase() === 'windowsize')!;
    entry.value = String(res.windowsize);
  }
  return res;
}

interface Slot {
  buf: Buffer;
  /** Payload bytes (0..blksize). */
  len: number;
}

const MAX_BATCH = 256;

const enum State {
  Oack,
  Data,
  Done,
}

export class Session {
  private sock: dgram.Socket | null = null;
  private conn: dgram.Socket | null = null;
  private ready = false;
  private readonly reader: BlockReader;
  private readonly slots: Slot[];
  private readonly ring: number;
  /** Free slots that trigger the next read. */
  private readonly refillAt: number;
  private readonly blksize: number;
  private readonly window: number;
  private state: State;
  private oackBuf: Buffer | null = null;
  /** First unacknowledged block (0-based; wire number is (index+1) & 0xffff). */
  private base = 0;
  /** Next block to send. */
  private next = 0;
  /** Next block to read; blocks [base, readIndex) are in the ring. */
  private readIndex = 0;
  /** Index of the final (short) block once read, else -1. */
  private lastIndex = -1;
  private reading = false;
  private tries = 0;
  private retransmits = 0;
  private lastHeard = Date.now();
  private readonly started = Date.now();
  /** The client has acknowledged something (the OACK or a DATA block). */
  private acked = false;
  /** The server's slot this transfer holds (set by the server). */
  /** The server's transfer slot this session holds (opaque here). */
  ticket: unknown = null;
  private timer: NodeJS.Timeout | null = null;
  private readonly timeoutMs: number;
  private readonly backoff: boolean;
  /** Current retransmission wait (backs off on timeouts without progress). */
  private rto: number;
  private doneResolve: (() => void) | null = null;
  private readonly done: Promise<void>;
  private readonly optionKey: string;

  constructor(
    private readonly server: SessionHost,
    private readonly req: RequestPacket,
    readonly path: string,
    private readonly source: FileSource,
    private readonly address: string,
    private readonly port: number,
    nego: Negotiated,
    private readonly onEnd: (stats: TransferStats) => void,
  ) {
    this.blksize = nego.blksize;
    this.window = nego.windowsize;
    this.timeoutMs = nego.timeoutMs;
    this.rto = nego.timeoutMs;
    this.backoff = !nego.timeoutNegotiated;
    this.reader = req.mode === 'netascii' ? new NetasciiReader(source) : new OctetReader(source);
    // Read ahead by bytes, but in at most MAX_BATCH buffers (one scatter read; IOV_MAX is 1024).
    const ahead = Math.max(this.window, Math.min(MAX_BATCH, Math.ceil(server.limits.readAheadBytes / this.blksize)));
    const aheadCapped = Math.max(1, Math.min(ahead, Math.floor(server.limits.maxWindowBytes / (this.blksize + DATA_HEADER))));
    // Never more slots than the file has blocks (netascii may double the size): a tsize probe or a small
    // file costs little.
    const maxBlocks = Math.floor((req.mode === 'netascii' ? 2 : 1) * Math.max(0, source.size) / this.blksize) + 1;
    this.ring = Math.max(1, Math.min(this.window + aheadCapped, maxBlocks));
    this.refillAt = Math.max(1, Math.min(aheadCapped, this.ring) >> 1);
    this.slots = [];
    const stride = DATA_HEADER + this.blksize;
    const pool = Buffer.allocUnsafe(this.ring * stride);
    for (let i = 0; i < this.ring; i++) this.slots.push({ buf: pool.subarray(i * stride, (i + 1) * stride), len: -1 });
    this.state = nego.oack.length > 0 ? State.Oack : State.Data;
    if (nego.oack.length > 0) this.oackBuf = buildOack(nego.oack);
    this.optionKey = Session.requestKey(req);
    this.done = new Promise((r) => (this.doneResolve = r));
  }

  static requestKey(req: RequestPacket): string {
    return `${req.filename}\0${req.mode}\0${req.options.map((o) => `${o.key}=${o.value}`).join('\0')}`;
  }

  sameRequest(req: RequestPacket): boolean {
    return this.state !== State.Done && Session.requestKey(req) === this.optionKey;
  }

  get startedAt(): number {
    return this.started;
  }

  /** Running, older than `graceMs`, and nothing acknowledged yet by its client. */
  stalled(now: number, graceMs: number): boolean {
    return this.state !== State.Done && !this.acked && now - this.started >= graceMs;
  }

  /**
   * Two sockets share the transfer's port (SO_REUSEADDR): `conn`, connected to the client, carries the
   * transfer (a connected UDP socket sends without a per-packet address lookup in node and with a cached
   * route in the kernel: about a third less CPU per block in lockstep); `sock`, unconnected, receives what
   * anybody else sends to the port (the kernel prefers the connected socket for the client's packets) and
   * answers it with ERROR 5. If the second socket cannot be set up, `sock` does everything.
   * (SO_REUSEADDR lets another local process bind the same ephemeral port too; a local user able to do
   * that on a boot server has easier ways in, and would still only see strangers' packets.)
   */
  start(localAddress: string): void {
    const sock = dgram.createSocket({ type: 'udp4', reuseAddr: true });
    this.sock = sock;
    sock.on('error', (e) => this.fail('error', `socket: ${e.message}`));
    sock.on('message', (msg, rinfo) => this.onMessage(msg, rinfo));
    this.timer = setTimeout(this.onTimeoutBound, Math.min(this.timeoutMs, this.server.limits.firstAckTimeoutMs));
    // With options, nothing is read before the client acknowledges the OACK: a size probe (`tsize`, then
    // ERROR 0 as Pi bootloaders and dnsmasq's "Early terminate" do) costs an open and no read.
    if (this.state !== State.Oack) this.fillRing();
    sock.bind({ address: localAddress, port: 0 }, () => {
      if (this.state === State.Done) return;
      let port: number;
      try {
        port = sock.address().port;
      } catch {
        return this.begin();
      }
      const conn = dgram.createSocket({ type: 'udp4', reuseAddr: true });
      let settled = false;
      const fallback = (): void => {
        if (settled) return;
        settled = true;
        try {
          conn.close();
        } catch {
          /* not open */
        }
        this.begin();
      };
      conn.once('error', fallback);
      conn.bind({ address: localAddress, port }, () => {
        conn.connect(this.port, this.address, () => {
          if (settled) return;
          settled = true;
          conn.off('error', fallback);
          if (this.state === State.Done) {
            conn.close();
            return;
          }
          conn.on('error', (e: NodeJS.ErrnoException) => {
            // ICMP port unreachable on a connected socket: the client closed its port (gave up, rebooted).
            if (e.code === 'ECONNREFUSED') this.finish('client-error', 'client port unreachable');
            else this.fail('error', `socket: ${e.message}`);
          });
          conn.on('message', (msg, rinfo) => this.onMessage(msg, rinfo));
          this.conn = conn;
          this.begin();
        });
      });
    });
  }

  /** Sockets ready: the first packet goes out. */
  private begin(): void {
    if (this.state === State.Done || this.ready) return;
    this.ready = true;
    if (this.state === State.Oack) this.sendRaw(this.oackBuf!);
    else this.pump();
  }

  private sendRaw(buf: Buffer): void {
    // No per-packet callback: it would cost a trip into JS per datagram; send errors arrive as 'error'.
    if (this.conn) this.conn.send(buf, 0, buf.length);
    else this.sock?.send(buf, 0, buf.length, this.port, this.address);
  }

  private onMessage(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.state === State.Done) return;
    if (rinfo.port !== this.port || rinfo.address !== this.address) {
      // Someone else's packet (RFC 1350 TID check): tell them, leave the transfer alone.
      this.server.noteStray(`tid:${rinfo.address}`, { ip: rinfo.address, port: rinfo.port, transferFor: this.address }, 'packet from unknown transfer ID');
      this.sock?.send(buildError(ERR_UNKNOWN_TID, 'Unknown transfer ID'), rinfo.port, rinfo.address, () => {});
      return;
    }
    if (msg.length === 4 && msg[0] === 0 && msg[1] === OP_ACK) {
      this.onAck((msg[2]! << 8) | msg[3]!);
      return;
    }
    const p = parsePacket(msg);
    if (p.ok && p.value.op === OP_ERROR) {
      // An ERROR to the OACK is how Pi bootloaders (and others) learn a file's size: not a failure.
      const probe = this.state === State.Oack && this.oackBuf !== null && this.req.options.some((o) => o.key === 'tsize');
      this.finish('client-error', `${probe ? 'size probe: ' : ''}client error ${p.value.code}: ${p.value.message.slice(0, 128)}`);
      return;
    }
    this.server.noteStray(`junk:${this.address}`, { ip: this.address, port: this.port, bytes: msg.length }, 'unexpected packet in transfer');
  }

  private onAck(block: number): void {
    this.lastHeard = Date.now();
    if (this.state === State.Oack) {
      if (block !== 0) return;
      this.state = State.Data;
      this.acked = true;
      this.tries = 0;
      if (this.rto !== this.timeoutMs) this.rearm(this.timeoutMs);
      this.fillRing(); // the first blocks go out when this read completes
      return;
    }
    // Which block this acknowledges: offset from base-1 (whose wire number is base & 0xffff).
    const d = (block - (this.base & 0xffff)) & 0xffff;
    if (d === 0) return; // duplicate of the previous ACK: never a trigger to resend (Sorcerer's Apprentice)
    const acked = this.base - 1 + d;
    if (acked >= this.next) return; // not sent yet (stale from a previous rollover lap, or garbage)
    this.base = acked + 1;
    this.acked = true;
    this.tries = 0;
    if (this.rto !== this.timeoutMs) this.rearm(this.timeoutMs);
    if (this.lastIndex >= 0 && acked >= this.lastIndex) {
      this.finish('complete');
      return;
    }
    // RFC 7440: an ACK inside the window means "resend from the block after it".
    if (acked < this.next - 1) this.next = this.base;
    this.pump();
    this.fillRing();
  }

  /** Sends what the window allows of what has been read. */
  private pump(): void {
    if (this.state !== State.Data || !this.ready) return;
    let end = this.base + this.window;
    if (this.lastIndex >= 0 && end > this.lastIndex + 1) end = this.lastIndex + 1;
    if (end > this.readIndex) end = this.readIndex;
    if (this.next >= end) return;
    const conn = this.conn;
    while (this.next < end) {
      const i = this.next++;
      const slot = this.slots[i % this.ring]!;
      writeDataHeader(slot.buf, (i + 1) & 0xffff);
      if (conn) conn.send(slot.buf, 0, DATA_HEADER + slot.len);
      else this.sock!.send(slot.buf, 0, DATA_HEADER + slot.len, this.port, this.address);
    }
    this.timer?.refresh();
  }

  /** Keeps the ring full: reads the next free slots in one go. */
  private fillRing(): void {
    if (this.reading || this.lastIndex >= 0 || this.state === State.Done) return;
    const room = this.base + this.ring - this.readIndex;
    if (room <= 0) return;
    // Batch reads (each one is a thread-pool round trip): wait until half the read-ahead is free, unless
    // the current window is not fully read yet.
    if (room < this.refillAt && this.readIndex >= this.base + this.window) return;
    const free = Math.min(MAX_BATCH, room);
    const first = this.readIndex;
    const bufs: Buffer[] = [];
    for (let i = 0; i < free; i++) {
      const slot = this.slots[(first + i) % this.ring]!;
      bufs.push(slot.buf.subarray(DATA_HEADER));
    }
    this.reading = true;
    this.reader.fill(bufs, (e, total) => {
      this.reading = false;
      if (this.state === State.Done) return;
      if (e) return this.fail('error', `read: ${e.message}`);
      let left = total;
      for (let i = 0; i < free; i++) {
        const n = Math.min(left, this.blksize);
        left -= n;
        this.slots[(first + i) % this.ring]!.len = n;
        this.readIndex = first + i + 1;
        if (n < this.blksize) {
          this.lastIndex = first + i;
          break;
        }
      }
      this.pump();
      this.fillRing();
    });
  }

  private readonly onTimeoutBound = (): void => this.onTimeout();

  /** A new wait for the retransmission timer (backoff, or back to the base after progress). */
  private rearm(ms: number): void {
    this.rto = ms;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(this.onTimeoutBound, ms);
  }

  private onTimeout(): void {
    if (this.state === State.Done) return;
    const now = Date.now();
    const limits = this.server.limits;
    if (now - this.lastHeard >= limits.idleTimeoutMs) {
      this.finish('timeout', 'idle');
      return;
    }
    // Nothing acknowledged yet: the slot is freed soon (a client that never ACKs must not hold it for the
    // idle timeout); retransmissions until then stop at that deadline.
    const firstAckLeft = this.acked ? Infinity : this.started + limits.firstAckTimeoutMs - now;
    if (firstAckLeft <= 0) {
      this.server.counters.firstAckTimeouts++;
      this.finish('timeout', 'first packet never acknowledged');
      return;
    }
    if (++this.tries > limits.retries) {
      this.finish('timeout', `no answer after ${limits.retries} retransmissions`);
      return;
    }
    this.retransmits++;
    let wait = this.backoff ? Math.min(this.rto * 2, Math.max(this.timeoutMs, limits.maxBackoffMs)) : this.rto;
    if (wait > firstAckLeft) wait = Math.max(1, firstAckLeft);
    if (this.state === State.Oack) {
      this.sendRaw(this.oackBuf!);
    } else {
      this.next = this.base;
      this.pump();
    }
    this.rearm(wait);
  }

  private fail(outcome: TransferOutcome, detail: string): void {
    if (this.state === State.Done) return;
    this.finish(outcome, detail, buildError(ERR_UNDEFINED, outcome === 'error' ? 'Server error' : detail));
  }

  progress(): ActiveTransfer {
    return {
      ip: this.address, port: this.port, path: this.path, size: this.source.size,
      bytes: Math.min(this.source.size, this.base * this.blksize), since: this.started,
    };
  }

  /** Ends the transfer; `message` non-null sends the client an ERROR first. */
  abort(message: string | null): Promise<void> {
    if (this.state !== State.Done) {
      this.finish('aborted', message ?? 'superseded', message !== null ? buildError(ERR_UNDEFINED, message) : undefined);
    }
    return this.done;
  }

  /** Ends the transfer: `last` (an ERROR) is sent before the socket closes. */
  private finish(outcome: TransferOutcome, detail?: string, last?: Buffer): void {
    if (this.state === State.Done) return;
    this.state = State.Done;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.reader.close();
    const ms = Date.now() - this.started;
    let bytes = 0;
    if (this.base > 0) {
      bytes = (this.base - 1) * this.blksize;
      if (this.lastIndex >= 0 && this.base > this.lastIndex) bytes += this.slots[this.lastIndex % this.ring]!.len;
      else bytes += this.blksize;
    }
    const stats: TransferStats = {
      address: this.address, port: this.port, path: this.path, mode: this.req.mode, outcome, bytes,
      size: this.source.size, ms, rate: ms > 0 ? bytes / 1048576 / (ms / 1000) : 0,
      blksize: this.blksize, windowsize: this.window, retransmits: this.retransmits,
      ...(detail !== undefined ? { detail } : {}),
    };
    const sock = this.sock;
    const conn = this.conn;
    this.sock = null;
    this.conn = null;
    const end = (): void => {
      this.onEnd(stats);
      this.doneResolve?.();
    };
    const closeAll = (): void => {
      for (const s of [conn, sock]) {
        try {
          s?.close();
        } catch {
          /* already closed */
        }
      }
      end();
    };
    if (last && (conn || sock)) {
      if (conn) conn.send(last, 0, last.length, closeAll);
      else sock!.send(last, 0, last.length, this.port, this.address, closeAll);
    } else closeAll();
  }
}
