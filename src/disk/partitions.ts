/**
 * Partition tables: MBR (four primaries, an extended partition with logical partitions through the EBR
 * chain, numbered 5, 6, … as Linux does), GPT (header and entry-array CRC32 checked, the backup header at
 * the last LBA used when the primary is damaged, UTF-16LE names, type GUIDs), 512- and 4096-byte sectors.
 *
 * The byte codecs are mbr.ts and gpt.ts (pure); partition types are parttypes.ts. This module reads a
 * device with them: `readPartitionTable` does the (little) I/O, follows the EBR chain, falls back to the
 * backup GPT, checks the partitions against the device and each other, and rejects only with
 * `NetbootError` subclasses: a partition past the end of the image, an EBR loop, a lying entry count,
 * overlapping partitions → `CorruptError` or `ParseError` whose message names the problem. It also
 * refuses a compressed download (`.img.xz`, …) with the command that unpacks it.
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
import { CorruptError, NotFoundError, ParseError, err, ok, type Result } from '../util/errors.js';
import { GPT_SIGNATURE, parseGptEntries, parseGptHeader, type GptEntry, type GptHeader } from './gpt.js';
import { looksLikeFatBootSector, parseEbr, parseMbr, type MbrEntry, type MbrSector } from './mbr.js';
import { gptTypeName, isExtendedMbrType, mbrTypeName } from './parttypes.js';

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

/** Longest EBR chain followed; a longer one is reported as corrupt. */
export const MAX_LOGICAL_PARTITIONS = 256;

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

/** Reads and checks the partition table of `dev`. Rejects only with NetbootError subclasses. */
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
      type: e.type.toString(16).padStart(2, '0'),
      typeName: mbrTypeName(e.type),
      bootable: e.status === 0x80,
      partUuid: `${diskId}-${number.toString(16).padStart(2, '0')}`,
    };
    if (isExtendedMbrType(e.type)) p.extended = true;
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
        if (!sector.every((b) => b === 0)) warnings.push(`EBR at sector ${ebrLba}: ${ebr.error.message}; no more logical partitions read`);
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
