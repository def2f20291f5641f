/**
 * A free list of large buffers (READ replies, gathered WRITE payloads), keyed by exact size, shared by
 * the server's connections. Large `allocUnsafe` buffers are separate malloc/mmap blocks whose first touch
 * faults pages in; reusing them keeps the streaming hot path free of that and of GC churn. Small buffers
 * come from Node's own slab and are not pooled. The pool holds at most `maxBytes`; its owner empties it
 * (`clear()`) when it has been idle for a while, so memory goes back to the system.
 */
export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private bytes = 0;
  /** Large buffers handed out so far (the owner watches it to find an idle pool). */
  gets = 0;
  /** Buffers smaller than this come from Node's slab and are not pooled. */
  static readonly MIN_SIZE = 32 << 10;
  constructor(private readonly maxBytes = 64 << 20, private readonly minSize = BufferPool.MIN_SIZE) {}

  get(size: number): Buffer {
    if (size < this.minSize) return Buffer.allocUnsafe(size);
    this.gets++;
    const b = this.free.get(size)?.pop();
    if (b) {
      this.bytes -= size;
      return b;
    }
    return Buffer.allocUnsafeSlow(size);
  }

  /** Gives a buffer back once nothing references it any more. */
  put(b: Buffer): void {
    const size = b.length;
    if (size < this.minSize || b.byteOffset !== 0 || b.buffer.byteLength !== size || this.bytes + size > this.maxBytes) return;
    let list = this.free.get(size);
    if (!list) {
      list = [];
      this.free.set(size, list);
    }
    list.push(b);
    this.bytes += size;
  }

  get pooledBytes(): number {
    return this.bytes;
  }

  /** Drops every pooled buffer. */
  clear(): void {
    this.free.clear();
    this.bytes = 0;
  }
}
