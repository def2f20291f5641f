/**
 * NBD server: fixed newstyle handshake, then a pipelined transmission phase.
 *
 * Transmission hot path: a streaming request parser over the socket's chunks (a 28-byte header is parsed
 * in place when it lies inside one chunk; a write payload lying inside one chunk is used as a view, else
 * it is gathered into one buffer of the request's length — never `Buffer.concat`). Many requests are in
 * flight at once and are answered as they complete; a READ reply is one buffer (header + data, the data
 * read straight into it) written with one `write()`.
 *
 * Memory is bounded per connection and server-wide, including replies the client has not read: a request's
 * bytes count as in flight from its admission until the kernel has taken its reply (the write callback), not
 * until the reply is handed to `write()`. A request is admitted when its connection stays under
 * `maxInflightBytes` and the server under `maxInflightBytesTotal`; otherwise it is held (parsing and socket
 * reads stop) and the connection waits, first come first served, for the budget. A connection with nothing
 * in flight may always start one request of up to `guaranteedRequestBytes`, so no client starves while
 * others hold the budget. Worst case: maxInflightBytesTotal + maxConnections × guaranteedRequestBytes, plus
 * the buffer pool's cap. Connections are capped overall and per client address, and a connection whose
 * replies make no write progress for `stallTimeoutMs` is destroyed (an idle one, nothing queued, is not).
 */
import net from 'node:net';
import tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { Logger } from '../util/log.js';
import { silentLogger, RateLimiter } from '../util/log.js';
import type { BlockDevice } from '../disk/blockdev.js';
import * as P from './packet.js';
import { BufferPool } from './bufpool.js';
import { type ExportProvider, type NbdClient, type OpenExport, isRefusal, normalizeAddress } from './exports.js';

export interface NbdLimits {
  /** Largest READ/WRITE payload (also advertised as the maximum block size). Default 32 MiB. */
  maxPayload: number;
  /**
   * Bytes in flight per connection (read/write payloads being served and replies the client has not read
   * yet) before it stops taking requests. A single request up to maxPayload is always allowed. Default 32 MiB.
   */
  maxInflightBytes: number;
  /** The same, summed over all connections. Default 256 MiB (a larger request is admitted when nothing is in flight). */
  maxInflightBytesTotal: number;
  /** A connection with nothing in flight may always start one request this large, budget or not. Default 2 MiB. */
  guaranteedRequestBytes: number;
  /** Requests in flight (until their reply is flushed) per connection before it stops taking requests. Default 256. */
  maxInflightRequests: number;
  /** Largest option payload accepted during the handshake. Default 64 KiB. */
  maxOptionLength: number;
  /** Time allowed for the handshake. Default 30 s. */
  handshakeTimeoutMs: number;
  /** Open connections (any phase), all clients. Default 256. */
  maxConnections: number;
  /** Open connections per client address. Default 16. */
  maxConnectionsPerClient: number;
  /** A connection with reply bytes queued and no write progress for this long is destroyed. Default 60 s. */
  stallTimeoutMs: number;
}

export const DEFAULT_LIMITS: NbdLimits = {
  maxPayload: 32 << 20,
  maxInflightBytes: 32 << 20,
  maxInflightBytesTotal: 256 << 20,
  guaranteedRequestBytes: 2 << 20,
  maxInflightRequests: 256,
  maxOptionLength: 64 << 10,
  handshakeTimeoutMs: 30_000,
  maxConnections: 256,
  maxConnectionsPerClient: 16,
  stallTimeoutMs: 60_000,
};

/** What a request without payload is charged at admission (its reply's real size is charged once built). */
const SMALL_COST = 512;
/** A BLOCK_STATUS reply: at most 1024 extents. */
const BLOCK_STATUS_COST = 1024 * 8 + 64;
/** A pool that served nothing for this long is emptied (its memory goes back to the system). */
const POOL_IDLE_MS = 30_000;

export interface NbdServerOptions {
  exports: ExportProvider;
  logger?: Logger;
  /**
   * Enables NBD_OPT_STARTTLS (SELECTIVETLS: exports marked tlsRequired need it). With `ca`, clients are asked
   * for a certificate; one that verifies against `ca` gives the connection `certNames` (see NbdClient).
   */
  tls?: { key: string | Buffer; cert: string | Buffer; ca?: string | Buffer };
  limits?: Partial<NbdLimits>;
  /** Extra log fields for a client address (the daemon adds the MAC or Pi serial it learned at boot). */
  describeClient?: (address: string) => Record<string, string>;
}

/** One connection, for status pages. */
export interface NbdConnectionInfo {
  ip: string;
  port: number | undefined;
  export: string | null;
  bytesRead: number;
  bytesWritten: number;
  requests: number;
  since: number;
}

const META_ID_BASE_ALLOCATION = 1;
const PREFERRED_BLOCK = 4096;
const ZERO_CHUNK = Buffer.alloc(1 << 20);
const EMPTY = Buffer.alloc(0);

export class NbdServer {
  readonly limits: NbdLimits;
  readonly logger: Logger;
  readonly exports: ExportProvider;
  readonly describeClient: (address: string) => Record<string, string>;
  readonly secureContext: tls.SecureContext | null;
  /** Ask TLS clients for a certificate (a CA to verify them is configured). */
  readonly requestCert: boolean;
  /** The CAs a client certificate must be issued (and signed) by. */
  readonly clientCas: X509Certificate[];
  readonly rate = new RateLimiter(10_000);
  readonly pool = new BufferPool();
  private readonly server: net.Server;
  private readonly conns = new Set<Connection>();
  /** Open connections per client address. */
  private readonly perClient = new Map<string, number>();
  /** Bytes in flight over all connections (payloads being served, replies not flushed yet). */
  private inflightTotal = 0;
  /** Connections waiting for in-flight budget, first come first served (a Set keeps insertion order). */
  private readonly waiting = new Set<Connection>();
  private waking = false;
  private readonly sweepMs: number;
  private readonly sweeper: NodeJS.Timeout;
  private poolGets = 0;
  private poolIdleMs = 0;
  shuttingDown = false;

  constructor(opts: NbdServerOptions) {
    const limits = { ...DEFAULT_LIMITS, ...opts.limits };
    this.limits = limits;
    // Stalled connections and an idle buffer pool are found by one periodic sweep (nothing per request).
    this.sweepMs = Math.min(5000, Math.max(25, Math.floor(limits.stallTimeoutMs / 4)));
    this.sweeper = setInterval(() => this.sweep(), this.sweepMs);
    this.sweeper.unref();
    this.logger = opts.logger ?? silentLogger;
    this.exports = opts.exports;
    this.describeClient = opts.describeClient ?? ((ip) => ({ ip }));
    this.secureContext = opts.tls ? tls.createSecureContext({ key: opts.tls.key, cert: opts.tls.cert, ca: opts.tls.ca }) : null;
    this.requestCert = opts.tls?.ca !== undefined;
    this.clientCas = opts.tls?.ca !== undefined ? parseCas(opts.tls.ca) : [];
    // A larger write buffer lets a few big READ replies queue without pausing request intake.
    this.server = net.createServer({ noDelay: true, highWaterMark: 1 << 20 }, (s) => this.accept(s));
    this.server.on('error', (e) => this.logger.error({ err: e }, 'nbd server error'));
  }

  listen(port: number, host = '0.0.0.0'): Promise<{ port: number; address: string }> {
    return new Promise((resolve, reject) => {
      const onErr = (e: Error): void => reject(e);
      this.server.once('error', onErr);
      this.server.listen(port, host, () => {
        this.server.off('error', onErr);
        const a = this.server.address() as net.AddressInfo;
        this.logger.info({ port: a.port, host: a.address }, 'nbd listening');
        resolve({ port: a.port, address: a.address });
      });
    });
  }

  get address(): net.AddressInfo | null {
    return this.server.address() as net.AddressInfo | null;
  }

  get connections(): number {
    return this.conns.size;
  }

  /** Bytes in flight over all connections (payloads being served and replies not yet taken by the kernel). */
  get inflightBytes(): number {
    return this.inflightTotal;
  }

  /** Open connections with their counters. */
  connectionInfo(): NbdConnectionInfo[] {
    return [...this.conns].map((c) => c.info());
  }

  private accept(socket: net.Socket): void {
    if (this.shuttingDown) {
      socket.destroy();
      return;
    }
    const ip = normalizeAddress(socket.remoteAddress ?? '');
    const l = this.limits;
    const mine = this.perClient.get(ip) ?? 0;
    if (this.conns.size >= l.maxConnections || mine >= l.maxConnectionsPerClient) {
      socket.on('error', () => {});
      socket.destroy();
      const all = this.conns.size >= l.maxConnections;
      this.warn(
        this.logger,
        all ? 'conncap:all' : `conncap:${ip}`,
        { ...this.describeClient(ip), ip, port: socket.remotePort, open: all ? this.conns.size : mine, limit: all ? l.maxConnections : l.maxConnectionsPerClient },
        all ? 'nbd connection refused: too many connections' : 'nbd connection refused: too many connections from this client',
      );
      return;
    }
    this.perClient.set(ip, mine + 1);
    this.logger.debug({ ip, port: socket.remotePort }, 'nbd accept');
    const c = new Connection(this, socket);
    this.conns.add(c);
    c.onClosed = () => {
      this.conns.delete(c);
      const n = (this.perClient.get(ip) ?? 1) - 1;
      if (n > 0) this.perClient.set(ip, n);
      else this.perClient.delete(ip);
    };
  }

  // In-flight budget (see the header). Called by connections only.

  /** Takes `n` bytes of the server-wide budget for `c`; otherwise queues `c` (first come first served), false. */
  reserve(c: Connection, n: number): boolean {
    const w = this.waiting;
    if (w.size > 0 && w.values().next().value !== c) {
      w.add(c);
      return false;
    }
    if (this.inflightTotal > 0 && this.inflightTotal + n > this.limits.maxInflightBytesTotal) {
      w.add(c);
      return false;
    }
    if (w.size > 0) w.delete(c);
    this.inflightTotal += n;
    return true;
  }

  /** Adds `d` bytes (no check: guaranteed requests, replies' real sizes); bytes given back wake waiters. */
  charge(d: number): void {
    this.inflightTotal += d;
    if (d < 0 && this.waiting.size > 0) this.wake();
  }

  /** `c` no longer waits for budget (closed, or held back by its own limits). */
  unwait(c: Connection): void {
    this.waiting.delete(c);
  }

  /** Lets waiting connections take freed budget in order, until the first one's request does not fit. */
  private wake(): void {
    if (this.waking) return;
    this.waking = true;
    try {
      for (;;) {
        const c = this.waiting.values().next().value as Connection | undefined;
        if (c === undefined) break;
        c.retry();
        if (this.waiting.values().next().value === c) break;
      }
    } finally {
      this.waking = false;
    }
  }

  private sweep(): void {
    const now = Date.now();
    for (const c of this.conns) c.checkStall(now);
    const gets = this.pool.gets;
    if (gets !== this.poolGets || this.pool.pooledBytes === 0) {
      this.poolGets = gets;
      this.poolIdleMs = 0;
    } else if ((this.poolIdleMs += this.sweepMs) >= POOL_IDLE_MS) {
      this.pool.clear();
      this.poolIdleMs = 0;
    }
  }

  /**
   * Stops accepting; connections in the handshake are ended, connections in transmission stop reading,
   * finish their in-flight requests, flush, and end.
   */
  async close(): Promise<void> {
    this.shuttingDown = true;
    const closed = new Promise<void>((res) => this.server.close(() => res()));
    await Promise.all([...this.conns].map((c) => c.shutdown()));
    await closed;
    clearInterval(this.sweeper);
  }

  warn(log: Logger, key: string, obj: object, msg: string): void {
    const suppressed = this.rate.allow(key);
    if (suppressed === null) return;
    log.warn(suppressed > 0 ? { ...obj, suppressed } : obj, msg);
  }
}

type Phase = 'flags' | 'optHeader' | 'optData' | 'busy' | 'transmission' | 'closing';

interface Req extends P.Request {
  /** WRITE payload lying inside one socket chunk (a view). */
  payload: Buffer | null;
  /** WRITE payload spread over several socket chunks (views, in order; never copied together). */
  parts: Buffer[] | null;
  cost: number;
}

/** Most requests / bytes merged into one vectored disk operation. */
const MAX_GROUP_REQUESTS = 64;
const MAX_GROUP_BYTES = 8 << 20;

/** The certificates of a PEM bundle (unparsable blocks are skipped). */
function parseCas(pem: string | Buffer): X509Certificate[] {
  const blocks = pem.toString().match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  const out: X509Certificate[] = [];
  for (const b of blocks) {
    try {
      out.push(new X509Certificate(b));
    } catch {
      // not a certificate
    }
  }
  return out;
}

/**
 * Whether a client certificate was issued and signed by one of `cas` and is valid now. A bare TLSSocket
 * (STARTTLS on an accepted socket) does not set `authorized`, so the check is made here, explicitly: the
 * client certificate must be signed directly by a CA of nbd.tls.ca (no intermediates).
 */
function verifiedBy(peer: X509Certificate, cas: X509Certificate[], now = Date.now()): boolean {
  if (!(now >= Date.parse(peer.validFrom) && now <= Date.parse(peer.validTo))) return false;
  for (const ca of cas) {
    try {
      if (peer.checkIssued(ca) && peer.verify(ca.publicKey)) return true;
    } catch {
      // a key type that cannot verify this signature
    }
  }
  return false;
}

/** Names a verified certificate gives: subject CN, then SAN values (DNS, email, URI), bounded. */
function certNames(cert: tls.PeerCertificate | undefined): string[] {
  if (!cert || typeof cert !== 'object') return [];
  const out: string[] = [];
  const cn = (cert.subject as unknown as Record<string, unknown> | undefined)?.CN;
  for (const v of Array.isArray(cn) ? cn : [cn]) if (typeof v === 'string' && v) out.push(v);
  const san = typeof cert.subjectaltname === 'string' ? cert.subjectaltname : '';
  for (const part of san.split(', ')) {
    const m = /^(?:DNS|email|URI):(.+)$/.exec(part);
    if (m) out.push(m[1]!);
  }
  return out.filter((n) => n.length <= 255).slice(0, 16);
}

class Connection {
  onClosed: () => void = () => {};
  private log: Logger;
  private readonly client: NbdClient;
  private stream: Duplex;
  private phase: Phase = 'flags';
  private closed = false;
  private readonly startedAt = Date.now();
  private handshakeTimer: NodeJS.Timeout | null;

  // handshake state
  private hsChunks: Buffer[] = [];
  private hsBytes = 0;
  private noZeroes = false;
  private fixedNewstyle = false;
  private opt = 0;
  private optLen = 0;
  private tlsActive = false;
  private structured = false;
  private metaExport: string | null = null;
  private metaBaseAllocation = false;

  // transmission state
  private exp: OpenExport | null = null;
  private dev: BlockDevice | null = null;
  private flagsTx = 0;
  private readonly hdr = Buffer.allocUnsafe(P.REQUEST_HEADER_LENGTH);
  private hdrFill = 0;
  private cur: Buffer | null = null;
  private curPos = 0;
  private wreq: Req | null = null;
  private wfill = 0;
  /** A parsed request not admitted yet (over this connection's or the server's in-flight budget). */
  private held: Req | null = null;
  /** Requests admitted whose reply the kernel has not taken yet. */
  private inflight = 0;
  /** Their bytes (payload estimate until the reply is built, then the reply's size); also in the server total. */
  private inflightBytes = 0;
  /** Replies handed to the socket and not flushed yet; flush callbacks so far; stall detection state. */
  private queuedReplies = 0;
  private flushes = 0;
  private flushesSeen = 0;
  private stallSince = 0;
  private writeBlocked = false;
  private paused = false;
  private disc = false;
  private finishing = false;
  private corked: Duplex | null = null;
  private flushOnEnd = false;
  private parsing = false;
  private pending: Buffer[] = [];
  private batch: Req[] = [];
  private batchScheduled = false;

  // stats
  private bytesRead = 0;
  private bytesWritten = 0;
  private requests = 0;
  private errors = 0;

  constructor(private readonly srv: NbdServer, private readonly socket: net.Socket) {
    const address = normalizeAddress(socket.remoteAddress ?? '');
    this.client = { address, tls: false };
    this.log = srv.logger.child({ ...srv.describeClient(address), ip: address, port: socket.remotePort });
    this.stream = socket;
    socket.setNoDelay(true);
    // A netboot client that loses power never says goodbye: keepalive finds the dead connection so its
    // writer slot and overlay are released.
    socket.setKeepAlive(true, 30_000);
    socket.on('error', (e) => this.onError(e));
    socket.on('close', () => this.onClose());
    this.attach(socket);
    this.handshakeTimer = setTimeout(() => {
      this.srv.warn(this.log, `hs-timeout:${address}`, {}, 'nbd handshake timed out');
      this.destroy();
    }, srv.limits.handshakeTimeoutMs);
    this.handshakeTimer.unref();
    this.send(P.buildGreeting());
  }

  private attach(s: Duplex): void {
    s.on('data', (chunk: Buffer) => this.onData(chunk));
    s.on('drain', () => this.onDrain());
    s.on('end', () => {
      // The client half-closed: finish what is in flight, then close our side.
      this.disc = true;
      this.dropPartialWrite();
      this.maybeFinish();
    });
  }

  info(): NbdConnectionInfo {
    return {
      ip: this.client.address,
      port: this.socket.remotePort,
      export: this.exp?.name ?? null,
      bytesRead: this.bytesRead,
      bytesWritten: this.bytesWritten,
      requests: this.requests,
      since: this.startedAt,
    };
  }

  private onError(e: Error): void {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ECONNRESET' || code === 'EPIPE') this.log.debug({ err: e.message }, 'nbd connection reset');
    else this.srv.warn(this.log, `sockerr:${this.client.address}`, { err: e.message }, 'nbd socket error');
    this.destroy();
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    // What this connection still counts goes back to the server's budget (late callbacks see `closed`).
    this.held = null;
    this.srv.unwait(this);
    this.srv.charge(-this.inflightBytes);
    this.inflightBytes = 0;
    if (this.exp) {
      this.log.info(
        {
          export: this.exp.name, bytesRead: this.bytesRead, bytesWritten: this.bytesWritten, requests: this.requests,
          errors: this.errors, ms: Date.now() - this.startedAt,
        },
        'nbd disconnect',
      );
      this.exp.release();
    }
    this.onClosed();
  }

  private destroy(): void {
    if (!this.socket.destroyed) this.socket.destroy();
    if (this.stream !== this.socket && !this.stream.destroyed) this.stream.destroy();
  }

  /**
   * Queues bytes for the client. Replies finishing in the same event-loop turn are coalesced: the stream
   * is corked at the first and uncorked in the check phase, so they leave in one writev. A `reply` (of a
   * transmission request) is followed to its flush: `flushed()` then gives back what it counted.
   */
  private send(buf: Buffer, reply = false, recycle = false): void {
    if (this.closed || this.stream.destroyed) return;
    if (this.corked !== this.stream) {
      this.corked?.uncork();
      this.corked = this.stream;
      this.stream.cork();
      setImmediate(this.uncork);
    }
    if (!(reply ? this.stream.write(buf, (e) => this.flushed(buf, recycle, e)) : this.stream.write(buf))) {
      this.writeBlocked = true;
      this.updateFlow();
    }
  }

  /** The kernel took a reply (or the stream failed): its request is no longer in flight. */
  private flushed(buf: Buffer, recycle: boolean, e: Error | null | undefined): void {
    if (this.closed) return; // onClose gave everything back
    this.queuedReplies--;
    this.flushes++;
    this.inflight--;
    this.inflightBytes -= buf.length;
    this.srv.charge(-buf.length);
    if (recycle && !e) this.srv.pool.put(buf);
    if (this.disc) this.maybeFinish();
    else this.updateFlow();
  }

  /** Server sweep: a connection whose queued replies made no progress for stallTimeoutMs is destroyed. */
  checkStall(now: number): void {
    if (this.queuedReplies === 0 || this.closed) {
      this.stallSince = 0;
      return;
    }
    if (this.flushes !== this.flushesSeen || this.stallSince === 0) {
      this.flushesSeen = this.flushes;
      this.stallSince = now;
      return;
    }
    if (now - this.stallSince < this.srv.limits.stallTimeoutMs) return;
    this.srv.warn(this.log, `stall:${this.client.address}`, {
      export: this.exp?.name, queuedReplies: this.queuedReplies, inflightBytes: this.inflightBytes, ms: now - this.stallSince,
    }, 'nbd client stopped reading its replies; closing');
    this.destroy();
  }

  private readonly uncork = (): void => {
    const s = this.corked;
    this.corked = null;
    if (s && !s.destroyed) s.uncork();
  };

  private onDrain(): void {
    this.writeBlocked = false;
    this.updateFlow();
    if (this.phase === 'optHeader') this.pumpHandshake();
  }

  // ==================================================== handshake ====================================================

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    if (this.phase === 'transmission') {
      if (this.cur !== null) {
        this.pending.push(chunk); // arrived while we were holding back (rare: pause() is advisory)
        return;
      }
      this.cur = chunk;
      this.curPos = 0;
      this.parse();
      return;
    }
    if (this.phase === 'closing') return;
    this.hsChunks.push(chunk);
    this.hsBytes += chunk.length;
    if (this.hsBytes > this.srv.limits.maxOptionLength + 65536) {
      // A client may not send the next option before the reply to the last one: this is a flood.
      this.srv.warn(this.log, `hsflood:${this.client.address}`, { bytes: this.hsBytes }, 'nbd handshake flood; closing');
      this.destroy();
      return;
    }
    this.pumpHandshake();
  }

  /** Takes exactly n buffered handshake bytes (cold path: small concatenations are fine here). */
  private take(n: number): Buffer | null {
    if (this.hsBytes < n) return null;
    const all = this.hsChunks.length === 1 ? this.hsChunks[0]! : Buffer.concat(this.hsChunks);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.hsChunks = rest.length ? [rest] : [];
    this.hsBytes = rest.length;
    return out;
  }

  private pumpHandshake(): void {
    for (;;) {
      if (this.closed) return;
      if (this.phase === 'flags') {
        const b = this.take(4);
        if (!b) return;
        const f = P.parseClientFlags(b);
        if (!f.ok) {
          this.srv.warn(this.log, `flags:${this.client.address}`, { err: f.error.message }, 'nbd bad client flags');
          return this.destroy();
        }
        this.noZeroes = f.value.noZeroes;
        this.fixedNewstyle = f.value.fixedNewstyle;
        this.phase = 'optHeader';
      } else if (this.phase === 'optHeader') {
        // A client that sends options without reading the replies: take no more until they drain (what
        // it keeps sending counts against the handshake flood limit).
        if (this.stream.writableNeedDrain) return;
        const b = this.take(P.OPTION_HEADER_LENGTH);
        if (!b) return;
        const h = P.parseOptionHeader(b);
        if (!h.ok) {
          this.srv.warn(this.log, `opt:${this.client.address}`, { err: h.error.message }, 'nbd bad option header');
          return this.destroy();
        }
        if (h.value.length > this.srv.limits.maxOptionLength) {
          this.srv.warn(this.log, `optlen:${this.client.address}`, { option: h.value.option, length: h.value.length }, 'nbd option too long; closing');
          return this.destroy();
        }
        this.opt = h.value.option;
        this.optLen = h.value.length;
        this.phase = 'optData';
      } else if (this.phase === 'optData') {
        const data = this.take(this.optLen);
        if (!data) return;
        this.phase = 'busy';
        this.handleOption(this.opt, Buffer.from(data)).then(
          (next) => {
            if (this.closed) return;
            if (next === 'continue') {
              this.phase = 'optHeader';
              this.pumpHandshake();
            }
          },
          (e: unknown) => {
            this.log.error({ err: e instanceof Error ? e.message : String(e), option: P.optionName(this.opt) }, 'nbd option failed');
            this.destroy();
          },
        );
        return;
      } else {
        return;
      }
    }
  }

  private reply(option: number, type: number, data?: Buffer): void {
    this.send(P.buildOptionReply(option, type, data));
  }

  private replyErr(option: number, type: number, message: string): void {
    this.log.debug({ option: P.optionName(option), type, reason: message }, 'nbd option refused');
    this.send(P.buildOptionError(option, type, message));
  }

  /** A client asked for an export and did not get it: one info line (rate-limited per client, export and reason). */
  private refused(exportName: string, reason: string): void {
    const suppressed = this.srv.rate.allow(`refused:${this.client.address}:${exportName}:${reason}`);
    if (suppressed === null) return;
    this.log.info({ export: exportName, reason, ...(suppressed ? { suppressed } : {}) }, 'nbd export refused');
  }

  private transmissionFlags(e: OpenExport): number {
    let f = P.TFLAG_HAS_FLAGS | P.TFLAG_SEND_FLUSH | P.TFLAG_SEND_CACHE;
    if (e.readOnly || e.device.readOnly) f |= P.TFLAG_READ_ONLY;
    else f |= P.TFLAG_SEND_FUA | P.TFLAG_SEND_TRIM | P.TFLAG_SEND_WRITE_ZEROES | P.TFLAG_SEND_FAST_ZERO;
    if (e.canMultiConn) f |= P.TFLAG_CAN_MULTI_CONN;
    if (this.structured) f |= P.TFLAG_SEND_DF;
    return f;
  }

  /** Handles one option; resolves 'continue' to read the next one, or 'stop' (transmission, TLS, closing). */
  private async handleOption(option: number, data: Buffer): Promise<'continue' | 'stop'> {
    const name = P.optionName(option);
    if (this.srv.shuttingDown && option !== P.OPT_ABORT) {
      this.replyErr(option, P.REP_ERR_SHUTDOWN, 'server is shutting down');
      return 'continue';
    }
    switch (option) {
      case P.OPT_ABORT:
        this.reply(option, P.REP_ACK);
        this.phase = 'closing';
        this.stream.end();
        return 'stop';

      case P.OPT_LIST: {
        if (data.length !== 0) {
          this.replyErr(option, P.REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
          return 'continue';
        }
        for (const e of this.srv.exports.list(this.client)) {
          if (e.tlsRequired && !this.tlsActive) continue;
          this.reply(option, P.REP_SERVER, P.buildServerEntry(e.name, e.description));
        }
        this.reply(option, P.REP_ACK);
        return 'continue';
      }

      case P.OPT_STARTTLS: {
        if (!this.srv.secureContext || !this.fixedNewstyle) {
          this.replyErr(option, P.REP_ERR_POLICY, this.srv.secureContext ? 'TLS needs fixed newstyle negotiation' : 'TLS is not configured on this server');
          return 'continue';
        }
        if (data.length !== 0) {
          this.replyErr(option, P.REP_ERR_INVALID, 'NBD_OPT_STARTTLS takes no data');
          return 'continue';
        }
        if (this.tlsActive) {
          this.replyErr(option, P.REP_ERR_INVALID, 'TLS is already running');
          return 'continue';
        }
        this.reply(option, P.REP_ACK);
        this.startTls();
        return 'stop';
      }

      case P.OPT_STRUCTURED_REPLY: {
        if (data.length !== 0) {
          this.replyErr(option, P.REP_ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
          return 'continue';
        }
        if (this.structured) {
          this.replyErr(option, P.REP_ERR_INVALID, 'structured replies already negotiated');
          return 'continue';
        }
        this.structured = true;
        this.reply(option, P.REP_ACK);
        return 'continue';
      }

      case P.OPT_LIST_META_CONTEXT:
      case P.OPT_SET_META_CONTEXT: {
        if (!this.structured) {
          this.replyErr(option, P.REP_ERR_INVALID, 'negotiate structured replies first');
          return 'continue';
        }
        const r = P.parseMetaContextRequest(data);
        if (!r.ok) {
          this.replyErr(option, P.REP_ERR_INVALID, r.error.message);
          return 'continue';
        }
        const visible = this.srv.exports.list(this.client).some((e) => e.name === r.value.name) || r.value.name === '';
        if (!visible) {
          this.replyErr(option, P.REP_ERR_UNKNOWN, `no export named '${r.value.name}'`);
          return 'continue';
        }
        const list = option === P.OPT_LIST_META_CONTEXT;
        let match = false;
        if (list && r.value.queries.length === 0) match = true;
        for (const q of r.value.queries) {
          if (q === P.BASE_ALLOCATION || (list && q === 'base:')) match = true;
        }
        if (!list) {
          this.metaExport = r.value.name;
          this.metaBaseAllocation = match;
        }
        if (match) this.reply(option, P.REP_META_CONTEXT, P.buildMetaContextEntry(list ? 0 : META_ID_BASE_ALLOCATION, P.BASE_ALLOCATION));
        this.reply(option, P.REP_ACK);
        return 'continue';
      }

      case P.OPT_INFO:
      case P.OPT_GO: {
        const r = P.parseInfoRequest(data);
        if (!r.ok) {
          this.replyErr(option, P.REP_ERR_INVALID, r.error.message);
          return 'continue';
        }
        const e = await this.openExport(r.value.name);
        if (this.closed) {
          if (e && !isRefusal(e)) e.release();
          return 'stop';
        }
        if (isRefusal(e)) {
          this.refused(r.value.name, e.message);
          this.replyErr(option, e.reason === 'unknown' ? P.REP_ERR_UNKNOWN : e.reason === 'tls' ? P.REP_ERR_TLS_REQD : P.REP_ERR_POLICY, e.message);
          return 'continue';
        }
        if (e.tlsRequired && !this.tlsActive) {
          e.release();
          this.refused(r.value.name, 'TLS required');
          this.replyErr(option, P.REP_ERR_TLS_REQD, `export '${r.value.name}' requires TLS`);
          return 'continue';
        }
        const flags = this.transmissionFlags(e);
        this.reply(option, P.REP_INFO, P.buildInfoExport(e.device.size, flags));
        const want = new Set(r.value.requests);
        if (want.has(P.INFO_NAME)) this.reply(option, P.REP_INFO, P.buildInfoString(P.INFO_NAME, e.name));
        if (want.has(P.INFO_DESCRIPTION) && e.description) {
          this.reply(option, P.REP_INFO, P.buildInfoString(P.INFO_DESCRIPTION, e.description));
        }
        this.reply(option, P.REP_INFO, P.buildInfoBlockSize(1, PREFERRED_BLOCK, this.srv.limits.maxPayload));
        this.reply(option, P.REP_ACK);
        if (option === P.OPT_INFO) {
          e.release();
          return 'continue';
        }
        if (this.metaExport !== null && this.metaExport !== r.value.name && this.metaExport !== '') this.metaBaseAllocation = false;
        this.enterTransmission(e, flags);
        return 'stop';
      }

      case P.OPT_EXPORT_NAME: {
        const n = P.parseExportName(data);
        if (!n.ok) {
          this.srv.warn(this.log, `expname:${this.client.address}`, { err: n.error.message }, 'nbd bad export name');
          this.destroy();
          return 'stop';
        }
        const e = await this.openExport(n.value);
        if (this.closed) {
          if (e && !isRefusal(e)) e.release();
          return 'stop';
        }
        if (isRefusal(e) || (e.tlsRequired && !this.tlsActive)) {
          // NBD_OPT_EXPORT_NAME cannot return an error: the spec says terminate the session.
          if (!isRefusal(e)) e.release();
          this.refused(n.value, isRefusal(e) ? e.message : 'TLS required');
          this.destroy();
          return 'stop';
        }
        const flags = this.transmissionFlags(e);
        this.send(P.buildExportNameReply(e.device.size, flags, this.noZeroes));
        if (this.metaExport !== null && this.metaExport !== n.value && this.metaExport !== '') this.metaBaseAllocation = false;
        this.enterTransmission(e, flags);
        return 'stop';
      }

      default:
        this.replyErr(option, P.REP_ERR_UNSUP, `option ${name} is not supported`);
        return 'continue';
    }
  }

  private async openExport(name: string): Promise<ReturnType<ExportProvider['open']> extends Promise<infer T> ? T : never> {
    try {
      return await this.srv.exports.open(name, { ...this.client, tls: this.tlsActive });
    } catch (e) {
      this.log.error({ export: name, err: e instanceof Error ? e.message : String(e) }, 'nbd export failed to open');
      return { refused: true, reason: 'policy', message: `export '${name}' is not available` };
    }
  }

  private startTls(): void {
    const raw = this.socket;
    raw.removeAllListeners('data');
    raw.removeAllListeners('drain');
    raw.removeAllListeners('end');
    raw.pause();
    const leftover = this.hsBytes ? this.take(this.hsBytes) : null;
    if (leftover && leftover.length) raw.unshift(leftover);
    // A client certificate is asked for, not required (rejectUnauthorized false): exports that need one
    // refuse connections without it; the others still serve TLS-only clients.
    const requestCert = this.srv.requestCert;
    const t = new tls.TLSSocket(raw, { isServer: true, secureContext: this.srv.secureContext!, requestCert, rejectUnauthorized: false });
    t.on('error', (e) => this.onError(e));
    t.on('secure', () => {
      this.tlsActive = true;
      this.client.tls = true;
      if (requestCert) {
        const peer = t.getPeerX509Certificate();
        const names = peer && verifiedBy(peer, this.srv.clientCas) ? certNames(t.getPeerCertificate()) : [];
        if (names.length) {
          this.client.certNames = names;
          this.log = this.log.child({ cert: names[0] });
          this.log.info({ names }, 'nbd tls established with a verified client certificate');
          return;
        }
        if (peer) {
          this.srv.warn(this.log, `badcert:${this.client.address}`, { subject: peer.subject.slice(0, 200), issuer: peer.issuer.slice(0, 200) }, 'nbd client certificate not accepted (not issued by nbd.tls.ca, expired, or no name)');
        }
      }
      this.log.debug({}, 'nbd tls established');
    });
    this.stream = t;
    this.attach(t);
    this.phase = 'optHeader';
  }

  private enterTransmission(e: OpenExport, flags: number): void {
    if (this.handshakeTimer) {
      clearTimeout(this.handshakeTimer);
      this.handshakeTimer = null;
    }
    this.exp = e;
    this.dev = e.device;
    this.flagsTx = flags;
    this.phase = 'transmission';
    this.log.info(
      { export: e.name, readOnly: (flags & P.TFLAG_READ_ONLY) !== 0, structured: this.structured, tls: this.tlsActive, size: e.device.size },
      'nbd connect',
    );
    // Bytes that arrived with the final option are the first requests.
    const rest = this.hsBytes ? this.take(this.hsBytes) : null;
    this.hsChunks = [];
    if (rest && rest.length) {
      this.cur = Buffer.from(rest);
      this.curPos = 0;
      this.parse();
    }
  }

  // ==================================================== transmission ====================================================

  private blocked(): boolean {
    const l = this.srv.limits;
    return this.disc || this.writeBlocked || this.inflightBytes >= l.maxInflightBytes || this.inflight >= l.maxInflightRequests;
  }

  /** Pauses or resumes reading from the socket; parses a held-back chunk (or request) first. */
  private updateFlow(): void {
    if (this.closed) return;
    if (this.phase === 'transmission' && (this.cur !== null || this.held !== null) && !this.parsing && !this.blocked()) return this.parse();
    this.pauseOrResume();
  }

  private pauseOrResume(): void {
    if (this.closed || this.phase === 'closing') return; // closing: reading on, to see the peer's FIN
    const stop = this.blocked() || this.cur !== null || this.held !== null;
    if (stop && !this.paused) {
      this.paused = true;
      this.stream.pause();
    } else if (!stop && this.paused) {
      this.paused = false;
      this.stream.resume();
    }
  }

  /** Consumes `this.cur` from `this.curPos` until it is used up or the connection is blocked. */
  private parse(): void {
    this.parsing = true;
    try {
      this.parseLoop();
    } finally {
      this.parsing = false;
    }
    if (this.cur !== null && this.curPos >= this.cur.length) {
      this.cur = this.pending.shift() ?? null;
      this.curPos = 0;
    }
    this.pauseOrResume();
  }

  private parseLoop(): void {
    const l = this.srv.limits;
    while (!this.closed) {
      if (this.disc) {
        this.cur = null; // nothing may follow NBD_CMD_DISC
        this.pending = [];
        break;
      }
      if (this.held !== null) {
        // Parsed earlier, waiting for in-flight budget.
        const r = this.held;
        if (this.blocked() || !this.admit(r)) break;
        this.held = null;
        this.start(r);
        continue;
      }
      if (this.cur === null) break;
      const chunk = this.cur;
      let pos = this.curPos;
      const avail = chunk.length - pos;
      if (avail === 0) {
        this.cur = this.pending.shift() ?? null;
        this.curPos = 0;
        continue;
      }
      const w = this.wreq;
      if (w) {
        // Gathering a write payload.
        const need = w.length - this.wfill;
        const n = need < avail ? need : avail;
        w.parts!.push(chunk.subarray(pos, pos + n));
        this.wfill += n;
        this.curPos = pos + n;
        this.bytesWritten += n;
        if (this.wfill === w.length) {
          this.wreq = null;
          this.dispatch(w);
        }
        continue;
      }
      if (this.blocked()) break;
      let hbuf: Buffer;
      let hoff: number;
      if (this.hdrFill === 0 && avail >= P.REQUEST_HEADER_LENGTH) {
        hbuf = chunk;
        hoff = pos;
        pos += P.REQUEST_HEADER_LENGTH;
      } else {
        const n = Math.min(P.REQUEST_HEADER_LENGTH - this.hdrFill, avail);
        chunk.copy(this.hdr, this.hdrFill, pos, pos + n);
        this.hdrFill += n;
        pos += n;
        this.curPos = pos;
        if (this.hdrFill < P.REQUEST_HEADER_LENGTH) continue;
        this.hdrFill = 0;
        hbuf = this.hdr;
        hoff = 0;
      }
      this.curPos = pos;
      const r: Req = { flags: 0, type: 0, handleHi: 0, handleLo: 0, offset: 0, length: 0, payload: null, parts: null, cost: 0 };
      if (!P.parseRequestInto(hbuf, hoff, r)) {
        this.srv.warn(this.log, `magic:${this.client.address}`, { export: this.exp?.name }, 'nbd bad request magic; closing');
        this.cur = null;
        this.destroy();
        return;
      }
      this.requests++;
      if (r.type === P.CMD_WRITE) {
        if (r.length > l.maxPayload) {
          this.srv.warn(this.log, `big:${this.client.address}`, { export: this.exp?.name, length: r.length }, 'nbd write larger than the maximum; closing');
          this.cur = null;
          this.destroy();
          return;
        }
      } else if (r.type === P.CMD_DISC) {
        this.disc = true;
        this.cur = null;
        this.log.debug({ export: this.exp?.name, inflight: this.inflight }, 'nbd disc');
        this.maybeFinish();
        break;
      }
      r.cost = this.costOf(r);
      if (!this.admit(r)) {
        this.held = r;
        break;
      }
      this.start(r);
    }
  }

  /** What a request is charged at admission: its payload, or a small reply's estimate. */
  private costOf(r: Req): number {
    if (r.type === P.CMD_READ || r.type === P.CMD_WRITE) {
      return r.length > SMALL_COST && r.length <= this.srv.limits.maxPayload ? r.length : SMALL_COST;
    }
    return r.type === P.CMD_BLOCK_STATUS ? BLOCK_STATUS_COST : SMALL_COST;
  }

  /**
   * Counts a request in flight if it fits: always when nothing is in flight here and it is small enough
   * (guaranteedRequestBytes), else within this connection's limit and the server's budget. When it does not
   * fit it is held: its connection's own flushes, or the server (budget given back), try it again.
   */
  private admit(r: Req): boolean {
    const l = this.srv.limits;
    const n = r.cost;
    if (this.inflightBytes === 0 && n <= l.guaranteedRequestBytes) {
      this.srv.unwait(this);
      this.srv.charge(n);
    } else if (this.inflightBytes > 0 && this.inflightBytes + n > l.maxInflightBytes) {
      this.srv.unwait(this);
      return false;
    } else if (!this.srv.reserve(this, n)) {
      return false;
    }
    this.inflight++;
    this.inflightBytes += n;
    return true;
  }

  /** Server: budget was given back and this connection is first in line. */
  retry(): void {
    const r = this.held;
    if (this.closed || r === null || this.parsing || this.blocked() || (this.inflightBytes > 0 && this.inflightBytes + r.cost > this.srv.limits.maxInflightBytes)) {
      this.srv.unwait(this); // its own flushes will try again
      return;
    }
    this.updateFlow();
  }

  /** An admitted request: a WRITE takes its payload (a view, or gathered from the next chunks); others go. */
  private start(r: Req): void {
    if (r.type !== P.CMD_WRITE) return this.dispatch(r);
    const chunk = this.cur;
    const pos = this.curPos;
    const left = chunk === null ? 0 : chunk.length - pos;
    if (left >= r.length) {
      r.payload = chunk === null ? EMPTY : chunk.subarray(pos, pos + r.length);
      this.curPos = pos + r.length;
      this.bytesWritten += r.length;
      this.dispatch(r);
    } else {
      r.parts = left > 0 ? [chunk!.subarray(pos)] : [];
      if (chunk !== null) this.curPos = chunk.length;
      this.bytesWritten += left;
      this.wreq = r;
      this.wfill = left;
    }
  }

  private dispatch(r: Req): void {
    const bad = this.validate(r);
    if (bad) {
      this.errors++;
      this.srv.warn(this.log, `req:${this.client.address}:${bad.errno}`, {
        export: this.exp?.name, cmd: P.commandName(r.type), offset: r.offset, length: r.length, flags: r.flags, errno: bad.errno,
      }, `nbd request refused: ${bad.message}`);
      this.fail(r, bad.errno, bad.message);
      return;
    }
    const dev = this.dev!;
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
        this.afterWrite(r, dev);
        return;
      case P.CMD_WRITE_ZEROES:
        if (r.flags & P.CMD_FLAG_FAST_ZERO) return this.fail(r, P.NBD_ENOTSUP, 'zeroing is not faster than writing here');
        this.writeZeroes(dev, r.offset, r.length, (e) => (e ? this.ioFail(r, e) : this.afterWrite(r, dev)));
        return;
      case P.CMD_CACHE:
        this.ok(r);
        return;
      case P.CMD_BLOCK_STATUS:
        return this.doBlockStatus(r, dev);
    }
  }

  /** Returns the error for an invalid request, or null. */
  private validate(r: Req): { errno: number; message: string } | null {
    const size = this.dev!.size;
    const ro = (this.flagsTx & P.TFLAG_READ_ONLY) !== 0;
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
    if (r.type === P.CMD_READ && r.length > this.srv.limits.maxPayload) {
      return { errno: P.NBD_EOVERFLOW, message: `read of ${r.length} bytes exceeds the maximum ${this.srv.limits.maxPayload}` };
    }
    if (r.type === P.CMD_BLOCK_STATUS && !this.metaBaseAllocation) {
      return { errno: P.NBD_EINVAL, message: 'no metadata context negotiated' };
    }
    return null;
  }

  private readonly flushBatch = (): void => {
    this.batchScheduled = false;
    const batch = this.batch;
    this.batch = [];
    const dev = this.dev!;
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
      if (read) {
        if (j === i + 1) this.doRead(first, dev);
        else this.readGroup(batch.slice(i, j), dev);
      } else {
        this.writeGroup(batch.slice(i, j), dev);
      }
      i = j;
    }
  };

  /** Contiguous READs as one readv straight into their reply buffers. */
  private readGroup(group: Req[], dev: BlockDevice): void {
    const hl = this.structured ? P.OFFSET_DATA_PREFIX : P.SIMPLE_REPLY_LENGTH;
    const outs = group.map((r) => this.srv.pool.get(hl + r.length));
    const views = outs.map((o, k) => o.subarray(hl, hl + group[k]!.length));
    dev.readv!(views, group[0]!.offset, (e) => {
      for (let k = 0; k < group.length; k++) {
        const r = group[k]!;
        const out = outs[k]!;
        if (e) {
          this.srv.pool.put(out);
          this.ioFail(r, e);
          continue;
        }
        if (this.structured) P.writeOffsetDataPrefix(out, 0, P.REPLY_FLAG_DONE, r.handleHi, r.handleLo, r.offset, r.length);
        else P.writeSimpleReply(out, 0, 0, r.handleHi, r.handleLo);
        this.bytesRead += r.length;
        this.complete(r, out, out.length >= BufferPool.MIN_SIZE);
      }
    });
  }

  /** WRITEs: contiguous ones (and payloads spread over socket chunks) as one writev, no copying. */
  private writeGroup(group: Req[], dev: BlockDevice): void {
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
    const buf = this.srv.pool.get(first.length);
    let p = 0;
    for (const b of first.parts!) p += b.copy(buf, p);
    dev.write(buf, 0, first.length, first.offset, (e) => {
      this.srv.pool.put(buf);
      done(e);
    });
  }

  private doRead(r: Req, dev: BlockDevice): void {
    const hl = this.structured ? P.OFFSET_DATA_PREFIX : P.SIMPLE_REPLY_LENGTH;
    const out = this.srv.pool.get(hl + r.length);
    dev.read(out, hl, r.length, r.offset, (e) => {
      if (e) {
        this.srv.pool.put(out);
        return this.ioFail(r, e);
      }
      if (this.structured) P.writeOffsetDataPrefix(out, 0, P.REPLY_FLAG_DONE, r.handleHi, r.handleLo, r.offset, r.length);
      else P.writeSimpleReply(out, 0, 0, r.handleHi, r.handleLo);
      this.bytesRead += r.length;
      this.complete(r, out, out.length >= BufferPool.MIN_SIZE);
    });
  }

  private afterWrite(r: Req, dev: BlockDevice): void {
    if (r.flags & P.CMD_FLAG_FUA) dev.flush((e) => (e ? this.ioFail(r, e) : this.ok(r)));
    else this.ok(r);
  }

  private writeZeroes(dev: BlockDevice, offset: number, length: number, cb: (e: Error | null) => void): void {
    if (length === 0) return cb(null);
    const n = Math.min(length, ZERO_CHUNK.length);
    dev.write(ZERO_CHUNK, 0, n, offset, (e) => (e ? cb(e) : this.writeZeroes(dev, offset + n, length - n, cb)));
  }

  private doBlockStatus(r: Req, dev: BlockDevice): void {
    const reqOne = (r.flags & P.CMD_FLAG_REQ_ONE) !== 0;
    if (!dev.blockStatus) {
      this.complete(r, P.buildBlockStatus(r.handleHi, r.handleLo, META_ID_BASE_ALLOCATION, [{ length: r.length, flags: 0 }]));
      return;
    }
    dev.blockStatus(r.offset, r.length, (e, ext) => {
      if (e || !ext || ext.length === 0) {
        // Not invalid usage: the spec allows one extent of status 0 instead of an error.
        this.complete(r, P.buildBlockStatus(r.handleHi, r.handleLo, META_ID_BASE_ALLOCATION, [{ length: r.length, flags: 0 }]));
        return;
      }
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

  private ok(r: Req): void {
    this.complete(r, P.buildSimpleReply(0, r.handleHi, r.handleLo));
  }

  private ioFail(r: Req, e: Error): void {
    this.errors++;
    const code = (e as NodeJS.ErrnoException).code;
    const errno = P.nbdErrno(code);
    this.srv.warn(this.log, `io:${this.client.address}:${code}`, {
      export: this.exp?.name, cmd: P.commandName(r.type), offset: r.offset, length: r.length, err: e.message,
    }, 'nbd i/o error');
    this.fail(r, errno, e.message, true);
  }

  private fail(r: Req, errno: number, message: string, withOffset = false): void {
    if (this.structured) {
      const off = withOffset && (r.type === P.CMD_READ || r.type === P.CMD_WRITE || r.type === P.CMD_TRIM || r.type === P.CMD_BLOCK_STATUS)
        ? r.offset : undefined;
      this.complete(r, P.buildStructuredError(r.handleHi, r.handleLo, errno, message, off));
    } else {
      this.complete(r, P.buildSimpleReply(errno, r.handleHi, r.handleLo));
    }
  }

  private complete(r: Req, reply: Buffer, recycle = false): void {
    if (this.closed) {
      if (recycle) this.srv.pool.put(reply); // never written
      return;
    }
    // From now on the reply's real size is what is in flight, until the kernel has taken it (flushed()).
    const d = reply.length - r.cost;
    this.inflightBytes += d;
    this.srv.charge(d);
    this.queuedReplies++;
    this.send(reply, true, recycle);
    if (!this.disc) this.updateFlow();
  }

  /** After DISC, the client's half-close or a shutdown: once nothing is in flight, (flush and) close our side. */
  private maybeFinish(): void {
    if (this.closed || this.finishing || this.inflight > 0 || this.wreq) return;
    this.finishing = true;
    const end = (): void => {
      this.phase = 'closing';
      if (this.stream.destroyed) return;
      this.stream.end();
      // Keep reading (whatever comes is dropped) so the peer's FIN is seen and the socket closes; a paused
      // socket would linger half-open. A peer that never closes is cut off.
      this.paused = false;
      this.stream.resume();
      setTimeout(() => this.destroy(), 5000).unref();
    };
    const dev = this.dev;
    if (this.flushOnEnd && dev && !dev.readOnly) dev.flush(() => end());
    else end();
  }

  /** Server shutdown: stop reading, finish in-flight requests, flush, close. */
  shutdown(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      this.socket.once('close', () => resolve());
      setTimeout(() => this.destroy(), 5000).unref();
      this.flushOnEnd = true;
      this.disc = true;
      this.cur = null;
      this.dropPartialWrite();
      if (!this.paused) {
        this.paused = true;
        this.stream.pause();
      }
      this.maybeFinish();
    });
  }

  /** A half-received write, or a request still waiting for budget, is dropped: it was never acknowledged. */
  private dropPartialWrite(): void {
    if (this.held) {
      this.held = null;
      this.srv.unwait(this);
    }
    if (!this.wreq || this.closed) return;
    this.inflight--;
    this.inflightBytes -= this.wreq.cost;
    this.srv.charge(-this.wreq.cost);
    this.wreq = null;
  }
}
