import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  parsePacket, buildAck, buildData, buildError, buildOack, buildRequest, writeDataHeader,
  OP_RRQ, OP_WRQ, OP_DATA, OP_ACK, OP_ERROR, OP_OACK, MAX_OPTIONS,
} from '../../src/tftp/packet.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

test('RRQ with options parses from exact bytes (names keep their spelling, keys are lower case)', () => {
  // 00 01 "pxelinux.0" 00 "OCTET" 00 "BlkSize" 00 "1468" 00 "tsize" 00 "0" 00
  const bytes = Buffer.concat([
    hex('0001'), Buffer.from('pxelinux.0\0OCTET\0BlkSize\x001468\0tsize\x000\0', 'latin1'),
  ]);
  const r = parsePacket(bytes);
  assert.ok(r.ok);
  assert.deepEqual(r.value, {
    op: OP_RRQ, filename: 'pxelinux.0', mode: 'octet',
    options: [{ name: 'BlkSize', key: 'blksize', value: '1468' }, { name: 'tsize', key: 'tsize', value: '0' }],
  });
});

test('WRQ, DATA, ACK, ERROR, OACK parse from exact bytes', () => {
  const w = parsePacket(Buffer.from('\x00\x02up.bin\x00netascii\x00', 'latin1'));
  assert.ok(w.ok);
  assert.deepEqual(w.value, { op: OP_WRQ, filename: 'up.bin', mode: 'netascii', options: [] });

  const d = parsePacket(hex('0003 ffff 616263'));
  assert.ok(d.ok && d.value.op === OP_DATA);
  assert.equal(d.value.block, 65535);
  assert.deepEqual(d.value.data, Buffer.from('abc'));

  const a = parsePacket(hex('0004 0102'));
  assert.ok(a.ok);
  assert.deepEqual(a.value, { op: OP_ACK, block: 0x0102 });

  const e = parsePacket(Buffer.from('\x00\x05\x00\x00Early terminate\x00', 'latin1'));
  assert.ok(e.ok);
  assert.deepEqual(e.value, { op: OP_ERROR, code: 0, message: 'Early terminate' });

  const o = parsePacket(Buffer.from('\x00\x06blksize\x00512\x00', 'latin1'));
  assert.ok(o.ok);
  assert.deepEqual(o.value, { op: OP_OACK, options: [{ name: 'blksize', key: 'blksize', value: '512' }] });
});

test('builders produce exact bytes', () => {
  assert.deepEqual(buildAck(0x1234), hex('0004 1234'));
  assert.deepEqual(buildAck(65536), hex('0004 0000'));
  assert.deepEqual(buildData(7, Buffer.from('hi')), hex('0003 0007 6869'));
  assert.deepEqual(buildError(1, 'File not found'), Buffer.from('\x00\x05\x00\x01File not found\x00', 'latin1'));
  assert.deepEqual(buildError(0, 'a\0b'), Buffer.from('\x00\x05\x00\x00a b\x00', 'latin1'));
  assert.deepEqual(
    buildOack([{ name: 'blksize', value: '1468' }, { name: 'tsize', value: '1048576' }]),
    Buffer.from('\x00\x06blksize\x001468\x00tsize\x001048576\x00', 'latin1'),
  );
  assert.deepEqual(
    buildRequest(OP_RRQ, 'a/b', 'octet', [{ name: 'windowsize', value: '16' }]),
    Buffer.from('\x00\x01a/b\x00octet\x00windowsize\x0016\x00', 'latin1'),
  );
  const buf = Buffer.alloc(8, 0xee);
  writeDataHeader(buf, 0xabcd);
  assert.deepEqual(buf, hex('0003 abcd eeee eeee'));
});

test('malformed input is a typed ParseError, never a throw', () => {
  const cases: [string, Buffer][] = [
    ['TFTP_SHORT', hex('00')],
    ['TFTP_SHORT', hex('000100')],
    ['TFTP_BAD_OPCODE', hex('0009 0000')],
    ['TFTP_BAD_OPCODE', hex('0000 0000')],
    ['TFTP_UNTERMINATED', Buffer.from('\x00\x01file', 'latin1')],
    ['TFTP_UNTERMINATED', Buffer.from('\x00\x01file\x00octet', 'latin1')],
    ['TFTP_EMPTY_FILENAME', Buffer.from('\x00\x01\x00octet\x00', 'latin1')],
    ['TFTP_BAD_MODE', Buffer.from('\x00\x01f\x00binary\x00', 'latin1')],
    ['TFTP_ODD_OPTIONS', Buffer.from('\x00\x01f\x00octet\x00blksize\x00', 'latin1')],
    ['TFTP_UNTERMINATED', Buffer.from('\x00\x01f\x00octet\x00blksize\x00512', 'latin1')],
    ['TFTP_EMPTY_OPTION', Buffer.from('\x00\x01f\x00octet\x00\x00512\x00', 'latin1')],
    ['TFTP_BAD_LENGTH', hex('0004 000100')],
    ['TFTP_OVERSIZE', Buffer.concat([hex('0001'), Buffer.alloc(3000, 0x41), hex('00')])],
    ['TFTP_OVERSIZE', Buffer.concat([hex('0003 0001'), Buffer.alloc(65465)])],
  ];
  for (const [code, bytes] of cases) {
    const r = parsePacket(bytes);
    assert.equal(r.ok, false, `expected ${code} for ${bytes.toString('hex').slice(0, 40)}`);
    if (!r.ok) assert.equal(r.error.code, code);
  }
});

test('an option bomb is refused; trailing NUL padding and repeated options are tolerated', () => {
  const many = Array.from({ length: MAX_OPTIONS + 1 }, (_, i) => `o${i}\x001\x00`).join('');
  const r = parsePacket(Buffer.from(`\x00\x01f\x00octet\x00${many}`, 'latin1'));
  assert.ok(!r.ok && r.error.code === 'TFTP_TOO_MANY_OPTIONS');

  const padded = parsePacket(Buffer.from('\x00\x01f\x00octet\x00tsize\x000\x00\x00\x00\x00', 'latin1'));
  assert.ok(padded.ok && padded.value.op === OP_RRQ);
  assert.equal(padded.value.options.length, 1);

  const rep = parsePacket(Buffer.from('\x00\x01f\x00octet\x00blksize\x00512\x00BLKSIZE\x001468\x00', 'latin1'));
  assert.ok(rep.ok && rep.value.op === OP_RRQ);
  assert.deepEqual(rep.value.options, [{ name: 'blksize', key: 'blksize', value: '512' }]);
});

test('ERROR without a terminating NUL still parses (lenient to odd clients)', () => {
  const r = parsePacket(Buffer.from('\x00\x05\x00\x08bad options', 'latin1'));
  assert.ok(r.ok);
  assert.deepEqual(r.value, { op: OP_ERROR, code: 8, message: 'bad options' });
});

test('property: parsePacket never throws on arbitrary bytes', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 600 }), (a) => {
      const r = parsePacket(Buffer.from(a));
      assert.equal(typeof r.ok, 'boolean');
    }),
    { numRuns: 3000 },
  );
});

test('property: a built request round-trips', () => {
  const name = fc.stringMatching(/^[a-zA-Z0-9_.\/-]{1,40}$/);
  fc.assert(
    fc.property(name, fc.constantFrom('octet', 'netascii'), fc.uniqueArray(fc.stringMatching(/^[a-z]{1,10}$/), { maxLength: 5 }), (f, mode, keys) => {
      const opts = keys.map((k, i) => ({ name: k, value: String(i) }));
      const r = parsePacket(buildRequest(OP_RRQ, f, mode, opts));
      assert.ok(r.ok && r.value.op === OP_RRQ);
      assert.equal(r.value.filename, f);
      assert.equal(r.value.mode, mode);
      assert.deepEqual(r.value.options.map((o) => [o.name, o.value]), opts.map((o) => [o.name, o.value]));
    }),
  );
});
