/**
 * Test support: a block device held in memory (unit tests, fuzzing, small synthetic images). The daemon
 * never uses it; it lives under src/testing so tests and benchmarks share one.
 */
import { checkRange, WrittenEmitter, type BlockDevice, type IoCallback, type WrittenListener } from '../disk/blockdev.js';
import { IoError } from '../util/errors.js';

export class MemoryBlockDevice implements BlockDevice {
  private readonly emitter = new WrittenEmitter();
  readonly size: number;
  constructor(
    readonly data: Buffer,
    readonly readOnly = false,
    readonly name = 'memory',
  ) {
    this.size = data.length;
  }
  read(buf: Buffer, offset: number, length: number, position: number, cb: IoCallback): void {
    const bad = checkRange(this, length, position);
    if (bad) return process.nextTick(cb, bad);
    this.data.copy(buf, offset, position, position + length);
    process.nextTick(cb, null);
  }
  write(buf: Buffer, offset: number, length: number, position: number, cb: IoCallback): void {
    if (this.readOnly) return process.nextTick(cb, new IoError('EPERM', `${this.name}: read-only`));
    const bad = checkRange(this, length, position);
    if (bad) return process.nextTick(cb, bad);
    buf.copy(this.data, position, offset, offset + length);
    this.emitter.emit(position, length);
    process.nextTick(cb, null);
  }
  flush(cb: IoCallback): void {
    process.nextTick(cb, null);
  }
  onWritten(listener: WrittenListener): () => void {
    return this.emitter.add(listener);
  }
}

