/**
 * The Pi bootloaders' size probe (issue 16): the Pi 4/5 EEPROM requests a file with `tsize 0 blksize …`,
 * reads the OACK and aborts with ERROR 0 "Early terminate" (what dnsmasq logs for it), then requests it again;
 * it asks config.txt several times. The probe must be answered without reading the file and without a
 * warning; the real read that follows must be whole. (Sequence: the EEPROM's TFTP exchange as dnsmasq logs
 * it in raspberrypi/rpi-eeprom issues, e.g. #563: "sent …/start4.elf to …" preceded by "error 0 Early
 * terminate received from …"; the options are the bootloader's, tsize then blksize.)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BufferSource, type FileSource } from '../../src/util/source.js';
import type { ResolveRequest, TftpResolver } from '../../src/tftp/resolver.js';
import { buildAck, buildError, buildRequest, OP_DATA, OP_OACK, OP_RRQ } from '../../src/tftp/packet.js';
import { RawClient } from './raw-client.js';
import { pattern, startServer } from './helpers.js';

/** A resolver whose sources count the bytes read from them. */
class CountingResolver implements TftpResolver {
  reads = 0;
  constructor(private readonly data: Buffer) {}
  async resolve(_req: ResolveRequest): Promise<FileSource> {
    const inner = new BufferSource(this.data);
    return {
      size: inner.size,
      read: (buf, off, len, pos, cb) => {
        this.reads++;
        inner.read(buf, off, len, pos, cb);
      },
      close: () => inner.close(),
    };
  }
}

test('Pi size probe: OACK with tsize, ERROR 0 "Early terminate": nothing read, no warning; the read after it is whole', async (t) => {
  const data = pattern(3000, 16);
  const resolver = new CountingResolver(data);
  const srv = await startServer(t, resolver);
  const c = await RawClient.open();
  t.after(() => c.close());
  const opts = [{ name: 'tsize', value: '0' }, { name: 'blksize', value: '1024' }];

  // Three probes in a row (config.txt is asked several times by some bootloader versions).
  for (let i = 0; i < 3; i++) {
    c.send(buildRequest(OP_RRQ, '3a4b5c6d/start4.elf', 'octet', opts), srv.port);
    const { p, port } = await c.recvPacket();
    assert.equal(p.op, OP_OACK);
    assert.ok(p.op === OP_OACK && p.options.some((o) => o.name === 'tsize' && o.value === String(data.length)), 'tsize is the file size');
    c.send(buildError(0, 'Early terminate'), port);
    const s = await srv.nextTransfer();
    assert.equal(s.outcome, 'client-error');
    assert.match(s.detail ?? '', /^size probe/);
    assert.equal(s.bytes, 0);
  }
  assert.equal(resolver.reads, 0, 'a size probe reads nothing from the file');

  // The real read: OACK, ACK 0, then three blocks of 1024, 1024, 952.
  c.send(buildRequest(OP_RRQ, '3a4b5c6d/start4.elf', 'octet', opts), srv.port);
  const o = await c.recvPacket();
  assert.equal(o.p.op, OP_OACK);
  c.send(buildAck(0), o.port);
  const got: Buffer[] = [];
  for (let block = 1; ; block++) {
    const { p } = await c.recvPacket();
    assert.equal(p.op, OP_DATA);
    if (p.op !== OP_DATA) break;
    assert.equal(p.block, block);
    got.push(Buffer.from(p.data));
    c.send(buildAck(block), o.port);
    if (p.data.length < 1024) break;
  }
  assert.ok(Buffer.concat(got).equals(data));
  assert.equal((await srv.nextTransfer()).outcome, 'complete');
  assert.ok(resolver.reads > 0);
  const loud = srv.lines.filter((l) => l.level >= 40);
  assert.deepEqual(loud, [], 'no warning or error lines for probes');
});
