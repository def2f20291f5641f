/**
 * DHCP/BOOTP codec (RFC 951, RFC 2131, RFC 2132, RFC 3396). Pure: bytes in, typed values out, no I/O.
 *
 * - `parseDhcp(buf)` never throws: a short, truncated or lying packet gives `{ ok: false, error: ParseError }`.
 *   Fields and option values of the result are views into `buf` (no copies on the hot path): copy before
 *   changing them in place if `buf` must stay intact.
 * - Options are kept in wire order as raw bytes (unknown codes included). A code that appears more than once
 *   (RFC 3396 "long option" split) is concatenated into one value, placed at its first occurrence. Options
 *   carried in `file`/`sname` through option overload (52) are read too, after the `options` field, then
 *   `file`, then `sname` (RFC 2131 §4.1).
 * - The parsed message remembers the wire layout (which code, how many bytes, in which field, pads, the
 *   bytes after END). `serializeDhcp` reuses that layout while it still matches the option values, so parse
 *   then serialize of a captured packet gives the identical bytes. A message that was built or changed is
 *   laid out fresh: options in order, values over 255 bytes split into consecutive options of the same code,
 *   END, then zero padding to at least 300 bytes (the BOOTP minimum some clients insist on).
 */
import { ParseError, err, ok, type Result } from '../util/errors.js';

export const BOOTREQUEST = 1;
export const BOOTREPLY = 2;
export const DHCP_MAGIC = 0x63825363;
/** Fixed BOOTP header (236 bytes) plus the magic cookie. */
export const DHCP_HEADER_LEN = 240;
export const MIN_REPLY_LEN = 300;

export const MessageType = {
  None: 0, // plain BOOTP
  Discover: 1,
  Offer: 2,
  Request: 3,
  Decline: 4,
  Ack: 5,
  Nak: 6,
  Release: 7,
  Inform: 8,
} as const;

/** Option codes used by netbootd. */
export const Opt = {
  Pad: 0,
  SubnetMask: 1,
  Router: 3,
  HostName: 12,
  VendorSpecific: 43,
  RequestedIp: 50,
  LeaseTime: 51,
  Overload: 52,
  MessageType: 53,
  ServerId: 54,
  ParamRequestList: 55,
  MaxMessageSize: 57,
  VendorClass: 60,
  ClientId: 61,
  TftpServerName: 66,
  BootFileName: 67,
  UserClass: 77,
  ClientArch: 93,
  ClientNdi: 94,
  ClientUuid: 97,
  Etherboot: 175,
  End: 255,
} as const;

export interface DhcpOption {
  code: number;
  /** The value (for a split option: all pieces concatenated). Never includes code or length bytes. */
  data: Buffer;
}

/** Where an option fragment sits on the wire. 0: options field, 1: file, 2: sname (overload order). */
type Area = 0 | 1 | 2;
interface Fragment {
  area: Area;
  /** 0 = one pad byte, 255 = END, otherwise an option code. */
  code: number;
  len: number;
}
/** How a parsed packet was laid out, so that an unchanged message re-serializes byte for byte. */
export interface WireLayout {
  fragments: Fragment[];
  /** Bytes after END (or after the last option) in each area: options, file, sname. */
  tails: [Buffer, Buffer, Buffer];
}

export interface DhcpMessage {
  op: number;
  htype: number;
  hlen: number;
  hops: number;
  xid: number;
  secs: number;
  flags: number;
  ciaddr: string;
  yiaddr: string;
  siaddr: string;
  giaddr: string;
  /** All 16 bytes of the chaddr field (the hardware address is the first `hlen`). */
  chaddr: Buffer;
  /** The raw 64-byte sname field (options, when overloaded). */
  sname: Buffer;
  /** The raw 128-byte file field (options, when overloaded). */
  file: Buffer;
  options: DhcpOption[];
  /** Present on parsed messages; dropped (or ignored) when options no longer match it. */
  layout?: WireLayout;
}

function perr(code: string, message: string): { ok: false; error: ParseError } {
  return err(new ParseError(code, message));
}

function ipAt(buf: Buffer, off: number): string {
  return `${buf[off]}.${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}`;
}

/** Dotted quad → 4 bytes, or null when it is not one. */
export function ipToBytes(ip: string): Buffer | null {
  const parts = ip.split('.');
  if (parts.length !== 4) return null;
  const out = Buffer.alloc(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!;
    if (!/^\d{1,3}$/.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    out[i] = n;
  }
  return out;
}

/** Walks one option area, appending fragments. Returns an error string or null. */
function scanArea(buf: Buffer, start: number, end: number, area: Area, frags: Fragment[], tails: Buffer[]): string | null {
  let p = start;
  while (p < end) {
    const code = buf[p]!;
    if (code === Opt.Pad) {
      frags.push({ area, code: 0, len: 0 });
      p++;
      continue;
    }
    if (code === Opt.End) {
      frags.push({ area, code: 255, len: 0 });
      p++;
      tails[area] = Buffer.from(buf.subarray(p, end));
      return null;
    }
    if (p + 1 >= end) return `option ${code} at offset ${p} has no length byte`;
    const len = buf[p + 1]!;
    if (p + 2 + len > end) return `option ${code} at offset ${p} claims ${len} bytes, only ${end - p - 2} left`;
    frags.push({ area, code, len });
    p += 2 + len;
  }
  // No END: tolerated (many stacks accept it); the layout records its absence.
  tails[area] = Buffer.alloc(0);
  return null;
}

/** Parses a DHCP (or BOOTP-with-cookie) packet. Never throws. */
export function parseDhcp(buf: Buffer): Result<DhcpMessage> {
  if (!Buffer.isBuffer(buf)) return perr('DHCP_NOT_BUFFER', 'not a buffer');
  if (buf.length < DHCP_HEADER_LEN) return perr('DHCP_SHORT', `packet of ${buf.length} bytes is shorter than the ${DHCP_HEADER_LEN}-byte DHCP header`);
  const op = buf[0]!;
  if (op !== BOOTREQUEST && op !== BOOTREPLY) return perr('DHCP_BAD_OP', `op ${op} is neither BOOTREQUEST nor BOOTREPLY`);
  const hlen = buf[2]!;
  if (hlen > 16) return perr('DHCP_BAD_HLEN', `hardware address length ${hlen} exceeds 16`);
  if (buf.readUInt32BE(236) !== DHCP_MAGIC) return perr('DHCP_NO_COOKIE', 'missing DHCP magic cookie');

  const frags: Fragment[] = [];
  const tails: Buffer[] = [Buffer.alloc(0), Buffer.alloc(0), Buffer.alloc(0)];
  const e0 = scanArea(buf, DHCP_HEADER_LEN, buf.length, 0, frags, tails);
  if (e0) return perr('DHCP_TRUNCATED_OPTION', e0);

  // Option overload (52) may only appear in the options field.
  let overload = 0;
  {
    let p = DHCP_HEADER_LEN;
    for (const f of frags) {
      if (f.code === Opt.Overload) {
        if (f.len !== 1) return perr('DHCP_BAD_OVERLOAD', `option 52 has length ${f.len}, expected 1`);
        const v = buf[p + 2]!;
        if (v < 1 || v > 3) return perr('DHCP_BAD_OVERLOAD', `option 52 value ${v} is not 1, 2 or 3`);
        if (overload !== 0 && overload !== v) return perr('DHCP_BAD_OVERLOAD', 'option 52 given twice with different values');
        overload = v;
      }
      p += f.code === 0 || f.code === 255 ? 1 : 2 + f.len;
    }
  }
  if (overload & 1) {
    const e = scanArea(buf, 108, 236, 1, frags, tails);
    if (e) return perr('DHCP_TRUNCATED_OPTION', `in file field: ${e}`);
  }
  if (overload & 2) {
    const e = scanArea(buf, 44, 108, 2, frags, tails);
    if (e) return perr('DHCP_TRUNCATED_OPTION', `in sname field: ${e}`);
  }

  // Collect values: concatenate repeated codes (RFC 3396), in order of first appearance.
  const pieces = new Map<number, Buffer[]>();
  const order: number[] = [];
  const areaStart = [DHCP_HEADER_LEN, 108, 44];
  const cursor = [...areaStart];
  for (const f of frags) {
    const at = cursor[f.area]!;
    if (f.code === 0 || f.code === 255) {
      cursor[f.area] = at + 1;
      continue;
    }
    if (f.area !== 0 && f.code === Opt.Overload) return perr('DHCP_BAD_OVERLOAD', 'option 52 inside an overloaded field');
    const v = buf.subarray(at + 2, at + 2 + f.len);
    let list = pieces.get(f.code);
    if (!list) {
      list = [];
      pieces.set(f.code, list);
      order.push(f.code);
    }
    list.push(v);
    cursor[f.area] = at + 2 + f.len;
  }
  const options: DhcpOption[] = order.map((code) => {
    const list = pieces.get(code)!;
    return { code, data: list.length === 1 ? list[0]! : Buffer.concat(list) };
  });

  return ok({
    op,
    htype: buf[1]!,
    hlen,
    hops: buf[3]!,
    xid: buf.readUInt32BE(4),
    secs: buf.readUInt16BE(8),
    flags: buf.readUInt16BE(10),
    ciaddr: ipAt(buf, 12),
    yiaddr: ipAt(buf, 16),
    siaddr: ipAt(buf, 20),
    giaddr: ipAt(buf, 24),
    chaddr: buf.subarray(28, 44),
    sname: buf.subarray(44, 108),
    file: buf.subarray(108, 236),
    options,
    layout: { fragments: frags, tails: tails as [Buffer, Buffer, Buffer] },
  });
}

/** True when `layout` still describes exactly the message's options (same codes, same total lengths). */
function layoutMatches(msg: DhcpMessage, layout: WireLayout): boolean {
  const total = new Map<number, number>();
  for (const f of layout.fragments) {
    if (f.code === 0 || f.code === 255) continue;
    total.set(f.code, (total.get(f.code) ?? 0) + f.len);
  }
  if (total.size !== msg.options.length) return false;
  for (const o of msg.options) {
    if (total.get(o.code) !== o.data.length) return false;
  }
  return true;
}

function writeIp(out: Buffer, off: number, ip: string): void {
  const b = ipToBytes(ip);
  if (b) b.copy(out, off);
  else out.fill(0, off, off + 4);
}

function writeHeader(out: Buffer, msg: DhcpMessage): void {
  out[0] = msg.op & 0xff;
  out[1] = msg.htype & 0xff;
  out[2] = msg.hlen & 0xff;
  out[3] = msg.hops & 0xff;
  out.writeUInt32BE(msg.xid >>> 0, 4);
  out.writeUInt16BE(msg.secs & 0xffff, 8);
  out.writeUInt16BE(msg.flags & 0xffff, 10);
  writeIp(out, 12, msg.ciaddr);
  writeIp(out, 16, msg.yiaddr);
  writeIp(out, 20, msg.siaddr);
  writeIp(out, 24, msg.giaddr);
  msg.chaddr.copy(out, 28, 0, Math.min(16, msg.chaddr.length));
  msg.sname.copy(out, 44, 0, Math.min(64, msg.sname.length));
  msg.file.copy(out, 108, 0, Math.min(128, msg.file.length));
  out.writeUInt32BE(DHCP_MAGIC, 236);
}

function serializeWithLayout(msg: DhcpMessage, layout: WireLayout): Buffer {
  const size = [0, 0, 0];
  for (const f of layout.fragments) size[f.area]! += f.code === 0 || f.code === 255 ? 1 : 2 + f.len;
  size[0]! += layout.tails[0].length;
  const out = Buffer.alloc(DHCP_HEADER_LEN + size[0]!);
  writeHeader(out, msg);
  const values = new Map(msg.options.map((o) => [o.code, o.data]));
  const used = new Map<number, number>();
  const areaStart = [DHCP_HEADER_LEN, 108, 44];
  const cursor = [...areaStart];
  const ended = [false, false, false];
  for (const f of layout.fragments) {
    let p = cursor[f.area]!;
    if (f.code === 0 || f.code === 255) {
      out[p++] = f.code;
      if (f.code === 255) {
        ended[f.area] = true;
        layout.tails[f.area]!.copy(out, p);
        p += layout.tails[f.area]!.length;
      }
      cursor[f.area] = p;
      continue;
    }
    const v = values.get(f.code)!;
    const from = used.get(f.code) ?? 0;
    out[p] = f.code;
    out[p + 1] = f.len;
    v.copy(out, p + 2, from, from + f.len);
    used.set(f.code, from + f.len);
    cursor[f.area] = p + 2 + f.len;
  }
  if (!ended[0]) layout.tails[0].copy(out, cursor[0]!);
  return out;
}

/**
 * Serializes a message. Parsed-and-unchanged messages come out byte for byte as they came in; anything
 * else is laid out fresh (see the file comment). Values are never truncated: a value longer than 255
 * bytes becomes several options with the same code (RFC 3396).
 */
export function serializeDhcp(msg: DhcpMessage, opts: { minLength?: number } = {}): Buffer {
  if (msg.layout && layoutMatches(msg, msg.layout)) return serializeWithLayout(msg, msg.layout);
  let optLen = 1; // END
  for (const o of msg.options) {
    if (o.code === Opt.Pad || o.code === Opt.End || o.code === Opt.Overload) continue;
    const n = Math.max(1, Math.ceil(o.data.length / 255));
    optLen += 2 * n + o.data.length;
  }
  const minLength = opts.minLength ?? MIN_REPLY_LEN;
  const out = Buffer.alloc(Math.max(minLength, DHCP_HEADER_LEN + optLen));
  // A fresh layout never overloads: sname/file are written as the plain fields, except that fields which
  // held overloaded options are cleared (their bytes are options, not names).
  writeHeader(out, msg);
  const overload = getOption(msg, Opt.Overload);
  if (overload && overload.length === 1) {
    if (overload[0]! & 1) out.fill(0, 108, 236);
    if (overload[0]! & 2) out.fill(0, 44, 108);
  }
  let p = DHCP_HEADER_LEN;
  for (const o of msg.options) {
    if (o.code === Opt.Pad || o.code === Opt.End || o.code === Opt.Overload) continue;
    let off = 0;
    do {
      const n = Math.min(255, o.data.length - off);
      out[p] = o.code;
      out[p + 1] = n;
      o.data.copy(out, p + 2, off, off + n);
      p += 2 + n;
      off += n;
    } while (off < o.data.length);
  }
  out[p] = Opt.End;
  return out;
}

// ---- option helpers ----

export function getOption(msg: DhcpMessage, code: number): Buffer | undefined {
  for (const o of msg.options) if (o.code === code) return o.data;
  return undefined;
}

/** The option as latin1 text (DHCP strings are bytes), without trailing NULs. */
export function getOptionString(msg: DhcpMessage, code: number): string | undefined {
  const v = getOption(msg, code);
  if (v === undefined) return undefined;
  return v.toString('latin1').replace(/\0+$/, '');
}

export function messageType(msg: DhcpMessage): number {
  const v = getOption(msg, Opt.MessageType);
  return v && v.length === 1 ? v[0]! : MessageType.None;
}

/** The client hardware address as aa:bb:cc:dd:ee:ff (first `hlen` bytes of chaddr). */
export function macOf(msg: DhcpMessage): string {
  const n = Math.min(msg.hlen, 16);
  const parts: string[] = [];
  for (let i = 0; i < n; i++) parts.push(msg.chaddr[i]!.toString(16).padStart(2, '0'));
  return parts.join(':');
}

/** A C string from a fixed header field (sname/file), up to the first NUL. */
export function fieldString(field: Buffer): string {
  const z = field.indexOf(0);
  return field.subarray(0, z < 0 ? field.length : z).toString('latin1');
}

/** Writes `text` into a fixed-size field, NUL-padded; null when it does not fit (one byte kept for NUL). */
export function fixedField(text: string, size: number): Buffer | null {
  const b = Buffer.from(text, 'latin1');
  if (b.length >= size) return null;
  const out = Buffer.alloc(size);
  b.copy(out);
  return out;
}

// ---- encapsulated vendor options (option 43) ----

export interface SubOption {
  code: number;
  data: Buffer;
}

/**
 * Parses option 43 (or any encapsulated option space): code/length/value, 0 = pad, 255 = end.
 * Bytes after END are ignored; a sub-option that runs past the end is a ParseError.
 */
export function parseSubOptions(buf: Buffer): Result<SubOption[]> {
  const out: SubOption[] = [];
  let p = 0;
  while (p < buf.length) {
    const code = buf[p]!;
    if (code === 0) {
      p++;
      continue;
    }
    if (code === 255) break;
    if (p + 1 >= buf.length) return perr('DHCP_BAD_SUBOPTION', `sub-option ${code} at ${p} has no length byte`);
    const len = buf[p + 1]!;
    if (p + 2 + len > buf.length) return perr('DHCP_BAD_SUBOPTION', `sub-option ${code} at ${p} claims ${len} bytes, ${buf.length - p - 2} left`);
    out.push({ code, data: Buffer.from(buf.subarray(p + 2, p + 2 + len)) });
    p += 2 + len;
  }
  return ok(out);
}

/** Builds an encapsulated option value; ends with 255 unless `end: false`. Values must be ≤ 255 bytes. */
export function buildSubOptions(subs: SubOption[], opts: { end?: boolean } = {}): Buffer {
  const end = opts.end ?? true;
  let len = end ? 1 : 0;
  for (const s of subs) {
    if (s.data.length > 255) throw new RangeError(`sub-option ${s.code} value of ${s.data.length} bytes exceeds 255`);
    len += 2 + s.data.length;
  }
  const out = Buffer.alloc(len);
  let p = 0;
  for (const s of subs) {
    out[p] = s.code;
    out[p + 1] = s.data.length;
    s.data.copy(out, p + 2);
    p += 2 + s.data.length;
  }
  if (end) out[p] = 255;
  return out;
}

/** An empty message with the header fields zeroed, to build replies from. */
export function emptyMessage(): DhcpMessage {
  return {
    op: BOOTREPLY,
    htype: 1,
    hlen: 6,
    hops: 0,
    xid: 0,
    secs: 0,
    flags: 0,
    ciaddr: '0.0.0.0',
    yiaddr: '0.0.0.0',
    siaddr: '0.0.0.0',
    giaddr: '0.0.0.0',
    chaddr: Buffer.alloc(16),
    sname: Buffer.alloc(64),
    file: Buffer.alloc(128),
    options: [],
  };
}
