/**
 * Partition types: MBR type bytes and GPT type GUIDs, their names, and what they say a partition holds
 * (an extended container, the GPT protective entry, a FAT file system, a Linux root). Pure tables and
 * predicates; every question of the kind "what is this partition typed as" is answered here.
 */

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

/** MBR types of an extended partition (a container of logical partitions, linked by EBRs). */
const EXTENDED_MBR_TYPES = new Set([0x05, 0x0f, 0x85]);
/** The MBR type of the protective entry that covers a GPT disk. */
export const PROTECTIVE_MBR_TYPE = 0xee;

/** MBR types that normally hold a FAT file system (plain, LBA, hidden, and the EFI system type). */
const FAT_MBR_TYPES = new Set([0x01, 0x04, 0x06, 0x0b, 0x0c, 0x0e, 0x11, 0x14, 0x16, 0x1b, 0x1c, 0x1e, 0xef]);
/** GPT type GUIDs that hold FAT boot files. */
const FAT_GPT_TYPES = new Set([
  'c12a7328-f81f-11d2-ba4b-00a0c93ec93b', // EFI System
  'ebd0a0a2-b9e5-4433-87c0-68b6b72699c7', // Microsoft basic data
]);

const LINUX_MBR_TYPE = 0x83;
/** GPT types of a Linux file system that can be a root: 'Linux filesystem' and the per-architecture roots. */
const LINUX_ROOT_GPT_TYPES = new Set(
  Object.entries(GPT_TYPE_NAMES).filter(([, n]) => /^Linux (filesystem|root)/.test(n)).map(([g]) => g),
);

/** What the type predicates look at: a partition's scheme, its type (two hex digits or a GUID) and whether it is a container. */
export interface TypedPartition {
  scheme: 'mbr' | 'gpt';
  /** MBR: two lowercase hex digits such as '0c'; GPT: the type GUID as text. */
  type: string;
  extended?: boolean;
}

export function isExtendedMbrType(type: number): boolean {
  return EXTENDED_MBR_TYPES.has(type);
}

export function mbrTypeName(type: number): string {
  if (EXTENDED_MBR_TYPES.has(type)) return 'Extended';
  return MBR_TYPE_NAMES[type] ?? 'unknown';
}

export function gptTypeName(guid: string): string {
  return GPT_TYPE_NAMES[guid.toLowerCase()] ?? 'unknown';
}

function mbrByte(type: string): number {
  return /^[0-9a-f]{2}$/i.test(type) ? parseInt(type, 16) : -1;
}

/** True when the partition's type says it holds a FAT file system (the boot finder tries these first). */
export function isFatType(p: TypedPartition): boolean {
  if (p.extended) return false;
  return p.scheme === 'mbr' ? FAT_MBR_TYPES.has(mbrByte(p.type)) : FAT_GPT_TYPES.has(p.type.toLowerCase());
}

/** True when the partition's type says it holds a Linux file system that can be a root (MBR 83, GPT Linux filesystem / root). */
export function isLinuxRootType(p: TypedPartition): boolean {
  if (p.extended) return false;
  return p.scheme === 'mbr' ? mbrByte(p.type) === LINUX_MBR_TYPE : LINUX_ROOT_GPT_TYPES.has(p.type.toLowerCase());
}
