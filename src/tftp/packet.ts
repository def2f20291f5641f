/**
 * TFTP packet codec (RFC 1350, options per RFC 2347). Pure: bytes ⇄ typed values, no I/O. Parsing never
 * throws; malformed input comes back as a `ParseError` with a stable code.
 *
 * Builders come in two kinds: small allocating ones for rare packets (ERROR, OACK, ACK, requests for test
 * clients) and `writeDataHeader`, which writes the 4-byte DATA header in front of a payload that was read
 * straight into the same buffer at offset 4 (the hot path: no copy, no concat).
 */
import { ParseError, type Result, ok, err } from '../util/errors.js';

export const OP_RRQ = 1;
export const OP_WRQ = 2;
export const OP_DATA = 3;
export const OP_ACK = 4;
export const OP_ERROR = 5;
export const OP_OACK = 6;

/** Error codes (RFC 1350, 8 from RFC 2347). */
export const ERR_UNDEFINED = 0;
export const ERR_NOT_FOUND = 1;
export const ERR_ACCESS = 2;
export const ERR_DISK_FULL = 3;
export const ERR_ILLEGAL_OP = 4;
export const ERR_UNKNOWN_TID = 5;
export const ERR_EXISTS = 6;
export const ERR_NO_USER = 7;
export const ERR_OPTIONS = 8;

export const DATA_HEADER = 4;
/** Largest request we parse. RFC 2347 asks clients to stay within 512 bytes; we allow slack for odd ones. */
export const MAX_REQUEST_BYTES = 2048;
/** Most option pairs we accept in one request (the RFCs define five; an option bomb is refused). */
export const MAX_OPTIONS = 32;
/** Longest ERROR message we parse or send. */
export const MAX_ERROR_MESSAGE = 512;

export type Mode = 'netascii' | 'octet' | 'mail';

export interface RequestOption {
  /** As the client spelled it (echoed in the OACK). */
  name: string;
  /** Lower-cased name, for matching. */
  key: string;
  value: string;
}

export interface RequestPacket {
  op: typeof OP_RRQ | typeof OP_WRQ;
  filename: string;
  mode: Mode;
  options: RequestOption[];
}
export interface DataPacket {
  op: typeof OP_DATA;
  block: number;
  data: Buffer;
}
export interface AckPacket {
  op: typeof OP_ACK;
  block: number;
}
export interface ErrorPacket {
  op: typeof OP_ERROR;
  code: number;
  message: string;
}
export interface OackPacket {
  op: typeof OP_OACK;
  options: RequestOption[];
}
export type Packet = RequestPacket | DataPacket | AckPacket | ErrorPacket | OackPacket;

function fail(code: string, message: string): { ok: false; error: ParseError } {
  return err(new ParseError(code, message));
}

/** Finds the NUL ending the string that starts at `from`, within `end`; -1 if none. */
function nulAt(buf: Buffer, from: number, end: number): number {
  const i = buf.indexOf(0, from);
  return i < 0 || i >= end ? -1 : i;
}

/** Parses a NUL-terminated option list (RFC 2347) from `from` to the end of `buf`. */
function parseOptions(buf: Buffer, from: number): Result<RequestOption[]> {
  const options: RequestOption[] = [];
  const seen = new Set<string>();
  let p = from;
  const end = buf.length;
  while (p < end) {
    // Some PXE ROMs pad requests with zeros after the last option: tolerate pure NUL padding.
    if (buf[p] === 0) {
      let q = p;
      while (q < end && buf[q] === 0) q++;
      if (q === end) break;
      return fail('TFTP_EMPTY_OPTION', `empty option name at byte ${p}`);
    }
    const n = nulAt(buf, p, end);
    if (n < 0) return fail('TFTP_UNTERMINATED', `option name at byte ${p} has no NUL terminator`);
    const v = nulAt(buf, n + 1, end);
    if (v < 0) {
      return n + 1 >= end
        ? fail('TFTP_ODD_OPTIONS', `option "${buf.toString('latin1', p, Math.min(n, p + 32))}" has no value`)
        : fail('TFTP_UNTERMINATED', `option value at byte ${n + 1} has no NUL terminator`);
    }
    if (options.length >= MAX_OPTIONS) return fail('TFTP_TOO_MANY_OPTIONS', `more than ${MAX_OPTIONS} options`);
    const name = buf.toString('latin1', p, n);
    const key = name.toLowerCase();
    const value = buf.toString('latin1', n + 1, v);
    // A repeated option: the first one wins (RFC 2347 does not define repeats).
    if (!seen.has(key)) {
      seen.add(key);
      options.push({ name, key, value });
    }
    p = v + 1;
  }
  return ok(options);
}

function parseRequest(buf: Buffer, op: typeof OP_RRQ | typeof OP_WRQ): Result<Packet> {
  if (buf.length > MAX_REQUEST_BYTES) return fail('TFTP_OVERSIZE', `request of ${buf.length} bytes (max ${MAX_REQUEST_BYTES})`);
  const f = nulAt(buf, 2, buf.length);
  if (f < 0) return fail('TFTP_UNTERMINATED', 'filename has no NUL terminator');
  if (f === 2) return fail('TFTP_EMPTY_FILENAME', 'empty filename');
  const m = nulAt(buf, f + 1, buf.length);
  if (m < 0) return fail('TFTP_UNTERMINATED', 'mode has no NUL terminator');
  const modeRaw = buf.toString('latin1', f + 1, m).toLowerCase();
  if (modeRaw !== 'octet' && modeRaw !== 'netascii' && modeRaw !== 'mail') {
    return fail('TFTP_BAD_MODE', `unknown mode "${modeRaw.slice(0, 32)}"`);
  }
  const opts = parseOptions(buf, m + 1);
  if (!opts.ok) return opts;
  const filename = buf.toString('utf8', 2, f);
  return ok({ op, filename, mode: modeRaw, options: opts.value });
}

/** Parses one datagram. */
export function parsePacket(buf: Buffer): Result<Packet> {
  if (buf.length < 4) return fail('TFTP_SHORT', `packet of ${buf.length} bytes`);
  const op = buf.readUInt16BE(0);
  switch (op) {
    case OP_RRQ:
    case OP_WRQ:
      return parseRequest(buf, op);
    case OP_DATA:
      if (buf.length > DATA_HEADER + 65464) return fail('TFTP_OVERSIZE', `DATA of ${buf.length} bytes`);
      return ok({ op: OP_DATA, block: buf.readUInt16BE(2), data: buf.subarray(4) });
    case OP_ACK:
      if (buf.length !== 4) return fail('TFTP_BAD_LENGTH', `ACK of ${buf.length} bytes`);
      return ok({ op: OP_ACK, block: buf.readUInt16BE(2) });
    case OP_ERROR: {
      if (buf.length > 4 + MAX_ERROR_MESSAGE + 1) return fail('TFTP_OVERSIZE', `ERROR of ${buf.length} bytes`);
      const code = buf.readUInt16BE(2);
      // Lenient: some clients omit the terminating NUL of the message.
      const n = buf.indexOf(0, 4);
      const message = buf.toString('latin1', 4, n < 0 ? buf.length : n);
      return ok({ op: OP_ERROR, code, message });
    }
    case OP_OACK: {
      if (buf.length > MAX_REQUEST_BYTES) return fail('TFTP_OVERSIZE', `OACK of ${buf.length} bytes`);
      const opts = parseOptions(buf, 2);
      if (!opts.ok) return opts;
      return ok({ op: OP_OACK, options: opts.value });
    }
    default:
      return fail('TFTP_BAD_OPCODE', `unknown opcode ${op}`);
  }
}

/** Writes the DATA header into `buf[0..4)`; the payload is expected at `buf[4…]`. */
export function writeDataHeader(buf: Buffer, block: number): void {
  buf[0] = 0;
  buf[1] = OP_DATA;
  buf[2] = (block >>> 8) & 0xff;
  buf[3] = block & 0xff;
}

/** An ACK packet. */
export function buildAck(block: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt16BE(OP_ACK, 0);
  b.writeUInt16BE(block & 0xffff, 2);
  return b;
}

/** A DATA packet (tests and tools; the server writes headers in place with `writeDataHeader`). */
export function buildData(block: number, payload: Buffer): Buffer {
  const b = Buffer.allocUnsafe(4 + payload.length);
  writeDataHeader(b, block & 0xffff);
  payload.copy(b, 4);
  return b;
}

/** An ERROR packet; the message is truncated to a sane length and stripped of NULs. */
export function buildError(code: number, message: string): Buffer {
  const msg = Buffer.from(message.replace(/\0/g, ' '), 'latin1').subarray(0, MAX_ERROR_MESSAGE - 1);
  const b = Buffer.allocUnsafe(4 + msg.length + 1);
  b.writeUInt16BE(OP_ERROR, 0);
  b.writeUInt16BE(code & 0xffff, 2);
  msg.copy(b, 4);
  b[b.length - 1] = 0;
  return b;
}

function optionBytes(options: ReadonlyArray<{ name: string; value: string }>): Buffer[] {
  const parts: Buffer[] = [];
  for (const o of options) {
    parts.push(Buffer.from(o.name, 'latin1'), Buffer.alloc(1), Buffer.from(o.value, 'latin1'), Buffer.alloc(1));
  }
  return parts;
}

/** An OACK with the given options, in order. */
export function buildOack(options: ReadonlyArray<{ name: string; value: string }>): Buffer {
  const head = Buffer.from([0, OP_OACK]);
  return Buffer.concat([head, ...optionBytes(options)]);
}

/** An RRQ/WRQ (test clients, tools). */
export function buildRequest(
  op: typeof OP_RRQ | typeof OP_WRQ,
  filename: string,
  mode: string,
  options: ReadonlyArray<{ name: string; value: string }> = [],
): Buffer {
  const head = Buffer.from([0, op]);
  return Buffer.concat([
    head,
    Buffer.from(filename, 'utf8'),
    Buffer.alloc(1),
    Buffer.from(mode, 'latin1'),
    Buffer.alloc(1),
    ...optionBytes(options),
  ]);
}
