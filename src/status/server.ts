/**
 * The local status endpoint: GET /status (JSON) and GET /metrics (Prometheus text). Loopback by
 * default; it shows client addresses and what they boot, so it is not meant for the open network.
 *
 * Who may ask: a browser on the same machine is a way in for any web page (CSRF, DNS rebinding), so
 * every request must name this server in `Host` (an IP literal, `localhost` or this machine's name, never
 * a foreign DNS name that was rebound to 127.0.0.1); a request carrying a foreign `Origin` or
 * `Sec-Fetch-Site: cross-site` is refused; a state change (POST) must be `application/json`, which a page
 * cannot send cross-origin without a CORS preflight this server never grants. With `status.token` set,
 * every request needs `Authorization: Bearer <token>`; listening beyond loopback without a token answers
 * nothing but 401.
 */
import crypto from 'node:crypto';
import http from 'node:http';
import { isIP, type AddressInfo } from 'node:net';
import os from 'node:os';
import { RateLimiter, type Logger } from '../util/log.js';
import { closeHttpServer, isLoopbackAddress } from '../util/net.js';
import type { MetricsRegistry } from '../util/metrics.js';

export interface StatusSource {
  status(): unknown;
  metrics: MetricsRegistry;
  /** Local admin actions (`POST /reset-overlay` with a JSON body): resolves to an HTTP status and a JSON reply. */
  action?(name: string, body: unknown): Promise<{ status: number; body: unknown }>;
}

export interface StatusServerOptions {
  /** Required as `Authorization: Bearer <token>` on every request when set. */
  token?: string | undefined;
}

/** The host part of a `Host` header value (`[::1]:9810` → `::1`, `localhost:9810` → `localhost`). */
function hostName(header: string): string {
  const h = header.trim().toLowerCase();
  if (h.startsWith('[')) return h.slice(1, h.indexOf(']') >>> 0);
  const colon = h.lastIndexOf(':');
  return colon >= 0 && h.indexOf(':') === colon ? h.slice(0, colon) : h;
}

export class StatusServer {
  private server: http.Server | null = null;
  private readonly token: Buffer | null;
  private loopbackOnly = true;
  private readonly names: Set<string>;
  private readonly rate = new RateLimiter(10_000);

  constructor(
    private readonly source: StatusSource,
    private readonly log: Logger,
    opts: StatusServerOptions = {},
  ) {
    this.token = opts.token ? crypto.createHash('sha256').update(opts.token).digest() : null;
    const me = os.hostname().toLowerCase();
    this.names = new Set(['localhost', me, me.split('.')[0]!]);
  }

  listen(port: number, host: string): Promise<AddressInfo> {
    this.loopbackOnly = isLoopbackAddress(host);
    if (!this.loopbackOnly && !this.token) {
      this.log.warn({ address: host, port }, 'status endpoint listens beyond loopback without status.token: every request is refused until a token is set');
    }
    const server = http.createServer((req, res) => this.handle(req, res));
    server.on('clientError', (_e, socket) => socket.destroy());
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        server.on('error', (e) => this.log.error({ err: e }, 'status endpoint error'));
        resolve(server.address() as AddressInfo);
      });
    });
  }

  /** Why this request may not be answered (status code and reason), or null. */
  private refusal(req: http.IncomingMessage): { status: number; error: string } | null {
    const host = req.headers.host;
    if (host !== undefined) {
      const name = hostName(host);
      if (!isIP(name) && !this.names.has(name)) return { status: 421, error: `Host \`${host.slice(0, 64)}\` is not this server: use its address` };
    }
    const origin = req.headers.origin;
    if (origin !== undefined && origin !== `http://${host ?? ''}` && origin !== `https://${host ?? ''}`) {
      return { status: 403, error: 'cross-origin requests are refused' };
    }
    if (req.headers['sec-fetch-site'] === 'cross-site') return { status: 403, error: 'cross-site requests are refused' };
    if (this.token) {
      const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
      const given = crypto.createHash('sha256').update(m?.[1] ?? '').digest();
      if (!m || !crypto.timingSafeEqual(given, this.token)) return { status: 401, error: 'a valid status.token is required (Authorization: Bearer TOKEN)' };
    } else if (!this.loopbackOnly) {
      return { status: 401, error: 'the status endpoint listens beyond loopback: set status.token in the config' };
    }
    return null;
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    try {
      const url = (req.url ?? '/').split('?')[0];
      const refused = this.refusal(req);
      if (refused) {
        const ip = req.socket.remoteAddress ?? '';
        const suppressed = this.rate.allow(`${ip}:${refused.status}`);
        if (suppressed !== null) {
          this.log.warn({ ip, method: req.method, url: url?.slice(0, 128), status: refused.status, reason: refused.error, ...(suppressed ? { suppressed } : {}) }, 'status request refused');
        }
        res.writeHead(refused.status, { 'content-type': 'application/json' }).end(`${JSON.stringify({ error: refused.error })}\n`);
        return;
      }
      if (req.method === 'POST' && this.source.action && url === '/reset-overlay') {
        const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
        if (type !== 'application/json') {
          res.writeHead(415, { 'content-type': 'application/json' }).end('{"error":"POST needs Content-Type: application/json"}\n');
          return;
        }
        this.post(url.slice(1), req, res);
        return;
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end();
        return;
      }
      if (url === '/metrics') {
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
        res.end(this.source.metrics.render());
      } else if (url === '/status' || url === '/') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(`${JSON.stringify(this.source.status(), null, 2)}\n`);
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /status or /metrics\n');
      }
    } catch (e) {
      this.log.error({ err: e }, 'status request failed');
      if (!res.headersSent) res.writeHead(500);
      res.end();
    }
  }

  private post(name: string, req: http.IncomingMessage, res: http.ServerResponse): void {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > 64 * 1024) req.destroy();
      else chunks.push(c);
    });
    req.on('end', () => {
      let body: unknown;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
      } catch {
        res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":"body must be JSON"}\n');
        return;
      }
      this.source.action!(name, body).then(
        (r) => res.writeHead(r.status, { 'content-type': 'application/json' }).end(`${JSON.stringify(r.body)}\n`),
        (e: unknown) => res.writeHead(500, { 'content-type': 'application/json' }).end(`${JSON.stringify({ error: (e as Error).message })}\n`),
      );
    });
  }

  close(): Promise<void> {
    const s = this.server;
    this.server = null;
    return closeHttpServer(s);
  }
}
