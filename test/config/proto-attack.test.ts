/**
 * Names like `__proto__`, `constructor` and `toString` are plain names: in the config file, and in what a
 * client or the status endpoint asks for (an image, a host, a Pi). No lookup ever lands on Object.prototype.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../src/config/load.js';
import { startDaemon, testConfig } from '../daemon/harness.js';

const NAMES = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf'];

test('prototype names as config keys are unknown keys, never silently taken', () => {
  for (const name of NAMES) {
    const r = parseConfig(`${name}: { polluted: true }\nimages: {}\n`);
    assert.equal(r.ok, false, name);
    if (!r.ok) assert.match(r.errors.map((e) => e.message).join('\n'), new RegExp(`unknown key \`${name}\``));
    const nested = parseConfig(`tftp:\n  ${name}: 1\n`);
    assert.equal(nested.ok, false, `tftp.${name}`);
  }
  assert.equal(({} as Record<string, unknown>).polluted, undefined, 'Object.prototype untouched');
});

test('config maps have no prototype: looking up a prototype name finds nothing', () => {
  const r = parseConfig('images:\n  jammy: { path: /srv/jammy.img }\npis:\n  "12345678": { image: jammy }\nhosts:\n  "52:54:00:aa:bb:01": { image: jammy }\n');
  assert.ok(r.ok);
  if (!r.ok) return;
  for (const name of NAMES) {
    assert.equal(r.config.images[name], undefined, `images[${name}]`);
    assert.equal(r.config.pis[name], undefined, `pis[${name}]`);
    assert.equal(r.config.hosts[name], undefined, `hosts[${name}]`);
  }
  assert.ok(r.config.images.jammy);
});

test('reset-overlay of image `__proto__` or `constructor` is "not in the config", nothing else', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'netbootd-proto-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const d = await startDaemon(t, dir, testConfig(join(dir, 'state'), 'images: {}\n'));
  for (const name of NAMES) {
    await assert.rejects(d.daemon.resetOverlay(name, '11111111'), (e: Error) => {
      assert.match(e.message, new RegExp(`image \`${name}\` is not in the config`));
      return true;
    });
  }
});
