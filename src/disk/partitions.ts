/**
 * Partition tables: MBR (four primaries, an extended partition with logical partitions through the EBR
 * chain, numbered 5, 6, … as Linux does), GPT (header and entry-array CRC32 checked, the backup header at
 * the last LBA used when the primary is damaged, UTF-16LE names, type GUIDs), 512- and 4096-byte sectors.
 *
 * The `parse*` functions are pure codecs over untrusted bytes: they return a `Result`, never throw.
 * `readPartitionTable` does the (little) I/O and rejects only with `NetbootError` subclasses: a partition
 * past the end of the image, an EBR loop, a lying entry count, overlapping partitions → `CorruptError` or
 * `ParseError` whose message names the problem.
 *
 * Choices:
 * - An MBR extended partition (types 05, 0f, 85) is listed, like `sfdisk` and Linux do, with
 *   `typeName: 'Extended'` and `extended: true`; it cannot be opened (`openPartition` refuses it).
 * - Sector 0 that is a FAT boot sector (a "superfloppy", no partition table) gives `scheme: 'none'`:
 *   pass the whole device to the FAT layer. So does an image with no 55AA boot signature.
 * - An MBR holding an 0xEE (protective) entry is read as GPT; a hybrid MBR's other entries are ignored,
 *   as Linux does. A GPT header with no protective MBR is ignored (with a warning), as the spec says.
 * - MBR sectors are 512 bytes unless `opts.sectorSize` says 4096; GPT is probed at LBA 1 for 512 then
 *   4096 unless `opts.sectorSize` is given.
 */
import { readAt, SliceBlockDevice, type BlockDevice } from './blockdev.js';
import { crc32 } from './crc32.js';
import { CorruptError, NotFoundError, ParseError, err, ok, type Result } from '../util/errors.js';

export { crc32 } from './crc32.js';

export type Scheme = 'mbr' | 'gpt';

export interface Partition {
  /** 1-4 primaries, 5, 6, … logical partitions through the EBR chain (Linux numbering); GPT: entry index + 1. */
  number: number;
  scheme: Scheme;
  /** Bytes from the start of the device. */
  start: number;
  /** Bytes. */
  size: number;
  /** MBR: two lowercase hex digits such as '0c'; GPT: the type GUID, lowercase canonical text. */
  type: string;
  /** Human name: 'W95 FAT32 (LBA)', 'Linux', 'EFI System', 'Microsoft basic data', 'Extended', … or 'unknown'. */
  typeName: string;
  /** GPT partition name (UTF-16LE decoded, up to the first NUL). */
  name?: string;
  /** GPT unique partition GUID. */
  guid?: string;
  /** MBR active (boot) flag. */
  bootable?: boolean;
  /** True for an MBR extended partition: a container of logical partitions, not something to open. */
  extended?: boolean;
  /** What Linux shows as PARTUUID: the GPT unique GUID, or `<mbr disk id>-<nn>` for MBR. */
  partUuid?: string;
}

export interface PartitionTable {
  scheme: Scheme | 'none';
  sectorSize: 512 | 4096;
  /** MBR disk signature as 8 lowercase hex digits, or the GPT disk GUID. */
  diskId?: string;
  /** Sorted by number. */
  partitions: Partition[];
  /** Problems worked around, e.g. 'primary GPT header damaged (…); used the backup at LBA 131071'. */
  warnings: string[];
}

export interface ReadPartitionTableOptions {
  /** Logical sector size. MBR defaults to 512; GPT is probed at 512 then 4096 unless this is given. */
  sectorSize?: 512 | 4096;
}

/** Bytes of GPT partition entries we accept to read (the usual array is 128 × 128 = 16 KiB). */
export const MAX_GPT_ENTRY_BYTES = 1 << 20;
/** Longest EBR chain followed; a longer one is reported as corrupt. */
export const MAX_LOGICAL_PARTITIONS = 256;

// ---------------------------------------------------------------------------------------------------------
// Names

const MBR_TYPE_NAMES: Record<number, string> = {
  0x01: 'FAT12',
  0x04: 'FAT16 <32M',
  0x05: 'Extended',
  0x06: 'FAT16',
  0x07: 'HPFS/NTFS/exFAT',
  0x0b: 'W95 FAT32',
  0x0c: 'W95 FAT32 (LBA)',
  0x0e: 'W95 FAT16 (LBA)',
  0x0f: "W95 Ext'd (LBA)",
  0x11: 'Hidden FAT12',
  0x14: 'Hidden FAT16 <32M',
  0x16: 'Hidden FAT16',
  0x17: 'Hidden HPFS/NTFS',
  0x1b: 'Hidden W95 FAT32',
  0x1c: 'Hidden W95 FAT32 (LBA)',
  0x1e: 'Hidden W95 FAT16 (LBA)',
  0x27: 'Hidden NTFS WinRE',
  0x82: 'Linux swap / Solaris',
  0x83: 'Linux',
  0x85: 'Linux extended',
  0x8e: 'Linux LVM',
  0xa5: 'FreeBSD',
  0xa6: 'OpenBSD',
  0xa8: 'Darwin UFS',
  0xa9: 'NetBSD',
  0xaf: 'HFS / HFS+',
  0xda: 'Non-FS data',
  0xee: 'GPT',
  0xef: 'EFI (FAT-12/16/32)',
  0xfd: 'Linux raid autodetect',
};

const GPT_TYPE_NAMES: Record<string, string> = {
  'c12a7328-f81f-11d2-ba4b-00a0c93ec93b': 'EFI System',
  '21686148-6449-6e6f-744e-656564454649': 'BIOS boot',
  'ebd0a0a2-b9e5-4433-87c0-68b6b72699c7': 'Microsoft basic data',
  'e3c9e316-0b5c-4db8-817d-f92df00215ae': 'Microsoft reserved',
  'de94bba4-06d1-4d40-a16a-bfd50179d6ac': 'Windows recovery environment',
  '0fc63daf-8483-4772-8e79-3d69d8477de4': 'Linux filesystem',
  '0657fd6d-a4ab-43c4-84e5-0933c84b4f4f': 'Linux swap',
  'e6d6d379-f507-44c2-a23c-238f2a3df928': 'Linux LVM',
  'a19d880f-05fc-4d3b-a006-743f0f84911e': 'Linux RAID',
  '933ac7e1-2eb4-4f13-b844-0e14e2aef915': 'Linux home',
  'bc13c2ff-59e6-4262-a352-b275fd6f7172': 'Linux extended boot',
  '44479540-f297-41b2-9af7-d131d5f0458a': 'Linux root (x86)',
  '4f68bce3-e8cd-4db1-96e7-fbcaf984b709': 'Linux root (x86-64)',
  '69dad710-2ce4-4e3c-b16c-21a1d49abed3': 'Linux root (ARM)',
  'b921b045-1df0-41c3-af44-4c6f280d3fae': 'Linux root (ARM-64)',
  '48465300-0000-11aa-aa11-00306543ecac': 'Apple HFS/HFS+',
  '7c3457ef-0000-11aa-aa11-00306543ecac': 'Apple APFS',
  'fe3a2a5d-4f32-41a7-b725-accc3285a309': 'ChromeOS kernel',
};

const EXTENDED_TYPES = new Set([0x05, 0x0f, 0x85]);
const PROTECTIVE_TYPE = 0xee;

export function mbrTypeName(type: number): string {
  if (EXTENDED_TYPES.has(type)) return 'Extended';
  return MBR_TYPE_NAMES[type] ?? 'unknown';
}

export function gptTypeName(guid: string): string {
  return GPT_TYPE_NAMES[guid.toLowerCase()] ?? 'unknown';
}

/** True for MBR types that normally hold a FAT file system (the CLI and resolvers try those first). */
export function isFatMbrType(type: string): boolean {
  return ['01', '04', '06', '0b', '0c', '0e', '11', '14', '16', '1b', '1c', '1e', 'ef'].includes(type);
}

// ---------------------------------------------------------------------------------------------------------
// Small byte helpers

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

function hex2(n: number): string {
  return n.toString(16).padStart(2, '0');
}

/**
 * Does this sector look like a FAT boot sector (BPB) rather than an MBR? Used to tell a superfloppy from a
 * partitioned disk. The checks are the ones Linux's msdos partition code and the FAT spec rely on.
 */
export function looksLikeFatBootSector(s: Buffer): boolean {
  if (s.length < 512) return false;
  if (!(s[0] === 0xeb || s[0] === 0xe9)) return false;
  const bps = s.readUInt16LE(11);
  if (![512, 1024, 2048, 4096].includes(bps)) return false;
  const spc = s[13]!;
  if (spc === 0 || (spc & (spc - 1)) !== 0) return false;
  if (s.readUInt16LE(14) === 0) return false; // reserved sectors
  if (s[16] === 0) return false; // number of FATs
  const media = s[21]!;
  return media === 0xf0 || media >= 0xf8;
}

// ---------------------------------------------------------------------------------------------------------
// MBR / EBR codec

export interface MbrEntry {
  /** 1-4: position in the sector. */
  slot: number;
  status: number;
  /** Partition type byte. */
  type: number;
  /** First sector (relative to whatever the entry is relative to). */
  startLba: number;
  sectors: number;
}

export interface MbrSector {
  /** The 32-bit disk signature at byte 440. */
  diskSignature: number;
  /** The signature as 8 lowercase hex digits (`sfdisk`'s label-id without 0x). */
  diskId: string;
  /** The used entries (type ≠ 0 and sector count ≠ 0), in slot order. */
  entries: MbrEntry[];
  /** True when an entry has type 0xEE: the disk is GPT. */
  protective: boolean;
}

function readEntries(sector: Buffer): MbrEntry[] {
  const out: MbrEntry[] = [];
  for (let slot = 1; slot <= 4; slot++) {
    const o = 446 + (slot - 1) * 16;
    const type = sector[o + 4]!;
    const sectors = sector.readUInt32LE(o + 12);
    if (type === 0 || sectors === 0) continue;
    out.push({ slot, status: sector[o]!, type, startLba: sector.readUInt32LE(o + 8), sectors });
  }
  return out;
}

function checkBootSignature(sector: Buffer, what: string): ParseError | null {
  if (sector.length < 512) return new ParseError('SHORT_SECTOR', `${what} is ${sector.length} bytes, need 512`);
  if (sector[510] !== 0x55 || sector[511] !== 0xaa) {
    return new ParseError('NO_BOOT_SIGNATURE', `${what} has no 55AA boot signature`);
  }
  return null;
}

/** Parses sector 0 as an MBR (pure). Fails without a 55AA signature or with a boot flag other than 00/80. */
export function parseMbr(sector: Buffer): Result<MbrSector> {
  const bad = checkBootSignature(sector, 'sector 0');
  if (bad) return err(bad);
  for (let slot = 1; slot <= 4; slot++) {
    const status = sector[446 + (slot - 1) * 16]!;
    if (status !== 0 && status !== 0x80) {
      return err(new ParseError('BAD_BOOT_FLAG', `MBR entry ${slot} has boot flag 0x${hex2(status)} (want 00 or 80): not a partition table`));
    }
  }
  const entries = readEntries(sector);
  const diskSignature = sector.readUInt32LE(440);
  return ok({
    diskSignature,
    diskId: diskSignature.toString(16).padStart(8, '0'),
    entries,
    protective: entries.some((e) => e.type === PROTECTIVE_TYPE),
  });
}

export interface EbrSector {
  /** The logical partition this EBR describes (start relative to the EBR itself). */
  data?: MbrEntry;
  /** The link to the next EBR (start relative to the start of the extended partition). */
  link?: MbrEntry;
  /** Used entries that were neither (ignored, as libfdisk does). */
  ignored: number;
}

/** Parses an extended boot record (pure): the first data entry and the first link entry, as libfdisk reads it. */
export function parseEbr(sector: Buffer): Result<EbrSector> {
  const bad = checkBootSignature(sector, 'EBR');
  if (bad) return err(bad);
  const out: EbrSector = { ignored: 0 };
  for (const e of readEntries(sector)) {
    if (EXTENDED_TYPES.has(e.type)) {
      if (!out.link) out.link = e;
      else out.ignored++;
    } else if (!out.data) out.data = e;
    else out.ignored++;
  }
  return ok(out);
}

// ---------------------------------------------------------------------------------------------------------
// GPT codec

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

const GPT_SIGNATURE = Buffer.from('EFI PART', 'latin1');

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

// ---------------------------------------------------------------------------------------------------------
// Reading a device

/** Reads and checks the partition table of `dev`. Rejects only with NetbootError subclasses. */
/** Compressed-file magic numbers a downloaded image comes in (`.img.xz`, `.img.gz`, …), with the command that unpacks it. */
const COMPRESSED: Array<{ magic: Buffer; name: string; tool: string }> = [
  { magic: Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), name: 'xz', tool: 'unxz FILE' },
  { magic: Buffer.from([0x1f, 0x8b]), name: 'gzip', tool: 'gunzip FILE' },
  { magic: Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), name: 'zstd', tool: 'unzstd FILE' },
  { magic: Buffer.from('BZh', 'latin1'), name: 'bzip2', tool: 'bunzip2 FILE' },
  { magic: Buffer.from([0x50, 0x4b, 0x03, 0x04]), name: 'zip', tool: 'unzip FILE' },
];

/** The compression a file's first bytes announce, if any (pure). */
export function compressedFormat(head: Buffer): { name: string; tool: string } | null {
  for (const c of COMPRESSED) {
    if (head.length >= c.magic.length && head.subarray(0, c.magic.length).equals(c.magic)) {
      // `BZh` must be followed by a block size digit; anything else is a coincidence.
      if (c.name === 'bzip2' && !(head[3]! >= 0x31 && head[3]! <= 0x39)) continue;
      return { name: c.name, tool: c.tool };
    }
  }
  return null;
}

export async function readPartitionTable(dev: BlockDevice, opts: ReadPartitionTableOptions = {}): Promise<PartitionTable> {
  const warnings: string[] = [];
  const defaultSs: 512 | 4096 = opts.sectorSize ?? 512;
  if (opts.sectorSize !== undefined && opts.sectorSize !== 512 && opts.sectorSize !== 4096) {
    throw new ParseError('SECTOR_SIZE', `sector size ${String(opts.sectorSize)} is not 512 or 4096`);
  }
  const none = (): PartitionTable => ({ scheme: 'none', sectorSize: defaultSs, partitions: [], warnings });
  const packed = dev.size >= 4 ? compressedFormat(await readAt(dev, 0, Math.min(dev.size, 8))) : null;
  if (packed) {
    const file = dev.name.split('/').pop() ?? dev.name;
    throw new ParseError('COMPRESSED', `${packed.name}-compressed, not a disk image: decompress it first (${packed.tool.replace('FILE', file)})`);
  }
  if (dev.size < 512) return none();
  const sector0 = await readAt(dev, 0, 512);
  const mbr = parseMbr(sector0);
  if (!mbr.ok) {
    if (mbr.error.code === 'NO_BOOT_SIGNATURE') {
      if (await hasGptSignature(dev, opts.sectorSize)) warnings.push('a GPT header is present but there is no protective MBR: ignored');
    } else if (!looksLikeFatBootSector(sector0)) {
      warnings.push(mbr.error.message);
    }
    return none();
  }
  if (mbr.value.protective) return readGpt(dev, opts.sectorSize, warnings);
  const fatLike = looksLikeFatBootSector(sector0);
  if (mbr.value.entries.length === 0 && fatLike) return none();
  try {
    return await readMbr(dev, mbr.value, defaultSs, warnings);
  } catch (e) {
    // A FAT boot sector whose boot code happens to pass as partition entries: a superfloppy after all.
    if (fatLike && (e instanceof CorruptError || e instanceof ParseError)) {
      warnings.push(`sector 0 is a FAT boot sector; its bytes at the partition table are not a valid table (${e.message})`);
      return none();
    }
    throw e;
  }
}

/**
 * Opens partition `number` as a window on `dev`. `number` 0 means the whole device, allowed only when the
 * table has no scheme (a superfloppy). NotFoundError when there is no such partition or it is an extended
 * container.
 */
export function openPartition(dev: BlockDevice, table: PartitionTable, number: number): BlockDevice {
  if (number === 0 && table.scheme === 'none') return new SliceBlockDevice(dev, 0, dev.size, dev.name);
  const p = table.partitions.find((x) => x.number === number);
  if (!p) {
    const have = table.partitions.filter((x) => !x.extended).map((x) => x.number);
    const hint = table.scheme === 'none' ? 'the image has no partition table (use 0 for the whole image)' : `it has ${have.length ? have.join(', ') : 'none'}`;
    throw new NotFoundError('NO_PARTITION', `${dev.name}: no partition ${number}: ${hint}`);
  }
  if (p.extended) {
    throw new NotFoundError('EXTENDED_PARTITION', `${dev.name}: partition ${number} is an extended partition (a container of logical partitions 5+), not a file system`);
  }
  return new SliceBlockDevice(dev, p.start, p.size, `${dev.name}#p${number}`);
}

async function hasGptSignature(dev: BlockDevice, only?: 512 | 4096): Promise<boolean> {
  for (const ss of only ? [only] : [512, 4096]) {
    if (ss + 8 > dev.size) continue;
    if ((await readAt(dev, ss, 8)).equals(GPT_SIGNATURE)) return true;
  }
  return false;
}

async function readMbr(dev: BlockDevice, mbr: MbrSector, ss: 512 | 4096, warnings: string[]): Promise<PartitionTable> {
  const parts: Partition[] = [];
  const diskId = mbr.diskId;
  const mk = (number: number, e: MbrEntry, base: number): Partition => {
    const p: Partition = {
      number,
      scheme: 'mbr',
      start: (base + e.startLba) * ss,
      size: e.sectors * ss,
      type: hex2(e.type),
      typeName: mbrTypeName(e.type),
      bootable: e.status === 0x80,
      partUuid: `${diskId}-${number.toString(16).padStart(2, '0')}`,
    };
    if (EXTENDED_TYPES.has(e.type)) p.extended = true;
    return p;
  };
  for (const e of mbr.entries) {
    if (e.startLba === 0) {
      throw new CorruptError('MBR_RANGE', `partition ${e.slot} starts at sector 0, on top of the partition table`);
    }
    parts.push(mk(e.slot, e, 0));
  }
  checkInsideDevice(parts, dev);
  const containers = parts.filter((p) => p.extended);
  if (containers.length > 1) {
    warnings.push(`${containers.length} extended partitions; only the first (${containers[0]!.number}) is followed`);
  }
  if (containers.length > 0) {
    const ext = containers[0]!;
    const extStart = ext.start / ss;
    const extEnd = extStart + ext.size / ss; // exclusive, in sectors
    const seen = new Set<number>();
    let ebrLba = extStart;
    let number = 5;
    for (let hop = 0; ; hop++) {
      if (hop >= MAX_LOGICAL_PARTITIONS) {
        throw new CorruptError('EBR_CHAIN', `the EBR chain is longer than ${MAX_LOGICAL_PARTITIONS} links`);
      }
      if (seen.has(ebrLba)) throw new CorruptError('EBR_LOOP', `the EBR chain loops back to sector ${ebrLba}`);
      seen.add(ebrLba);
      const sector = await readAt(dev, ebrLba * ss, 512);
      const ebr = parseEbr(sector);
      if (!ebr.ok) {
        if (!isAllZero(sector)) warnings.push(`EBR at sector ${ebrLba}: ${ebr.error.message}; no more logical partitions read`);
        break;
      }
      if (ebr.value.ignored > 0) warnings.push(`EBR at sector ${ebrLba}: ${ebr.value.ignored} extra entries ignored`);
      const data = ebr.value.data;
      if (data) {
        const first = ebrLba + data.startLba;
        const last = first + data.sectors; // exclusive
        if (data.startLba === 0 || last > extEnd) {
          throw new CorruptError(
            'EBR_RANGE',
            `logical partition ${number} (sectors ${first}…${last - 1}) is not inside its extended partition ${ext.number} (sectors ${extStart + 1}…${extEnd - 1})`,
          );
        }
        parts.push(mk(number++, data, ebrLba));
      }
      const link = ebr.value.link;
      if (!link) break;
      const next = extStart + link.startLba;
      if (link.startLba === 0 || next >= extEnd) {
        if (link.startLba === 0) throw new CorruptError('EBR_LOOP', `the EBR chain loops back to sector ${next}`);
        throw new CorruptError('EBR_RANGE', `the EBR at sector ${ebrLba} links to sector ${next}, outside extended partition ${ext.number} (sectors ${extStart}…${extEnd - 1})`);
      }
      ebrLba = next;
    }
  }
  parts.sort((a, b) => a.number - b.number);
  checkOverlaps(parts);
  return { scheme: 'mbr', sectorSize: ss, diskId, partitions: parts, warnings };
}

/** Error codes that mean "no GPT header at all here" rather than "a damaged one". */
const NOTHING_THERE = new Set(['GPT_SIGNATURE', 'GPT_MISSING']);

interface GptFound {
  ss: 512 | 4096;
  header: GptHeader;
  entries: GptEntry[];
}

/** Reads the header at `lba` and its entries; a typed error describes what is wrong. */
async function tryGptAt(dev: BlockDevice, ss: 512 | 4096, lba: number): Promise<Result<GptFound, ParseError | CorruptError>> {
  if ((lba + 1) * ss > dev.size) return err(new CorruptError('GPT_MISSING', `LBA ${lba} is past the end of the image`));
  const hb = await readAt(dev, lba * ss, ss);
  const h = parseGptHeader(hb, ss);
  if (!h.ok) return h;
  const header = h.value;
  if (header.myLba !== lba) {
    return err(new CorruptError('GPT_MY_LBA', `the GPT header at LBA ${lba} says it is at LBA ${header.myLba}`));
  }
  const bytes = header.entryCount * header.entrySize;
  const entriesStart = header.entriesLba * ss;
  if (entriesStart + bytes > dev.size) {
    return err(new CorruptError('GPT_ENTRIES_RANGE', `the GPT entry array (LBA ${header.entriesLba}, ${bytes} bytes) ends past the end of the image (${dev.size} bytes)`));
  }
  if (bytes > 0 && entriesStart < (lba + 1) * ss && entriesStart + bytes > lba * ss) {
    return err(new CorruptError('GPT_ENTRIES_RANGE', `the GPT entry array at LBA ${header.entriesLba} overlaps its header at LBA ${lba}`));
  }
  const eb = bytes > 0 ? await readAt(dev, entriesStart, bytes) : Buffer.alloc(0);
  const entries = parseGptEntries(eb, header);
  if (!entries.ok) return entries;
  return ok({ ss, header, entries: entries.value });
}

async function readGpt(dev: BlockDevice, only: 512 | 4096 | undefined, warnings: string[]): Promise<PartitionTable> {
  const sizes: Array<512 | 4096> = only ? [only] : [512, 4096];
  let found: GptFound | null = null;
  let primaryProblem: string | null = null;
  let primaryReal = false;
  for (const ss of sizes) {
    const r = await tryGptAt(dev, ss, 1);
    if (r.ok) {
      found = r.value;
      break;
    }
    // Report the problem of the sector size that at least has a header (the other one is just empty).
    if (primaryProblem === null || (!primaryReal && !NOTHING_THERE.has(r.error.code))) {
      primaryProblem = r.error.message;
      primaryReal = !NOTHING_THERE.has(r.error.code);
    }
  }
  if (found) {
    await checkBackup(dev, found, warnings);
  } else {
    let backupProblem: string | null = null;
    let backupReal = false;
    for (const ss of sizes) {
      const last = Math.floor(dev.size / ss) - 1;
      if (last < 2) continue;
      const r = await tryGptAt(dev, ss, last);
      if (r.ok) {
        found = r.value;
        warnings.push(`primary GPT damaged (${primaryProblem}); used the backup at LBA ${last}`);
        break;
      }
      if (backupProblem === null || (!backupReal && !NOTHING_THERE.has(r.error.code))) {
        backupProblem = r.error.message;
        backupReal = !NOTHING_THERE.has(r.error.code);
      }
    }
    if (!found) {
      throw new CorruptError('GPT_DAMAGED', `protective MBR but no valid GPT: primary header: ${primaryProblem}; backup header: ${backupProblem ?? 'image too small'}`);
    }
  }
  const { ss, header } = found;
  const parts: Partition[] = found.entries.map((e) => ({
    number: e.index + 1,
    scheme: 'gpt' as const,
    start: e.firstLba * ss,
    size: (e.lastLba - e.firstLba + 1) * ss,
    type: e.typeGuid,
    typeName: gptTypeName(e.typeGuid),
    name: e.name,
    guid: e.uniqueGuid,
    partUuid: e.uniqueGuid,
  }));
  for (const e of found.entries) {
    if (e.firstLba < header.firstUsableLba || e.lastLba > header.lastUsableLba) {
      warnings.push(`partition ${e.index + 1} (LBA ${e.firstLba}…${e.lastLba}) is outside the usable range ${header.firstUsableLba}…${header.lastUsableLba}`);
    }
  }
  checkInsideDevice(parts, dev);
  checkOverlaps(parts);
  return { scheme: 'gpt', sectorSize: ss, diskId: header.diskGuid, partitions: parts, warnings };
}

/** With a good primary, a cheap look at the backup header so that a damaged or misplaced one is reported. */
async function checkBackup(dev: BlockDevice, found: GptFound, warnings: string[]): Promise<void> {
  const { ss, header } = found;
  const alt = header.alternateLba;
  if ((alt + 1) * ss > dev.size) {
    warnings.push(`the backup GPT header (LBA ${alt}) is past the end of the image (${dev.size} bytes): was the image truncated?`);
    return;
  }
  const h = parseGptHeader(await readAt(dev, alt * ss, ss), ss);
  if (!h.ok) warnings.push(`backup GPT header at LBA ${alt} is damaged: ${h.error.message}`);
  else if (h.value.myLba !== alt) warnings.push(`backup GPT header at LBA ${alt} says it is at LBA ${h.value.myLba}`);
}

function checkInsideDevice(parts: Partition[], dev: BlockDevice): void {
  for (const p of parts) {
    const end = p.start + p.size;
    if (!Number.isSafeInteger(end) || end > dev.size) {
      throw new CorruptError(
        'PARTITION_PAST_END',
        `partition ${p.number} ends at byte ${end}, past the end of the image (${dev.size} bytes)`,
      );
    }
  }
}

/** Partitions that share bytes are nonsense (an extended container excepted: it holds the logicals). */
function checkOverlaps(parts: Partition[]): void {
  const data = parts.filter((p) => !p.extended).sort((a, b) => a.start - b.start || a.number - b.number);
  let reach: Partition | undefined; // the partition reaching furthest so far
  for (const b of data) {
    if (reach && b.start < reach.start + reach.size) {
      const [x, y] = reach.number < b.number ? [reach, b] : [b, reach];
      throw new CorruptError(
        'PARTITION_OVERLAP',
        `partitions ${x.number} and ${y.number} overlap (bytes ${b.start}…${Math.min(reach.start + reach.size, b.start + b.size) - 1})`,
      );
    }
    if (!reach || b.start + b.size > reach.start + reach.size) reach = b;
  }
  // A primary inside the extended container is nonsense too.
  for (const ext of parts.filter((p) => p.extended)) {
    for (const p of data) {
      if (p.number <= 4 && p.start < ext.start + ext.size && ext.start < p.start + p.size) {
        throw new CorruptError('PARTITION_OVERLAP', `partition ${p.number} overlaps extended partition ${ext.number}`);
      }
    }
  }
}
