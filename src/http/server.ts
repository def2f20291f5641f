/**
 * HTTP boot files: the same resolution as TFTP (a Pi by its serial path prefix, a PC by the MAC learned at
 * DHCP time, directory hosts, each client's copy-on-write view), served read-only over HTTP/1.1 for clients
 * that can speak it (iPXE, UEFI HTTP boot). GET and HEAD; one `Range` (206, or 416); `Content-Length`;
 * keep-alive. Files are streamed through one buffer per response, each chunk read only once the kernel has
 * taken the previous one (backpressure; never a whole file in memory). Header size, header and idle
 * timeouts and a connection limit keep slow or hostile clients from pinning the server.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { RateLimiter, silentLogger, type Logger } from '../util/log.js';
import type { FileSource } from '../util/source.js';
import { normalizePath, type TftpResolver } from '../tftp/resolver.js';
import { closeHttpServer, normalizeAddress } from '../util/net.js';

export interface HttpLimits {
  /** Open connections at once, all clients. Default 64. */
  maxConnections: number;
  /** Largest request header block in bytes. Default 8 KiB. */
  maxHeaderBytes: number;
  /** Time to receive a request's headers. Default 10 s. */
  headersTimeoutMs: number;
  /** An idle keep-alive connection is closed after this long. Default 5 s. */
  keepAliveTimeoutMs: number;
  /** A connection with no progress either way (a client that stopped reading) is closed after this long. Default 30 s. */
  idleTimeoutMs: number;
}

export const DEFAULT_HTTP_LIMITS: HttpLimits = {
  maxConnections: 512,
  maxHeaderBytes: 8 * 1024,
  headersTimeoutMs: 10_000,
  keepAliveTimeoutMs: 5_000,
  idleTimeoutMs: 30_000,
};

export interface HttpBootServerOptions {
  resolver: TftpResolver;
  logger?: Logger;
  limits?: Partial<HttpLimits>;
  /** Extra log fields for a client address (the daemon adds the MAC or Pi serial it learned). */
  describeClient?: (address: string) => Record<string, string>;
}

/** One finished HTTP transfer, for logs and counters. */
export interface HttpTransfer {
  address: string;
  path: string;
  status: number;
  /** Body bytes sent. */
  bytes: number;
  ms: number;
}

/** Bytes read and written per step of a response. */
const CHUNK = 256 * 1024;

/** A single `bytes=` range of a file of `size` bytes: the range, 'unsatisfiable', or null (absent or not one range: the whole file). */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | 'unsatisfiable' | null {
  if (header === undefined) return null;
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m || (m[1] === '' && m[2] === '')) return null; // several ranges, or not bytes: served whole (RFC 9110 allows ignoring)
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (!Number.isSafeInteger(start) || start >= size || end < start) return 'unsatisfiable';
  return { start, end };
}

export class HttpBootServer {
  readonly limits: HttpLimits;
  private readonly log: Logger;
  private readonly resolver: TftpResolver;
  private readonly describeClient: (address: string) => Record<string, string>;
  private readonly rate = new RateLimiter(10_000);
  private server: http.Server | null = null;
  readonly counters = { served: 0, notFound: 0, failed: 0, bytes: 0 };
  /** Called for every finished transfer (the daemon counts them). */
  onTransfer: ((t: HttpTransfer) => void) | null = null;

  constructor(opts: HttpBootServerOptions) {
    this.resolver = opts.resolver;
    this.log = opts.logger ?? silentLogger;
    this.limits = { ...DEFAULT_HTTP_LIMITS, ...opts.limits };
    this.describeClient = opts.describeClient ?? ((ip) => ({ ip }));
  }

  listen(port: number, host: string): Promise<AddressInfo> {
    const l = this.limits;
    const server = http.createServer({ maxHeaderSize: l.maxHeaderBytes, requestTimeout: l.headersTimeoutMs * 3 }, (req, res) => this.handle(req, res));
    server.headersTimeout = l.headersTimeoutMs;
    server.keepAliveTimeout = l.keepAliveTimeoutMs;
    server.maxConnections = l.maxConnections;
    server.setTimeout(l.idleTimeoutMs, (socket) => socket.destroy());
    server.on('clientError', (e: NodeJS.ErrnoException, socket) => {
      // Oversized headers (431), malformed requests (400), header timeouts: answered if the socket can be, then closed.
      const ip = normalizeAddress((socket as unknown as { remoteAddress?: string }).remoteAddress ?? '');
      // A reset or a closed pipe is a client hanging up (OVMF resets its keep-alive connection after every
      // download): nothing was refused. Parse errors, oversized headers and timeouts are refusals.
      const hangUp = e.code === 'ECONNRESET' || e.code === 'EPIPE';
      if (hangUp) this.log.debug({ ...this.who(ip), code: e.code }, 'http connection reset by the client');
      else if (this.rate.allow(`clienterr:${ip}:${e.code}`) !== null) this.log.info({ ...this.who(ip), code: e.code }, 'http request refused');
      if (socket.writable && !hangUp) {
        const status = e.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : e.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
        socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      } else socket.destroy();
    });
    server.on('error', (e) => this.log.error({ err: e.message }, 'http server error'));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        const a = server.address() as AddressInfo;
        this.log.info({ address: a.address, port: a.port }, 'http listening');
        resolve(a);
      });
    });
  }

  private who(ip: string): Record<string, string> {
    return { ...this.describeClient(ip), ip };
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const started = Date.now();
    const ip = normalizeAddress(req.socket.remoteAddress ?? '');
    const raw = (req.url ?? '/').split('?')[0]!;
    const done = (status: number, path: string, bytes: number): void => {
      const t: HttpTransfer = { address: ip, path, status, bytes, ms: Date.now() - started };
      this.counters.bytes += bytes;
      if (status < 300) this.counters.served++;
      else if (status === 404) this.counters.notFound++;
      else this.counters.failed++;
      const fields = { ...this.who(ip), method: req.method ?? '', path: path.slice(0, 256), status, bytes, ms: t.ms };
      if (status < 300) this.log.info(fields, 'http file sent');
      else if (this.rate.allow(`status:${ip}:${status}`) !== null) this.log.info(fields, 'http request not served');
      this.onTransfer?.(t);
    };
    const refuse = (status: number, path: string, extra: Record<string, string> = {}): void => {
      res.writeHead(status, { 'content-length': '0', ...extra }).end();
      done(status, path, 0);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return refuse(405, raw, { allow: 'GET, HEAD' });
    let decoded: string;
    try {
      decoded = decodeURIComponent(raw);
    } catch {
      return refuse(400, raw);
    }
    const norm = normalizePath(decoded);
    // `..` is an attempt to leave the root (403); an empty path or a control character names nothing (404).
    if (!norm.ok) return refuse(decoded.split(/[/\\]/).includes('..') ? 403 : 404, decoded);
    const path = norm.value;
    Promise.resolve()
      .then(() => this.resolver.resolve({ address: ip, port: req.socket.remotePort ?? 0, path }))
      .then(
        (source) => {
          if (!source) return refuse(404, path);
          if (res.destroyed) return source.close();
          this.send(req, res, source, ip, path, done);
        },
        (e: unknown) => {
          this.log.warn({ ...this.who(ip), path, err: e instanceof Error ? e.message : String(e) }, 'http resolve failed');
          refuse(500, path);
        },
      );
  }

  private send(req: http.IncomingMessage, res: http.ServerResponse, source: FileSource, ip: string, path: string, done: (status: number, path: string, bytes: number) => void): void {
    const size = source.size;
    const range = parseRange(req.headers.range, size);
    if (range === 'unsatisfiable') {
      source.close();
      res.writeHead(416, { 'content-range': `bytes */${size}`, 'content-length': '0' }).end();
      return done(416, path, 0);
    }
    const start = range ? range.start : 0;
    const end = range ? range.end : size - 1;
    const length = size === 0 ? 0 : end - start + 1;
    const headers: Record<string, string> = {
      'content-type': 'application/octet-stream',
      'content-length': String(length),
      'accept-ranges': 'bytes',
      ...(range ? { 'content-range': `bytes ${start}-${end}/${size}` } : {}),
    };
    const status = range ? 206 : 200;
    res.writeHead(status, headers);
    if (req.method === 'HEAD' || length === 0) {
      source.close();
      res.end();
      return done(status, path, 0);
    }
    const buf = Buffer.allocUnsafe(Math.min(CHUNK, length));
    let sent = 0;
    let finished = false;
    const finish = (ok: boolean): void => {
      if (finished) return;
      finished = true;
      source.close();
      if (ok) res.end();
      else res.destroy();
      done(ok ? status : 499, path, sent);
    };
    res.on('close', () => finish(sent === length));
    const step = (): void => {
      if (finished) return;
      if (sent >= length) return finish(true);
      const n = Math.min(buf.length, length - sent);
      source.read(buf, 0, n, start + sent, (e, got) => {
        if (finished) return;
        if (e || got <= 0) {
          this.log.warn({ ...this.who(ip), path, err: e?.message ?? 'short read' }, 'http read failed');
          return finish(false);
        }
        // The buffer is read again only once the kernel has taken these bytes (the write callback).
        res.write(buf.subarray(0, got), (we) => {
          if (we) return finish(false);
          sent += got;
          step();
        });
      });
    };
    step();
  }

  get address(): AddressInfo | null {
    return (this.server?.address() as AddressInfo | null) ?? null;
  }

  close(): Promise<void> {
    const s = this.server;
    this.server = null;
    return closeHttpServer(s);
  }
}
