import { test } from 'node:test';
import assert from 'node:assert/strict';
import { addHost, addPi, ConfigEditError } from '../../src/config/edit.js';
import { parseConfig } from '../../src/config/load.js';

const base = `# my netboot server
images:
  jammy: { path: /srv/jammy.img }   # the Pi image
  debian:
    path: /srv/debian.img
pis:
  # the garage Pi
  89025d75: { image: jammy }
`;

test('add-pi adds a serial, keeps comments, and the result loads', () => {
  const r = addPi(base, 'c.yaml', '100000000012abcd', 'jammy');
  assert.equal(r.summary, 'added Pi 0012abcd → image jammy');
  assert.match(r.warnings[0]!, /shortened to `0012abcd`/);
  assert.match(r.text, /# my netboot server/);
  assert.match(r.text, /# the garage Pi/);
  assert.match(r.text, /# the Pi image/);
  assert.match(r.text, /"0012abcd": \{ image: jammy \}/);
  const loaded = parseConfig(r.text, 'c.yaml');
  assert.ok(loaded.ok);
  assert.deepEqual(Object.keys(loaded.config.pis).sort(), ['0012abcd', '89025d75']);
});

test('add-pi on an existing serial (any spelling) updates it in place', () => {
  const r = addPi(base, 'c.yaml', '89025D75', 'debian', 1);
  assert.equal(r.summary, 'updated Pi 89025d75 → image debian');
  const loaded = parseConfig(r.text, 'c.yaml');
  assert.ok(loaded.ok);
  assert.deepEqual({ ...loaded.config.pis }, { '89025d75': { image: 'debian', partition: 1 } });
});

test('add-host creates the hosts section and normalizes the MAC', () => {
  const r = addHost(base, 'c.yaml', '52-54-00-AA-BB-01', { image: 'debian', bootFile: 'pxelinux.0' });
  assert.equal(r.summary, 'added host 52:54:00:aa:bb:01 → image debian');
  const loaded = parseConfig(r.text, 'c.yaml');
  assert.ok(loaded.ok);
  assert.deepEqual(loaded.config.hosts['52:54:00:aa:bb:01'], { image: 'debian', bootFile: 'pxelinux.0' });
  assert.match(r.text, /# the garage Pi/);
});

test('edits refuse unknown images, bad serials and MACs, and configs that do not load', () => {
  assert.throws(() => addPi(base, 'c.yaml', '89025d75', 'focal'), (e: unknown) => e instanceof ConfigEditError && /known images: jammy, debian/.test(e.message));
  assert.throws(() => addPi(base, 'c.yaml', 'zz', 'jammy'), /serial must be 8 hex digits/);
  assert.throws(() => addHost(base, 'c.yaml', '52:54', { image: 'jammy' }), /MAC address must look like/);
  assert.throws(() => addPi('images: [', 'c.yaml', '89025d75', 'jammy'), /fix the config first/);
});
