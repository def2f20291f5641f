/** Reading helpers for FileSource in FAT tests. */
import type { FileSource } from '../../src/util/source.js';

/** Reads a whole source with reads of `chunk` bytes (odd sizes cross cluster and extent boundaries). */
export function readAll(src: FileSource, chunk: number): Promise<Buffer> {
  const out = Buffer.alloc(src.size);
  return new Promise((resolve, reject) => {
    const step = (pos: number): void => {
      if (pos >= src.size) return resolve(out);
      src.read(out, pos, Math.min(chunk, src.size - pos), pos, (err, n) => {
        if (err) return reject(err);
        if (n === 0) return reject(new Error(`short read at ${pos}`));
        step(pos + n);
      });
    };
    step(0);
  });
}

/** One positional read; resolves to the bytes actually read. */
export function readAt(src: FileSource, len: number, pos: number): Promise<Buffer> {
  const b = Buffer.alloc(len);
  return new Promise((resolve, reject) => src.read(b, 0, len, pos, (e, n) => (e ? reject(e) : resolve(b.subarray(0, n)))));
}
