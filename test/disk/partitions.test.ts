import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { FileBlockDevice, readAt, type BlockDevice } from '../../src/disk/blockdev.js';
import { MemoryBlockDevice } from '../../src/testing/memory-device.js';
import { crc32 } from '../../src/disk/crc32.js';
import { formatGuid, guidToBytes } from '../../src/disk/gpt.js';
import { parseMbr } from '../../src/disk/mbr.js';
import { openPartition, readPartitionTable, type PartitionTable } from '../../src/disk/partitions.js';
import { CorruptError, NetbootError, NotFoundError } from '../../src/util/errors.js';
import { haveTools, run, tempDir } from '../helpers/tools.js';
import { craftDos, craftGpt } from './craft.js';
import { flipByte, nodeNumber, readBytes, sfdisk, sfdiskJson, sparseFile, writeBytes } from './images.js';

const MiB = 1024 * 1024;

async function table(t: { after(fn: () => unknown): void }, path: string, opts?: { sectorSize?: 512 | 4096 }): Promise<PartitionTable> {
  const dev = await FileBlockDevice.open(path, { readOnly: true });
  t.after(() => dev.close());
  return readPartitionTable(dev, opts);
}

async function rejectsWith(t: { after(fn: () => unknown): void }, path: string, code: string, re: RegExp): Promise<void> {
  const dev = await FileBlockDevice.open(path, { readOnly: true });
  t.after(() => dev.close());
  await assert.rejects(readPartitionTable(dev), (e: unknown) => {
    assert.ok(e instanceof NetbootError, `not a NetbootError: ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, re);
    return true;
  });
}

const DOS_SCRIPT = [
  'label: dos',
  'label-id: 0x1234abcd',
  'size=20MiB, type=c, bootable',
  'size=10MiB, type=83',
  'size=5MiB, type=7',
  'type=5',
  'size=8MiB, type=83',
  'size=6MiB, type=82',
  'type=0e',
  '',
].join('\n');

async function dosImage(dir: string): Promise<string> {
  const path = join(dir, 'dos.img');
  sparseFile(path, 128 * MiB);
  await sfdisk(path, DOS_SCRIPT);
  return path;
}

const GPT_SCRIPT = [
  'label: gpt',
  'label-id: 7e1d2c3b-4a59-4687-9f10-2a3b4c5d6e7f',
  'size=8MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI system partition"',
  'size=16MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=11111111-2222-4333-8444-555566667777, name="röot ☃"',
  'size=4MiB, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7',
  'type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, name="swap"',
  '',
].join('\n');

async function gptImage(dir: string): Promise<string> {
  const path = join(dir, 'gpt.img');
  sparseFile(path, 64 * MiB);
  await sfdisk(path, GPT_SCRIPT);
  return path;
}

test('crc32 and GUID text match the reference values', () => {
  assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
  assert.equal(crc32(Buffer.alloc(0)), 0);
  const efi = 'c12a7328-f81f-11d2-ba4b-00a0c93ec93b';
  const bytes = guidToBytes(efi);
  // On disk the first three fields are little-endian.
  assert.equal(bytes.toString('hex'), '28732ac11ff8d211ba4b00a0c93ec93b');
  assert.equal(formatGuid(bytes), efi);
});

test('dos table with primaries and an extended partition with logicals equals sfdisk --json', async (t) => {
  if (!haveTools(t, 'sfdisk')) return;
  const path = await dosImage(tempDir(t));
  const ref = await sfdiskJson(path);
  const tab = await table(t, path);
  assert.equal(tab.scheme, 'mbr');
  assert.equal(tab.sectorSize, 512);
  assert.equal(tab.diskId, '1234abcd');
  assert.equal(`0x${tab.diskId}`, ref.id);
  assert.deepEqual(tab.warnings, []);
  assert.deepEqual(tab.partitions.map((p) => p.number), [1, 2, 3, 4, 5, 6, 7]);
  assert.equal(ref.partitions.length, 7);
  for (const r of ref.partitions) {
    const p = tab.partitions.find((x) => x.number === nodeNumber(r.node))!;
    assert.ok(p, `partition ${r.node} missing`);
    assert.equal(p.start, r.start * 512, `start of ${r.node}`);
    assert.equal(p.size, r.size * 512, `size of ${r.node}`);
    assert.equal(parseInt(p.type, 16), parseInt(r.type, 16), `type of ${r.node}`);
    assert.equal(p.bootable, r.bootable === true);
    assert.equal(p.scheme, 'mbr');
  }
  const byNum = new Map(tab.partitions.map((p) => [p.number, p]));
  assert.equal(byNum.get(1)!.type, '0c');
  assert.equal(byNum.get(1)!.typeName, 'W95 FAT32 (LBA)');
  assert.equal(byNum.get(2)!.typeName, 'Linux');
  assert.equal(byNum.get(4)!.typeName, 'Extended');
  assert.equal(byNum.get(4)!.extended, true);
  assert.equal(byNum.get(6)!.typeName, 'Linux swap / Solaris');
  assert.equal(byNum.get(7)!.typeName, 'W95 FAT16 (LBA)');
  assert.equal(byNum.get(2)!.partUuid, '1234abcd-02');
  // Logical partitions lie inside the extended container.
  const ext = byNum.get(4)!;
  for (const n of [5, 6, 7]) {
    const p = byNum.get(n)!;
    assert.ok(p.start > ext.start && p.start + p.size <= ext.start + ext.size);
  }
});

test('gpt table with UTF-16 names, type and unique GUIDs equals sfdisk --json', async (t) => {
  if (!haveTools(t, 'sfdisk')) return;
  const path = await gptImage(tempDir(t));
  const ref = await sfdiskJson(path);
  const tab = await table(t, path);
  assert.equal(tab.scheme, 'gpt');
  assert.equal(tab.sectorSize, 512);
  assert.equal(tab.diskId, ref.id.toLowerCase());
  assert.deepEqual(tab.warnings, []);
  assert.equal(tab.partitions.length, ref.partitions.length);
  for (const r of ref.partitions) {
    const p = tab.partitions.find((x) => x.number === nodeNumber(r.node))!;
    assert.equal(p.start, r.start * 512);
    assert.equal(p.size, r.size * 512);
    assert.equal(p.type, r.type.toLowerCase());
    assert.equal(p.guid, r.uuid!.toLowerCase());
    assert.equal(p.name, r.name ?? '');
  }
  assert.equal(tab.partitions[1]!.name, 'röot ☃');
  assert.equal(tab.partitions[1]!.guid, '11111111-2222-4333-8444-555566667777');
  assert.deepEqual(tab.partitions.map((p) => p.typeName), ['EFI System', 'Linux filesystem', 'Microsoft basic data', 'Linux swap']);
});

/** `fdisk -b 4096 -l` columns for the 4096-byte-sector images (sfdisk 2.38 has no --sector-size). */
async function fdisk4096(path: string): Promise<Array<{ n: number; start: number; sectors: number; type: string; uuid?: string; name?: string }>> {
  const r = await run('fdisk', ['-b', '4096', '-l', '-o', 'Device,Start,Sectors,Type-UUID,UUID,Name', path]);
  const base = path.split('/').pop()!;
  const out = [];
  for (const line of r.stdout.toString().split('\n')) {
    const m = /^(\S+?)(\d+)\s+(\d+)\s+(\d+)\s+(\S+)\s+(\S+) ?(.*)$/.exec(line);
    if (!m || !m[1]!.endsWith(base)) continue;
    out.push({ n: Number(m[2]), start: Number(m[3]), sectors: Number(m[4]), type: m[5]!.toLowerCase(), uuid: m[6]!.toLowerCase(), name: m[7]!.trimEnd() });
  }
  return out;
}

test('gpt on 4096-byte sectors (built by fdisk -b 4096) is detected and equals fdisk -l', async (t) => {
  if (!haveTools(t, 'fdisk')) return;
  const path = join(tempDir(t), 'gpt4k.img');
  sparseFile(path, 64 * MiB);
  const cmds = 'g\nn\n1\n\n+8M\nt\n1\nn\n2\n\n+16M\nn\n3\n\n+4M\nt\n3\n11\nx\nn\n1\nEFI sys\nn\n2\nröot ☃\nr\nw\n';
  await run('fdisk', ['-b', '4096', path], { input: cmds });
  const ref = await fdisk4096(path);
  assert.equal(ref.length, 3);
  for (const opts of [undefined, { sectorSize: 4096 as const }]) {
    const tab = await table(t, path, opts);
    assert.equal(tab.scheme, 'gpt');
    assert.equal(tab.sectorSize, 4096);
    assert.deepEqual(tab.warnings, []);
    assert.equal(tab.partitions.length, 3);
    for (const r of ref) {
      const p = tab.partitions.find((x) => x.number === r.n)!;
      assert.equal(p.start, r.start * 4096);
      assert.equal(p.size, r.sectors * 4096);
      assert.equal(p.type, r.type);
      assert.equal(p.guid, r.uuid);
      assert.equal(p.name, r.name);
    }
  }
  // Told the wrong sector size: no header where 512-byte sectors would put it, no backup either.
  await assert.rejects(table(t, path, { sectorSize: 512 }), (e: unknown) => e instanceof CorruptError && e.code === 'GPT_DAMAGED');
});

test('dos table on 4096-byte sectors with logical partitions (fdisk -b 4096), read with sectorSize 4096', async (t) => {
  if (!haveTools(t, 'fdisk')) return;
  const path = join(tempDir(t), 'dos4k.img');
  sparseFile(path, 64 * MiB);
  await run('fdisk', ['-b', '4096', path], { input: 'o\nn\np\n1\n\n+8M\nt\nc\nn\ne\n2\n\n\nn\n\n+4M\nn\n\n+4M\nw\n' });
  const r = await run('fdisk', ['-b', '4096', '-l', '-o', 'Device,Start,Sectors,Id', path]);
  const ref = r.stdout.toString().split('\n').map((l) => /img(\d+)\s+(\d+)\s+(\d+)\s+(\w+)$/.exec(l)).filter((m) => m !== null);
  assert.equal(ref.length, 4);
  const tab = await table(t, path, { sectorSize: 4096 });
  assert.equal(tab.scheme, 'mbr');
  assert.equal(tab.sectorSize, 4096);
  assert.deepEqual(tab.partitions.map((p) => p.number), [1, 2, 5, 6]);
  for (const m of ref) {
    const p = tab.partitions.find((x) => x.number === Number(m[1]))!;
    assert.equal(p.start, Number(m[2]) * 4096);
    assert.equal(p.size, Number(m[3]) * 4096);
    assert.equal(parseInt(p.type, 16), parseInt(m[4]!, 16));
  }
});

test('openPartition gives a window on the partition; missing and extended partitions are NotFoundError', async (t) => {
  if (!haveTools(t, 'sfdisk')) return;
  const path = await dosImage(tempDir(t));
  const ref = await sfdiskJson(path);
  const p5 = ref.partitions.find((r) => nodeNumber(r.node) === 5)!;
  writeBytes(path, p5.start * 512, Buffer.from('logical five'));
  writeBytes(path, (p5.start + p5.size) * 512 - 4, Buffer.from('end!'));
  const dev = await FileBlockDevice.open(path, { readOnly: true });
  t.after(() => dev.close());
  const tab = await readPartitionTable(dev);
  const part = openPartition(dev, tab, 5);
  assert.equal(part.size, p5.size * 512);
  assert.equal((await readAt(part, 0, 12)).toString(), 'logical five');
  assert.equal((await readAt(part, part.size - 4, 4)).toString(), 'end!');
  await assert.rejects(readAt(part, part.size - 2, 4));
  assert.throws(() => openPartition(dev, tab, 9), (e: unknown) => e instanceof NotFoundError && /no partition 9.*1, 2, 3, 5, 6, 7/.test(e.message));
  assert.throws(() => openPartition(dev, tab, 4), (e: unknown) => e instanceof NotFoundError && /extended/.test(e.message));
  assert.throws(() => openPartition(dev, tab, 0), NotFoundError);
});

test('no table: zeros, tiny images and a FAT superfloppy give scheme none', async (t) => {
  assert.equal((await readPartitionTable(new MemoryBlockDevice(Buffer.alloc(0)))).scheme, 'none');
  assert.equal((await readPartitionTable(new MemoryBlockDevice(Buffer.alloc(100)))).scheme, 'none');
  const z = await readPartitionTable(new MemoryBlockDevice(Buffer.alloc(1 << 16)));
  assert.deepEqual(z, { scheme: 'none', sectorSize: 512, partitions: [], warnings: [] });
  if (!haveTools(t, 'mkfs.vfat')) return;
  const dir = tempDir(t);
  for (const args of [['-F', '12'], ['-F', '16'], ['-F', '32'], ['-F', '32', '-S', '4096']]) {
    const path = join(dir, `sf${args.join('')}.img`);
    sparseFile(path, 40 * MiB);
    await run('mkfs.vfat', [...args, path]);
    const tab = await table(t, path);
    assert.equal(tab.scheme, 'none', args.join(' '));
    assert.deepEqual(tab.warnings, []);
    const dev = await FileBlockDevice.open(path, { readOnly: true });
    t.after(() => dev.close());
    assert.equal(openPartition(dev, tab, 0).size, 40 * MiB);
  }
});

test('a FAT boot sector with garbage at the partition table offset is still a superfloppy', async () => {
  const img = Buffer.alloc(1 * MiB);
  img.set([0xeb, 0x3c, 0x90], 0);
  img.writeUInt16LE(512, 11);
  img[13] = 4;
  img.writeUInt16LE(1, 14);
  img[16] = 2;
  img[21] = 0xf8;
  // "partition" entries whose boot flags are fine but that point far past the end
  img[446 + 4] = 0x83;
  img.writeUInt32LE(100, 446 + 8);
  img.writeUInt32LE(0xffffff, 446 + 12);
  img[510] = 0x55;
  img[511] = 0xaa;
  const tab = await readPartitionTable(new MemoryBlockDevice(img));
  assert.equal(tab.scheme, 'none');
  assert.match(tab.warnings[0]!, /FAT boot sector/);
  // The same entries without a BPB: an MBR whose partition runs past the end.
  img[0] = 0;
  await assert.rejects(readPartitionTable(new MemoryBlockDevice(img)), /partition 1 ends at byte \d+, past the end of the image \(1048576 bytes\)/);
  // A bad boot flag: not a partition table (parseMbr says why).
  img[446] = 0x12;
  const r = parseMbr(img.subarray(0, 512));
  assert.ok(!r.ok && r.error.code === 'BAD_BOOT_FLAG');
  assert.equal((await readPartitionTable(new MemoryBlockDevice(img))).scheme, 'none');
});

test('gpt: damaged primary header → backup used with a warning', async (t) => {
  if (!haveTools(t, 'sfdisk')) return;
  const path = await gptImage(tempDir(t));
  const good = await table(t, path);
  flipByte(path, 512 + 60); // inside the disk GUID: header CRC no longer matches
  const tab = await table(t, path);
  assert.equal(tab.scheme, 'gpt');
  assert.deepEqual(tab.partitions, good.partitions);
  assert.equal(tab.warnings.length, 1);
  assert.match(tab.warnings[0]!, /primary GPT damaged \(GPT header CRC32 .*\); used the backup at LBA 131071/);
  // sfdisk agrees that the primary is broken and reads the backup too
  const ref = await sfdiskJson(path);
  assert.equal(ref.partitions.length, tab.partitions.length);
});

test('gpt: damaged primary entry array → backup used; both headers damaged → CorruptError', async (t) => {
  if (!haveTools(t, 'sfdisk')) return;
  const path = await gptImage(tempDir(t));
  flipByte(path, 1024 + 56); // first byte of partition 1's name in the primary array
  const tab = await table(t, path);
  assert.equal(tab.partitions[0]!.name, 'EFI system partition');
  assert.match(tab.warnings[0]!, /primary GPT damaged \(GPT entry array CRC32 .*\); used the backup/);
  const size = 64 * MiB;
  flipByte(path, size - 512 + 60); // the backup header
  await rejectsWith(t, path, 'GPT_DAMAGED', /no valid GPT: primary header: GPT entry array CRC32 .*; backup header: GPT header CRC32/);
});

test('gpt: a good primary with a damaged or missing backup is read, with a warning', async (t) => {
  if (!haveTools(t, 'sfdisk')) return;
  const dir = tempDir(t);
  const path = await gptImage(dir);
  flipByte(path, 64 * MiB - 512 + 60);
  const tab = await table(t, path);
  assert.equal(tab.partitions.length, 4);
  assert.match(tab.warnings[0]!, /backup GPT header at LBA 131071 is damaged/);
  // Grown image (as after `truncate -s +1G`): the backup is no longer at the end.
  const grown = await gptImage(join(dir));
  sparseFile(grown, 65 * MiB);
  const tab2 = await table(t, grown);
  assert.equal(tab2.partitions.length, 4);
  assert.deepEqual(tab2.warnings, []);
});

test('gpt: lying entry count and entry size are typed errors, not huge reads', async (t) => {
  if (!haveTools(t, 'sfdisk')) return;
  const path = await gptImage(tempDir(t));
  // Rewrite both headers with a lying count and a fixed-up header CRC: only the limits can stop it.
  for (const [field, value, code] of [[80, 0x01000000, /more than the 1048576 accepted/], [84, 200, /entry size 200 is not a multiple of 128/]] as const) {
    for (const at of [512, 64 * MiB - 512]) {
      const h = readBytes(path, at, 92);
      h.writeUInt32LE(value, field);
      h.writeUInt32LE(0, 16);
      h.writeUInt32LE(crc32(h), 16);
      writeBytes(path, at, h);
    }
    await rejectsWith(t, path, 'GPT_DAMAGED', code);
  }
});

test('gpt: truncated image → partitions past the end or a missing entry array are named', async (t) => {
  if (!haveTools(t, 'sfdisk')) return;
  const dir = tempDir(t);
  const path = await gptImage(dir);
  sparseFile(path, 20 * MiB);
  await rejectsWith(t, path, 'PARTITION_PAST_END', /^partition 2 ends at byte 26214400, past the end of the image \(20971520 bytes\)$/);
  sparseFile(path, 4096);
  await rejectsWith(t, path, 'GPT_DAMAGED', /GPT entry array \(LBA 2, 16384 bytes\) ends past the end of the image \(4096 bytes\)/);
  sparseFile(path, 600);
  await rejectsWith(t, path, 'GPT_DAMAGED', /no valid GPT/);
});

test('crafted gpt: names outside the BMP (surrogate pairs) and a 36-unit name decode; both sector sizes', async () => {
  for (const ss of [512, 4096] as const) {
    const img = craftGpt(ss, 2048, [
      { type: 'c12a7328-f81f-11d2-ba4b-00a0c93ec93b', guid: 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee', firstLba: 40, lastLba: 99, name: 'boot 🐧' },
      { type: '0fc63daf-8483-4772-8e79-3d69d8477de4', guid: '00000000-0000-0000-0000-000000000001', firstLba: 100, lastLba: 1999, name: 'x'.repeat(36) },
    ]);
    const tab = await readPartitionTable(new MemoryBlockDevice(img));
    assert.equal(tab.sectorSize, ss);
    assert.equal(tab.diskId, '01234567-89ab-cdef-0123-456789abcdef');
    assert.deepEqual(tab.partitions.map((p) => [p.number, p.name, p.start, p.size]), [
      [1, 'boot 🐧', 40 * ss, 60 * ss],
      [2, 'x'.repeat(36), 100 * ss, 1900 * ss],
    ]);
    assert.deepEqual(tab.warnings, []);
  }
});

test('crafted dos with 100 logical partitions numbers them 5…104', async () => {
  const tab = await readPartitionTable(new MemoryBlockDevice(craftDos(100)));
  assert.equal(tab.partitions.length, 103);
  assert.deepEqual(tab.partitions.slice(3).map((p) => p.number), Array.from({ length: 100 }, (_, i) => i + 5));
  assert.equal(tab.partitions[2]!.extended, true);
  assert.equal(tab.partitions[4]!.start, (48 + 16 + 2) * 512);
  assert.equal(tab.diskId, 'deadbeef');
  for (const ext of [0x0f, 0x85]) {
    const t2 = await readPartitionTable(new MemoryBlockDevice(craftDos(2, ext)));
    assert.deepEqual(t2.partitions.map((p) => [p.number, p.type, p.typeName]), [
      [1, '0c', 'W95 FAT32 (LBA)'], [2, '83', 'Linux'], [3, ext.toString(16).padStart(2, '0'), 'Extended'], [5, '83', 'Linux'], [6, '83', 'Linux'],
    ]);
  }
});

test('dos: partition past the end of a truncated image is a CorruptError naming it', async (t) => {
  if (!haveTools(t, 'sfdisk')) return;
  const path = await dosImage(tempDir(t));
  sparseFile(path, 25 * MiB);
  await rejectsWith(t, path, 'PARTITION_PAST_END', /^partition 2 ends at byte 32505856, past the end of the image \(26214400 bytes\)$/);
});

test('dos: an EBR chain that loops is reported, not followed forever', async (t) => {
  if (!haveTools(t, 'sfdisk')) return;
  const path = await dosImage(tempDir(t));
  const ref = await sfdiskJson(path);
  const ext = ref.partitions.find((r) => nodeNumber(r.node) === 4)!;
  // Walk the chain the way the tools do: EBR 1 at the start of the extended partition.
  const ebrs = [ext.start];
  for (;;) {
    const s = readBytes(path, ebrs[ebrs.length - 1]! * 512, 512);
    const linkStart = s.readUInt32LE(446 + 16 + 8);
    if (s[446 + 16 + 4] === 0) break;
    ebrs.push(ext.start + linkStart);
  }
  assert.equal(ebrs.length, 3);
  // Point the last EBR's link back at the second.
  const last = readBytes(path, ebrs[2]! * 512, 512);
  last[446 + 16 + 4] = 0x05;
  last.writeUInt32LE(ebrs[1]! - ext.start, 446 + 16 + 8);
  last.writeUInt32LE(2048, 446 + 16 + 12);
  writeBytes(path, ebrs[2]! * 512, last);
  await rejectsWith(t, path, 'EBR_LOOP', new RegExp(`EBR chain loops back to sector ${ebrs[1]}`));
  // A link out of the extended partition.
  last.writeUInt32LE(ext.size + 10, 446 + 16 + 8);
  writeBytes(path, ebrs[2]! * 512, last);
  await rejectsWith(t, path, 'EBR_RANGE', /links to sector \d+, outside extended partition 4/);
  // A logical partition that spills out of the container.
  const first = readBytes(path, ebrs[0]! * 512, 512);
  first.writeUInt32LE(ext.size, 446 + 12);
  writeBytes(path, ebrs[0]! * 512, first);
  await rejectsWith(t, path, 'EBR_RANGE', /logical partition 5 .* is not inside its extended partition 4/);
});

test('overlapping partitions are a CorruptError', async (t) => {
  if (!haveTools(t, 'sfdisk')) return;
  const path = await dosImage(tempDir(t));
  const s = readBytes(path, 0, 512);
  // Stretch partition 1 over partition 2.
  s.writeUInt32LE(s.readUInt32LE(446 + 12) + 4096, 446 + 12);
  writeBytes(path, 0, s);
  await rejectsWith(t, path, 'PARTITION_OVERLAP', /^partitions 1 and 2 overlap/);
});

test('a GPT signature without a protective MBR is ignored with a warning', async (t) => {
  if (!haveTools(t, 'sfdisk')) return;
  const path = await gptImage(tempDir(t));
  writeBytes(path, 0, Buffer.alloc(512));
  const tab = await table(t, path);
  assert.equal(tab.scheme, 'none');
  assert.match(tab.warnings[0]!, /no protective MBR/);
});

test('every device read stays in range on a sparse 4 GiB image (only the table is read)', async (t) => {
  if (!haveTools(t, 'sfdisk')) return;
  const path = join(tempDir(t), 'big.img');
  sparseFile(path, 4 * 1024 * MiB);
  await sfdisk(path, 'label: gpt\nsize=256MiB, type=uefi\ntype=linux\n');
  const dev = await FileBlockDevice.open(path, { readOnly: true });
  t.after(() => dev.close());
  let bytes = 0;
  const counting: BlockDevice = {
    size: dev.size, readOnly: true, name: dev.name,
    read: (b, o, l, p, cb) => { bytes += l; dev.read(b, o, l, p, cb); },
    write: (_b, _o, _l, _p, cb) => cb(new Error('no')),
    flush: (cb) => cb(null),
    onWritten: () => () => {},
  };
  const tab = await readPartitionTable(counting);
  const ref = await sfdiskJson(path);
  assert.deepEqual(tab.partitions.map((p) => [p.start, p.size]), ref.partitions.map((r) => [r.start * 512, r.size * 512]));
  assert.ok(tab.partitions[1]!.start + tab.partitions[1]!.size >= 4095 * MiB);
  assert.ok(bytes < 64 * 1024, `read ${bytes} bytes`);
});
