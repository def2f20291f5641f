/**
 * One NBD connection: its socket (and the TLS stream over it after STARTTLS), the handshake timeout, and
 * the phase its bytes go to: negotiation (negotiation.ts), then transmission (transmission.ts), then
 * draining (our side ended; reading on until the peer's FIN). Writes of one event-loop turn are coalesced:
 * the stream is corked at the first and uncorked in the check phase, so they leave in one writev.
 */
import type net from 'node:net';
import type tls from 'node:tls';
import type { Duplex } from 'node:stream';
import type { Logger } from '../util/log.js';
import * as P from './packet.js';
import { type NbdContext, warnLimited } from './context.js';
import type { NbdClient } from './exports.js';
import { Negotiation, type NegotiationHost, type Negotiated } from './negotiation.js';
import { Transmission, type TransmissionHost } from './transmission.js';

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

/** Where a phase takes the stream's events. */
interface Phase {
  onData(chunk: Buffer): void;
  onDrain(): void;
  onEnd(): void;
  /** A write could not be taken at once (the stream wants a drain). */
  onWriteBlocked(): void;
}

const DRAINING: Phase = { onData() {}, onDrain() {}, onEnd() {}, onWriteBlocked() {} };

export class Connection implements NegotiationHost, TransmissionHost {
  closed = false;
  readonly client: NbdClient;
  log: Logger;
  stream: Duplex;
  private phase: Phase = DRAINING;
  private tx: Transmission | null = null;
  private ending = false;
  private handshakeTimer: NodeJS.Timeout | null;
  private corked: Duplex | null = null;
  private readonly startedAt = Date.now();

  constructor(
    private readonly ctx: NbdContext,
    private readonly socket: net.Socket,
    address: string,
    log: Logger,
    private readonly onClosed: () => void,
  ) {
    this.client = { address, tls: false };
    this.log = log;
    this.stream = socket;
    socket.setNoDelay(true);
    // A netboot client that loses power never says goodbye: keepalive finds the dead connection so its
    // writer slot and overlay are released.
    socket.setKeepAlive(true, 30_000);
    socket.on('error', (e) => this.onError(e));
    socket.on('close', () => this.onClose());
    this.attach(socket);
    this.handshakeTimer = setTimeout(() => {
      warnLimited(ctx.rate, this.log, `hs-timeout:${address}`, {}, 'nbd handshake timed out');
      this.destroy();
    }, ctx.limits.handshakeTimeoutMs);
    this.handshakeTimer.unref();
    const neg = new Negotiation(ctx, this);
    this.phase = neg;
    neg.start();
  }

  private attach(s: Duplex): void {
    s.on('data', (chunk: Buffer) => {
      if (!this.closed) this.phase.onData(chunk);
    });
    s.on('drain', () => this.phase.onDrain());
    s.on('end', () => this.phase.onEnd());
  }

  info(): NbdConnectionInfo {
    const tx = this.tx;
    return {
      ip: this.client.address,
      port: this.socket.remotePort,
      export: tx?.exportName ?? null,
      bytesRead: tx?.bytesRead ?? 0,
      bytesWritten: tx?.bytesWritten ?? 0,
      requests: tx?.requests ?? 0,
      since: this.startedAt,
    };
  }

  send(buf: Buffer, done?: (e?: Error | null) => void): void {
    if (this.closed || this.stream.destroyed) return;
    if (this.corked !== this.stream) {
      this.corked?.uncork();
      this.corked = this.stream;
      this.stream.cork();
      setImmediate(this.uncork);
    }
    if (!(done ? this.stream.write(buf, done) : this.stream.write(buf))) this.phase.onWriteBlocked();
  }

  private readonly uncork = (): void => {
    const s = this.corked;
    this.corked = null;
    if (s && !s.destroyed) s.uncork();
  };

  upgrade(leftover: Buffer | null, make: (raw: net.Socket) => tls.TLSSocket): tls.TLSSocket {
    const raw = this.socket;
    raw.removeAllListeners('data');
    raw.removeAllListeners('drain');
    raw.removeAllListeners('end');
    raw.pause();
    if (leftover) raw.unshift(leftover);
    const t = make(raw);
    t.on('error', (e) => this.onError(e));
    this.stream = t;
    this.attach(t);
    return t;
  }

  negotiated(n: Negotiated): void {
    if (this.ending) {
      n.exp.release();
      return;
    }
    if (this.handshakeTimer) {
      clearTimeout(this.handshakeTimer);
      this.handshakeTimer = null;
    }
    const e = n.exp;
    this.log.info({ export: e.name, readOnly: (n.flags & P.TFLAG_READ_ONLY) !== 0, structured: n.structured, tls: this.client.tls, size: e.device.size }, 'nbd connect');
    const tx = new Transmission(this.ctx, this, this.stream, this.log, n);
    this.tx = tx;
    this.phase = tx;
    tx.start();
  }

  /** Ends our side: keeps reading (whatever comes is dropped) so the peer's FIN is seen and the socket closes; a peer that never closes is cut off. */
  end(): void {
    this.ending = true;
    this.phase = DRAINING;
    if (this.stream.destroyed) return;
    this.stream.end();
    this.stream.resume();
    setTimeout(() => this.destroy(), 5000).unref();
  }

  destroy(): void {
    if (!this.socket.destroyed) this.socket.destroy();
    if (this.stream !== this.socket && !this.stream.destroyed) this.stream.destroy();
  }

  /** Server sweep (stalled replies). */
  checkStall(now: number): void {
    if (!this.closed) this.tx?.checkStall(now);
  }

  /**
   * Server shutdown: a connection in the handshake is ended; one in transmission stops reading, finishes its
   * in-flight requests, flushes, and ends.
   */
  shutdown(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      this.socket.once('close', () => resolve());
      setTimeout(() => this.destroy(), 5000).unref();
      if (this.tx) this.tx.shutdown();
      else if (!this.ending) this.end();
    });
  }

  private onError(e: Error): void {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ECONNRESET' || code === 'EPIPE') this.log.debug({ err: e.message }, 'nbd connection reset');
    else warnLimited(this.ctx.rate, this.log, `sockerr:${this.client.address}`, { err: e.message }, 'nbd socket error');
    this.destroy();
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.phase = DRAINING;
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.tx?.close(Date.now() - this.startedAt);
    this.onClosed();
  }
}
