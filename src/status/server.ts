/**
 * The local status endpoint: GET /status (JSON) and GET /metrics (Prometheus text). Loopback by
 * default; it shows client addresses and what they boot, so it is not meant for the open network.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../util/log.js';
import type { MetricsRegistry } from '../util/metrics.js';

export interface StatusSource {
  status(): unknown;
  metrics: MetricsRegistry;
  /** Local admin actions (`POST /reset-overlay` with a JSON body): resolves to an HTTP status and a JSON reply. */
  action?(name: string, body: unknown): Promise<{ status: number; body: unknown }>;
}

export class StatusServer {
  private server: http.Server | null = null;

  constructor(
    private readonly source: StatusSource,
    private readonly log: Logger,
  ) {}

  listen(port: number, host: string): Promise<AddressInfo> {
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

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    try {
      const url = (req.url ?? '/').split('?')[0];
      if (req.method === 'POST' && this.source.action && url === '/reset-overlay') {
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
    if (!s) return Promise.resolve();
    s.closeAllConnections();
    return new Promise((resolve) => s.close(() => resolve()));
  }
}
