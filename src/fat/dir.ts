/**
 * FAT directory entries: a pure codec over the bytes of one whole directory (the fixed root, or the
 * concatenated clusters of a directory's chain).
 *
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

function oemString(buf: Buffer, start: number, end: number, lower: boolean): string {
  let s = '';
  for (let i = start; i < end; i++) {
    let b = buf[i]!;
    if (i === start && b === 0x05) b = 0xe5;
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

// Character offsets of the 13 UTF-16 code units in a long-name entry.
const LFN_OFFSETS = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];

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
    if (first === 0x00) break; // end of directory
    if (first === 0xe5) {
      run = undefined;
      continue;
    }
    const attr = buf[off + 11]!;
    if ((attr & 0x3f) === ATTR_LONG_NAME) {
      const ord = first & 0x1f;
      const checksum = buf[off + 13]!;
      if (first & 0x40) {
        // The last (highest) part comes first on disk and starts a new run.
        run = ord >= 1 && ord <= 20 ? { checksum, expect: ord - 1, units: new Array<number>(ord * 13).fill(0) } : undefined;
        if (run === undefined) continue;
        for (let k = 0; k < 13; k++) run.units[(ord - 1) * 13 + k] = buf.readUInt16LE(off + LFN_OFFSETS[k]!);
      } else if (run !== undefined && ord === run.expect && ord >= 1 && checksum === run.checksum) {
        for (let k = 0; k < 13; k++) run.units[(ord - 1) * 13 + k] = buf.readUInt16LE(off + LFN_OFFSETS[k]!);
        run.expect = ord - 1;
      } else {
        run = undefined; // out of order or a different checksum: orphaned
      }
      continue;
    }

    // An 8.3 entry.
    const lfn = run;
    run = undefined;
    const isLabel = (attr & ATTR_VOLUME_ID) !== 0 && (attr & ATTR_DIRECTORY) === 0;
    const nt = buf[off + 12]!;
    const base = oemString(buf, off, off + 8, !isLabel && (nt & 0x08) !== 0);
    const ext = oemString(buf, off + 8, off + 11, !isLabel && (nt & 0x10) !== 0);
    const baseStored = oemString(buf, off, off + 8, false);
    const extStored = oemString(buf, off + 8, off + 11, false);
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
    const hi = opts.fat32 ? buf.readUInt16LE(off + 20) : 0;
    const firstCluster = hi * 0x10000 + buf.readUInt16LE(off + 26);
    out.push({
      kind,
      name,
      shortName,
      hasLongName,
      attributes: attr,
      firstCluster,
      size: kind === 'file' ? buf.readUInt32LE(off + 28) : 0,
      mtime: decodeTimestamp(buf.readUInt16LE(off + 24), buf.readUInt16LE(off + 22))!,
      ctime: decodeTimestamp(buf.readUInt16LE(off + 16), buf.readUInt16LE(off + 14), buf[off + 13]!, true),
      atime: decodeTimestamp(buf.readUInt16LE(off + 18), 0, 0, true),
      index: i,
    });
  }
  return ok(out);
}
