/**
 * NBD wire codec (fixed newstyle handshake + transmission), written from NetworkBlockDevice/nbd
 * doc/proto.md. Pure: bytes ⇄ typed values, no I/O. Parsers never throw on untrusted bytes; they return
 * a `Result` with a `ParseError` whose `code` names the problem.
 *
 * Handles (the client's 64-bit request cookie) are carried as two unsigned 32-bit halves so that the hot
 * path allocates no BigInt.
 */
import { ParseError, type Result, ok, err } from '../util/errors.js';

// ---- magics ----
export const NBDMAGIC = 0x4e42444d41474943n; // "NBDMAGIC"
export const IHAVEOPT = 0x49484156454f5054n; // "IHAVEOPT"
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

// ---- handshake flags ----
export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;
export const FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_C_NO_ZEROES = 1 << 1;

// ---- transmission flags ----
export const TFLAG_HAS_FLAGS = 1 << 0;
export const TFLAG_READ_ONLY = 1 << 1;
export const TFLAG_SEND_FLUSH = 1 << 2;
export const TFLAG_SEND_FUA = 1 << 3;
export const TFLAG_ROTATIONAL = 1 << 4;
export const TFLAG_SEND_TRIM = 1 << 5;
export const TFLAG_SEND_WRITE_ZEROES = 1 << 6;
export const TFLAG_SEND_DF = 1 << 7;
export const TFLAG_CAN_MULTI_CONN = 1 << 8;
export const TFLAG_SEND_RESIZE = 1 << 9;
export const TFLAG_SEND_CACHE = 1 << 10;
export const TFLAG_SEND_FAST_ZERO = 1 << 11;

// ---- options ----
export const OPT_EXPORT_NAME = 1;
export const OPT_ABORT = 2;
export const OPT_LIST = 3;
export const OPT_STARTTLS = 5;
export const OPT_INFO = 6;
export const OPT_GO = 7;
export const OPT_STRUCTURED_REPLY = 8;
export const OPT_LIST_META_CONTEXT = 9;
export const OPT_SET_META_CONTEXT = 10;

// ---- option replies ----
export const REP_ACK = 1;
export const REP_SERVER = 2;
export const REP_INFO = 3;
export const REP_META_CONTEXT = 4;
const REP_ERR = 0x80000000;
export const REP_ERR_UNSUP = REP_ERR + 1;
export const REP_ERR_POLICY = REP_ERR + 2;
export const REP_ERR_INVALID = REP_ERR + 3;
export const REP_ERR_PLATFORM = REP_ERR + 4;
export const REP_ERR_TLS_REQD = REP_ERR + 5;
export const REP_ERR_UNKNOWN = REP_ERR + 6;
export const REP_ERR_SHUTDOWN = REP_ERR + 7;
export const REP_ERR_BLOCK_SIZE_REQD = REP_ERR + 8;
export const REP_ERR_TOO_BIG = REP_ERR + 9;

// ---- NBD_REP_INFO types ----
export const INFO_EXPORT = 0;
export const INFO_NAME = 1;
export const INFO_DESCRIPTION = 2;
export const INFO_BLOCK_SIZE = 3;

// ---- commands ----
export const CMD_READ = 0;
export const CMD_WRITE = 1;
export const CMD_DISC = 2;
export const CMD_FLUSH = 3;
export const CMD_TRIM = 4;
export const CMD_CACHE = 5;
export const CMD_WRITE_ZEROES = 6;
export const CMD_BLOCK_STATUS = 7;

// ---- command flags ----
export const CMD_FLAG_FUA = 1 << 0;
export const CMD_FLAG_NO_HOLE = 1 << 1;
export const CMD_FLAG_DF = 1 << 2;
export const CMD_FLAG_REQ_ONE = 1 << 3;
export const CMD_FLAG_FAST_ZERO = 1 << 4;

// ---- structured reply ----
export const REPLY_FLAG_DONE = 1 << 0;
export const REPLY_TYPE_NONE = 0;
export const REPLY_TYPE_OFFSET_DATA = 1;
export const REPLY_TYPE_OFFSET_HOLE = 2;
export const REPLY_TYPE_BLOCK_STATUS = 5;
export const REPLY_TYPE_ERROR = (1 << 15) + 1;
export const REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2;

// ---- base:allocation ----
export const STATE_HOLE = 1 << 0;
export const STATE_ZERO = 1 << 1;
export const BASE_ALLOCATION = 'base:allocation';

// ---- errors (transmission) ----
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

/** Maps a Node/IoError code to the NBD error number (the spec's restricted set). */
export function nbdErrno(code: string | undefined): number {
  switch (code) {
    case 'EPERM':
    case 'EACCES':
    case 'EROFS':
      return NBD_EPERM;
    case 'EINVAL':
      return NBD_EINVAL;
    case 'ENOSPC':
    case 'EDQUOT':
    case 'EFBIG':
      return NBD_ENOSPC;
    case 'ENOMEM':
      return NBD_ENOMEM;
    case 'EOVERFLOW':
      return NBD_EOVERFLOW;
    case 'ENOTSUP':
    case 'EOPNOTSUPP':
      return NBD_ENOTSUP;
    case 'ESHUTDOWN':
      return NBD_ESHUTDOWN;
    default:
      return NBD_EIO;
  }
}

/** The spec limits strings (names, messages) to 4096 bytes. */
export const MAX_STRING = 4096;

export const GREETING_LENGTH = 18;
export const OPTION_HEADER_LENGTH = 16;
export const REQUEST_HEADER_LENGTH = 28;
export const SIMPLE_REPLY_LENGTH = 16;
export const STRUCTURED_HEADER_LENGTH = 20;

const perr = (code: string, message: string): { ok: false; error: ParseError } => err(new ParseError(code, message));

// =============================== handshake ===============================

/** S: NBDMAGIC, IHAVEOPT, 16-bit handshake flags (we always offer FIXED_NEWSTYLE | NO_ZEROES). */
export function buildGreeting(flags = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES): Buffer {
  const b = Buffer.allocUnsafe(GREETING_LENGTH);
  b.writeBigUInt64BE(NBDMAGIC, 0);
  b.writeBigUInt64BE(IHAVEOPT, 8);
  b.writeUInt16BE(flags, 16);
  return b;
}

export interface ClientFlags {
  fixedNewstyle: boolean;
  noZeroes: boolean;
}

/** C: 32-bit client flags. Unknown bits, or bits the server did not offer, are an error (drop the TCP). */
export function parseClientFlags(buf: Buffer, offered = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES): Result<ClientFlags> {
  if (buf.length < 4) return perr('NBD_SHORT', 'client flags: need 4 bytes');
  const f = buf.readUInt32BE(0);
  if ((f & ~offered) >>> 0 !== 0) return perr('NBD_BAD_CLIENT_FLAGS', `client flags 0x${f.toString(16)} not offered`);
  return ok({ fixedNewstyle: (f & FLAG_C_FIXED_NEWSTYLE) !== 0, noZeroes: (f & FLAG_C_NO_ZEROES) !== 0 });
}

export interface OptionHeader {
  option: number;
  length: number;
}

/** C: IHAVEOPT, 32-bit option, 32-bit length. */
export function parseOptionHeader(buf: Buffer): Result<OptionHeader> {
  if (buf.length < OPTION_HEADER_LENGTH) return perr('NBD_SHORT', 'option header: need 16 bytes');
  if (buf.readBigUInt64BE(0) !== IHAVEOPT) return perr('NBD_BAD_MAGIC', 'option header: bad magic');
  return ok({ option: buf.readUInt32BE(8), length: buf.readUInt32BE(12) });
}

/** S: option reply magic, option, reply type, length, data. */
export function buildOptionReply(option: number, type: number, data?: Buffer): Buffer {
  const len = data ? data.length : 0;
  const b = Buffer.allocUnsafe(20 + len);
  b.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0);
  b.writeUInt32BE(option >>> 0, 8);
  b.writeUInt32BE(type >>> 0, 12);
  b.writeUInt32BE(len, 16);
  if (data) data.copy(b, 20);
  return b;
}

/** An error option reply carrying a human message (truncated to the spec's string limit). */
export function buildOptionError(option: number, type: number, message: string): Buffer {
  return buildOptionReply(option, type, utf8Capped(message));
}

function utf8Capped(s: string, max = MAX_STRING): Buffer {
  const b = Buffer.from(s, 'utf8');
  return b.length > max ? b.subarray(0, max) : b;
}

/** NBD_REP_SERVER payload: 32-bit name length, name, then a human description. */
export function buildServerEntry(name: string, description = ''): Buffer {
  const n = utf8Capped(name);
  const d = utf8Capped(description);
  const b = Buffer.allocUnsafe(4 + n.length + d.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  d.copy(b, 4 + n.length);
  return b;
}

/** A string option payload must be valid UTF-8 without NUL. */
function decodeString(buf: Buffer, what: string): Result<string> {
  if (buf.length > MAX_STRING) return perr('NBD_STRING_TOO_LONG', `${what}: ${buf.length} bytes (max ${MAX_STRING})`);
  if (buf.includes(0)) return perr('NBD_BAD_STRING', `${what}: contains NUL`);
  const s = buf.toString('utf8');
  if (Buffer.byteLength(s, 'utf8') !== buf.length || s.includes('\ufffd')) {
    return perr('NBD_BAD_STRING', `${what}: not valid UTF-8`);
  }
  return ok(s);
}

/** NBD_OPT_EXPORT_NAME data: the whole payload is the name. */
export function parseExportName(data: Buffer): Result<string> {
  return decodeString(data, 'export name');
}

export interface InfoRequest {
  name: string;
  /** Requested NBD_INFO_* types (may be empty, may contain unknown values). */
  requests: number[];
}

/** NBD_OPT_INFO / NBD_OPT_GO data: u32 name length, name, u16 count, count × u16 info type. */
export function parseInfoRequest(data: Buffer): Result<InfoRequest> {
  if (data.length < 6) return perr('NBD_SHORT', 'INFO/GO: payload shorter than 6 bytes');
  const nlen = data.readUInt32BE(0);
  if (nlen > data.length - 6) return perr('NBD_BAD_LENGTH', `INFO/GO: name length ${nlen} overruns ${data.length}-byte payload`);
  const name = decodeString(data.subarray(4, 4 + nlen), 'export name');
  if (!name.ok) return name;
  const count = data.readUInt16BE(4 + nlen);
  if (data.length !== 6 + nlen + 2 * count) {
    return perr('NBD_BAD_LENGTH', `INFO/GO: ${count} info requests do not fill the ${data.length}-byte payload`);
  }
  const requests: number[] = [];
  for (let i = 0; i < count; i++) requests.push(data.readUInt16BE(6 + nlen + 2 * i));
  return ok({ name: name.value, requests });
}

export interface MetaContextRequest {
  name: string;
  queries: string[];
}

/** NBD_OPT_{LIST,SET}_META_CONTEXT data: u32 name len, name, u32 count, count × (u32 len, query). */
export function parseMetaContextRequest(data: Buffer): Result<MetaContextRequest> {
  if (data.length < 8) return perr('NBD_SHORT', 'META_CONTEXT: payload shorter than 8 bytes');
  const nlen = data.readUInt32BE(0);
  if (nlen > data.length - 8) return perr('NBD_BAD_LENGTH', `META_CONTEXT: name length ${nlen} overruns payload`);
  const name = decodeString(data.subarray(4, 4 + nlen), 'export name');
  if (!name.ok) return name;
  let p = 4 + nlen;
  const count = data.readUInt32BE(p);
  p += 4;
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (p + 4 > data.length) return perr('NBD_BAD_LENGTH', `META_CONTEXT: query ${i} header overruns payload`);
    const qlen = data.readUInt32BE(p);
    p += 4;
    if (qlen > data.length - p) return perr('NBD_BAD_LENGTH', `META_CONTEXT: query ${i} length ${qlen} overruns payload`);
    const q = decodeString(data.subarray(p, p + qlen), 'meta context query');
    if (!q.ok) return q;
    queries.push(q.value);
    p += qlen;
  }
  if (p !== data.length) return perr('NBD_BAD_LENGTH', 'META_CONTEXT: trailing bytes after the queries');
  return ok({ name: name.value, queries });
}

/** NBD_REP_META_CONTEXT payload: u32 context id, name. */
export function buildMetaContextEntry(id: number, name: string): Buffer {
  const n = utf8Capped(name);
  const b = Buffer.allocUnsafe(4 + n.length);
  b.writeUInt32BE(id >>> 0, 0);
  n.copy(b, 4);
  return b;
}

/** NBD_REP_INFO / NBD_INFO_EXPORT: u16 type, u64 size, u16 transmission flags. */
export function buildInfoExport(size: number, flags: number): Buffer {
  const b = Buffer.allocUnsafe(12);
  b.writeUInt16BE(INFO_EXPORT, 0);
  b.writeBigUInt64BE(BigInt(size), 2);
  b.writeUInt16BE(flags, 10);
  return b;
}

/** NBD_INFO_NAME or NBD_INFO_DESCRIPTION: u16 type, string. */
export function buildInfoString(type: typeof INFO_NAME | typeof INFO_DESCRIPTION, s: string): Buffer {
  const d = utf8Capped(s);
  const b = Buffer.allocUnsafe(2 + d.length);
  b.writeUInt16BE(type, 0);
  d.copy(b, 2);
  return b;
}

/** NBD_INFO_BLOCK_SIZE: u16 type, u32 minimum, u32 preferred, u32 maximum. */
export function buildInfoBlockSize(min: number, preferred: number, max: number): Buffer {
  const b = Buffer.allocUnsafe(14);
  b.writeUInt16BE(INFO_BLOCK_SIZE, 0);
  b.writeUInt32BE(min, 2);
  b.writeUInt32BE(preferred, 6);
  b.writeUInt32BE(max, 10);
  return b;
}

/** Reply to NBD_OPT_EXPORT_NAME: u64 size, u16 flags, 124 zero bytes unless NO_ZEROES was agreed. */
export function buildExportNameReply(size: number, flags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(noZeroes ? 10 : 134);
  b.writeBigUInt64BE(BigInt(size), 0);
  b.writeUInt16BE(flags, 8);
  return b;
}

// =============================== transmission ===============================

export interface Request {
  flags: number;
  type: number;
  handleHi: number;
  handleLo: number;
  /** Byte offset; values beyond 2^53 are reported as `Infinity` (out of range for any export). */
  offset: number;
  length: number;
}

/**
 * Parses a 28-byte request header at `buf[off…]` into `out` (reused by the hot path). Returns false when
 * the magic is wrong (the caller ends the connection: the stream cannot be resynchronised).
 */
export function parseRequestInto(buf: Buffer, off: number, out: Request): boolean {
  if (buf.readUInt32BE(off) !== REQUEST_MAGIC) return false;
  out.flags = buf.readUInt16BE(off + 4);
  out.type = buf.readUInt16BE(off + 6);
  out.handleHi = buf.readUInt32BE(off + 8);
  out.handleLo = buf.readUInt32BE(off + 12);
  const hi = buf.readUInt32BE(off + 16);
  const lo = buf.readUInt32BE(off + 20);
  out.offset = hi >= 0x200000 ? Infinity : hi * 0x100000000 + lo;
  out.length = buf.readUInt32BE(off + 24);
  return true;
}

/** Result-returning variant for tests and cold paths. */
export function parseRequest(buf: Buffer): Result<Request> {
  if (buf.length < REQUEST_HEADER_LENGTH) return perr('NBD_SHORT', 'request: need 28 bytes');
  const r: Request = { flags: 0, type: 0, handleHi: 0, handleLo: 0, offset: 0, length: 0 };
  if (!parseRequestInto(buf, 0, r)) return perr('NBD_BAD_MAGIC', 'request: bad magic');
  return ok(r);
}

/** Builds a request (clients in tests and benchmarks). */
export function buildRequest(type: number, flags: number, handle: bigint, offset: bigint | number, length: number): Buffer {
  const b = Buffer.allocUnsafe(REQUEST_HEADER_LENGTH);
  b.writeUInt32BE(REQUEST_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeBigUInt64BE(handle, 8);
  b.writeBigUInt64BE(BigInt(offset), 16);
  b.writeUInt32BE(length >>> 0, 24);
  return b;
}

/** Writes a 16-byte simple reply header at `buf[off…]`. */
export function writeSimpleReply(buf: Buffer, off: number, error: number, handleHi: number, handleLo: number): void {
  buf.writeUInt32BE(SIMPLE_REPLY_MAGIC, off);
  buf.writeUInt32BE(error, off + 4);
  buf.writeUInt32BE(handleHi, off + 8);
  buf.writeUInt32BE(handleLo, off + 12);
}

/** Writes a 20-byte structured reply chunk header at `buf[off…]`. */
export function writeChunkHeader(
  buf: Buffer, off: number, flags: number, type: number, handleHi: number, handleLo: number, length: number,
): void {
  buf.writeUInt32BE(STRUCTURED_REPLY_MAGIC, off);
  buf.writeUInt16BE(flags, off + 4);
  buf.writeUInt16BE(type, off + 6);
  buf.writeUInt32BE(handleHi, off + 8);
  buf.writeUInt32BE(handleLo, off + 12);
  buf.writeUInt32BE(length, off + 16);
}

/** A simple reply with no payload. */
export function buildSimpleReply(error: number, handleHi: number, handleLo: number): Buffer {
  const b = Buffer.allocUnsafe(SIMPLE_REPLY_LENGTH);
  writeSimpleReply(b, 0, error, handleHi, handleLo);
  return b;
}

/** NBD_REPLY_TYPE_NONE with DONE: a successful structured reply with no payload. */
export function buildStructuredDone(handleHi: number, handleLo: number): Buffer {
  const b = Buffer.allocUnsafe(STRUCTURED_HEADER_LENGTH);
  writeChunkHeader(b, 0, REPLY_FLAG_DONE, REPLY_TYPE_NONE, handleHi, handleLo, 0);
  return b;
}

/**
 * An error chunk (final): NBD_REPLY_TYPE_ERROR, or NBD_REPLY_TYPE_ERROR_OFFSET when `offset` is given.
 * Payload: u32 error, u16 message length, message, [u64 offset].
 */
export function buildStructuredError(handleHi: number, handleLo: number, error: number, message: string, offset?: number): Buffer {
  const m = utf8Capped(message, 1024);
  const extra = offset === undefined ? 0 : 8;
  const len = 6 + m.length + extra;
  const b = Buffer.allocUnsafe(STRUCTURED_HEADER_LENGTH + len);
  writeChunkHeader(b, 0, REPLY_FLAG_DONE, offset === undefined ? REPLY_TYPE_ERROR : REPLY_TYPE_ERROR_OFFSET, handleHi, handleLo, len);
  b.writeUInt32BE(error, 20);
  b.writeUInt16BE(m.length, 24);
  m.copy(b, 26);
  if (offset !== undefined) b.writeBigUInt64BE(BigInt(offset), 26 + m.length);
  return b;
}

/** Bytes before the data in a one-chunk structured read reply: chunk header + u64 offset. */
export const OFFSET_DATA_PREFIX = STRUCTURED_HEADER_LENGTH + 8;

/** Fills the prefix of an OFFSET_DATA chunk (the data follows at `off + OFFSET_DATA_PREFIX`). */
export function writeOffsetDataPrefix(
  buf: Buffer, off: number, flags: number, handleHi: number, handleLo: number, offset: number, dataLength: number,
): void {
  writeChunkHeader(buf, off, flags, REPLY_TYPE_OFFSET_DATA, handleHi, handleLo, 8 + dataLength);
  buf.writeUInt32BE(Math.floor(offset / 0x100000000), off + 20);
  buf.writeUInt32BE(offset >>> 0, off + 24);
}

export interface Extent {
  length: number;
  flags: number;
}

/** NBD_REPLY_TYPE_BLOCK_STATUS (final): u32 context id, then (u32 length, u32 flags) per extent. */
export function buildBlockStatus(handleHi: number, handleLo: number, contextId: number, extents: readonly Extent[]): Buffer {
  const len = 4 + 8 * extents.length;
  const b = Buffer.allocUnsafe(STRUCTURED_HEADER_LENGTH + len);
  writeChunkHeader(b, 0, REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, handleHi, handleLo, len);
  b.writeUInt32BE(contextId >>> 0, 20);
  let p = 24;
  for (const e of extents) {
    b.writeUInt32BE(e.length >>> 0, p);
    b.writeUInt32BE(e.flags >>> 0, p + 4);
    p += 8;
  }
  return b;
}

/** Human names for logs. */
export function commandName(type: number): string {
  return ['READ', 'WRITE', 'DISC', 'FLUSH', 'TRIM', 'CACHE', 'WRITE_ZEROES', 'BLOCK_STATUS'][type] ?? `CMD_${type}`;
}
export function optionName(opt: number): string {
  const names: Record<number, string> = {
    1: 'EXPORT_NAME', 2: 'ABORT', 3: 'LIST', 5: 'STARTTLS', 6: 'INFO', 7: 'GO', 8: 'STRUCTURED_REPLY',
    9: 'LIST_META_CONTEXT', 10: 'SET_META_CONTEXT',
  };
  return names[opt] ?? `OPT_${opt}`;
}
