/**
 * A sparse multi-GiB FAT32 image: opening it, listing and reading a file touch a few hundred KiB of
 * the device, not its FAT of megabytes (what lets `netbootd ls/cat` and TFTP answer instantly).
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileBlockDevice, type BlockDevice, type IoCallback, type WrittenListener } from '../../src/disk/blockdev.js';
import { FatVolume } from '../../src/fat/volume.js';
import { haveTools, tempDir } from '../helpers/tools.js';
import { FAT_TOOLS, mcopyIn, mcopyOut, mkfsVfat, prng, randomBytes } from '../helpers/fatimg.js';
import { readAll } from './read.js';

/** Passes through to a device and counts the bytes read. */
class Counting implements BlockDevice {
  bytesRead = 0;
  constructor(private readonly inner: BlockDevice) {}
  get size(): number {
    return this.inner.size;
  }
  get readOnly(): boolean {
    return this.inner.readOnly;
  }
  get name(): string {
    return this.inner.name;
  }
  read(buf: Buffer, offset: number, length: number, position: number, cb: IoCallback): void {
    this.bytesRead += length;
    this.inner.read(buf, offset, length, position, cb);
  }
  write(buf: Buffer, offset: number, length: number, position: number, cb: IoCallback): void {
    this.inner.write(buf, offset, length, position, cb);
  }
  flush(cb: IoCallback): void {
    this.inner.flush(cb);
  }
  onWritten(listener: WrittenListener): () => void {
    return this.inner.onWritten(listener);
  }
}

it('an 8 GiB sparse FAT32 image: open + readdir + read touch little of the device', async (t) => {
  if (!haveTools(t, ...FAT_TOOLS)) return;
  const dir = tempDir(t);
  const img = join(dir, 'big.img');
  await mkfsVfat(img, { fat: 32, sectorSize: 512, clusterSectors: 8, sizeKiB: 8 * 1024 * 1024, label: 'HUGE' });
  writeFileSync(join(dir, 'kernel8.img'), randomBytes(prng(8), 300_000));
  await mcopyIn(img, [join(dir, 'kernel8.img')], '::/');
  const file = await FileBlockDevice.open(img, { readOnly: true });
  t.after(() => file.close());
  assert.ok(file.size >= 8 * 1024 ** 3);
  const dev = new Counting(file);
  const vol = await FatVolume.open(dev);
  assert.equal(vol.type, 'FAT32');
  assert.ok(vol.bpb.fatBytes > 7 * 1024 * 1024, `FAT of ${vol.bpb.fatBytes} bytes`);
  assert.deepEqual((await vol.readdir('/')).map((e) => e.name), ['kernel8.img']);
  const got = await readAll(await vol.open('/KERNEL8.IMG'), 1468);
  assert.ok(got.equals(await mcopyOut(img, '/kernel8.img')));
  const overhead = dev.bytesRead - got.length;
  assert.ok(overhead < 512 * 1024, `read ${overhead} bytes beyond the file's own`);
  vol.close();
});
