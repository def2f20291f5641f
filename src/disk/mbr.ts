/**
 * The MBR / EBR codec, pure over untrusted bytes (a `Result`, never a throw): sector 0's four entries,
 * disk signature and protective (GPT) entry; an extended boot record's data and link entries, read as
 * libfdisk reads them; and whether a sector 0 is a FAT boot sector rather than an MBR (a "superfloppy").
 * Reading a device's chain of EBRs and checking the partitions against it is partitions.ts's work.
 */
import { ParseError, err, ok, type Result } from '../util/errors.js';
import { PROTECTIVE_MBR_TYPE, isExtendedMbrType } from './parttypes.js';

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
      return err(new ParseError('BAD_BOOT_FLAG', `MBR entry ${slot} has boot flag 0x${status.toString(16).padStart(2, '0')} (want 00 or 80): not a partition table`));
    }
  }
  const entries = readEntries(sector);
  const diskSignature = sector.readUInt32LE(440);
  return ok({
    diskSignature,
    diskId: diskSignature.toString(16).padStart(8, '0'),
    entries,
    protective: entries.some((e) => e.type === PROTECTIVE_MBR_TYPE),
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
    if (isExtendedMbrType(e.type)) {
      if (!out.link) out.link = e;
      else out.ignored++;
    } else if (!out.data) out.data = e;
    else out.ignored++;
  }
  return ok(out);
}
