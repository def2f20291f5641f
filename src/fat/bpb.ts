/**
 * The FAT boot sector (BIOS Parameter Block): a pure codec. `parseBootSector` takes untrusted bytes and
 * returns the validated geometry of the volume, or a `ParseError` naming the field that is wrong.
 *
 * The FAT type is decided by the cluster count, as the Microsoft FAT specification says (and never by the
 * `FAT12   `/`FAT32   ` strings, which are informational): fewer than 4085 clusters is FAT12, fewer than
 * 65525 is FAT16, otherwise FAT32.
 */
import { readAt, type BlockDevice } from '../disk/blockdev.js';
import { CorruptError, NetbootError, ParseError, err, ok, type Result } from '../util/errors.js';

export type FatType = 'FAT12' | 'FAT16' | 'FAT32';

/** The smallest boot-sector prefix that holds every BPB field we read. */
export const BOOT_SECTOR_MIN = 512;

export interface Bpb {
  readonly type: FatType;
  readonly oemName: string;
  readonly bytesPerSector: number;
  readonly sectorsPerCluster: number;
  readonly reservedSectors: number;
  readonly numFats: number;
  /** Root directory entries (FAT12/16); 0 on FAT32. */
  readonly rootEntries: number;
  readonly totalSectors: number;
  readonly media: number;
  /** Sectors per FAT. */
  readonly fatSectors: number;
  readonly hiddenSectors: number;
  /** FAT32: the first cluster of the root directory; 0 on FAT12/16. */
  readonly rootCluster: number;
  /** FAT32: which FAT copy is in use (BPB_ExtFlags); 0 when the FATs are mirrored. */
  readonly activeFat: number;
  /** False when FAT32 mirroring is off (BPB_ExtFlags bit 7): only the active FAT is written. */
  readonly fatMirrored: boolean;
  /** FAT32: the sector of the FSInfo structure (BPB_FSInfo), 0 when there is none inside the reserved area. */
  readonly fsInfoSector: number;
  /** From the extended boot record when its signature (0x29) is present, else undefined. */
  readonly volumeId: number | undefined;
  /** The BPB volume label, trimmed (may be 'NO NAME'), '' when the extended record is missing. */
  readonly bpbLabel: string;
  readonly fsTypeString: string;

  // Derived geometry, in bytes from the start of the volume.
  readonly clusterCount: number;
  /** The highest valid cluster number: clusterCount + 1. */
  readonly maxCluster: number;
  readonly clusterSize: number;
  /** Byte offset of the FAT in use. */
  readonly fatOffset: number;
  /** Bytes of one FAT. */
  readonly fatBytes: number;
  /** Fixed root directory (FAT12/16): offset and length; 0/0 on FAT32. */
  readonly rootDirOffset: number;
  readonly rootDirBytes: number;
  /** Byte offset of cluster 2. */
  readonly dataOffset: number;
  /** Bytes the volume spans: totalSectors * bytesPerSector. */
  readonly volumeBytes: number;
}

function isPow2(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

function ascii(buf: Buffer, start: number, len: number): string {
  let s = '';
  for (let i = start; i < start + len; i++) {
    const c = buf[i]!;
    s += c >= 0x20 && c < 0x7f ? String.fromCharCode(c) : '?';
  }
  return s;
}

function bad(field: string, why: string): { ok: false; error: ParseError } {
  return err(new ParseError('EBADBPB', `FAT boot sector: ${field} ${why}`));
}

/**
 * Parses and validates a FAT boot sector (at least the first 512 bytes of the volume). When `deviceSize`
 * is given, the volume must fit in it (a truncated image is an error here, not a short read later).
 */
export function parseBootSector(buf: Buffer, deviceSize?: number): Result<Bpb> {
  if (!Buffer.isBuffer(buf) || buf.length < BOOT_SECTOR_MIN) {
    return bad('length', `is ${Buffer.isBuffer(buf) ? buf.length : 'not a buffer'}, need ${BOOT_SECTOR_MIN} bytes`);
  }
  if (buf[510] !== 0x55 || buf[511] !== 0xaa) return bad('signature', 'is not 55 AA at offset 510');
  const jump = buf[0]!;
  if (jump !== 0xeb && jump !== 0xe9) return bad('jump instruction', `0x${jump.toString(16)} is not EB/E9`);

  const bytesPerSector = buf.readUInt16LE(11);
  if (!isPow2(bytesPerSector) || bytesPerSector < 512 || bytesPerSector > 4096) {
    return bad('bytes per sector', `${bytesPerSector} is not a power of two in 512..4096`);
  }
  const sectorsPerCluster = buf[13]!;
  if (!isPow2(sectorsPerCluster) || sectorsPerCluster > 128) {
    return bad('sectors per cluster', `${sectorsPerCluster} is not a power of two in 1..128`);
  }
  const reservedSectors = buf.readUInt16LE(14);
  if (reservedSectors < 1) return bad('reserved sectors', 'is 0');
  const numFats = buf[16]!;
  if (numFats < 1) return bad('number of FATs', 'is 0');
  const rootEntries = buf.readUInt16LE(17);
  const total16 = buf.readUInt16LE(19);
  const media = buf[21]!;
  if (media !== 0xf0 && media < 0xf8) return bad('media descriptor', `0x${media.toString(16)} is invalid`);
  const fat16Size = buf.readUInt16LE(22);
  const hiddenSectors = buf.readUInt32LE(28);
  const total32 = buf.readUInt32LE(32);
  // As Linux does: the 16-bit count wins when it is set (some formatters fill both).
  const totalSectors = total16 !== 0 ? total16 : total32;
  if (totalSectors === 0) return bad('total sectors', 'is 0');
  const fat32Size = buf.readUInt32LE(36);
  const fatSectors = fat16Size !== 0 ? fat16Size : fat32Size;
  if (fatSectors === 0) return bad('sectors per FAT', 'is 0');

  const rootDirSectors = Math.ceil((rootEntries * 32) / bytesPerSector);
  const metaSectors = reservedSectors + numFats * fatSectors + rootDirSectors;
  if (metaSectors >= totalSectors) {
    return bad('layout', `reserved + FATs + root (${metaSectors} sectors) leave no data area in ${totalSectors} sectors`);
  }
  const clusterCount = Math.floor((totalSectors - metaSectors) / sectorsPerCluster);
  if (clusterCount < 1) return bad('layout', 'has no whole cluster in the data area');
  const type: FatType = clusterCount < 4085 ? 'FAT12' : clusterCount < 65525 ? 'FAT16' : 'FAT32';

  let rootCluster = 0;
  let activeFat = 0;
  let fatMirrored = true;
  let fsInfoSector = 0;
  const ext = type === 'FAT32' ? 64 : 36; // offset of the drive number in the extended boot record
  if (type === 'FAT32') {
    if (rootEntries !== 0) return bad('root entries', `is ${rootEntries}, must be 0 on FAT32`);
    if (fat16Size !== 0) return bad('sectors per FAT', 'uses the 16-bit field on FAT32');
    if (clusterCount > 0x0ffffff4) return bad('cluster count', `${clusterCount} is too large for FAT32`);
    const extFlags = buf.readUInt16LE(40);
    if (extFlags & 0x80) {
      fatMirrored = false;
      activeFat = extFlags & 0x0f;
      if (activeFat >= numFats) return bad('active FAT', `${activeFat} is not below the FAT count ${numFats}`);
    }
    const version = buf.readUInt16LE(42);
    if (version !== 0) return bad('FAT32 version', `0x${version.toString(16)} is not 0`);
    rootCluster = buf.readUInt32LE(44);
    const fsInfo = buf.readUInt16LE(48);
    if (fsInfo !== 0xffff && fsInfo < reservedSectors) fsInfoSector = fsInfo;
    if (rootCluster < 2 || rootCluster > clusterCount + 1) {
      return bad('root cluster', `${rootCluster} is outside 2..${clusterCount + 1}`);
    }
  } else {
    if (rootEntries === 0) return bad('root entries', `is 0 on ${type}`);
  }
  // The FAT must have an entry for every cluster (plus the two reserved entries).
  const bitsPerEntry = type === 'FAT12' ? 12 : type === 'FAT16' ? 16 : 32;
  const fatBytes = fatSectors * bytesPerSector;
  if (Math.ceil(((clusterCount + 2) * bitsPerEntry) / 8) > fatBytes) {
    return bad('sectors per FAT', `${fatSectors} is too small for ${clusterCount} clusters of ${type}`);
  }
  const volumeBytes = totalSectors * bytesPerSector;
  if (deviceSize !== undefined && volumeBytes > deviceSize) {
    return err(new ParseError('ETRUNC', `FAT volume of ${volumeBytes} bytes does not fit in the ${deviceSize}-byte device (truncated image?)`));
  }

  const hasExt = buf[ext + 2] === 0x29;
  const volumeId = hasExt ? buf.readUInt32LE(ext + 3) : undefined;
  const bpbLabel = hasExt ? ascii(buf, ext + 7, 11).replace(/ +$/, '') : '';
  const fsTypeString = hasExt ? ascii(buf, ext + 18, 8).replace(/ +$/, '') : '';

  const clusterSize = bytesPerSector * sectorsPerCluster;
  const firstFat = reservedSectors * bytesPerSector;
  const rootDirOffset = type === 'FAT32' ? 0 : firstFat + numFats * fatBytes;
  return ok({
    type,
    oemName: ascii(buf, 3, 8).replace(/ +$/, ''),
    bytesPerSector,
    sectorsPerCluster,
    reservedSectors,
    numFats,
    rootEntries,
    totalSectors,
    media,
    fatSectors,
    hiddenSectors,
    rootCluster,
    activeFat,
    fatMirrored,
    fsInfoSector,
    volumeId,
    bpbLabel,
    fsTypeString,
    clusterCount,
    maxCluster: clusterCount + 1,
    clusterSize,
    fatOffset: firstFat + activeFat * fatBytes,
    fatBytes,
    rootDirOffset,
    rootDirBytes: type === 'FAT32' ? 0 : rootEntries * 32,
    dataOffset: metaSectors * bytesPerSector,
    volumeBytes,
  });
}

/** Byte offset, inside the FSInfo sector, of its free-cluster count (then the next-free hint), both 32-bit. */
export const FSINFO_COUNTS = 488;

/** The next-free hint of an FSInfo sector (its first 512 bytes), or undefined when its signatures are wrong. */
export function parseFsInfo(buf: Buffer): { nextFree: number } | undefined {
  if (buf.length < 512) return undefined;
  if (buf.readUInt32LE(0) !== 0x41615252 || buf.readUInt32LE(484) !== 0x61417272 || buf.readUInt32LE(508) !== 0xaa550000) return undefined;
  return { nextFree: buf.readUInt32LE(FSINFO_COUNTS + 4) };
}

/** The 8 bytes written at `FSINFO_COUNTS`: the free-cluster count and the next-free hint. */
export function encodeFsInfoCounts(freeCount: number, nextFree: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(freeCount, 0);
  b.writeUInt32LE(nextFree, 4);
  return b;
}

/** Byte offset of cluster `c` (2..maxCluster) in the volume. */
export function clusterOffset(bpb: Bpb, c: number): number {
  return bpb.dataOffset + (c - 2) * bpb.clusterSize;
}

/** The byte range [start, end) of every FAT copy: a device write inside it changes the FAT. */
export function fatArea(bpb: Bpb): [number, number] {
  const start = bpb.reservedSectors * bpb.bytesPerSector;
  return [start, start + bpb.numFats * bpb.fatBytes];
}

/** True when these bytes (the first sector of a partition) look like a valid FAT boot sector. */
export function isFat(bootSector: Buffer): boolean {
  return parseBootSector(bootSector).ok;
}

/** Reads and validates a device's boot sector (its bytes and the parsed BPB); errors name the device. */
export async function readBootSector(dev: BlockDevice, name: string): Promise<{ bpb: Bpb; boot: Buffer }> {
  if (dev.size < BOOT_SECTOR_MIN) throw new CorruptError('ETRUNC', `${name}: ${dev.size} bytes is too small for a FAT volume`);
  const boot = await readAt(dev, 0, BOOT_SECTOR_MIN);
  const parsed = parseBootSector(boot, dev.size);
  if (!parsed.ok) {
    const e = parsed.error;
    throw new (e.constructor as typeof NetbootError)(e.code, `${name}: ${e.message}`);
  }
  return { bpb: parsed.value, boot };
}
