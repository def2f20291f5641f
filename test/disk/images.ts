/**
 * Test helpers: partitioned images built with the real tools (sfdisk, fdisk -b 4096), and what those
 * tools report about them.
 */
import { openSync, closeSync, ftruncateSync, readSync, writeSync } from 'node:fs';
import { run } from '../helpers/tools.js';

/** Creates a sparse file of `size` bytes (or resizes it). */
export function sparseFile(path: string, size: number): void {
  const fd = openSync(path, 'a+');
  try {
    ftruncateSync(fd, size);
  } finally {
    closeSync(fd);
  }
}

/** Applies an `sfdisk` script to an image file. */
export async function sfdisk(path: string, script: string): Promise<void> {
  await run('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', path], { input: script });
}

export interface SfdiskPartition {
  node: string;
  start: number;
  size: number;
  type: string;
  uuid?: string;
  name?: string;
  bootable?: boolean;
}
export interface SfdiskTable {
  label: 'dos' | 'gpt';
  id: string;
  sectorsize: number;
  partitions: SfdiskPartition[];
}

/** `sfdisk --json IMAGE`, parsed. */
export async function sfdiskJson(path: string): Promise<SfdiskTable> {
  const r = await run('sfdisk', ['--json', path]);
  return (JSON.parse(r.stdout.toString()) as { partitiontable: SfdiskTable }).partitiontable;
}

/** The partition number at the end of an sfdisk node name (`/tmp/x/disk.img7` → 7). */
export function nodeNumber(node: string): number {
  return Number(/(\d+)$/.exec(node)![1]);
}

/** Reads `length` bytes at `pos` of a file. */
export function readBytes(path: string, pos: number, length: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(length);
    readSync(fd, b, 0, length, pos);
    return b;
  } finally {
    closeSync(fd);
  }
}

/** Writes bytes at `pos` of a file (like `dd conv=notrunc`). */
export function writeBytes(path: string, pos: number, data: Buffer): void {
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, data, 0, data.length, pos);
  } finally {
    closeSync(fd);
  }
}

/** Flips one byte of a file (corruption tests). */
export function flipByte(path: string, pos: number): void {
  const b = readBytes(path, pos, 1);
  b[0] = b[0]! ^ 0xff;
  writeBytes(path, pos, b);
}
