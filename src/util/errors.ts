/**
 * Typed errors. Every parser of untrusted bytes (packets, partition tables, FAT structures, YAML)
 * reports failure with one of these, never with a bare TypeError/RangeError from a stray read.
 * `code` is a stable, machine-checkable string; `message` is for humans and names the problem.
 */
export class NetbootError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** Malformed input: a packet, a partition table, a FAT structure that cannot be what it claims. */
export class ParseError extends NetbootError {}

/** A disk image (or a file system inside it) is inconsistent: loops, out-of-range pointers, lying sizes. */
export class CorruptError extends NetbootError {}

/** A path, partition, export or file that does not exist. */
export class NotFoundError extends NetbootError {}

/** An I/O request that is not allowed: out of range, write to read-only, and so on. */
export class IoError extends NetbootError {}

/** A result type for pure codecs: parsing never throws, it returns one of these. */
export type Result<T, E extends Error = ParseError> =
  | { ok: true; value: T }
  | { ok: false; error: E };

export function ok<T>(value: T): { ok: true; value: T } {
  return { ok: true, value };
}

export function err<E extends Error>(error: E): { ok: false; error: E } {
  return { ok: false, error };
}
