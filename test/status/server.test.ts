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
