/**
 * Flood control for events a remote host can trigger at will (requests for missing files, DHCP packets,
 * never-acknowledged transfers): bounded log lines with counts of what was left out, and token buckets
 * that cap what answering costs.
 */
import type { Logger } from './log.js';

type Level = 'error' | 'warn' | 'info' | 'debug';

interface KindState {
  windowStart: number;
  lines: number;
  /** Events of this kind not logged since its last line. */
  suppressed: number;
  /** Fields of the last suppressed event (the summary line names one client). */
  lastFields: Record<string, unknown> | null;
  level: Level;
  msg: string;
}

export interface FloodLogOptions {
  /** One line per key per this interval; also the window of `maxLinesPerKind`. Default 10 s. */
  intervalMs?: number;
  /** Lines per kind per window, all keys together. Default 20. */
  maxLinesPerKind?: number;
  /** Keys remembered (least recently used go first). Default 4096. */
  maxKeys?: number;
}

/**
 * Rate-limited logging by kind of event and key (usually the client): at most one line per key per
 * interval and at most `maxLinesPerKind` lines of a kind per interval whatever the number of keys (a flood
 * from many spoofed addresses stays bounded too). Each line carries `suppressed`: how many events of its
 * kind were not logged since the previous line of that kind; when a flood stops with events still
 * uncounted, one summary line reports them at the end of the window.
 */
export class FloodLog {
  private readonly intervalMs: number;
  private readonly maxLines: number;
  private readonly maxKeys: number;
  private readonly kinds = new Map<string, KindState>();
  private readonly keys = new Map<string, number>();
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly log: Logger, opts: FloodLogOptions = {}) {
    this.intervalMs = opts.intervalMs ?? 10_000;
    this.maxLines = opts.maxLinesPerKind ?? 20;
    this.maxKeys = opts.maxKeys ?? 4096;
  }

  /** Logs `msg` with `fields` unless this kind or key is over its budget; returns whether it logged. */
  event(level: Level, kind: string, key: string, fields: Record<string, unknown>, msg: string, now = Date.now()): boolean {
    let k = this.kinds.get(kind);
    if (!k) {
      k = { windowStart: now, lines: 0, suppressed: 0, lastFields: null, level, msg };
      this.kinds.set(kind, k);
    }
    k.level = level;
    k.msg = msg;
    if (now - k.windowStart >= this.intervalMs) {
      k.windowStart = now;
      k.lines = 0;
    }
    const fullKey = `${kind}\0${key}`;
    const last = this.keys.get(fullKey);
    if ((last !== undefined && now - last < this.intervalMs) || k.lines >= this.maxLines) {
      k.suppressed++;
      k.lastFields = fields;
      this.arm();
      return false;
    }
    if (last === undefined && this.keys.size >= this.maxKeys) {
      const oldest = this.keys.keys().next().value;
      if (oldest !== undefined) this.keys.delete(oldest);
    }
    this.keys.delete(fullKey);
    this.keys.set(fullKey, now);
    k.lines++;
    const suppressed = k.suppressed;
    k.suppressed = 0;
    k.lastFields = null;
    this.log[level](suppressed > 0 ? { ...fields, suppressed } : fields, msg);
    return true;
  }

  /** Reports what is still suppressed (at the end of a window; and on close). */
  flush(now = Date.now()): void {
    for (const [kind, k] of this.kinds) {
      if (k.suppressed > 0) {
        this.log[k.level]({ ...(k.lastFields ?? {}), event: kind, suppressed: k.suppressed, summary: true }, `${k.msg} (repeated, not logged one by one)`);
        k.suppressed = 0;
        k.lastFields = null;
        k.windowStart = now;
        k.lines = 1;
      }
    }
  }

  /** Stops the summary timer, logging what is left. */
  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.flush();
  }

  private arm(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.flush();
    }, this.intervalMs);
    this.timer.unref();
  }
}

/**
 * Token buckets by key (client address): `ratePerSec` tokens a second up to `burst`. Memory is bounded:
 * at most `maxKeys` buckets (the least recently used go; a forgotten key starts full again, which only
 * gives an address that was quiet long enough to be forgotten its burst back).
 */
export class TokenBuckets {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  constructor(
    private readonly ratePerSec: number,
    private readonly burst: number,
    private readonly maxKeys = 4096,
  ) {}

  /** Takes one token for `key`; false when its bucket is empty. */
  take(key: string, now = Date.now()): boolean {
    let b = this.buckets.get(key);
    if (b) {
      b.tokens = Math.min(this.burst, b.tokens + ((now - b.at) * this.ratePerSec) / 1000);
      b.at = now;
      this.buckets.delete(key);
    } else {
      if (this.buckets.size >= this.maxKeys) {
        const oldest = this.buckets.keys().next().value;
        if (oldest !== undefined) this.buckets.delete(oldest);
      }
      b = { tokens: this.burst, at: now };
    }
    this.buckets.set(key, b);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }
}
