/** Shared fixtures for TFTP tests: an in-memory resolver, a server with captured logs. */
import { Writable } from 'node:stream';
import { TftpServer, type TftpLimits, type TransferStats } from '../../src/tftp/server.js';
import type { TftpResolver, ResolveRequest } from '../../src/tftp/resolver.js';
import { BufferSource, type FileSource } from '../../src/util/source.js';
import { createLogger } from '../../src/util/log.js';

export class MapResolver implements TftpResolver {
  readonly requests: ResolveRequest[] = [];
  constructor(readonly files: Map<string, Buffer>) {}
  async resolve(req: ResolveRequest): Promise<FileSource | null> {
    this.requests.push(req);
    const b = this.files.get(req.path);
    return b ? new BufferSource(b) : null;
  }
}

export interface LogLine {
  level: number;
  msg: string;
  [k: string]: unknown;
}

/** A pino logger whose lines are collected, parsed. */
export function captureLogger(): { logger: ReturnType<typeof createLogger>; lines: LogLine[] } {
  const lines: LogLine[] = [];
  let partial = '';
  const dest = new Writable({
    write(chunk: Buffer, _enc, cb) {
      partial += chunk.toString();
      let i: number;
      while ((i = partial.indexOf('\n')) >= 0) {
        const line = partial.slice(0, i);
        partial = partial.slice(i + 1);
        if (line.trim()) lines.push(JSON.parse(line) as LogLine);
      }
      cb();
    },
  });
  return { logger: createLogger({ level: 'debug', destination: dest }), lines };
}

export interface Running {
  server: TftpServer;
  port: number;
  lines: LogLine[];
  transfers: TransferStats[];
  /** Resolves with the next finished transfer. */
  nextTransfer(): Promise<TransferStats>;
}

export async function startServer(
  t: { after(fn: () => Promise<void> | void): void },
  resolver: TftpResolver,
  limits: Partial<TftpLimits> = {},
): Promise<Running> {
  const { logger, lines } = captureLogger();
  const server = new TftpServer({ resolver, logger, address: '127.0.0.1', port: 0, limits });
  const { port } = await server.listen();
  t.after(() => server.close());
  const transfers: TransferStats[] = [];
  let waiters: ((s: TransferStats) => void)[] = [];
  let seen = 0;
  server.on('transfer', (s: TransferStats) => {
    transfers.push(s);
    const w = waiters;
    waiters = [];
    for (const f of w) f(s);
  });
  const nextTransfer = (): Promise<TransferStats> => {
    if (transfers.length > seen) return Promise.resolve(transfers[seen++]!);
    return new Promise((r) => waiters.push((s) => {
      seen++;
      r(s);
    }));
  };
  return { server, port, lines, transfers, nextTransfer };
}

/** Deterministic pseudo-random bytes. */
export function pattern(n: number, seed = 1): Buffer {
  const b = Buffer.allocUnsafe(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}
