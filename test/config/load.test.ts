import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseConfig, formatIssue, type LoadResult } from '../../src/config/load.js';
import { configJsonSchemaText } from '../../src/config/json-schema.js';
import { REPO_ROOT } from '../helpers/tools.js';

const errorsOf = (r: LoadResult): string[] => (r.ok ? [] : r.errors.map(formatIssue));

const issueExample = `
server:
  address: 192.168.1.10      # IPv4 in DHCP replies, for TFTP and NBD; detected when omitted
  stateDir: /var/lib/netbootd
dhcp:  { enabled: true }     # ports 67/4011; tftp.port, nbd.port default 69 and 10809
tftp:  { port: 69 }
nbd:   { port: 10809 }
images:
  jammy:
    path: /srv/images/jammy.img
    mode: readwrite          # readwrite | readonly | cow
    allow: [192.168.1.0/24]  # optional NBD allow-list
  debian:
    path: debian.img
    mode: cow
pis:
  89025d75: { image: jammy }
hosts:
  "52:54:00:aa:bb:01": { image: debian, bootFile: { bios: pxelinux.0, uefi: syslinux.efi } }
`;

test('the shape from the issue loads, with defaults and typed values', () => {
  const r = parseConfig(issueExample, '/etc/netbootd/netbootd.yaml');
  assert.ok(r.ok, errorsOf(r).join('\n'));
  const c = r.config;
  assert.equal(c.server.address, '192.168.1.10');
  assert.equal(c.dhcp.enabled, true);
  assert.equal(c.dhcp.proxyPort, 4011);
  assert.equal(c.tftp.port, 69);
  assert.equal(c.tftp.maxBlksize, 1468);
  assert.equal(c.nbd.port, 10809);
  assert.equal(c.images.jammy!.mode, 'readwrite');
  assert.equal(c.images.jammy!.export, 'jammy');
  assert.deepEqual(c.images.jammy!.allow, ['192.168.1.0/24']);
  assert.equal(c.images.debian!.path, '/etc/netbootd/debian.img', 'relative paths are relative to the config file');
  assert.deepEqual(c.pis['89025d75'], { image: 'jammy' });
  assert.deepEqual(c.hosts['52:54:00:aa:bb:01']!.bootFile, { bios: 'pxelinux.0', uefi: 'syslinux.efi' });
  assert.equal(c.defaults, undefined);
});

test('serials that YAML would read as numbers stay serials; 16-digit serials are shortened with a warning', () => {
  const r = parseConfig(
    `images: { a: { path: /a.img } }
pis:
  00123456: { image: a }
  12345678: { image: a }
  1e345678: { image: a }
  1000000089025D75: { image: a }
`,
    'c.yaml',
  );
  assert.ok(r.ok, errorsOf(r).join('\n'));
  assert.deepEqual(Object.keys(r.config.pis).sort(), ['00123456', '12345678', '1e345678', '89025d75']);
  assert.equal(r.warnings.length, 1);
  assert.equal(
    formatIssue(r.warnings[0]!),
    'c.yaml:6:3: pis.1000000089025D75: serial must be 8 hex digits; `1000000089025D75` was shortened to `89025d75`',
  );
});

test('errors name file:line:column, the key, and what would be right — all of them at once', () => {
  const r = parseConfig(
    `server:
  adress: 10.0.0.1
tftp:
  port: 99999
images:
  jammy:
    mode: rw
pis:
  xyz: { image: jammy }
  abcdef12: { image: focal }
hosts:
  "52:54:00:aa:bb": { image: jammy }
  "52-54-00-AA-BB-02": { }
`,
    'bad.yaml',
  );
  assert.equal(r.ok, false);
  assert.deepEqual(errorsOf(r), [
    'bad.yaml:2:3: server.adress: unknown key `adress` (did you mean `address`?); known keys here: address, stateDir',
    'bad.yaml:4:9: tftp.port: must be between 0 and 65535, not 99999',
    'bad.yaml:6:3: images.jammy.path: `path` is required here',
    'bad.yaml:7:11: images.jammy.mode: must be one of `readwrite`, `readonly`, `cow`, not `rw`',
    'bad.yaml:9:3: pis.xyz: serial must be 8 hex digits (as in /proc/cpuinfo, without a leading 10000000), not `xyz`',
    'bad.yaml:10:15: pis.abcdef12.image: image `focal` is not defined (known images: jammy)',
    'bad.yaml:12:3: hosts.52:54:00:aa:bb: MAC address must look like 52:54:00:aa:bb:01, not `52:54:00:aa:bb`',
    'bad.yaml:13:3: hosts.52:54:00:aa:bb:02: needs `image` (serve its boot partition) or `tftpRoot` (serve a directory)',
  ]);
});

test('YAML syntax errors and duplicate keys are reported with positions', () => {
  const r = parseConfig('images:\n  a: { path: x\n', 'syn.yaml');
  assert.equal(r.ok, false);
  assert.match(errorsOf(r)[0]!, /^syn\.yaml:\d+:\d+: YAML: /);
  const d = parseConfig('pis:\n  89025d75: { image: a }\n  89025D75: { image: a }\nimages: { a: { path: /a } }\n', 'dup.yaml');
  assert.deepEqual(errorsOf(d), ['dup.yaml:3:3: pis.89025D75: `89025D75` is the same as `89025d75` (89025d75); give it once']);
});

test('export names must be unique and TLS exports need a certificate', () => {
  const r = parseConfig('images:\n  a: { path: /a, export: root }\n  b: { path: /b, export: root, tls: true }\n', 'x.yaml');
  assert.deepEqual(errorsOf(r), [
    'x.yaml:3:18: images.b.export: NBD export name `root` is already used by image `a`',
    'x.yaml:3:32: images.b.tls: requires TLS but `nbd.tls` (cert and key) is not configured',
  ]);
});

test('an empty file is a valid config that serves nobody', () => {
  const r = parseConfig('', 'empty.yaml');
  assert.ok(r.ok);
  assert.deepEqual({ ...r.config.images }, {});
  assert.equal(r.config.nbd.port, 10809);
});

test('arbitrary text never throws', () => {
  const samples = ['- a\n- b', '::::', '{', 'images: [1,2]', 'pis: 5', 'hosts: { ? [a] : b }', '\u0000\u0001', 'a: &x [*x]'];
  for (const s of samples) {
    const r = parseConfig(s);
    assert.equal(typeof r.ok, 'boolean');
  }
});

test('the published JSON Schema matches the validator', () => {
  const published = readFileSync(join(REPO_ROOT, 'config/netbootd.schema.json'), 'utf8');
  assert.equal(published, configJsonSchemaText(), 'run: node --import tsx scripts/gen-schema.ts');
});

test('the example config loads and shows every key of the schema', async () => {
  const { configSchema } = await import('../../src/config/schema.js');
  const text = readFileSync(join(REPO_ROOT, 'config/netbootd.example.yaml'), 'utf8');
  const r = parseConfig(text, join(REPO_ROOT, 'config/netbootd.example.yaml'));
  assert.ok(r.ok, errorsOf(r).join('\n'));
  assert.equal(r.warnings.length, 0);
  // Every key path of the schema appears in the example, commented out or not.
  const keys: string[] = [];
  const walk = (sch: { kind: string; properties?: Record<string, unknown>; values?: unknown; object?: unknown }): void => {
    if (sch.kind === 'object') for (const [k, v] of Object.entries(sch.properties!)) { keys.push(k); walk(v as never); }
    if (sch.kind === 'map') walk(sch.values as never);
    if (sch.kind === 'stringOrObject') walk(sch.object as never);
  };
  walk(configSchema as never);
  const missing = [...new Set(keys)].filter((k) => !new RegExp(`\\b${k}:`).test(text));
  assert.deepEqual(missing, []);
});

test('two images on one file is a warning', () => {
  const r = parseConfig('images:\n  a: { path: /srv/x.img }\n  b: { path: /srv/../srv/x.img, mode: readonly }\n', 'w.yaml');
  assert.ok(r.ok);
  assert.deepEqual(r.warnings.map(formatIssue), [
    'w.yaml:3:8: images.b.path: image `a` uses the same file: give each file one image entry (writes through one are not seen through the other)',
  ]);
});

test('more clients booting an image than nbd.maxConnections is a warning, naming how many', () => {
  const pis = (n: number): string => Array.from({ length: n }, (_, i) => `  ${(0x10000000 + i).toString(16)}: { image: a }\n`).join('');
  const base = 'images:\n  a: { path: /srv/x.img }\n';
  // The default cap (256): 256 Pis fit, a 257th does not.
  assert.deepEqual(parseConfig(`${base}pis:\n${pis(256)}`, 'n.yaml').warnings, []);
  const over = parseConfig(`${base}pis:\n${pis(257)}`, 'n.yaml');
  assert.ok(over.ok);
  assert.equal(over.warnings.length, 1);
  assert.match(formatIssue(over.warnings[0]!), /nbd\.maxConnections: 257 Pis and hosts boot an image but at most 256 NBD connections are accepted.*raise nbd\.maxConnections to at least 257/);
  // Hosts count too; a host served from a directory (no image) does not; the warning points at the key.
  const mixed = parseConfig(`nbd:\n  maxConnections: 2\n${base}pis:\n${pis(1)}hosts:\n  aa:bb:cc:00:00:01: { image: a }\n  aa:bb:cc:00:00:02: { image: a }\n  aa:bb:cc:00:00:03: { tftpRoot: /srv/tftp }\n`, 'm.yaml');
  assert.ok(mixed.ok);
  assert.deepEqual(mixed.warnings.map(formatIssue), [
    'm.yaml:2:3: nbd.maxConnections: 3 Pis and hosts boot an image but at most 2 NBD connections are accepted: a running client holds one for as long as it is up, so the clients past 2 are refused their root disk; raise nbd.maxConnections to at least 3 (each connection may hold 2 MiB of request memory)',
  ]);
  // NBD off: nothing to attach, nothing to warn about.
  assert.deepEqual(parseConfig(`nbd:\n  enabled: false\n  maxConnections: 2\n${base}pis:\n${pis(3)}`, 'o.yaml').warnings, []);
});
