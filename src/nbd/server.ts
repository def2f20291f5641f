/**
 * NBD server: accepts connections (capped overall and per client address), owns what they share (limits,
 * exports, TLS settings, the buffer pool, the server-wide in-flight budget) and sweeps them for stalls.
 *
 * Module map: connection.ts (one socket: phases, coalesced writes, timeouts), negotiation.ts (the fixed
 * newstyle handshake: options in, export and flags out), framer.ts (transmission bytes → requests, pure),
 * transmission.ts (admission, validation, dispatch, batching, replies, flow control), budget.ts (the
 * server-wide in-flight budget), context.ts (limits and what connections may use of the server),
 * client-cert.ts (TLS client certificates), packet.ts (wire codec), exports.ts (export providers).
 *
 * Memory is bounded per connection and server-wide, including replies the client has not read (see
 * transmission.ts). Worst case: maxInflightBytesTotal + maxConnections × guaranteedRequestBytes, plus the
 * buffer pool's cap. A connection whose replies make no write progress for `stallTimeoutMs` is destroyed
 * (an idle one, nothing queued, is not).
 */
import net from 'node:net';
import tls from 'node:tls';
import type { Logger } from '../util/log.js';
import { silentLogger, RateLimiter } from '../util/log.js';
import { BufferPool } from './bufpool.js';
import { InflightBudget } from './budget.js';
import { parseCas } from './client-cert.js';
import { Connection, type NbdConnectionInfo } from './connection.js';
import { DEFAULT_LIMITS, type NbdContext, type NbdLimits, warnLimited } from './context.js';
import { type ExportProvider, normalizeAddress } from './exports.js';

export { DEFAULT_LIMITS, type NbdLimits } from './context.js';
export type { NbdConnectionInfo } from './connection.js';

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

export class NbdServer {
  private readonly ctx: NbdContext;
  private readonly logger: Logger;
  private readonly describeClient: (address: string) => Record<string, string>;
  private readonly server: net.Server;
  private readonly conns = new Set<Connection>();
  /** Open connections per client address. */
  private readonly perClient = new Map<string, number>();
  private readonly sweepMs: number;
  private readonly sweeper: NodeJS.Timeout;
  private poolGets = 0;
  private poolIdleMs = 0;

  constructor(opts: NbdServerOptions) {
    const limits = { ...DEFAULT_LIMITS, ...opts.limits };
    const t = opts.tls;
    this.ctx = {
      limits,
      exports: opts.exports,
      tls: t
        ? { context: tls.createSecureContext({ key: t.key, cert: t.cert, ca: t.ca }), requestCert: t.ca !== undefined, clientCas: t.ca !== undefined ? parseCas(t.ca) : [] }
        : null,
      pool: new BufferPool(),
      budget: new InflightBudget(limits.maxInflightBytesTotal),
      rate: new RateLimiter(10_000),
      shuttingDown: false,
    };
    // Stalled connections and an idle buffer pool are found by one periodic sweep (nothing per request).
    this.sweepMs = Math.min(5000, Math.max(25, Math.floor(limits.stallTimeoutMs / 4)));
    this.sweeper = setInterval(() => this.sweep(), this.sweepMs);
    this.sweeper.unref();
    this.logger = opts.logger ?? silentLogger;
    this.describeClient = opts.describeClient ?? ((ip) => ({ ip }));
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
    return this.ctx.budget.bytes;
  }

  /** Open connections with their counters. */
  connectionInfo(): NbdConnectionInfo[] {
    return [...this.conns].map((c) => c.info());
  }

  private accept(socket: net.Socket): void {
    if (this.ctx.shuttingDown) {
      socket.destroy();
      return;
    }
    const ip = normalizeAddress(socket.remoteAddress ?? '');
    const l = this.ctx.limits;
    const mine = this.perClient.get(ip) ?? 0;
    if (this.conns.size >= l.maxConnections || mine >= l.maxConnectionsPerClient) {
      socket.on('error', () => {});
      socket.destroy();
      const all = this.conns.size >= l.maxConnections;
      warnLimited(
        this.ctx.rate,
        this.logger,
        all ? 'conncap:all' : `conncap:${ip}`,
        { ...this.describeClient(ip), ip, port: socket.remotePort, open: all ? this.conns.size : mine, limit: all ? l.maxConnections : l.maxConnectionsPerClient },
        all ? 'nbd connection refused: too many connections' : 'nbd connection refused: too many connections from this client',
      );
      return;
    }
    this.perClient.set(ip, mine + 1);
    this.logger.debug({ ip, port: socket.remotePort }, 'nbd accept');
    const log = this.logger.child({ ...this.describeClient(ip), ip, port: socket.remotePort });
    const c = new Connection(this.ctx, socket, ip, log, () => {
      this.conns.delete(c);
      const n = (this.perClient.get(ip) ?? 1) - 1;
      if (n > 0) this.perClient.set(ip, n);
      else this.perClient.delete(ip);
    });
    this.conns.add(c);
  }

  private sweep(): void {
    const now = Date.now();
    for (const c of this.conns) c.checkStall(now);
    const pool = this.ctx.pool;
    const gets = pool.gets;
    if (gets !== this.poolGets || pool.pooledBytes === 0) {
      this.poolGets = gets;
      this.poolIdleMs = 0;
    } else if ((this.poolIdleMs += this.sweepMs) >= POOL_IDLE_MS) {
      pool.clear();
      this.poolIdleMs = 0;
    }
  }

  /**
   * Stops accepting; connections in the handshake are ended, connections in transmission stop reading,
   * finish their in-flight requests, flush, and end.
   */
  async close(): Promise<void> {
    this.ctx.shuttingDown = true;
    const closed = new Promise<void>((res) => this.server.close(() => res()));
    await Promise.all([...this.conns].map((c) => c.shutdown()));
    await closed;
    clearInterval(this.sweeper);
  }
}
