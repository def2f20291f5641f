import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gptTypeName, isExtendedMbrType, isFatType, isLinuxRootType, mbrTypeName } from '../../src/disk/parttypes.js';

const EFI = 'c12a7328-f81f-11d2-ba4b-00a0c93ec93b';
const MSDATA = 'ebd0a0a2-b9e5-4433-87c0-68b6b72699c7';
const LINUX_FS = '0fc63daf-8483-4772-8e79-3d69d8477de4';
const ROOT_ARM64 = 'b921b045-1df0-41c3-af44-4c6f280d3fae';
const SWAP = '0657fd6d-a4ab-43c4-84e5-0933c84b4f4f';

test('isFatType: MBR FAT codes (plain, LBA, hidden, EFI) and the FAT GPT GUIDs (any case); never a container', () => {
  for (const t of ['01', '04', '06', '0b', '0c', '0e', '11', '14', '16', '1b', '1c', '1e', 'ef', '0C', 'EF']) {
    assert.equal(isFatType({ scheme: 'mbr', type: t }), true, t);
  }
  for (const t of ['00', '05', '07', '0f', '83', '85', 'da', 'ee', 'c', '0c0', '', 'zz']) {
    assert.equal(isFatType({ scheme: 'mbr', type: t }), false, t);
  }
  assert.equal(isFatType({ scheme: 'mbr', type: '0c', extended: true }), false);
  for (const g of [EFI, MSDATA, EFI.toUpperCase()]) assert.equal(isFatType({ scheme: 'gpt', type: g }), true, g);
  for (const g of [LINUX_FS, SWAP, '00000000-0000-0000-0000-000000000000']) assert.equal(isFatType({ scheme: 'gpt', type: g }), false, g);
  // An MBR code is not a GUID and the other way round.
  assert.equal(isFatType({ scheme: 'gpt', type: '0c' }), false);
  assert.equal(isFatType({ scheme: 'mbr', type: EFI }), false);
});

test('isLinuxRootType: MBR 83 and the GPT Linux filesystem / root GUIDs; not swap, LVM or Linux extended', () => {
  assert.equal(isLinuxRootType({ scheme: 'mbr', type: '83' }), true);
  for (const t of ['82', '85', '8e', '0c']) assert.equal(isLinuxRootType({ scheme: 'mbr', type: t }), false, t);
  for (const g of [LINUX_FS, ROOT_ARM64]) assert.equal(isLinuxRootType({ scheme: 'gpt', type: g }), true, g);
  for (const g of [SWAP, EFI]) assert.equal(isLinuxRootType({ scheme: 'gpt', type: g }), false, g);
});

test('type names and extended types', () => {
  assert.equal(mbrTypeName(0x0c), 'W95 FAT32 (LBA)');
  assert.equal(mbrTypeName(0x85), 'Extended');
  assert.equal(mbrTypeName(0x42), 'unknown');
  assert.equal(gptTypeName(EFI.toUpperCase()), 'EFI System');
  assert.equal(gptTypeName('00000000-0000-0000-0000-000000000001'), 'unknown');
  assert.deepEqual([0x05, 0x0f, 0x85, 0x83, 0xee].map(isExtendedMbrType), [true, true, true, false, false]);
});
