/**
 * FAT directory entries, in two layers:
 *
 * - The slot codec: one 32-byte slot ↔ its fields (`ShortSlot` for an 8.3 entry, `LongSlot` for a VFAT
 *   long-name part), decoded and encoded by the same offsets, losslessly: encoding a decoded slot gives
 *   back its bytes. The writer builds and edits entries only through it.
 * - `parseDirectory`: the entries of one whole directory (the fixed root, or the concatenated clusters of a
 *   directory's chain), built from decoded slots.
 *
 * What `parseDirectory` makes of the slots:
 * - 8.3 names, with 0x05 as first byte meaning 0xE5 and the Windows NT lowercase bits (byte 12: 0x08
 *   lowercase base, 0x10 lowercase extension). Bytes >= 0x80 are decoded as code page 850, the default
 *   of mtools (so that names compare equal with `mdir`).
 * - VFAT long names (UTF-16LE): the ordinal sequence (first entry flagged 0x40, counting down to 1) and the
 *   checksum of the 8.3 name are verified; an orphaned, out-of-order or mismatched run of long-name
 *   entries is ignored and the entry falls back to its short name.
 * - Deleted entries (0xE5) are skipped; 0x00 ends the directory.
 * - Timestamps are stored without a time zone; they are decoded as UTC (the fields as stored). Invalid
 *   dates are clamped (month/day 0 → 1); a zero mtime reads as 1980-01-01T00:00:00Z, a zero create or
 *   access date as undefined.
 */
import { ParseError, err, ok, type Result } from '../util/errors.js';

export const ATTR_READ_ONLY = 0x01;
export const ATTR_HIDDEN = 0x02;
export const ATTR_SYSTEM = 0x04;
export const ATTR_VOLUME_ID = 0x08;
export const ATTR_DIRECTORY = 0x10;
export const ATTR_ARCHIVE = 0x20;
export const ATTR_LONG_NAME = 0x0f;

export const DIR_ENTRY_SIZE = 32;
/** A directory holds at most 65536 entries (the spec's limit, and what keeps a directory read bounded). */
export const MAX_DIR_ENTRIES = 65536;
export const MAX_DIR_BYTES = MAX_DIR_ENTRIES * DIR_ENTRY_SIZE;

export type DirEntryKind = 'file' | 'directory' | 'label' | 'dot';

export interface DirEntry {
  readonly kind: DirEntryKind;
  /** The long name if present and valid, else the 8.3 name as displayed (NT lowercase bits applied). */
  readonly name: string;
  /** The 8.3 name as stored, e.g. 'START4.ELF' (a label: the 11 bytes, trimmed). */
  readonly shortName: string;
  readonly hasLongName: boolean;
  readonly attributes: number;
  readonly firstCluster: number;
  readonly size: number;
  readonly mtime: Date;
  readonly ctime: Date | undefined;
  readonly atime: Date | undefined;
  /** Index of the 8.3 entry in the directory (entries of 32 bytes). */
  readonly index: number;
}

const CP850_HIGH =
  'ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜø£Ø×ƒáíóúñÑªº¿®¬½¼¡«»░▒▓│┤ÁÂÀ©╣║╗╝¢¥┐└┴┬├─┼ãÃ╚╔╩╦╠═╬¤ðÐÊËÈıÍÎÏ┘┌█▄¦Ì▀ÓßÔÒõÕµþÞÚÛÙýÝ¯´\u00ad±‗¾¶§÷¸°¨·¹³²■\u00a0';

function oemChar(b: number): string {
  if (b >= 0x80) return CP850_HIGH[b - 0x80]!;
  if (b < 0x20 || b === 0x7f) return '\ufffd';
  return String.fromCharCode(b);
}

/** Characters [start, end) of an 8.3 name (latin1, as decoded), shown in code page 850, trailing spaces dropped. */
function oemString(name: string, start: number, end: number, lower: boolean): string {
  let s = '';
  for (let i = start; i < end; i++) {
    let b = name.charCodeAt(i);
    if (i === 0 && b === 0x05) b = 0xe5;
    if (lower && b >= 0x41 && b <= 0x5a) b += 0x20;
    s += oemChar(b);
  }
  return s.replace(/ +$/, '');
}

/** The VFAT checksum of the 11 name bytes of an 8.3 entry at `off`. */
export function shortNameChecksum(buf: Buffer, off = 0): number {
  let sum = 0;
  for (let i = 0; i < 11; i++) sum = ((((sum & 1) << 7) | (sum >>> 1)) + buf[off + i]!) & 0xff;
  return sum;
}

/** Decodes a FAT date/time pair (and 10 ms units) as UTC; undefined for a zero date when `zeroIsNone`. */
export function decodeTimestamp(date: number, time: number, centis = 0, zeroIsNone = false): Date | undefined {
  if (date === 0 && time === 0) return zeroIsNone ? undefined : new Date(Date.UTC(1980, 0, 1));
  const year = 1980 + (date >>> 9);
  const month = Math.max(1, Math.min(12, (date >>> 5) & 0x0f));
  const day = Math.max(1, date & 0x1f);
  const hour = Math.min(23, time >>> 11);
  const minute = Math.min(59, (time >>> 5) & 0x3f);
  const second = Math.min(59, (time & 0x1f) * 2 + Math.floor(Math.min(centis, 199) / 100));
  const ms = (Math.min(centis, 199) % 100) * 10;
  return new Date(Date.UTC(year, month - 1, day, hour, minute, second, ms));
}

/** A FAT date/time pair with 10 ms units, from the UTC fields of `d` (clamped to 1980..2107). */
export function encodeTimestamp(d: Date): { date: number; time: number; centis: number } {
  let t = d.getTime();
  if (!Number.isFinite(t)) t = Date.UTC(1980, 0, 1);
  t = Math.min(Math.max(t, Date.UTC(1980, 0, 1)), Date.UTC(2107, 11, 31, 23, 59, 59, 990));
  const x = new Date(t);
  const date = ((x.getUTCFullYear() - 1980) << 9) | ((x.getUTCMonth() + 1) << 5) | x.getUTCDate();
  const time = (x.getUTCHours() << 11) | (x.getUTCMinutes() << 5) | (x.getUTCSeconds() >>> 1);
  const centis = (x.getUTCSeconds() & 1) * 100 + Math.floor(x.getUTCMilliseconds() / 10);
  return { date, time, centis };
}

// -----------------------------------------------------------------------------------------------------------
// The slot codec

/** An 8.3 entry, field by field (byte offsets in the comments). */
export interface ShortSlot {
  readonly kind: 'short';
  /** 0..10: the 8.3 name's 11 bytes as latin1 (first byte 0xE5: deleted, 0x00: end, 0x05: stands for 0xE5). */
  name: string;
  /** 11 */
  attributes: number;
  /** 12: Windows NT case bits (0x08 lowercase base, 0x10 lowercase extension). */
  ntCase: number;
  /** 13: creation time, 10 ms units (0..199). */
  createCentis: number;
  /** 14 */
  createTime: number;
  /** 16 */
  createDate: number;
  /** 18 */
  accessDate: number;
  /** 20: high 16 bits of the first cluster (FAT32; FAT12/16 do not use it). */
  clusterHigh: number;
  /** 22 */
  writeTime: number;
  /** 24 */
  writeDate: number;
  /** 26: low 16 bits of the first cluster. */
  clusterLow: number;
  /** 28 */
  size: number;
}

/** One part of a VFAT long name, field by field. */
export interface LongSlot {
  readonly kind: 'long';
  /** 0: the part's ordinal (1..20), flagged 0x40 on the last part (which comes first on disk); 0xE5: deleted. */
  order: number;
  /** 11: 0x0F (the top two bits as stored). */
  attributes: number;
  /** 12: 0. */
  type: number;
  /** 13: checksum of the 8.3 name the long name belongs to. */
  checksum: number;
  /** 1..10, 14..25, 28..31: the part's 13 UTF-16 code units. */
  units: number[];
  /** 26: 0. */
  cluster: number;
}

export type Slot = ShortSlot | LongSlot;

/** First byte of a deleted slot. */
export const SLOT_DELETED = 0xe5;
/** First byte of the slot that ends the directory (it and every slot after it are free). */
export const SLOT_END = 0x00;

/** True when the slot at `off` is free: deleted, or at or past the end of the directory. */
export function isFreeSlot(buf: Buffer, off: number): boolean {
  const b = buf[off];
  return b === SLOT_DELETED || b === SLOT_END;
}

/** Marks the slot at `off` deleted (its other bytes stay, as every FAT implementation leaves them). */
export function deleteSlot(buf: Buffer, off: number): void {
  buf[off] = SLOT_DELETED;
}

// Byte offsets of the 13 UTF-16 code units in a long-name slot.
const LFN_OFFSETS = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
/** UTF-16 code units per long-name slot. */
const LFN_UNITS = 13;

/** True when the slot at `off` is a long-name part (attributes 0x0F in the low six bits). */
export function isLongSlot(buf: Buffer, off: number): boolean {
  return (buf[off + 11]! & 0x3f) === ATTR_LONG_NAME;
}

export function decodeShortSlot(buf: Buffer, off: number): ShortSlot {
  return {
    kind: 'short',
    name: buf.toString('latin1', off, off + 11),
    attributes: buf[off + 11]!,
    ntCase: buf[off + 12]!,
    createCentis: buf[off + 13]!,
    createTime: buf.readUInt16LE(off + 14),
    createDate: buf.readUInt16LE(off + 16),
    accessDate: buf.readUInt16LE(off + 18),
    clusterHigh: buf.readUInt16LE(off + 20),
    writeTime: buf.readUInt16LE(off + 22),
    writeDate: buf.readUInt16LE(off + 24),
    clusterLow: buf.readUInt16LE(off + 26),
    size: buf.readUInt32LE(off + 28),
  };
}

export function decodeLongSlot(buf: Buffer, off: number): LongSlot {
  const units = new Array<number>(LFN_UNITS);
  for (let k = 0; k < LFN_UNITS; k++) units[k] = buf.readUInt16LE(off + LFN_OFFSETS[k]!);
  return {
    kind: 'long',
    order: buf[off]!,
    attributes: buf[off + 11]!,
    type: buf[off + 12]!,
    checksum: buf[off + 13]!,
    units,
    cluster: buf.readUInt16LE(off + 26),
  };
}

/** The slot at `off`, as a long-name part or an 8.3 entry (free and deleted slots decode too). */
export function decodeSlot(buf: Buffer, off: number): Slot {
  return isLongSlot(buf, off) ? decodeLongSlot(buf, off) : decodeShortSlot(buf, off);
}

/** Writes `slot` as the 32 bytes at `off`. */
export function encodeSlot(slot: Slot, buf: Buffer, off: number): void {
  if (slot.kind === 'short') {
    buf.write(slot.name.padEnd(11, ' ').slice(0, 11), off, 11, 'latin1');
    buf[off + 11] = slot.attributes;
    buf[off + 12] = slot.ntCase;
    buf[off + 13] = slot.createCentis;
    buf.writeUInt16LE(slot.createTime, off + 14);
    buf.writeUInt16LE(slot.createDate, off + 16);
    buf.writeUInt16LE(slot.accessDate, off + 18);
    buf.writeUInt16LE(slot.clusterHigh, off + 20);
    buf.writeUInt16LE(slot.writeTime, off + 22);
    buf.writeUInt16LE(slot.writeDate, off + 24);
    buf.writeUInt16LE(slot.clusterLow, off + 26);
    buf.writeUInt32LE(slot.size, off + 28);
    return;
  }
  buf[off] = slot.order;
  for (let k = 0; k < LFN_UNITS; k++) buf.writeUInt16LE(slot.units[k] ?? 0, off + LFN_OFFSETS[k]!);
  buf[off + 11] = slot.attributes;
  buf[off + 12] = slot.type;
  buf[off + 13] = slot.checksum;
  buf.writeUInt16LE(slot.cluster, off + 26);
}

/** An 8.3 entry named `name` (11 bytes, latin1) with every other field 0. */
export function newShortSlot(name: string): ShortSlot {
  return {
    kind: 'short', name, attributes: 0, ntCase: 0, createCentis: 0, createTime: 0, createDate: 0, accessDate: 0,
    clusterHigh: 0, writeTime: 0, writeDate: 0, clusterLow: 0, size: 0,
  };
}

/** The first cluster of an 8.3 entry (FAT12/16 ignore the high word). */
export function slotCluster(s: ShortSlot, fat32: boolean): number {
  return (fat32 ? s.clusterHigh * 0x10000 : 0) + s.clusterLow;
}

/** Sets the first cluster of an 8.3 entry (the high word stays 0 on FAT12/16). */
export function setSlotCluster(s: ShortSlot, cluster: number, fat32: boolean): void {
  s.clusterHigh = fat32 ? cluster >>> 16 : 0;
  s.clusterLow = cluster & 0xffff;
}

/** Stamps the modification and access times (and with `created`, the creation time) from `when`. */
export function stampSlot(s: ShortSlot, when: Date, created: boolean): void {
  const t = encodeTimestamp(when);
  if (created) {
    s.createCentis = t.centis;
    s.createTime = t.time;
    s.createDate = t.date;
  }
  s.accessDate = t.date;
  s.writeTime = t.time;
  s.writeDate = t.date;
}

/** The long-name slots of `name` for the 8.3 name `short` (11 bytes), in on-disk order (highest ordinal first). */
export function longNameSlots(name: string, short: Buffer): LongSlot[] {
  const units: number[] = [];
  for (let i = 0; i < name.length; i++) units.push(name.charCodeAt(i));
  const count = Math.ceil(units.length / LFN_UNITS);
  if (units.length % LFN_UNITS !== 0) {
    units.push(0);
    while (units.length % LFN_UNITS !== 0) units.push(0xffff);
  }
  const checksum = shortNameChecksum(short, 0);
  const out: LongSlot[] = [];
  for (let k = 0; k < count; k++) {
    const ord = count - k; // on disk, the last part first
    out.push({
      kind: 'long', order: ord | (k === 0 ? 0x40 : 0), attributes: ATTR_LONG_NAME, type: 0, checksum,
      units: units.slice((ord - 1) * LFN_UNITS, ord * LFN_UNITS), cluster: 0,
    });
  }
  return out;
}

/** The long-name slots of `name` for the 8.3 name `short`, encoded. */
export function longNameEntries(name: string, short: Buffer): Buffer {
  const slots = longNameSlots(name, short);
  const out = Buffer.alloc(slots.length * DIR_ENTRY_SIZE);
  slots.forEach((s, k) => encodeSlot(s, out, k * DIR_ENTRY_SIZE));
  return out;
}

// -----------------------------------------------------------------------------------------------------------
// Whole directories

interface LfnRun {
  checksum: number;
  /** The ordinal the next entry must carry (0 once the run is complete). */
  expect: number;
  /** Code units, 13 per entry, indexed by ordinal-1. */
  units: number[];
}

function decodeLfn(run: LfnRun): string | undefined {
  const units = run.units;
  let end = units.indexOf(0);
  if (end < 0) end = units.length;
  while (end > 0 && units[end - 1] === 0xffff) end--; // padding without a terminator
  if (end === 0) return undefined;
  let s = '';
  for (let i = 0; i < end; i++) s += String.fromCharCode(units[i]!);
  return s;
}

export interface ParseDirectoryOptions {
  /** FAT32 stores the high 16 bits of the first cluster at offset 20; FAT12/16 do not. */
  readonly fat32: boolean;
  /** Entries past this many are an error (directories hold at most 65536 entries). */
  readonly maxEntries?: number;
}

/**
 * Parses the entries of one directory. Never throws: a buffer that is not a whole number of 32-byte
 * entries, or too many entries, is a `ParseError`. Returns live entries only (no deleted entries, no
 * long-name entries), including '.'/'..' (kind 'dot') and the volume label (kind 'label').
 */
export function parseDirectory(buf: Buffer, opts: ParseDirectoryOptions): Result<DirEntry[]> {
  if (!Buffer.isBuffer(buf) || buf.length % DIR_ENTRY_SIZE !== 0) {
    return err(new ParseError('EBADDIR', `directory of ${Buffer.isBuffer(buf) ? buf.length : '?'} bytes is not a whole number of 32-byte entries`));
  }
  const max = opts.maxEntries ?? MAX_DIR_ENTRIES;
  const count = buf.length / DIR_ENTRY_SIZE;
  if (count > max) return err(new ParseError('EBADDIR', `directory has ${count} entries, more than ${max}`));

  const out: DirEntry[] = [];
  let run: LfnRun | undefined;
  for (let i = 0; i < count; i++) {
    const off = i * DIR_ENTRY_SIZE;
    const first = buf[off]!;
    if (first === SLOT_END) break;
    if (first === SLOT_DELETED) {
      run = undefined;
      continue;
    }
    if (isLongSlot(buf, off)) {
      const part = decodeLongSlot(buf, off);
      const ord = first & 0x1f;
      if (first & 0x40) {
        // The last (highest) part comes first on disk and starts a new run.
        run = ord >= 1 && ord <= 20 ? { checksum: part.checksum, expect: ord - 1, units: new Array<number>(ord * LFN_UNITS).fill(0) } : undefined;
        if (run === undefined) continue;
        for (let k = 0; k < LFN_UNITS; k++) run.units[(ord - 1) * LFN_UNITS + k] = part.units[k]!;
      } else if (run !== undefined && ord === run.expect && ord >= 1 && part.checksum === run.checksum) {
        for (let k = 0; k < LFN_UNITS; k++) run.units[(ord - 1) * LFN_UNITS + k] = part.units[k]!;
        run.expect = ord - 1;
      } else {
        run = undefined; // out of order or a different checksum: orphaned
      }
      continue;
    }

    // An 8.3 entry.
    const slot = decodeShortSlot(buf, off);
    const lfn = run;
    run = undefined;
    const attr = slot.attributes;
    const isLabel = (attr & ATTR_VOLUME_ID) !== 0 && (attr & ATTR_DIRECTORY) === 0;
    const nt = slot.ntCase;
    const base = oemString(slot.name, 0, 8, !isLabel && (nt & 0x08) !== 0);
    const ext = oemString(slot.name, 8, 11, !isLabel && (nt & 0x10) !== 0);
    const baseStored = oemString(slot.name, 0, 8, false);
    const extStored = oemString(slot.name, 8, 11, false);
    let kind: DirEntryKind;
    let shortName: string;
    let display: string;
    if (isLabel) {
      kind = 'label';
      shortName = (baseStored.padEnd(8, ' ') + extStored).replace(/ +$/, '');
      display = shortName;
    } else {
      shortName = extStored ? `${baseStored}.${extStored}` : baseStored;
      display = ext ? `${base}.${ext}` : base;
      const isDot = first === 0x2e && (shortName === '.' || shortName === '..');
      kind = isDot ? 'dot' : attr & ATTR_DIRECTORY ? 'directory' : 'file';
    }
    let name = display;
    let hasLongName = false;
    if (lfn !== undefined && lfn.expect === 0 && kind !== 'label' && kind !== 'dot' && lfn.checksum === shortNameChecksum(buf, off)) {
      const long = decodeLfn(lfn);
      if (long !== undefined) {
        name = long;
        hasLongName = true;
      }
    }
    out.push({
      kind,
      name,
      shortName,
      hasLongName,
      attributes: attr,
      firstCluster: slotCluster(slot, opts.fat32),
      size: kind === 'file' ? slot.size : 0,
      mtime: decodeTimestamp(slot.writeDate, slot.writeTime)!,
      ctime: decodeTimestamp(slot.createDate, slot.createTime, slot.createCentis, true),
      atime: decodeTimestamp(slot.accessDate, 0, 0, true),
      index: i,
    });
  }
  return ok(out);
}
