/**
 * A partition typed FAT whose boot sector is not a valid FAT boot sector (a bad BPB) is a corrupt boot
 * partition (CorruptError, so TFTP says "corrupt"), not a missing one ("no FAT partition", "not found").
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryBlockDevice } from '../../src/testing/memory-device.js';
import { openBootVolume } from '../../src/fat/boot.js';
import { CorruptError, NotFoundError } from '../../src/util/errors.js';
import { writeMbrSector } from '../disk/craft.js';

test('boot partition typed FAT with a bad BPB: CorruptError naming it; no FAT-typed partition: NotFoundError', async () => {
  const img = Buffer.alloc(4 << 20);
  writeMbrSector(img, 0, [{ type: 0x0c, startLba: 2048, sectors: 4096 }]);
  img.fill(0xff, 2048 * 512, 2048 * 512 + 512); // garbage where the BPB should be
  img[2048 * 512 + 510] = 0x55;
  img[2048 * 512 + 511] = 0xaa;
  await assert.rejects(openBootVolume(new MemoryBlockDevice(img, true, 'img')), (e: unknown) => {
    assert.ok(e instanceof CorruptError, String(e));
    assert.match((e as Error).message, /partition 1 is typed FAT but its boot sector is not valid/);
    return true;
  });
  const linux = Buffer.alloc(4 << 20);
  writeMbrSector(linux, 0, [{ type: 0x83, startLba: 2048, sectors: 4096 }]);
  await assert.rejects(openBootVolume(new MemoryBlockDevice(linux, true, 'img')), (e: unknown) => e instanceof NotFoundError);
});
