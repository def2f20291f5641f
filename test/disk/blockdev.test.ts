import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileBlockDevice, SliceBlockDevice, readAt, writeAt } from '../../src/disk/blockdev.js';
import { MemoryBlockDevice } from '../../src/testing/memory-device.js';
import { IoError } from '../../src/util/errors.js';
import { tempDir } from '../helpers/tools.js';

test('file device reads, writes, announces writes, and rejects out-of-range I/O', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'img');
  writeFileSync(path, Buffer.alloc(8192, 7));
  const dev = await FileBlockDevice.open(path);
  t.after(() => dev.close());
  assert.equal(dev.size, 8192);
  const seen: Array<[number, number]> = [];
  dev.onWritten((o, l) => seen.push([o, l]));
  await writeAt(dev, 100, Buffer.from('hello'));
  assert.deepEqual(seen, [[100, 5]]);
  assert.equal((await readAt(dev, 98, 9)).toString('latin1'), '\x07\x07hello\x07\x07');
  await assert.rejects(readAt(dev, 8190, 4), (e: unknown) => e instanceof IoError && e.code === 'EINVAL');
  await assert.rejects(writeAt(dev, 8190, Buffer.alloc(4)), (e: unknown) => e instanceof IoError && e.code === 'ENOSPC');
  await assert.rejects(readAt(dev, -1, 1), (e: unknown) => e instanceof IoError && e.code === 'EINVAL');
});

test('read-only device refuses writes', async () => {
  const dev = new MemoryBlockDevice(Buffer.alloc(512), true);
  await assert.rejects(writeAt(dev, 0, Buffer.alloc(1)), (e: unknown) => e instanceof IoError && e.code === 'EPERM');
});

test('slice translates offsets and re-announces overlapping parent writes window-relative', async () => {
  const parent = new MemoryBlockDevice(Buffer.alloc(4096));
  const slice = new SliceBlockDevice(parent, 1024, 1024);
  const seen: Array<[number, number]> = [];
  slice.onWritten((o, l) => seen.push([o, l]));
  await writeAt(slice, 10, Buffer.from('abc'));
  assert.equal(parent.data.subarray(1034, 1037).toString(), 'abc');
  await writeAt(parent, 0, Buffer.alloc(100)); // outside: not announced
  await writeAt(parent, 2000, Buffer.alloc(100)); // crosses the end: clipped
  assert.deepEqual(seen, [[10, 3], [976, 48]]);
  await assert.rejects(readAt(slice, 1000, 100), (e: unknown) => e instanceof IoError);
  assert.throws(() => new SliceBlockDevice(parent, 4000, 200), IoError);
});
