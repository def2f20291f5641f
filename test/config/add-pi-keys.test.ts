/**
 * Issue 16: `netbootd add-pi` (src/config/edit.ts addPi) takes a Pi's MAC as its key (EEPROM TFTP_PREFIX=2, or
 * 1 with a prefix) and a 16-digit serial (stored as its low 32 bits, the TFTP prefix of every Pi bootloader:
 * rpi-eeprom issue #563), plus --mac / --prefix / --model; the result loads and resolves as the daemon reads it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { addPi, ConfigEditError } from '../../src/config/edit.js';
import { parseConfig } from '../../src/config/load.js';
import { PiDirectory } from '../../src/registry/pi.js';

const FILE = '/etc/netbootd/netbootd.yaml';
const BASE = '# my Pis\nimages:\n  pios: { path: /srv/pios.img }  # Raspberry Pi OS\n';

function load(text: string): ReturnType<typeof parseConfig> & { ok: true } {
  const r = parseConfig(text, FILE);
  assert.ok(r.ok, r.ok ? '' : r.errors.map((e) => e.message).join('\n'));
  return r as ReturnType<typeof parseConfig> & { ok: true };
}

test('add-pi with a MAC key (any case, dashes): a Pi listed by MAC, found by its TFTP_PREFIX=2 path', () => {
  const r = addPi(BASE, FILE, 'DC-A6-32-01-02-03', 'pios', undefined, { prefix: 'pxe', model: 4 });
  assert.match(r.summary, /added Pi dc:a6:32:01:02:03 → image pios/);
  assert.match(r.text, /# my Pis/, 'comments kept');
  const cfg = load(r.text).config;
  assert.deepEqual(Object.keys(cfg.pis), ['dc:a6:32:01:02:03']);
  assert.equal(cfg.pis['dc:a6:32:01:02:03']!.prefix, 'pxe');
  assert.equal(cfg.pis['dc:a6:32:01:02:03']!.model, 4);
  const dir = new PiDirectory(cfg.pis);
  assert.equal(dir.mac('dc:a6:32:01:02:03')?.kind, 'mac');
  // Again with the other spelling: the same entry is updated, not duplicated.
  const again = addPi(r.text, FILE, 'dc:a6:32:01:02:03', 'pios', undefined, { model: 5 });
  assert.match(again.summary, /updated Pi dc:a6:32:01:02:03/);
  assert.equal(Object.keys(load(again.text).config.pis).length, 1);
  assert.equal(load(again.text).config.pis['dc:a6:32:01:02:03']!.model, 5);
});

test('add-pi with a 16-digit Pi 5 serial: stored as its low 32 bits with a warning; --mac ties the MAC form to it', () => {
  const r = addPi(BASE, FILE, '0c8f7e5cbd989ae1', 'pios', undefined, { mac: '88:A2:9E:7E:2E:41', model: 5 });
  assert.match(r.summary, /added Pi bd989ae1/);
  assert.ok(r.warnings.some((w) => /low 32 bits/.test(w)), r.warnings.join('\n'));
  const cfg = load(r.text).config;
  assert.equal(cfg.pis['bd989ae1']!.mac, '88:a2:9e:7e:2e:41');
  const dir = new PiDirectory(cfg.pis);
  assert.equal(dir.mac('88:a2:9e:7e:2e:41')?.id, 'bd989ae1', 'the MAC form resolves to the serial identity');
  // The 16-digit form again updates the same Pi.
  assert.match(addPi(r.text, FILE, '0C8F7E5CBD989AE1', 'pios').summary, /updated Pi bd989ae1/);
  // A Pi 4 16-digit serial (10000000…) is shortened too.
  assert.match(addPi(BASE, FILE, '100000003a4b5c6d', 'pios').summary, /added Pi 3a4b5c6d/);
});

test('add-pi refuses what the daemon could not use', () => {
  assert.throws(() => addPi(BASE, FILE, 'dc:a6:32:01:02', 'pios'), ConfigEditError);
  assert.throws(() => addPi(BASE, FILE, '3a4b5c6d', 'pios', undefined, { mac: 'nope' }), /MAC|mac/);
  assert.throws(() => addPi(BASE, FILE, 'dc:a6:32:01:02:03', 'pios', undefined, { mac: 'dc:a6:32:01:02:04' }), /listed by its MAC/);
  assert.throws(() => addPi(BASE, FILE, '3a4b5c6d', 'pios', undefined, { model: 6 }), /3, 4 or 5/);
  // Two Pi 5s whose low 8 digits collide: the second is refused, naming both.
  const one = addPi(BASE, FILE, '0c8f7e5cbd989ae1', 'pios').text;
  assert.throws(() => addPi(one, FILE, '1d9f8e6cbd989ae1', 'pios'), /bd989ae1/);
});
