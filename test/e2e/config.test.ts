/**
 * The netbootd configuration the e2e boots start `netbootd serve` with must load: checked here with the
 * product's own loader, so that a schema change breaks this fast test rather than a 5-minute boot.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig, formatIssue } from '../../src/config/load.js';
import { netbootdConfig } from './stacks.js';

test('e2e netbootd config (PC hosts, copy-on-write, Pis) passes the config loader', () => {
  const text = netbootdConfig({
    image: '/tmp/e2e/disk.img', exportName: 'e2e', mode: 'cow', workDir: '/tmp/e2e',
    hosts: [{ mac: '52:54:00:e2:0b:01', firmware: 'bios' }, { mac: '52:54:00:e2:0e:01', firmware: 'uefi' }],
    pis: ['3a4b5c6d', '12345678'],
  }, '/tmp/e2e/state');
  const r = parseConfig(text, '/tmp/e2e/netbootd.yaml');
  assert.ok(r.ok, r.ok ? '' : r.errors.map(formatIssue).join('\n'));
  assert.deepEqual(r.warnings, []);
  const c = r.config;
  assert.equal(c.server.address, '198.18.0.2');
  assert.equal(c.images['e2e']?.mode, 'cow');
  assert.equal(c.images['e2e']?.export, 'e2e');
  assert.deepEqual(Object.keys(c.hosts).sort(), ['52:54:00:e2:0b:01', '52:54:00:e2:0e:01']);
  // A serial of digits only stays that serial (text, not a number).
  assert.deepEqual(Object.keys(c.pis).sort(), ['12345678', '3a4b5c6d']);
  assert.equal(c.pis['12345678']?.image, 'e2e');
});

test('e2e netbootd config with HTTP boot (http section, kernel/initrd/cmdline keys, status) passes the config loader', () => {
  const text = netbootdConfig({
    image: '/tmp/e2e/disk.img', exportName: 'e2e', workDir: '/tmp/e2e', http: { chainIpxe: true }, status: true,
    hosts: [
      { mac: '52:54:00:e2:4b:01', firmware: 'bios', kernel: 'vmlinuz', initrd: ['initrd.img'], cmdline: 'console=ttyS0 nbdroot=198.18.0.2/e2e' },
      { mac: '52:54:00:e2:4e:01', firmware: 'uefi', http: false },
    ],
  }, '/tmp/e2e/state');
  const r = parseConfig(text, '/tmp/e2e/netbootd.yaml');
  assert.ok(r.ok, r.ok ? '' : r.errors.map(formatIssue).join('\n'));
  assert.deepEqual(r.warnings, []);
  const c = r.config;
  assert.equal(c.http.enabled, true);
  assert.equal(c.http.port, 8080);
  assert.equal(c.http.chainIpxe, true);
  assert.equal(c.status.enabled, true);
  const h = c.hosts['52:54:00:e2:4b:01'];
  assert.equal(h?.kernel, 'vmlinuz');
  assert.deepEqual(h?.initrd, ['initrd.img']);
  assert.equal(h?.cmdline, 'console=ttyS0 nbdroot=198.18.0.2/e2e');
  assert.equal(c.hosts['52:54:00:e2:4e:01']?.http, false);
});
