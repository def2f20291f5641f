/**
 * Finding an image's boot partition, the one rule every command uses (`serve` for TFTP, `check`, `prep`):
 * the configured one, or the first FAT partition (partitions typed FAT first, in table order, then any
 * other whose first sector is a FAT boot sector), or the whole device when it has no partition table
 * (a "superfloppy").
 */
import { readAt, type BlockDevice } from '../disk/blockdev.js';
import { openPartition, readPartitionTable, type Partition, type PartitionTable } from '../disk/partitions.js';
import { isFatType } from '../disk/parttypes.js';
import { FatVolume } from './volume.js';
import { isFat, parseBootSector } from './bpb.js';
import { CorruptError, NotFoundError } from '../util/errors.js';

export interface BootLocation {
  table: PartitionTable;
  /** 0 for an unpartitioned image. */
  number: number;
  /** The partition, or null for an unpartitioned image. */
  partition: Partition | null;
}

/**
 * Where the boot FAT is. `preferred`: a configured partition number (0 = the whole device). `known`: the
 * device's partition table when the caller has read it already (else it is read here).
 */
export async function findBootPartition(dev: BlockDevice, preferred?: number, known?: PartitionTable): Promise<BootLocation> {
  const table = known ?? (await readPartitionTable(dev));
  if (preferred !== undefined) {
    openPartition(dev, table, preferred); // throws NotFoundError naming the partitions there are
    return { table, number: preferred, partition: table.partitions.find((p) => p.number === preferred) ?? null };
  }
  if (table.scheme === 'none') return { table, number: 0, partition: null };
  const ordered = [...table.partitions.filter(isFatType), ...table.partitions.filter((p) => !isFatType(p) && !p.extended)];
  for (const p of ordered) {
    if (p.size < 512) continue;
    if (isFat(await readAt(dev, p.start, 512))) return { table, number: p.number, partition: p };
  }
  // A partition typed FAT whose boot sector is not one is a corrupt boot partition, not a missing one.
  const typed = table.partitions.find((p) => isFatType(p) && p.size >= 512);
  if (typed) {
    const parsed = parseBootSector(await readAt(dev, typed.start, 512));
    const why = parsed.ok ? 'not a FAT boot sector' : parsed.error.message;
    throw new CorruptError('EBADBPB', `${dev.name}:${typed.number}: partition ${typed.number} is typed FAT but its boot sector is not valid (${why})`);
  }
  throw new NotFoundError('NO_FAT_PARTITION', `${dev.name}: no FAT partition`);
}

/** Opens the boot FAT volume of an image. */
export async function openBootVolume(dev: BlockDevice, preferred?: number, known?: PartitionTable): Promise<{ volume: FatVolume; location: BootLocation }> {
  const location = await findBootPartition(dev, preferred, known);
  const volume = await FatVolume.open(openPartition(dev, location.table, location.number), {
    name: `${dev.name}:${location.number}`,
  });
  return { volume, location };
}
