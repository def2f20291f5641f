/**
 * Growing a disk image: the file is extended sparsely (ftruncate) by the caller; here the partition table
 * is fitted to the new size. GPT: the backup entry array and header move to the new end, the primary
 * header's alternate/last-usable LBAs and both CRC32s are recomputed, the protective MBR covers the disk.
 * Optionally the last partition's entry is grown to the end (MBR primary or GPT); the file system inside
 * is left to grow itself on first boot, as the distributions do.
 */
import { readAt, writeAt, type BlockDevice } from '../disk/blockdev.js';
import { crc32 } from '../disk/crc32.js';
import { parseGptHeader } from '../disk/gpt.js';
import { parseMbr } from '../disk/mbr.js';
import type { PartitionTable } from '../disk/partitions.js';
import { NetbootError } from '../util/errors.js';

export class GrowError extends NetbootError {}

export interface GrowPlan {
  /** Human lines describing the table changes ("" when none). */
  changes: string[];
  /** Writes the changes to `dev` (a device over the already grown file). */
  apply(dev: BlockDevice): Promise<void>;
}

const MAX_MBR_SECTORS = 0xffffffff;

function setLba(buf: Buffer, off: number, lba: number): void {
  buf.writeBigUInt64LE(BigInt(lba), off);
}

function headerCrc(h: Buffer, size: number): void {
  h.writeUInt32LE(0, 16);
  h.writeUInt32LE(crc32(h.subarray(0, size)), 16);
}

/**
 * Plans the partition-table changes for an image growing from its current size to `newSize` bytes. Reads
 * the table from `dev` (the image before growth; may be read-only).
 */
export async function planGrow(dev: BlockDevice, table: PartitionTable, newSize: number, growLast: boolean): Promise<GrowPlan> {
  const ss = table.sectorSize;
  const total = Math.floor(newSize / ss);
  if (table.scheme === 'none') {
    if (growLast) throw new GrowError('EINVAL', `${dev.name}: no partition table: there is no partition entry to grow`);
    return { changes: [], apply: async () => undefined };
  }
  const mbrSector = await readAt(dev, 0, 512);
  const mbr = parseMbr(mbrSector);
  if (!mbr.ok) throw new GrowError('EINVAL', `${dev.name}: ${mbr.error.message}`);

  if (table.scheme === 'mbr') {
    if (!growLast) return { changes: [], apply: async () => undefined };
    const last = [...table.partitions].filter((p) => !p.extended).sort((a, b) => b.start + b.size - (a.start + a.size))[0];
    if (!last) throw new GrowError('EINVAL', `${dev.name}: no partition to grow`);
    if (last.number > 4) throw new GrowError('EINVAL', `${dev.name}: the last partition (${last.number}) is a logical partition; growing it is not supported`);
    const startLba = last.start / ss;
    const sectors = Math.min(total - startLba, MAX_MBR_SECTORS);
    const oldSectors = last.size / ss;
    if (sectors <= oldSectors) return { changes: [], apply: async () => undefined };
    const sector = Buffer.from(mbrSector);
    const o = 446 + (last.number - 1) * 16;
    sector.writeUInt32LE(sectors, o + 12);
    sector[o + 5] = 0xfe; // end CHS: "beyond CHS" (LBA only)
    sector[o + 6] = 0xff;
    sector[o + 7] = 0xff;
    return {
      changes: [`grow partition ${last.number} from ${oldSectors} to ${sectors} sectors (to the end of the image)`],
      apply: (d) => writeAt(d, 0, sector),
    };
  }

  // GPT.
  const primary = await readAt(dev, ss, ss);
  const ph = parseGptHeader(primary, ss);
  if (!ph.ok) throw new GrowError('EINVAL', `${dev.name}: primary GPT header: ${ph.error.message} (repair it with sgdisk/sfdisk first)`);
  const h = ph.value;
  const entryBytes = h.entryCount * h.entrySize;
  const entrySectors = Math.ceil(entryBytes / ss);
  const entries = await readAt(dev, h.entriesLba * ss, entrySectors * ss);
  if (crc32(entries.subarray(0, entryBytes)) !== h.entriesCrc) throw new GrowError('EINVAL', `${dev.name}: GPT entry array CRC mismatch`);
  const backupLba = total - 1;
  const backupEntriesLba = backupLba - entrySectors;
  const lastUsable = backupEntriesLba - 1;
  const changes: string[] = [];
  if (h.alternateLba !== backupLba) changes.push(`move the backup GPT header from LBA ${h.alternateLba} to ${backupLba} (last usable LBA ${h.lastUsableLba} → ${lastUsable})`);
  if (growLast) {
    let idx = -1;
    let maxLast = -1;
    for (let i = 0; i < h.entryCount; i++) {
      const o = i * h.entrySize;
      if (entries.subarray(o, o + 16).every((b) => b === 0)) continue;
      const l = Number(entries.readBigUInt64LE(o + 40));
      if (l > maxLast) {
        maxLast = l;
        idx = i;
      }
    }
    if (idx < 0) throw new GrowError('EINVAL', `${dev.name}: no partition to grow`);
    if (maxLast < lastUsable) {
      setLba(entries, idx * h.entrySize + 40, lastUsable);
      changes.push(`grow partition ${idx + 1} to end at LBA ${lastUsable} (was ${maxLast})`);
    }
  }
  const pmbrSectors = Math.min(total - 1, MAX_MBR_SECTORS);
  const protective = mbr.value.entries.find((e) => e.type === 0xee);
  const newMbr = Buffer.from(mbrSector);
  if (protective && protective.sectors !== pmbrSectors) {
    newMbr.writeUInt32LE(pmbrSectors, 446 + (protective.slot - 1) * 16 + 12);
  }
  if (changes.length === 0) return { changes, apply: async () => undefined };
  const entriesCrc = crc32(entries.subarray(0, entryBytes));
  const p = Buffer.from(primary);
  setLba(p, 32, backupLba);
  setLba(p, 48, lastUsable);
  p.writeUInt32LE(entriesCrc, 88);
  headerCrc(p, h.headerSize);
  const b = Buffer.from(p);
  setLba(b, 24, backupLba);
  setLba(b, 32, 1);
  setLba(b, 72, backupEntriesLba);
  headerCrc(b, h.headerSize);
  const oldBackup = h.alternateLba;
  return {
    changes,
    apply: async (d) => {
      // The backup first (entries, then header), then the primary, then the protective MBR.
      await writeAt(d, backupEntriesLba * ss, entries);
      await writeAt(d, backupLba * ss, b);
      await writeAt(d, h.entriesLba * ss, entries);
      await writeAt(d, ss, p);
      await writeAt(d, 0, newMbr);
      // The old backup header is now inside the disk: wipe it so that nothing mistakes it for current.
      if (oldBackup !== backupLba && oldBackup > 1 && (oldBackup + 1) * ss <= d.size && oldBackup < backupEntriesLba) {
        const old = await readAt(d, oldBackup * ss, ss);
        if (old.subarray(0, 8).toString('latin1') === 'EFI PART') await writeAt(d, oldBackup * ss, Buffer.alloc(ss));
      }
    },
  };
}

/** `16G`, `512M`, `1T`, `123456` (bytes); binary units. */
export function parseSize(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$/i.exec(text);
  if (!m) return undefined;
  const mult = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G' | 'T'];
  const n = Math.round(Number(m[1]) * mult);
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}
