import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import * as P from '../../src/nbd/packet.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

test('greeting is NBDMAGIC IHAVEOPT + FIXED_NEWSTYLE|NO_ZEROES', () => {
  assert.deepEqual(P.buildGreeting(), hex('4e42444d41474943 49484156454f5054 0003'));
});

test('client flags: known bits parsed, unknown or unoffered bits rejected', () => {
  assert.deepEqual(P.parseClientFlags(hex('00000003')), { ok: true, value: { fixedNewstyle: true, noZeroes: true } });
  assert.deepEqual(P.parseClientFlags(hex('00000001')), { ok: true, value: { fixedNewstyle: true, noZeroes: false } });
  const bad = P.parseClientFlags(hex('00000004'));
  assert.equal(bad.ok, false);
  assert.equal(!bad.ok && bad.error.code, 'NBD_BAD_CLIENT_FLAGS');
  const unoffered = P.parseClientFlags(hex('00000002'), P.FLAG_FIXED_NEWSTYLE);
  assert.equal(unoffered.ok, false);
  assert.equal(P.parseClientFlags(hex('0000')).ok, false);
});

test('option header: magic, option, length', () => {
  const r = P.parseOptionHeader(hex('49484156454f5054 00000007 0000000a'));
  assert.deepEqual(r, { ok: true, value: { option: 7, length: 10 } });
  const bad = P.parseOptionHeader(hex('49484156454f5055 00000007 0000000a'));
  assert.equal(!bad.ok && bad.error.code, 'NBD_BAD_MAGIC');
});

test('option replies are byte-exact', () => {
  assert.deepEqual(P.buildOptionReply(P.OPT_LIST, P.REP_ACK), hex('0003e889045565a9 00000003 00000001 00000000'));
  assert.deepEqual(
    P.buildOptionReply(P.OPT_LIST, P.REP_SERVER, P.buildServerEntry('ab', 'd')),
    hex('0003e889045565a9 00000003 00000002 00000007 00000002 6162 64'),
  );
  assert.deepEqual(P.buildOptionError(99, P.REP_ERR_UNSUP, 'no'), hex('0003e889045565a9 00000063 80000001 00000002 6e6f'));
  assert.deepEqual(P.buildInfoExport(0x123456789, 0x0d4d), hex('0000 0000000123456789 0d4d'));
  assert.deepEqual(P.buildInfoString(P.INFO_NAME, 'x'), hex('0001 78'));
  assert.deepEqual(P.buildInfoBlockSize(1, 4096, 32 << 20), hex('0003 00000001 00001000 02000000'));
  assert.deepEqual(P.buildMetaContextEntry(1, 'base:allocation'), Buffer.concat([hex('00000001'), Buffer.from('base:allocation')]));
  assert.deepEqual(P.buildExportNameReply(512, 3, true), hex('0000000000000200 0003'));
  const withZeroes = P.buildExportNameReply(512, 3, false);
  assert.equal(withZeroes.length, 134);
  assert.ok(withZeroes.subarray(10).every((b) => b === 0));
});

test('INFO/GO payload: name, info requests; lying lengths rejected', () => {
  assert.deepEqual(P.parseInfoRequest(hex('00000003 646973 0002 0001 0003')), { ok: true, value: { name: 'dis', requests: [1, 3] } });
  assert.deepEqual(P.parseInfoRequest(hex('00000000 0000')), { ok: true, value: { name: '', requests: [] } });
  const long = P.parseInfoRequest(hex('000000ff 646973 0000'));
  assert.equal(!long.ok && long.error.code, 'NBD_BAD_LENGTH');
  const count = P.parseInfoRequest(hex('00000001 64 0002 0001'));
  assert.equal(!count.ok && count.error.code, 'NBD_BAD_LENGTH');
  const nul = P.parseInfoRequest(hex('00000002 6400 0000'));
  assert.equal(!nul.ok && nul.error.code, 'NBD_BAD_STRING');
  const utf = P.parseInfoRequest(hex('00000002 c328 0000'));
  assert.equal(!utf.ok && utf.error.code, 'NBD_BAD_STRING');
});

test('META_CONTEXT payload: name and queries', () => {
  const q = Buffer.from('base:allocation');
  const data = Buffer.concat([hex('00000001 78 00000001'), hex(q.length.toString(16).padStart(8, '0')), q]);
  assert.deepEqual(P.parseMetaContextRequest(data), { ok: true, value: { name: 'x', queries: ['base:allocation'] } });
  assert.deepEqual(P.parseMetaContextRequest(hex('00000000 00000000')), { ok: true, value: { name: '', queries: [] } });
  assert.equal(P.parseMetaContextRequest(hex('00000000 00000002 00000001 61')).ok, false);
  assert.equal(P.parseMetaContextRequest(hex('00000000 00000000 00')).ok, false);
  assert.equal(P.parseMetaContextRequest(hex('00000000 00000001 ffffffff')).ok, false);
});

test('request header: 28 bytes parsed; bad magic rejected; huge offsets become Infinity', () => {
  const raw = hex('25609513 0001 0001 0102030405060708 0000000100000200 00001000');
  assert.deepEqual(P.parseRequest(raw), {
    ok: true,
    value: { flags: 1, type: 1, handleHi: 0x01020304, handleLo: 0x05060708, offset: 0x100000200, length: 4096 },
  });
  assert.deepEqual(P.buildRequest(1, 1, 0x0102030405060708n, 0x100000200, 4096), raw);
  const bad = P.parseRequest(hex('25609514 0000 0000 0000000000000000 0000000000000000 00000000'));
  assert.equal(!bad.ok && bad.error.code, 'NBD_BAD_MAGIC');
  const far = P.parseRequest(hex('25609513 0000 0000 0000000000000000 ffffffffffffffff 00000001'));
  assert.equal(far.ok && far.value.offset, Infinity);
  assert.equal(P.parseRequest(hex('25609513')).ok, false);
});

test('transmission replies are byte-exact', () => {
  assert.deepEqual(P.buildSimpleReply(22, 0xaabbccdd, 0x11223344), hex('67446698 00000016 aabbccdd11223344'));
  assert.deepEqual(P.buildStructuredDone(0, 7), hex('668e33ef 0001 0000 0000000000000007 00000000'));
  assert.deepEqual(
    P.buildStructuredError(0, 7, 22, 'bad'),
    hex('668e33ef 0001 8001 0000000000000007 00000009 00000016 0003 626164'),
  );
  assert.deepEqual(
    P.buildStructuredError(0, 7, 5, '', 0x200),
    hex('668e33ef 0001 8002 0000000000000007 0000000e 00000005 0000 0000000000000200'),
  );
  const rd = Buffer.alloc(P.OFFSET_DATA_PREFIX + 2);
  P.writeOffsetDataPrefix(rd, 0, P.REPLY_FLAG_DONE, 0, 9, 0x100000000, 2);
  rd.write('hi', P.OFFSET_DATA_PREFIX);
  assert.deepEqual(rd, hex('668e33ef 0001 0001 0000000000000009 0000000a 0000000100000000 6869'));
  assert.deepEqual(
    P.buildBlockStatus(0, 1, 1, [{ length: 4096, flags: 3 }, { length: 512, flags: 0 }]),
    hex('668e33ef 0001 0005 0000000000000001 00000014 00000001 00001000 00000003 00000200 00000000'),
  );
});

test('errno mapping follows the spec set', () => {
  assert.equal(P.nbdErrno('EPERM'), 1);
  assert.equal(P.nbdErrno('EROFS'), 1);
  assert.equal(P.nbdErrno('EINVAL'), 22);
  assert.equal(P.nbdErrno('EFBIG'), 28);
  assert.equal(P.nbdErrno('EDQUOT'), 28);
  assert.equal(P.nbdErrno('ENOTSUP'), 95);
  assert.equal(P.nbdErrno('EBADF'), 5);
  assert.equal(P.nbdErrno(undefined), 5);
});

test('parsers never throw on random bytes', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (a) => {
      const b = Buffer.from(a);
      P.parseClientFlags(b);
      P.parseOptionHeader(b);
      P.parseInfoRequest(b);
      P.parseMetaContextRequest(b);
      P.parseExportName(b);
      P.parseRequest(b);
    }),
    { numRuns: 2000 },
  );
});
