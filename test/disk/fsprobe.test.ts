import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import fc from 'fast-check';
import { PROBE_BYTES, probeFilesystem } from '../../src/disk/fsprobe.js';
import { haveTools, run, tempDir } from '../helpers/tools.js';
import { readBytes, sparseFile } from './images.js';

test('probeFilesystem names ext2/3/4 and swap made by the real tools, with their labels', async (t) => {
  if (!haveTools(t, 'mkfs.ext2', 'mkfs.ext3', 'mkfs.ext4', 'mkswap', 'blkid')) return;
  const dir = tempDir(t);
  const cases: Array<[string, string[], string]> = [
    ['ext2', ['mkfs.ext2', '-q', '-F', '-L', 'two'], 'two'],
    ['ext3', ['mkfs.ext3', '-q', '-F', '-L', 'three'], 'three'],
    ['ext4', ['mkfs.ext4', '-q', '-F', '-L', 'rootfs'], 'rootfs'],
    ['ext4', ['mkfs.ext4', '-q', '-F'], ''],
    ['swap', ['mkswap', '-L', 'myswap'], 'myswap'],
  ];
  for (const [i, [type, cmd, label]] of cases.entries()) {
    const path = join(dir, `fs${i}.img`);
    sparseFile(path, 16 * 1024 * 1024);
    await run(cmd[0]!, [...cmd.slice(1), path]);
    assert.deepEqual(probeFilesystem(readBytes(path, 0, PROBE_BYTES)), { type, label }, cmd.join(' '));
    // blkid agrees on the type
    const b = await run('blkid', ['-p', '-o', 'value', '-s', 'TYPE', path]);
    assert.equal(b.stdout.toString().trim(), type);
  }
  assert.equal(probeFilesystem(Buffer.alloc(PROBE_BYTES)), null);
});

test('probeFilesystem never throws on random or short input', () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 0, maxLength: PROBE_BYTES }), fc.boolean(), (bytes, magic) => {
      const b = Buffer.from(bytes);
      if (magic && b.length >= 1082) b.writeUInt16LE(0xef53, 1080);
      const g = probeFilesystem(b);
      assert.ok(g === null || typeof g.type === 'string');
    }),
    { numRuns: 300 },
  );
});
