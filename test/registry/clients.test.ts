import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ClientTable, clientFields } from '../../src/registry/clients.js';
import { MetricsRegistry } from '../../src/util/metrics.js';

test('a client learned at boot is recognised by address later, and names its state by identity', () => {
  const t = new ClientTable();
  t.learn('198.18.0.50', { mac: '52:54:00:aa:bb:01', firmware: 'bios', boot: true }, 1000);
  assert.deepEqual(t.identity('198.18.0.50'), { ip: '198.18.0.50', mac: '52:54:00:aa:bb:01', firmware: 'bios' });
  assert.equal(t.stateKey('198.18.0.50'), 'mac-52-54-00-aa-bb-01');
  t.learn('198.18.0.51', { serial: '89025d75' });
  assert.equal(t.stateKey('198.18.0.51'), 'pi-89025d75');
  assert.equal(t.stateKey('198.18.0.99'), 'ip-198.18.0.99');
  assert.deepEqual(clientFields(t.identity('198.18.0.51')), { ip: '198.18.0.51', serial: '89025d75' });
});

test('a MAC that moves to a new address leaves the old one', () => {
  const t = new ClientTable();
  t.learn('198.18.0.50', { mac: '52:54:00:aa:bb:01' });
  t.learn('198.18.0.60', { mac: '52:54:00:aa:bb:01' });
  assert.equal(t.identity('198.18.0.50').mac, undefined);
  assert.equal(t.identity('198.18.0.60').mac, '52:54:00:aa:bb:01');
});

test('the table is bounded, least recently seen first out', () => {
  const t = new ClientTable(3);
  for (let i = 1; i <= 4; i++) t.learn(`198.18.0.${i}`, { serial: `0000000${i}` });
  t.learn('198.18.0.2', {});
  t.learn('198.18.0.5', {});
  assert.deepEqual(t.all().map((r) => r.ip).sort(), ['198.18.0.2', '198.18.0.4', '198.18.0.5']);
  assert.equal(t.stateKey('198.18.0.1'), 'ip-198.18.0.1');
});

test('metrics render in the Prometheus text format', () => {
  const m = new MetricsRegistry();
  const c = m.counter('netbootd_tftp_bytes_total', 'Bytes sent by TFTP');
  c.inc({ client: '198.18.0.5', path: 'a"b' }, 512);
  c.inc({ client: '198.18.0.5', path: 'a"b' }, 512);
  let n = 3;
  m.computed('netbootd_nbd_connections', 'Open NBD connections', () => n);
  n = 4;
  assert.equal(
    m.render(),
    '# HELP netbootd_tftp_bytes_total Bytes sent by TFTP\n# TYPE netbootd_tftp_bytes_total counter\n' +
      'netbootd_tftp_bytes_total{client="198.18.0.5",path="a\\"b"} 1024\n' +
      '# HELP netbootd_nbd_connections Open NBD connections\n# TYPE netbootd_nbd_connections gauge\nnetbootd_nbd_connections 4\n',
  );
});

test('the table saves and restores identities, skipping malformed records, and reports identity changes', () => {
  const a = new ClientTable();
  let changes = 0;
  a.onIdentityChange = () => changes++;
  a.learn('198.18.0.50', { mac: '52:54:00:aa:bb:01', firmware: 'bios', boot: true }, 1000);
  a.learn('198.18.0.50', { file: 'pxelinux.0' }, 2000);
  a.learn('198.18.0.51', { serial: '89025d75' }, 3000);
  assert.equal(changes, 2, 'only new MACs/serials count');
  const saved = JSON.parse(JSON.stringify(a.toJSON())) as unknown[];
  const b = new ClientTable();
  assert.equal(b.load([...saved, { ip: 5 }, null, 'x']), 2);
  assert.equal(b.stateKey('198.18.0.50'), 'mac-52-54-00-aa-bb-01');
  assert.equal(b.stateKey('198.18.0.51'), 'pi-89025d75');
  assert.equal(b.get('198.18.0.50')!.lastBoot, 1000);
  assert.equal(b.load({ not: 'a list' }), 0);
});

test('pretty log lines for a terminal: time, level, component, message, fields', async () => {
  const { prettyLine } = await import('../../src/util/log.js');
  const line = prettyLine(JSON.stringify({ level: 30, time: Date.UTC(2026, 0, 2, 3, 4, 5), component: 'tftp', msg: 'file sent', ip: '198.18.0.5', serial: '89025d75', path: 'a b' }));
  assert.equal(line, '03:04:05 INFO  tftp: file sent  ip=198.18.0.5 serial=89025d75 path="a b"');
  assert.equal(prettyLine('not json'), 'not json');
});
