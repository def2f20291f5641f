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

  close(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (!s) return Promise.resolve();
    s.closeAllConnections();
    return new Promise((resolve) => s.close(() => resolve()));
  }
}
