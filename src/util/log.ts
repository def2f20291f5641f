/**
 * Logging: pino, structured, one event per line. Every line about a client carries the client
 * (`mac`, `serial`, `ip`) as fields, set once with `logger.child({ ip, mac })`.
 */
import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

export interface LogOptions {
  level?: LevelWithSilent;
  /** Human-readable output; default: when stdout is a terminal. */
  pretty?: boolean;
  /** Write here instead of stdout (tests). */
  destination?: NodeJS.WritableStream;
}

export function createLogger(opts: LogOptions = {}): Logger {
  const level = opts.level ?? 'info';
  if (opts.destination) {
    return pino({ level, base: undefined }, opts.destination as unknown as pino.DestinationStream);
  }
  if (opts.pretty) return pino({ level, base: undefined }, prettyStream(process.stdout));
  return pino({ level, base: undefined }, pino.destination({ dest: 1, sync: false }));
}

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO ', 40: 'WARN ', 50: 'ERROR', 60: 'FATAL' };

/** One pino JSON line as a human-readable line: `12:00:01 INFO  tftp file sent ip=… path=…`. */
export function prettyLine(json: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const { time, level, msg, component, ...rest } = o;
  const t = typeof time === 'number' ? new Date(time).toISOString().slice(11, 19) : '';
  const fields = Object.entries(rest)
    .map(([k, v]) => `${k}=${typeof v === 'string' && !/[\s"]/.test(v) ? v : JSON.stringify(v)}`)
    .join(' ');
  return `${t} ${LEVELS[level as number] ?? String(level)} ${component ? `${String(component)}: ` : ''}${String(msg ?? '')}${fields ? `  ${fields}` : ''}`;
}

/** A pino destination that writes human-readable lines (for a terminal; journald gets JSON). */
export function prettyStream(out: NodeJS.WritableStream): pino.DestinationStream {
  return {
    write(chunk: string): void {
      for (const line of chunk.split('\n')) if (line) out.write(`${prettyLine(line)}\n`);
    },
  };
}

/** A logger that discards everything (library code given no logger). */
export const silentLogger: Logger = pino({ level: 'silent' });

/**
 * Rate limiting for noisy events (malformed packets from the network): at most one line per key per
 * interval; the next line reports how many were suppressed.
 */
export class RateLimiter {
  private readonly last = new Map<string, { at: number; suppressed: number }>();
  constructor(private readonly intervalMs = 10_000, private readonly maxKeys = 1024) {}

  /** Returns null to suppress, or the number of events suppressed since the last one let through. */
  allow(key: string, now = Date.now()): number | null {
    const entry = this.last.get(key);
    if (entry && now - entry.at < this.intervalMs) {
      entry.suppressed++;
      return null;
    }
    const suppressed = entry?.suppressed ?? 0;
    if (!entry && this.last.size >= this.maxKeys) {
      const oldest = this.last.keys().next().value;
      if (oldest !== undefined) this.last.delete(oldest);
    }
    this.last.delete(key);
    this.last.set(key, { at: now, suppressed: 0 });
    return suppressed;
  }
}
