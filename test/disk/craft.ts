/**
 * Builds small MBR/EBR/GPT images in memory, byte by byte as the specs lay them out. Used for cases the
 * tools cannot make (names outside the BMP, lying fields) and as seeds for the fuzz tests.
 */
import { crc32 } from '../../src/disk/crc32.js';
import { guidToBytes } from '../../src/disk/gpt.js';

export interface CraftMbrEntry {
  type: number;
  startLba: number;
  sectors: number;
  bootable?: boolean;
}

/** Writes a 55AA sector with up to four entries at `sectorOffset` of `img`. */
export function writeMbrSector(img: Buffer, sectorOffset: number, entries: CraftMbrEntry[], diskSignature?: number): void {
  const s = img.subarray(sectorOffset, sectorOffset + 512);
  s.fill(0, 446, 510);
  if (diskSignature !== undefined) s.writeUInt32LE(diskSignature, 440);
  entries.forEach((e, i) => {
    const o = 446 + i * 16;
    s[o] = e.bootable ? 0x80 : 0;
    s[o + 4] = e.type;
    s.writeUInt32LE(e.startLba, o + 8);
    s.writeUInt32LE(e.sectors, o + 12);
  });
  s[510] = 0x55;
  s[511] = 0xaa;
}

export interface CraftGptEntry {
  type: string;
  guid: string;
  firstLba: number;
  lastLba: number;
  name: string;
}

/**
 * A complete GPT image (protective MBR, primary header + entries, backup entries + header) of `sectors`
 * sectors of `ss` bytes, with 128 entries of 128 bytes.
 */
export function craftGpt(ss: number, sectors: number, parts: CraftGptEntry[], diskGuid = '01234567-89ab-cdef-0123-456789abcdef'): Buffer {
  const img = Buffer.alloc(ss * sectors);
  writeMbrSector(img, 0, [{ type: 0xee, startLba: 1, sectors: Math.min(sectors - 1, 0xffffffff) }]);
  const count = 128;
  const esize = 128;
  const entries = Buffer.alloc(count * esize);
  parts.forEach((p, i) => {
    const o = i * esize;
    guidToBytes(p.type).copy(entries, o);
    guidToBytes(p.guid).copy(entries, o + 16);
    entries.writeBigUInt64LE(BigInt(p.firstLba), o + 32);
    entries.writeBigUInt64LE(BigInt(p.lastLba), o + 40);
    Buffer.from(p.name, 'utf16le').copy(entries, o + 56, 0, 72);
  });
  const entrySectors = Math.ceil((count * esize) / ss);
  const last = sectors - 1;
  const firstUsable = 2 + entrySectors;
  const lastUsable = last - entrySectors - 1;
  const header = (my: number, alt: number, entriesLba: number): Buffer => {
    const h = Buffer.alloc(92);
    h.write('EFI PART', 0, 'latin1');
    h.writeUInt32LE(0x00010000, 8);
    h.writeUInt32LE(92, 12);
    h.writeBigUInt64LE(BigInt(my), 24);
    h.writeBigUInt64LE(BigInt(alt), 32);
    h.writeBigUInt64LE(BigInt(firstUsable), 40);
    h.writeBigUInt64LE(BigInt(lastUsable), 48);
    guidToBytes(diskGuid).copy(h, 56);
    h.writeBigUInt64LE(BigInt(entriesLba), 72);
    h.writeUInt32LE(count, 80);
    h.writeUInt32LE(esize, 84);
    h.writeUInt32LE(crc32(entries), 88);
    h.writeUInt32LE(crc32(h), 16);
    return h;
  };
  header(1, last, 2).copy(img, ss);
  entries.copy(img, 2 * ss);
  entries.copy(img, (last - entrySectors) * ss);
  header(last, 1, last - entrySectors).copy(img, last * ss);
  return img;
}

/** A small dos image: primaries 1-2 and an extended 3 holding `logicals` logical partitions of 8 sectors. */
export function craftDos(logicals: number, extType = 0x05): Buffer {
  const sectors = 64 + logicals * 16 + 16;
  const img = Buffer.alloc(sectors * 512);
  const extStart = 48;
  const extSize = logicals * 16 + 16;
  writeMbrSector(img, 0, [
    { type: 0x0c, startLba: 16, sectors: 16, bootable: true },
    { type: 0x83, startLba: 32, sectors: 16 },
    { type: extType, startLba: extStart, sectors: extSize },
  ], 0xdeadbeef);
  for (let i = 0; i < logicals; i++) {
    const ebr = extStart + i * 16;
    const entries: CraftMbrEntry[] = [{ type: 0x83, startLba: 2, sectors: 8 }];
    if (i + 1 < logicals) entries.push({ type: extType, startLba: (i + 1) * 16, sectors: 16 });
    writeMbrSector(img, ebr * 512, entries);
  }
  return img;
}
