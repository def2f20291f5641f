/** A downloaded image still compressed (`.img.xz`, `.img.gz`, …) is named as such, not "no partition table". */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { MemoryBlockDevice } from '../../src/testing/memory-device.js';
import { compressedFormat, readPartitionTable } from '../../src/disk/partitions.js';
import { ParseError } from '../../src/util/errors.js';

test('xz, gzip, zstd, bzip2 and zip files are refused with the command that unpacks them', async () => {
  const raw = Buffer.alloc(4096, 0x41);
  const packed: Array<[string, Buffer, RegExp]> = [
    ['xz', execFileSync('xz', ['-c'], { input: raw }), /xz-compressed, not a disk image: decompress it first \(unxz disk\.img\.xz\)/],
    ['gzip', execFileSync('gzip', ['-c'], { input: raw }), /gzip-compressed.*gunzip disk\.img\.gz/],
    ['zstd', Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0]), /zstd-compressed/],
    ['bzip2', Buffer.from('BZh91AY&SY'), /bzip2-compressed/],
    ['zip', Buffer.from([0x50, 0x4b, 0x03, 0x04, 0, 0, 0, 0]), /zip-compressed/],
  ];
  for (const [name, bytes, re] of packed) {
    const ext = { xz: 'xz', gzip: 'gz', zstd: 'zst', bzip2: 'bz2', zip: 'zip' }[name];
    const dev = new MemoryBlockDevice(Buffer.concat([bytes, Buffer.alloc(1024)]), true, `/srv/disk.img.${ext}`);
    await assert.rejects(readPartitionTable(dev), (e: unknown) => e instanceof ParseError && e.code === 'COMPRESSED' && re.test(e.message));
  }
  // Near misses are not compressed files.
  assert.equal(compressedFormat(Buffer.from('BZhx')), null);
  assert.equal(compressedFormat(Buffer.alloc(512)), null);
  const plain = await readPartitionTable(new MemoryBlockDevice(Buffer.alloc(1 << 20)));
  assert.equal(plain.scheme, 'none');
});
