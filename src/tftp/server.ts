/**
 * TFTP server: read-only, octet and netascii, options blksize/timeout/tsize (RFC 2347-2349) and
 * windowsize (RFC 7440). One request socket; each transfer answers from its own socket (its TID, a
 * `Session`, session.ts). Here: requests, path vetting, resolution, and admission — transfer slots with
 * per-address, per-/24 and unknown-client budgets, preemption of stalled transfers, not-found floods.
 */
import { askRecvBuffer } from '../util/net.js';
import dgram from 'node:dgram';
import { EventEmitter } from 'node:events';
import type { Logger } from '../util/log.js';
import { silentLogger } from '../util/log.js';
import { FloodLog, TokenBuckets } from '../util/flood.js';
import { CorruptError, ParseError } from '../util/errors.js';
import type { FileSource } from '../util/source.js';
import {
  parsePacket, buildError, OP_RRQ, OP_WRQ, ERR_UNDEFINED, ERR_NOT_FOUND, ERR_ACCESS, ERR_ILLEGAL_OP, type RequestPacket,
} from './packet.js';
import { normalizePath, type ClientPriority, type TftpResolver } from './resolver.js';
import { Session, negotiate, type ActiveTransfer, type TransferStats } from './session.js';

export { negotiate, type ActiveTransfer, type TransferOutcome, type TransferStats } from './session.js';

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
        askRecvBuffer(sock);
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
      const mine = this.perClient.get(ip) ?? 0;
      if (known && mine < this.limits.maxPerClient) {
        // A configured client stopped only by the global cap (a boot storm: each client holds one transfer,
        // two for a moment between files): no answer. Every boot firmware retransmits an unanswered RRQ,
        // and the retransmission finds a slot as soon as one frees; an ERROR would end the file (a Pi
        // bootloader, a PXE ROM give up the boot attempt).
        this.noisyLog('warn', `busy:${ip}`, { ...this.who(ip), active: this.slotsUsed, unknown: this.unknownUsed, client: mine, known }, 'tftp transfer limit reached: request left to its retransmission');
        return;
      }
      this.noisyLog('warn', `busy:${ip}`, { ...this.who(ip), active: this.slotsUsed, unknown: this.unknownUsed, client: mine, known }, 'tftp transfer limit reached');
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
      const t = s.ticket as Ticket | null;
      if (!t || t.released || t.known || (subnet !== null && t.subnet !== subnet)) continue;
      if (!s.stalled(now, this.stallGraceMs) || !eligible(t)) continue;
      const held = this.perClient.get(t.ip) ?? 0;
      if (held > victimHeld || (held === victimHeld && victim !== null && s.startedAt < victim.startedAt)) {
        victim = s;
        victimHeld = held;
      }
    }
    if (!victim) return false;
    const t = victim.ticket as Ticket;
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
