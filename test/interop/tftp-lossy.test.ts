/**
 * atftp (Debian's client) through the lossy relay to the daemon's TFTP server: 10% of packets dropped,
 * duplicated or reordered both ways; lockstep and windowed transfers arrive byte-exact.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startDaemon } from '../daemon/harness.js';
import { LossyRelay } from '../helpers/lossy-relay.js';
import { haveTools, run, tempDir } from '../helpers/tools.js';
import { pattern } from '../tftp/helpers.js';

const cases = [
  { name: 'lockstep blksize 512', opts: ['--option', 'blksize 512'], size: 100 * 1024 + 9, seed: 21 },
  { name: 'lockstep blksize 1468', opts: ['--option', 'blksize 1468', '--option', 'tsize 0'], size: 300 * 1024 + 1, seed: 22 },
  { name: 'windowsize 16', opts: ['--option', 'blksize 1468', '--option', 'windowsize 16'], size: 500 * 1024 + 3, seed: 23 },
  { name: 'windowsize 4 blksize 512', opts: ['--option', 'blksize 512', '--option', 'windowsize 4'], size: 200 * 1024, seed: 24 },
];

for (const c of cases) {
  test(`atftp through a lossy relay: ${c.name}`, async (t) => {
    if (!haveTools(t, 'atftp')) return;
    const dir = tempDir(t);
    const file = pattern(c.size, c.seed);
    writeFileSync(join(dir, 'f.bin'), file);
    const state = join(dir, 'state');
    mkdirSync(state);
    // The daemon as it runs (registry → `defaults.tftpRoot`), with its shortest retransmit timeout.
    const d = await startDaemon(t, dir, `server: { address: 127.0.0.1, stateDir: ${state} }
dhcp: { enabled: false }
tftp: { address: 127.0.0.1, port: 0, timeoutMs: 100, retries: 60 }
nbd: { address: 127.0.0.1, port: 0 }
status: { enabled: false }
defaults: { tftpRoot: ${dir} }
`);
    const port = d.tftpPort;
    const relay = await LossyRelay.start({ target: { address: '127.0.0.1', port }, seed: c.seed, rate: 0.1 });
    t.after(() => relay.close());
    const out = join(dir, 'out.bin');
    await run('atftp', ['--tftp-timeout', '1', ...c.opts, '-g', '-r', 'f.bin', '-l', out, '127.0.0.1', String(relay.port)], { timeoutMs: 90_000 });
    const got = readFileSync(out);
    assert.equal(got.length, file.length);
    assert.ok(got.equals(file), 'bytes differ');
    assert.ok(relay.stats.dropped > 0 && relay.stats.duplicated > 0 && relay.stats.reordered > 0, JSON.stringify(relay.stats));
  });
}
