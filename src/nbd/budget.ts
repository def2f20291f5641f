/**
 * The server-wide in-flight budget: bytes of request payloads being served and replies not yet taken by the
 * kernel, summed over all connections. A connection that does not fit waits in line (first come first
 * served); bytes given back let the waiters retry, in order, until the first one's request does not fit.
 */

/** A connection waiting for budget. */
export interface BudgetWaiter {
  /** Budget was given back and this waiter is first in line: try the waiting request again. */
  retry(): void;
}

export class InflightBudget {
  private total = 0;
  /** First come first served (a Set keeps insertion order). */
  private readonly waiting = new Set<BudgetWaiter>();
  private waking = false;

  constructor(private readonly limit: number) {}

  /** Bytes in flight over all connections. */
  get bytes(): number {
    return this.total;
  }

  /** Takes `n` bytes for `w`; otherwise queues `w` and returns false. A request is always admitted when nothing is in flight. */
  reserve(w: BudgetWaiter, n: number): boolean {
    const q = this.waiting;
    if (q.size > 0 && q.values().next().value !== w) {
      q.add(w);
      return false;
    }
    if (this.total > 0 && this.total + n > this.limit) {
      q.add(w);
      return false;
    }
    if (q.size > 0) q.delete(w);
    this.total += n;
    return true;
  }

  /** Adds `d` bytes without a check (guaranteed requests, replies' real sizes); bytes given back wake waiters. */
  charge(d: number): void {
    this.total += d;
    if (d < 0 && this.waiting.size > 0) this.wake();
  }

  /** `w` no longer waits (closed, or held back by its own limits). */
  unwait(w: BudgetWaiter): void {
    this.waiting.delete(w);
  }

  private wake(): void {
    if (this.waking) return;
    this.waking = true;
    try {
      for (;;) {
        const w = this.waiting.values().next().value as BudgetWaiter | undefined;
        if (w === undefined) break;
        w.retry();
        if (this.waiting.values().next().value === w) break;
      }
    } finally {
      this.waking = false;
    }
  }
}
