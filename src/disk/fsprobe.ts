/**
 * Recognises the non-FAT file systems a boot image usually carries (the FAT layer recognises FAT itself),
 * so that listings can say what a partition holds. Pure over the first 4 KiB of a partition.
 */

export interface FsGuess {
  /** 'ext2', 'ext3', 'ext4', 'swap', 'ntfs' or 'exfat'. */
  type: string;
  /** Volume label, '' when none. */
  label: string;
}

/** Bytes `probeFilesystem` wants from the start of the partition. */
export const PROBE_BYTES = 4096;

function cString(b: Buffer, from: number, len: number, enc: BufferEncoding = 'utf8'): string {
  const s = b.subarray(from, from + len);
  const nul = s.indexOf(0);
  return (nul >= 0 ? s.subarray(0, nul) : s).toString(enc).trim();
}

/** Looks at the first bytes of a partition (up to PROBE_BYTES); null when nothing is recognised. */
export function probeFilesystem(head: Buffer): FsGuess | null {
  // ext2/3/4: superblock at 1024, magic 0xEF53 at +56, label at +120 (16 bytes).
  if (head.length >= 1024 + 136 && head.readUInt16LE(1024 + 56) === 0xef53) {
    const compat = head.readUInt32LE(1024 + 92);
    const incompat = head.readUInt32LE(1024 + 96);
    const type = incompat & (0x40 | 0x80 | 0x200) ? 'ext4' : compat & 0x4 ? 'ext3' : 'ext2';
    return { type, label: cString(head, 1024 + 120, 16) };
  }
  // Linux swap: signature at the end of the first page.
  if (head.length >= 4096) {
    const sig = head.subarray(4086, 4096).toString('latin1');
    if (sig === 'SWAPSPACE2' || sig === 'SWAP-SPACE') return { type: 'swap', label: cString(head, 1024 + 28, 16) };
  }
  if (head.length >= 11) {
    const oem = head.subarray(3, 11).toString('latin1');
    if (oem === 'NTFS    ') return { type: 'ntfs', label: '' };
    if (oem === 'EXFAT   ') return { type: 'exfat', label: '' };
  }
  return null;
}
