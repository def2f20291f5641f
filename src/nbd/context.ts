/**
 * What an NBD connection may use of its server: the limits, the export provider, TLS settings, the shared
 * buffer pool and in-flight budget, and the rate limiter for remotely triggered log lines. The server builds
 * one and hands it to every connection.
 */
import type tls from 'node:tls';
import type { X509Certificate } from 'node:crypto';
import type { Logger, RateLimiter } from '../util/log.js';
import type { BufferPool } from './bufpool.js';
import type { InflightBudget } from './budget.js';
import type { ExportProvider } from './exports.js';

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

/** NBD_OPT_STARTTLS settings. */
export interface TlsSetup {
  context: tls.SecureContext;
  /** Ask clients for a certificate (a CA to verify them is configured). */
  requestCert: boolean;
  /** The CAs a client certificate must be issued (and signed) by. */
  clientCas: X509Certificate[];
}

export interface NbdContext {
  readonly limits: NbdLimits;
  readonly exports: ExportProvider;
  /** Null: STARTTLS is refused. */
  readonly tls: TlsSetup | null;
  readonly pool: BufferPool;
  readonly budget: InflightBudget;
  readonly rate: RateLimiter;
  /** Set by the server when it closes: options other than ABORT are refused. */
  shuttingDown: boolean;
}

/** A warning a remote host can trigger: at most one per `key` per interval, with the count suppressed since. */
export function warnLimited(rate: RateLimiter, log: Logger, key: string, obj: object, msg: string): void {
  const suppressed = rate.allow(key);
  if (suppressed === null) return;
  log.warn(suppressed > 0 ? { ...obj, suppressed } : obj, msg);
}
