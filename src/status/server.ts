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
 *
 * The status page (GET / from a browser, or /ui) is one static document (src/status/page.ts) that reads
 * /status and /journey and follows /events (server-sent events). A browser cannot send a bearer header on
 * an EventSource, so off loopback the page is opened once as `/ui?token=TOKEN`: the token is checked and
 * put in an HttpOnly, SameSite=Strict cookie, and the browser is sent on to /ui without it. A request
 * authenticated by that cookie that changes state must also carry `X-CSRF-Token` with the token the page
 * was served with (a synchronizer token, on top of the JSON-only and Origin rules above).
 */
import crypto from 'node:crypto';
import http from 'node:http';
import { isIP, type AddressInfo } from 'node:net';
import os from 'node:os';
import { RateLimiter, type Logger } from '../util/log.js';
import { STATUS_PAGE } from './page.js';
import { closeHttpServer, isLoopbackAddress } from '../util/net.js';
import type { MetricsRegistry } from '../util/metrics.js';

export interface StatusSource {
  status(): unknown;
  metrics: MetricsRegistry;
  /** Local admin actions (`POST /reset-overlay` with a JSON body): resolves to an HTTP status and a JSON reply. */
  action?(name: string, body: unknown): Promise<{ status: number; body: unknown }>;
  /** One client's boot journey (by serial, MAC, address or name), or null. */
  journey?(client: string): unknown;
  /** Calls `fn` after each change the live views should show; returns the unsubscribe. */
  subscribe?(fn: () => void): () => void;
  /** Whether something is moving (transfers, NBD I/O): live views refresh every second then. */
  live?(): boolean;
}

const COOKIE = 'netbootd_token';
/** Live views at once (each is an open response): bounded like every other per-client resource. */
const MAX_EVENT_STREAMS = 32;

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
  /** The page's anti-CSRF token (synchronizer): random per process, sent in the page, required with cookies. */
  private readonly csrf = crypto.randomBytes(18).toString('base64url');
  private readonly streams = new Set<http.ServerResponse>();
  private streamTimer: NodeJS.Timeout | null = null;
  private dirty = false;
  private unsubscribe: (() => void) | null = null;

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
      const presented = m?.[1] ?? this.queryToken(req) ?? this.cookieToken(req);
      const given = crypto.createHash('sha256').update(presented ?? '').digest();
      if (presented === undefined || !crypto.timingSafeEqual(given, this.token)) return { status: 401, error: 'a valid status.token is required (Authorization: Bearer TOKEN; in a browser: /ui?token=TOKEN)' };
    } else if (!this.loopbackOnly) {
      return { status: 401, error: 'the status endpoint listens beyond loopback: set status.token in the config' };
    }
    return null;
  }

  private cookieToken(req: http.IncomingMessage): string | undefined {
    const m = new RegExp(`(?:^|;\\s*)${COOKIE}=([A-Za-z0-9%._~-]{1,1536})`).exec(req.headers.cookie ?? '');
    try {
      return m ? decodeURIComponent(m[1]!) : undefined;
    } catch {
      return undefined;
    }
  }

  /** `?token=` is taken only on the page's own address (/ui), to be turned into the cookie at once. */
  private queryToken(req: http.IncomingMessage): string | undefined {
    const [path, query] = (req.url ?? '').split('?', 2);
    if (req.method !== 'GET' || (path !== '/ui' && path !== '/') || !query) return undefined;
    return new URLSearchParams(query).get('token') ?? undefined;
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    try {
      const url = (req.url ?? '/').split('?')[0];
      const query = new URLSearchParams((req.url ?? '').split('?', 2)[1] ?? '');
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
        if (req.headers.authorization === undefined && this.cookieToken(req) !== undefined && req.headers['x-csrf-token'] !== this.csrf) {
          res.writeHead(403, { 'content-type': 'application/json' }).end('{"error":"the page\'s X-CSRF-Token is missing or stale: reload the page"}\n');
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
      } else if ((url === '/ui' || url === '/') && query.has('token') && this.token) {
        // Checked by refusal(): keep it in a cookie, and take it out of the address bar and history.
        const secure = req.socket && 'encrypted' in req.socket ? '; Secure' : '';
        res.writeHead(303, { location: '/ui', 'set-cookie': `${COOKIE}=${encodeURIComponent(query.get('token') ?? '')}; HttpOnly; SameSite=Strict; Path=/${secure}`, 'cache-control': 'no-store' }).end();
      } else if (url === '/ui' || (url === '/' && /text\/html/.test(req.headers.accept ?? ''))) {
        res.writeHead(200, {
          'content-type': 'text/html; charset=utf-8',
          'cache-control': 'no-store',
          // Nothing from elsewhere, no inline script but the page's own (by hash would need a build step: by nonce).
          'content-security-policy': `default-src 'none'; script-src 'nonce-${this.csrf}'; style-src 'nonce-${this.csrf}'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
          'x-content-type-options': 'nosniff',
          'referrer-policy': 'no-referrer',
        });
        res.end(STATUS_PAGE.replace(/__NONCE__/g, this.csrf).replace('__CSRF__', this.csrf));
      } else if (url === '/journey' && this.source.journey) {
        const j = this.source.journey(query.get('client') ?? '');
        if (j === null || j === undefined) res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"no such client: name it by Pi serial, MAC, address or name"}\n');
        else res.writeHead(200, { 'content-type': 'application/json' }).end(`${JSON.stringify(j)}\n`);
      } else if (url === '/events') {
        this.openStream(req, res);
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

  /** Server-sent events: a `status` event now, then after each change (at most one a second; every second while transfers run). */
  private openStream(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (this.streams.size >= MAX_EVENT_STREAMS) {
      res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '10' }).end('{"error":"too many live views open"}\n');
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    res.write(`retry: 2000\nevent: status\ndata: ${JSON.stringify(this.source.status())}\n\n`);
    this.streams.add(res);
    const done = (): void => {
      this.streams.delete(res);
      if (this.streams.size === 0) this.stopStreams();
    };
    req.on('close', done);
    res.on('error', done);
    if (!this.streamTimer) {
      this.unsubscribe = this.source.subscribe?.(() => (this.dirty = true)) ?? null;
      let beats = 0;
      this.streamTimer = setInterval(() => {
        beats++;
        if (this.dirty || this.source.live?.()) {
          this.dirty = false;
          const data = `event: status\ndata: ${JSON.stringify(this.source.status())}\n\n`;
          for (const r of this.streams) if (r.writableLength < 1 << 20) r.write(data); // a reader that does not read misses updates
        } else if (beats % 15 === 0) {
          for (const r of this.streams) r.write(': keep-alive\n\n');
        }
      }, 1000);
      this.streamTimer.unref();
    }
  }

  private stopStreams(): void {
    if (this.streamTimer) clearInterval(this.streamTimer);
    this.streamTimer = null;
    this.unsubscribe?.();
    this.unsubscribe = null;
  }

  close(): Promise<void> {
    for (const r of this.streams) r.end();
    this.streams.clear();
    this.stopStreams();
    const s = this.server;
    this.server = null;
    return closeHttpServer(s);
  }
}
