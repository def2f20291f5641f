/**
 * The GPT codec, pure over untrusted bytes (a `Result`, never a throw): the header (signature, size,
 * CRC32, LBAs that fit a safe integer, a bounded entry array) and the entry array (CRC32 against the
 * header, each used entry's LBA range, UTF-16LE names, type and unique GUIDs as canonical text).
 * Finding the header on a device (primary, then backup; 512- or 4096-byte sectors) is partitions.ts's work.
 */
import { crc32 } from './crc32.js';
import { ParseError, err, ok, type Result } from '../util/errors.js';

/** Bytes of GPT partition entries we accept to read (the usual array is 128 × 128 = 16 KiB). */
export const MAX_GPT_ENTRY_BYTES = 1 << 20;

/** GUID bytes → canonical lowercase text (first three fields little-endian, the rest big-endian). */
export function formatGuid(b: Buffer, off = 0): string {
  const h = (from: number, to: number, le: boolean): string => {
    const bytes = Array.from(b.subarray(off + from, off + to));
    if (le) bytes.reverse();
    return bytes.map((x) => x.toString(16).padStart(2, '0')).join('');
  };
  return `${h(0, 4, true)}-${h(4, 6, true)}-${h(6, 8, true)}-${h(8, 10, false)}-${h(10, 16, false)}`;
}

/** Canonical GUID text → 16 bytes in GPT (mixed-endian) order. Used by tests and image builders. */
export function guidToBytes(text: string): Buffer {
  const hex = text.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new ParseError('BAD_GUID', `not a GUID: ${text}`);
  const raw = Buffer.from(hex, 'hex');
  const out = Buffer.from(raw);
  out.writeUInt32LE(raw.readUInt32BE(0), 0);
  out.writeUInt16LE(raw.readUInt16BE(4), 4);
  out.writeUInt16LE(raw.readUInt16BE(6), 6);
  return out;
}

function isAllZero(b: Buffer, from = 0, to = b.length): boolean {
  for (let i = from; i < to; i++) if (b[i] !== 0) return false;
  return true;
}

/** A 64-bit little-endian LBA as a number, or null if it does not fit a safe integer once in bytes. */
function readLba(b: Buffer, off: number, sectorSize: number): number | null {
  const v = b.readBigUInt64LE(off);
  if (v > BigInt(Math.floor(Number.MAX_SAFE_INTEGER / sectorSize))) return null;
  return Number(v);
}

export interface GptHeader {
  revision: number;
  headerSize: number;
  headerCrc: number;
  myLba: number;
  alternateLba: number;
  firstUsableLba: number;
  lastUsableLba: number;
  diskGuid: string;
  entriesLba: number;
  entryCount: number;
  entrySize: number;
  entriesCrc: number;
}

export interface GptEntry {
  /** 0-based index in the entry array (partition number − 1). */
  index: number;
  typeGuid: string;
  uniqueGuid: string;
  firstLba: number;
  lastLba: number;
  attributes: bigint;
  name: string;
}

export const GPT_SIGNATURE = Buffer.from('EFI PART', 'latin1');

/** Parses and checks a GPT header (pure): signature, sizes, CRC32, field ranges. */
export function parseGptHeader(buf: Buffer, sectorSize: number): Result<GptHeader> {
  if (buf.length < 92) return err(new ParseError('GPT_SHORT', `GPT header buffer is ${buf.length} bytes, need 92`));
  if (!buf.subarray(0, 8).equals(GPT_SIGNATURE)) return err(new ParseError('GPT_SIGNATURE', 'no "EFI PART" signature'));
  const headerSize = buf.readUInt32LE(12);
  if (headerSize < 92 || headerSize > sectorSize || headerSize > buf.length) {
    return err(new ParseError('GPT_HEADER_SIZE', `GPT header size ${headerSize} is outside 92…${Math.min(sectorSize, buf.length)}`));
  }
  const headerCrc = buf.readUInt32LE(16);
  const copy = Buffer.from(buf.subarray(0, headerSize));
  copy.writeUInt32LE(0, 16);
  const actual = crc32(copy);
  if (actual !== headerCrc) {
    return err(new ParseError('GPT_HEADER_CRC', `GPT header CRC32 is 0x${headerCrc.toString(16)}, computed 0x${actual.toString(16)}`));
  }
  const lbas: Record<string, number | null> = {
    myLba: readLba(buf, 24, sectorSize),
    alternateLba: readLba(buf, 32, sectorSize),
    firstUsableLba: readLba(buf, 40, sectorSize),
    lastUsableLba: readLba(buf, 48, sectorSize),
    entriesLba: readLba(buf, 72, sectorSize),
  };
  for (const [k, v] of Object.entries(lbas)) {
    if (v === null) return err(new ParseError('GPT_LBA_RANGE', `GPT header ${k} is too large to be a sector on any image`));
  }
  const entryCount = buf.readUInt32LE(80);
  const entrySize = buf.readUInt32LE(84);
  if (entrySize < 128 || entrySize % 128 !== 0) {
    return err(new ParseError('GPT_ENTRY_SIZE', `GPT entry size ${entrySize} is not a multiple of 128`));
  }
  if (entryCount * entrySize > MAX_GPT_ENTRY_BYTES) {
    return err(new ParseError('GPT_ENTRY_COUNT', `GPT claims ${entryCount} entries of ${entrySize} bytes (${entryCount * entrySize} bytes), more than the ${MAX_GPT_ENTRY_BYTES} accepted`));
  }
  const h: GptHeader = {
    revision: buf.readUInt32LE(8),
    headerSize,
    headerCrc,
    myLba: lbas.myLba!,
    alternateLba: lbas.alternateLba!,
    firstUsableLba: lbas.firstUsableLba!,
    lastUsableLba: lbas.lastUsableLba!,
    diskGuid: formatGuid(buf, 56),
    entriesLba: lbas.entriesLba!,
    entryCount,
    entrySize,
    entriesCrc: buf.readUInt32LE(88),
  };
  if (h.myLba === 0 || h.entriesLba === 0) {
    return err(new ParseError('GPT_LBA_RANGE', 'GPT header places itself or its entries at LBA 0, on the protective MBR'));
  }
  if (h.firstUsableLba > h.lastUsableLba + 1) {
    return err(new ParseError('GPT_USABLE_RANGE', `GPT usable range ${h.firstUsableLba}…${h.lastUsableLba} is backwards`));
  }
  return ok(h);
}

/** Parses the entry array (pure): checks its CRC32 against the header and each used entry's LBA range. */
export function parseGptEntries(buf: Buffer, header: Pick<GptHeader, 'entryCount' | 'entrySize' | 'entriesCrc'>): Result<GptEntry[]> {
  const { entryCount, entrySize } = header;
  if (entrySize < 128 || entrySize % 128 !== 0 || entryCount * entrySize > MAX_GPT_ENTRY_BYTES) {
    return err(new ParseError('GPT_ENTRY_SIZE', `GPT entry array ${entryCount}×${entrySize} is not acceptable`));
  }
  const total = entryCount * entrySize;
  if (buf.length < total) {
    return err(new ParseError('GPT_SHORT', `GPT entry array is ${buf.length} bytes, header says ${total}`));
  }
  const actual = crc32(buf.subarray(0, total));
  if (actual !== header.entriesCrc) {
    return err(new ParseError('GPT_ENTRIES_CRC', `GPT entry array CRC32 is 0x${header.entriesCrc.toString(16)}, computed 0x${actual.toString(16)}`));
  }
  const out: GptEntry[] = [];
  for (let i = 0; i < entryCount; i++) {
    const o = i * entrySize;
    if (isAllZero(buf, o, o + 16)) continue; // unused entry
    // LBAs are checked against 4096-byte sectors later; here only "fits a safe integer" at 512.
    const firstLba = readLba(buf, o + 32, 512);
    const lastLba = readLba(buf, o + 40, 512);
    if (firstLba === null || lastLba === null) {
      return err(new ParseError('GPT_LBA_RANGE', `GPT partition ${i + 1} has an LBA too large for any image`));
    }
    if (lastLba < firstLba) {
      return err(new ParseError('GPT_ENTRY_RANGE', `GPT partition ${i + 1} ends (LBA ${lastLba}) before it starts (LBA ${firstLba})`));
    }
    const nameBytes = buf.subarray(o + 56, o + 128);
    let end = 0;
    while (end + 1 < nameBytes.length && (nameBytes[end] !== 0 || nameBytes[end + 1] !== 0)) end += 2;
    out.push({
      index: i,
      typeGuid: formatGuid(buf, o),
      uniqueGuid: formatGuid(buf, o + 16),
      firstLba,
      lastLba,
      attributes: buf.readBigUInt64LE(o + 48),
      name: nameBytes.subarray(0, end).toString('utf16le'),
    });
  }
  return ok(out);
}
