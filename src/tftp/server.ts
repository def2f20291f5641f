/**
 * TFTP server: read-only, octet and netascii, options blksize/timeout/tsize (RFC 2347-2349) and
 * windowsize (RFC 7440). One request socket; each transfer answers from its own socket (its TID).
 *
 * Engine, per transfer: a ring of block buffers (4-byte header room + blksize payload) is filled ahead of
 * the client by one sequential reader (scatter reads where the source allows), so an ACK is answered
 * synchronously from memory. The window [base, base+W) is what may be in flight; everything unacked stays
 * in the ring, so retransmissions never re-read. One timer per transfer, refreshed on every send;
 * retransmission happens only when it fires (never on a duplicate ACK: Sorcerer's Apprentice).
 */
import dgram from 'node:dgram';
import { EventEmitter } from 'node:events';
import type { Logger } from '../util/log.js';
import { silentLogger } from '../util/log.js';
import { FloodLog, TokenBuckets } from '../util/flood.js';
import { CorruptError, ParseError } from '../util/errors.js';
import type { FileSource } from '../util/source.js';
import {
  parsePacket, writeDataHeader, buildError, buildOack,
  OP_RRQ, OP_WRQ, OP_ACK, OP_ERROR, DATA_HEADER,
  ERR_UNDEFINED, ERR_NOT_FOUND, ERR_ACCESS, ERR_ILLEGAL_OP, ERR_UNKNOWN_TID,
  type RequestPacket, type RequestOption,
} from './packet.js';
import { normalizePath, type ClientPriority, type TftpResolver } from './resolver.js';
import { OctetReader, NetasciiReader, type BlockReader } from './reader.js';

export interface TftpLimits {
  /** Largest blksize granted (RFC 2348 allows 8..65464). Default 1468 (fits a 1500-byte MTU). */
  maxBlksize: number;
  /** Largest windowsize granted (RFC 7440). Default 64. */
  maxWindowsize: number;
  /** Bytes a window may hold in memory; the granted windowsize shrinks to fit. Default 4 MiB. */
  maxWindowBytes: number;
  /** Transfers at once, all clients. Default 512. */
  maxTransfers: number;
  /** Transfers at once from one client address. Default 32. */
  maxPerClient: number;
  /** A transfer with nothing heard from its client for this long ends. Default 30 s. */
  idleTimeoutMs: number;
  /** Retransmissions of one packet before giving up. Default 5. */
  retries: number;
  /** Retransmission timeout when the client asks for none. Default 1000 ms. */
  defaultTimeoutMs: number;
  /**
   * Without a negotiated timeout, each retransmission doubles the wait up to this (reset on progress).
   * Some clients (atftp) never re-ACK on a duplicate DATA and only re-ACK when their own timer fires,
   * which a server retransmitting faster than that timer would keep resetting forever. Default 8000 ms.
   */
  maxBackoffMs: number;
  /** Bytes read ahead of the window (filled in batches of about half of it). Default 128 KiB. */
  readAheadBytes: number;
  /**
   * A transfer whose client has not acknowledged its first packet (OACK or DATA 1) this long after it
   * started ends and frees its slot (real firmware answers in milliseconds; a client that never ACKs must
   * not hold a slot for `idleTimeoutMs`). Default 3000 ms.
   */
  firstAckTimeoutMs: number;
  /** Transfers at once from clients the resolver does not call known, per IPv4 /24. Default 64. */
  maxPerSubnet: number;
  /**
   * Percent of `maxTransfers` clients the resolver does not call known may hold together (the rest is kept
   * for configured clients). Applies only with a resolver that has `priority`. Default 50.
   */
  unknownSharePercent: number;
  /** "File not found" answers per second per client address (burst: twice that); the rest are dropped. Default 20. */
  notFoundPerSecond: number;
}

export const DEFAULT_LIMITS: TftpLimits = {
  maxBlksize: 1468,
  maxWindowsize: 64,
  maxWindowBytes: 4 * 1024 * 1024,
  maxTransfers: 512,
  maxPerClient: 32,
  idleTimeoutMs: 30_000,
  retries: 5,
  defaultTimeoutMs: 1000,
  maxBackoffMs: 8000,
  readAheadBytes: 128 * 1024,
  firstAckTimeoutMs: 3000,
  maxPerSubnet: 64,
  unknownSharePercent: 50,
  notFoundPerSecond: 20,
};

export interface TftpServerOptions {
  resolver: TftpResolver;
  logger?: Logger;
  /** Listen address. Default 0.0.0.0. */
  address?: string;
  /** Listen port. Default 69; 0 picks one. */
  port?: number;
  /**
   * Local address transfer sockets bind to. Default: `address`. Node's dgram cannot tell which local
   * address a datagram arrived on (no IP_PKTINFO), so with `address` 0.0.0.0 on a multi-homed host set this
   * to the address clients talk to; left at 0.0.0.0 the kernel picks the source address by route.
   */
  replyAddress?: string;
  limits?: Partial<TftpLimits>;
  /** Extra log fields for a client address (the daemon adds the MAC or Pi serial it learned). */
  describeClient?: (address: string) => Record<string, string>;
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

export interface TftpServerStats {
  active: number;
  served: number;
  notFound: number;
  failed: number;
  malformed: number;
  /** "File not found" answers left unsent (the client's address was over `notFoundPerSecond`). */
  notFoundDropped: number;
  /** Requests answered "Server busy". */
  busy: number;
  /** Transfers that ended because their client never acknowledged the first packet. */
  firstAckTimeouts: number;
  /** Stalled transfers of unknown clients ended to make room for another client. */
  preempted: number;
}

interface Negotiated {
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

const SHUTDOWN = 'server shutting down';

export class TftpServer extends EventEmitter {
  readonly limits: TftpLimits;
  private readonly log: Logger;
  private readonly resolver: TftpResolver;
  private readonly listenAddress: string;
  private readonly listenPort: number;
  private readonly replyAddress: string;
  private socket: dgram.Socket | null = null;
  private readonly sessions = new Map<string, Session>();
  private readonly perClient = new Map<string, number>();
  /** Slots (lookups and transfers) of unknown clients per IPv4 /24. */
  private readonly perSubnet = new Map<string, number>();
  /** Lookups in progress. */
  private pending = 0;
  /** Slots held: lookups in progress and transfers. */
  private slotsUsed = 0;
  /** Of which by clients the resolver does not call known. */
  private unknownUsed = 0;
  private readonly unknownCap: number;
  /** A transfer that has not heard its client this long may give its slot to another client. */
  private readonly stallGraceMs: number;
  /** Client endpoint → request being looked up (retransmitted RRQs during a slow lookup are ignored). */
  private readonly resolving = new Map<string, string>();
  private readonly resolvingToken = new Map<string, string>();
  private lookups = 0;
  private closing = false;
  /** Rate-limited lines for what a remote host can trigger at will (per client and per kind of event). */
  private readonly flood: FloodLog;
  private readonly notFoundBuckets: TokenBuckets;
  /** Fresh sockets for "not found" answers, all clients together; beyond it they go from the request socket. */
  private readonly oneShotBucket = new TokenBuckets(200, 100, 1);
  readonly counters: Omit<TftpServerStats, 'active'> = {
    served: 0, notFound: 0, failed: 0, malformed: 0, notFoundDropped: 0, busy: 0, firstAckTimeouts: 0, preempted: 0,
  };

  constructor(opts: TftpServerOptions) {
    super();
    this.resolver = opts.resolver;
    this.log = opts.logger ?? silentLogger;
    this.listenAddress = opts.address ?? '0.0.0.0';
    this.listenPort = opts.port ?? 69;
    this.replyAddress = opts.replyAddress ?? this.listenAddress;
    this.limits = { ...DEFAULT_LIMITS, ...(opts.limits ?? {}) };
    this.describeClient = opts.describeClient ?? (() => ({}));
    this.flood = new FloodLog(this.log, { maxLinesPerKind: 50 });
    const nf = Math.max(1, this.limits.notFoundPerSecond);
    this.notFoundBuckets = new TokenBuckets(nf, 2 * nf);
    this.unknownCap = this.resolver.priority
      ? Math.max(1, Math.floor((this.limits.maxTransfers * Math.min(100, Math.max(0, this.limits.unknownSharePercent))) / 100))
      : this.limits.maxTransfers;
    this.stallGraceMs = Math.min(500, this.limits.firstAckTimeoutMs);
  }

  private readonly describeClient: (address: string) => Record<string, string>;

  /** Log fields for a client: what the daemon knows of it, and its address. */
  who(ip: string): Record<string, string> {
    return { ...this.describeClient(ip), ip };
  }

  /** Transfers running now. */
  activeTransfers(): ActiveTransfer[] {
    return [...this.sessions.values()].map((s) => s.progress());
  }

  stats(): TftpServerStats {
    return { active: this.sessions.size, ...this.counters };
  }

  listen(): Promise<{ address: string; port: number }> {
    return new Promise((resolve, reject) => {
      const sock = dgram.createSocket({ type: 'udp4' });
      const onErr = (e: Error): void => reject(e);
      sock.once('error', onErr);
      sock.on('message', (msg, rinfo) => this.onRequest(msg, rinfo));
      sock.bind({ address: this.listenAddress, port: this.listenPort }, () => {
        sock.off('error', onErr);
        sock.on('error', (e) => this.log.error({ err: e.message }, 'tftp socket error'));
        this.socket = sock;
        const a = sock.address();
        this.log.info({ address: a.address, port: a.port }, 'tftp listening');
        resolve({ address: a.address, port: a.port });
      });
    });
  }

  /** Stops accepting requests and aborts running transfers (each client gets an ERROR). */
  async close(): Promise<void> {
    this.closing = true;
    const sock = this.socket;
    this.socket = null;
    if (sock) await new Promise<void>((r) => sock.close(() => r()));
    const ends = [...this.sessions.values()].map((s) => s.abort(SHUTDOWN));
    await Promise.all(ends);
    this.flood.close();
  }

  /** Sends a datagram from the request socket (rejections of malformed requests, WRQ). */
  private replyFromMain(buf: Buffer, port: number, address: string): void {
    this.socket?.send(buf, port, address, () => {});
  }

  /**
   * Logs a noisy event (`key` is `kind:client`) at most once per interval per key and a bounded number of
   * times per interval per kind, with counts of what was left out (see FloodLog).
   */
  private noisyLog(level: 'warn' | 'info' | 'debug', key: string, fields: Record<string, unknown>, msg: string): void {
    const colon = key.indexOf(':');
    this.flood.event(level, colon > 0 ? key.slice(0, colon) : key, key.slice(colon + 1), fields, msg);
  }

  private onRequest(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.closing) return;
    const ip = rinfo.address;
    const parsed = parsePacket(msg);
    if (!parsed.ok) {
      this.counters.malformed++;
      this.noisyLog('warn', `bad:${ip}`, { ip, port: rinfo.port, code: parsed.error.code, err: parsed.error.message, bytes: msg.length }, 'malformed tftp packet');
      if (msg.length >= 2 && msg[0] === 0 && (msg[1] === OP_RRQ || msg[1] === OP_WRQ)) {
        this.replyFromMain(buildError(ERR_ILLEGAL_OP, 'Malformed request'), rinfo.port, ip);
      }
      return;
    }
    const p = parsed.value;
    if (p.op === OP_WRQ) {
      this.noisyLog('info', `wrq:${ip}`, { ip, path: p.filename.slice(0, 256) }, 'write request refused (read-only)');
      this.replyFromMain(buildError(ERR_ACCESS, 'Read-only server'), rinfo.port, ip);
      return;
    }
    if (p.op !== OP_RRQ) {
      this.noisyLog('debug', `stray:${ip}`, { ip, port: rinfo.port, op: p.op }, 'stray packet on request port');
      return;
    }
    if (p.mode === 'mail') {
      this.replyFromMain(buildError(ERR_ILLEGAL_OP, 'Mail mode not supported'), rinfo.port, ip);
      return;
    }
    const norm = normalizePath(p.filename);
    if (!norm.ok) {
      this.noisyLog('warn', `path:${ip}`, { ip, path: p.filename.slice(0, 256), err: norm.error.message }, 'tftp path refused');
      this.replyFromMain(buildError(ERR_ACCESS, 'Access violation'), rinfo.port, ip);
      return;
    }
    const key = `${ip}:${rinfo.port}`;
    const reqKey = Session.requestKey(p);
    // The same request again while its file is still being looked up (a slow first open of an image):
    // the lookup in progress answers it.
    if (this.resolving.get(key) === reqKey) return;
    const existing = this.sessions.get(key);
    if (existing) {
      // A retransmitted RRQ (our first answer is in flight or lost): the running transfer retransmits itself.
      if (existing.sameRequest(p)) return;
      // The client reused its port for a new request: the old transfer is dead.
      void existing.abort(null);
    }
    const path = norm.value;
    const known = this.priorityOf(ip, path) === 'known';
    const ticket = this.admit(ip, known);
    if (!ticket) {
      this.counters.busy++;
      this.noisyLog('warn', `busy:${ip}`, { ...this.who(ip), active: this.slotsUsed, unknown: this.unknownUsed, client: this.perClient.get(ip) ?? 0, known }, 'tftp transfer limit reached');
      this.replyFromMain(buildError(ERR_UNDEFINED, 'Server busy, try again'), rinfo.port, ip);
      return;
    }
    this.pending++;
    const release = (): void => this.releaseTicket(ticket);
    // A token per lookup: a newer request from the same client port supersedes this one.
    const token = `${reqKey}\0${++this.lookups}`;
    this.resolving.set(key, reqKey);
    this.resolvingToken.set(key, token);
    const done = (): boolean => {
      const current = this.resolvingToken.get(key) === token;
      if (current) {
        this.resolving.delete(key);
        this.resolvingToken.delete(key);
      }
      return current;
    };
    // Through a promise chain: a resolver that throws synchronously is handled like one that rejects.
    Promise.resolve().then(() => this.resolver.resolve({ address: ip, port: rinfo.port, path })).then(
      (source) => {
        this.pending--;
        if (!done() || this.closing) {
          source?.close();
          release();
          return;
        }
        if (!source) {
          this.counters.notFound++;
          release();
          this.answerNotFound(ip, rinfo.port, path);
          return;
        }
        this.startSession(p, path, source, rinfo, release, ticket);
      },
      (e: unknown) => {
        this.pending--;
        release();
        if (!done()) return;
        this.counters.failed++;
        const err = e instanceof Error ? e.message : String(e);
        if (e instanceof CorruptError || e instanceof ParseError) {
          // A corrupt boot partition (bad BPB, FAT loop, cluster out of range): say so, not "not found".
          // Logged once per volume per interval (the message starts with the volume's name), with the client.
          const volume = err.slice(0, Math.max(0, err.indexOf(': '))) || 'image';
          this.noisyLog('warn', `corrupt:${volume}`, { ...this.who(ip), port: rinfo.port, path, volume, code: e.code, err }, 'boot partition is corrupt: tftp request refused');
          this.sendOneShot(buildError(ERR_UNDEFINED, `Boot partition is corrupt (${e.code}); see the server log`), rinfo.port, ip);
          return;
        }
        this.noisyLog('warn', `resolve:${ip} ${err.slice(0, 200)}`, { ...this.who(ip), port: rinfo.port, path, err }, 'tftp resolve failed');
        this.sendOneShot(buildError(ERR_NOT_FOUND, 'File not found'), rinfo.port, ip);
      },
    );
  }

  /** The resolver's priority for a request; a resolver that throws makes it 'unknown'. */
  private priorityOf(ip: string, path: string): ClientPriority {
    if (!this.resolver.priority) return 'unknown';
    try {
      return this.resolver.priority(ip, path) === 'known' ? 'known' : 'unknown';
    } catch {
      return 'unknown';
    }
  }

  /**
   * A slot for a request, or null (busy). Everyone: at most `maxPerClient` per address. Unknown clients:
   * at most `maxPerSubnet` per /24 and the unknown share of `maxTransfers`. When the limit that stops a
   * request is shared, a transfer that never heard from its client (stalled) may give up its slot: to a
   * known client, any unknown one; to an unknown client, one whose address (or /24) holds at least two
   * slots more than the asker's would (fair share: a flood cannot keep a newcomer out).
   */
  private admit(ip: string, known: boolean): Ticket | null {
    const L = this.limits;
    const mine = this.perClient.get(ip) ?? 0;
    if (mine >= L.maxPerClient) return null;
    const subnet = subnetOf(ip);
    if (known) {
      if (this.slotsUsed >= L.maxTransfers && !this.preempt(null, () => true)) return null;
    } else {
      const sub = this.perSubnet.get(subnet) ?? 0;
      const subnetFull = sub >= L.maxPerSubnet;
      if (subnetFull || this.slotsUsed >= L.maxTransfers || this.unknownUsed >= this.unknownCap) {
        const fair = (t: Ticket): boolean =>
          (this.perClient.get(t.ip) ?? 0) > mine + 1 || (!subnetFull && (this.perSubnet.get(t.subnet) ?? 0) > sub + 1);
        if (!this.preempt(subnetFull ? subnet : null, fair)) return null;
      }
    }
    // (A known client over maxTransfers after preempting cannot happen: one preemption frees one slot.)
    const ticket: Ticket = { ip, subnet, known, released: false };
    this.slotsUsed++;
    this.perClient.set(ip, mine + 1);
    if (!known) {
      this.unknownUsed++;
      this.perSubnet.set(subnet, (this.perSubnet.get(subnet) ?? 0) + 1);
    }
    return ticket;
  }

  /** Gives back a slot (once; later calls do nothing). */
  private releaseTicket(t: Ticket): void {
    if (t.released) return;
    t.released = true;
    this.slotsUsed--;
    const n = (this.perClient.get(t.ip) ?? 1) - 1;
    if (n <= 0) this.perClient.delete(t.ip);
    else this.perClient.set(t.ip, n);
    if (!t.known) {
      this.unknownUsed--;
      const m = (this.perSubnet.get(t.subnet) ?? 1) - 1;
      if (m <= 0) this.perSubnet.delete(t.subnet);
      else this.perSubnet.set(t.subnet, m);
    }
  }

  /**
   * Ends one stalled transfer of an unknown client (in `subnet` when given, and `eligible`), preferring the
   * address holding the most slots, then the oldest; its slot is free when this returns true.
   */
  private preempt(subnet: string | null, eligible: (t: Ticket) => boolean): boolean {
    const now = Date.now();
    let victim: Session | null = null;
    let victimHeld = -1;
    for (const s of this.sessions.values()) {
      const t = s.ticket;
      if (!t || t.released || t.known || (subnet !== null && t.subnet !== subnet)) continue;
      if (!s.stalled(now, this.stallGraceMs) || !eligible(t)) continue;
      const held = this.perClient.get(t.ip) ?? 0;
      if (held > victimHeld || (held === victimHeld && victim !== null && s.startedAt < victim.startedAt)) {
        victim = s;
        victimHeld = held;
      }
    }
    if (!victim) return false;
    const t = victim.ticket!;
    this.counters.preempted++;
    this.noisyLog('info', `preempt:${t.ip}`, { ...this.who(t.ip), path: victim.path }, 'stalled tftp transfer ended to make room');
    this.releaseTicket(t);
    void victim.abort('Server busy, try again');
    return true;
  }

  /**
   * "File not found": at most `notFoundPerSecond` answers per second per address (burst twice that); the
   * rest are dropped silently (a real client asks again; a flood costs no socket and no log line). An answer
   * normally comes from a fresh socket as a transfer's would (its own TID, RFC 1350); when more than 200 a
   * second are owed, from the request socket (port 69) instead, which every client tested accepts for an
   * ERROR but is not the RFC's letter. Log lines are rate-limited with counts.
   */
  private answerNotFound(ip: string, port: number, path: string): void {
    const answered = this.notFoundBuckets.take(ip);
    if (!answered) this.counters.notFoundDropped++;
    this.flood.event('info', 'not-found', `${ip}\0${path}`, { ...this.who(ip), port, path, ...(answered ? {} : { answered: false }) }, 'file not found');
    if (!answered) return;
    const buf = buildError(ERR_NOT_FOUND, 'File not found');
    if (this.oneShotBucket.take('')) this.sendOneShot(buf, port, ip);
    else this.replyFromMain(buf, port, ip);
  }

  /** An answer from a fresh socket (its own TID), as a transfer would send it; used for "not found". */
  private sendOneShot(buf: Buffer, port: number, address: string): void {
    const s = dgram.createSocket({ type: 'udp4' });
    s.on('error', () => {
      try {
        s.close();
      } catch {
        /* already closed */
      }
    });
    s.bind({ address: this.replyAddress, port: 0 }, () => {
      s.send(buf, port, address, () => {
        try {
          s.close();
        } catch {
          /* closed on error */
        }
      });
    });
  }

  private startSession(req: RequestPacket, path: string, source: FileSource, rinfo: dgram.RemoteInfo, release: () => void, ticket: Ticket): void {
    const key = `${rinfo.address}:${rinfo.port}`;
    const nego = negotiate(req.options, req.mode, source.size, this.limits);
    const session = new Session(this, req, path, source, rinfo.address, rinfo.port, nego, (stats) => {
      if (this.sessions.get(key) === session) this.sessions.delete(key);
      release();
      this.finished(stats);
    });
    session.ticket = ticket;
    this.sessions.set(key, session);
    session.start(this.replyAddress);
  }

  private finished(s: TransferStats): void {
    const fields = { ...this.who(s.address), port: s.port, path: s.path, bytes: s.bytes, ms: s.ms, mibps: Math.round(s.rate * 100) / 100, blksize: s.blksize, windowsize: s.windowsize, mode: s.mode, retransmits: s.retransmits };
    switch (s.outcome) {
      case 'complete':
        this.counters.served++;
        this.log.info(fields, 'file sent');
        break;
      // What a remote host can cause at will (abort, never answer) is rate-limited per client and per kind.
      case 'client-error':
        this.flood.event('debug', 'client-error', s.address, { ...fields, detail: s.detail }, 'transfer ended by client');
        break;
      case 'aborted':
        this.flood.event('debug', 'aborted', s.address, { ...fields, detail: s.detail }, 'transfer aborted');
        break;
      case 'timeout':
        this.counters.failed++;
        this.flood.event('info', 'timeout', s.address, { ...fields, detail: s.detail }, 'transfer timed out');
        break;
      case 'error':
        this.counters.failed++;
        this.flood.event('warn', 'error', s.path, { ...fields, detail: s.detail }, 'transfer failed');
        break;
    }
    this.emit('transfer', s);
  }

  /** For sessions: rate-limited logging of stray packets. */
  noteStray(key: string, fields: Record<string, unknown>, msg: string): void {
    this.noisyLog('debug', key, fields, msg);
  }
}

/** One transfer slot, held from the lookup to the end of the transfer. */
interface Ticket {
  ip: string;
  /** IPv4 /24 (`a.b.c`), or the whole address for anything else. */
  subnet: string;
  known: boolean;
  released: boolean;
}

function subnetOf(ip: string): string {
  const i = ip.lastIndexOf('.');
  return i > 0 && ip.indexOf(':') < 0 ? ip.slice(0, i) : ip;
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

class Session {
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
  ticket: Ticket | null = null;
  private timer: NodeJS.Timeout | null = null;
  private readonly timeoutMs: number;
  private readonly backoff: boolean;
  /** Current retransmission wait (backs off on timeouts without progress). */
  private rto: number;
  private doneResolve: (() => void) | null = null;
  private readonly done: Promise<void>;
  private readonly optionKey: string;

  constructor(
    private readonly server: TftpServer,
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
    this.fillRing();
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
      this.finish('client-error', `client error ${p.value.code}: ${p.value.message.slice(0, 128)}`);
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
      this.pump();
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
