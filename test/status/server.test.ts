import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StatusServer } from '../../src/status/server.js';
import { MetricsRegistry } from '../../src/util/metrics.js';
import { silentLogger } from '../../src/util/log.js';

test('status endpoint serves JSON status and Prometheus metrics on loopback', async (t) => {
  const metrics = new MetricsRegistry();
  metrics.counter('netbootd_dhcp_offers_total', 'Offers sent').inc({ firmware: 'bios' });
  const srv = new StatusServer({ status: () => ({ clients: [{ ip: '198.18.0.5' }] }), metrics }, silentLogger);
  const addr = await srv.listen(0, '127.0.0.1');
  t.after(() => srv.close());
  const base = `http://127.0.0.1:${addr.port}`;
  const st = await fetch(`${base}/status`);
  assert.equal(st.status, 200);
  assert.deepEqual(await st.json(), { clients: [{ ip: '198.18.0.5' }] });
  const m = await fetch(`${base}/metrics`);
  assert.match(m.headers.get('content-type')!, /text\/plain; version=0\.0\.4/);
  assert.match(await m.text(), /^netbootd_dhcp_offers_total\{firmware="bios"\} 1$/m);
  assert.equal((await fetch(`${base}/nope`)).status, 404);
  assert.equal((await fetch(`${base}/status`, { method: 'POST' })).status, 405);
});

test('netbootd status prints clients, transfers and NBD connections as tables', async () => {
  const { formatStatus } = await import('../../src/cli/serve.js');
  const text = formatStatus({
    uptimeS: 42,
    config: '/etc/netbootd/netbootd.yaml',
    clients: [{ ip: '198.18.0.5', serial: '89025d75', firmware: 'pi', lastSeen: '2026-11-23T10:00:00.000Z', lastBoot: '2026-11-23T09:59:00.000Z', lastFile: 'start4.elf' }],
    tftp: { active: 1, served: 10, notFound: 2, failed: 0, transfers: [{ ip: '198.18.0.5', serial: '89025d75', path: '89025d75/kernel8.img', size: 1000, bytes: 500, percent: 50 }] },
    nbd: { connections: 1, clients: [{ ip: '198.18.0.6', mac: '52:54:00:aa:bb:01', export: 'debian', bytesRead: 4096, bytesWritten: 512 }] },
  });
  assert.match(text, /^netbootd up 42s, config \/etc\/netbootd\/netbootd\.yaml$/m);
  assert.match(text, /^TFTP: 1 active, 10 served, 2 not found, 0 failed$/m);
  assert.match(text, /^89025d75\/kernel8\.img\s+89025d75 198\.18\.0\.5\s+50% of 1000 bytes$/m);
  assert.match(text, /^debian\s+52:54:00:aa:bb:01 198\.18\.0\.6\s+4096\s+512$/m);
  assert.match(text, /^198\.18\.0\.5\s+-\s+89025d75\s+-\s+pi\s+2026-11-23 09:59:00\s+start4\.elf$/m);
});
