/**
 * Through a lossy relay (10% of packets dropped, duplicated or reordered, both directions, seeded): lockstep
 * and windowed transfers still arrive byte-exact. The server's retransmission timer drives recovery.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LossyRelay } from '../helpers/lossy-relay.js';
import { download } from './raw-client.js';
import { MapResolver, startServer, pattern } from './helpers.js';

const cases = [
  { name: 'lockstep blksize 512', blksize: 512, windowsize: undefined, size: 120 * 1024 + 17, seed: 11 },
  { name: 'lockstep blksize 1468', blksize: 1468, windowsize: undefined, size: 300 * 1024 + 5, seed: 12 },
  { name: 'windowsize 4', blksize: 1468, windowsize: 4, size: 400 * 1024 + 1, seed: 13 },
  { name: 'windowsize 16', blksize: 1468, windowsize: 16, size: 600 * 1024 + 3, seed: 14 },
  { name: 'windowsize 64 blksize 512', blksize: 512, windowsize: 64, size: 300 * 1024, seed: 15 },
];

for (const c of cases) {
  test(`lossy relay: ${c.name} arrives byte-exact`, async (t) => {
    const file = pattern(c.size, c.seed);
    const s = await startServer(t, new MapResolver(new Map([['f', file]])), { defaultTimeoutMs: 40, retries: 50 });
    const relay = await LossyRelay.start({ target: { address: '127.0.0.1', port: s.port }, seed: c.seed, rate: 0.1 });
    t.after(() => relay.close());
    const r = await download(relay.port, 'f', { blksize: c.blksize, windowsize: c.windowsize, tsize: true, retryMs: 100, deadlineMs: 60_000 });
    assert.equal(r.data.length, file.length);
    assert.ok(r.data.equals(file), 'bytes differ');
    const st = relay.stats;
    assert.ok(st.dropped > 0 && st.duplicated > 0 && st.reordered > 0, `impairments happened: ${JSON.stringify(st)}`);
  });
}
