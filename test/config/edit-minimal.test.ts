/**
 * An edit changes the lines it adds (or the one value it updates), nothing else: add-pi, add-host and prep's
 * addImage on the shipped example config keep every other byte (comment alignment, flow sequences, the
 * commented-out `defaults:` block where it was).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { addHost, addImage, addPi } from '../../src/config/edit.js';
import { parseConfig } from '../../src/config/load.js';
import { REPO_ROOT } from '../helpers/tools.js';

const EXAMPLE = readFileSync(join(REPO_ROOT, 'config/netbootd.example.yaml'), 'utf8');

/** The lines of `after` that are not in `before`, checking that `before`'s lines all remain, in order. */
function addedLines(before: string, after: string): string[] {
  const a = before.split('\n');
  const b = after.split('\n');
  const added: string[] = [];
  let i = 0;
  for (const line of b) {
    if (i < a.length && line === a[i]) i++;
    else added.push(line);
  }
  assert.equal(i, a.length, `every original line is kept in order (stopped at line ${i + 1}: ${a[i]})`);
  return added;
}

test('add-pi on the example config adds one line and changes nothing else', () => {
  const r = addPi(EXAMPLE, 'example.yaml', '1000000012abcdef', 'jammy');
  assert.deepEqual(addedLines(EXAMPLE, r.text), ['  "12abcdef": { image: jammy }']);
  // Right under the last Pi, before the comments that belong to the next entries.
  assert.match(r.text, /89025d75: \{ image: jammy \}\n {2}"12abcdef": \{ image: jammy \}\n {2}# A Pi that boots/);
  const loaded = parseConfig(r.text, 'example.yaml');
  assert.ok(loaded.ok);
  assert.deepEqual(loaded.config.pis['12abcdef'], { image: 'jammy' });
  // The commented-out defaults block is still at the end, outside hosts.
  assert.match(r.text, /\n# defaults:\n#   image: debian\n/);
});

test('add-host on the example config adds one line; updating a host changes only its value', () => {
  const r = addHost(EXAMPLE, 'example.yaml', '52-54-00-AA-BB-09', { image: 'debian', bootFile: 'pxelinux.0', name: 'new-pc' });
  assert.deepEqual(addedLines(EXAMPLE, r.text), ['  "52:54:00:aa:bb:09": { name: new-pc, image: debian, bootFile: pxelinux.0 }']);
  assert.ok(parseConfig(r.text, 'example.yaml').ok);
  // An existing block-style host: only the changed value's line differs, its comments and pin stay.
  const upd = addHost(EXAMPLE, 'example.yaml', '52:54:00:aa:bb:01', { image: 'jammy', bootFile: 'pxelinux.0' });
  const before = EXAMPLE.split('\n');
  const after = upd.text.split('\n');
  assert.equal(after.length, before.length);
  const diff = after.map((l, i) => (l !== before[i] ? [before[i], l] : null)).filter(Boolean);
  assert.deepEqual(diff, [['    image: debian', '    image: jammy']]);
});

test('updating a Pi keeps its other fields (a pinned address stays)', () => {
  const text = 'images:\n  a: { path: /a.img }\n  b: { path: /b.img }\npis:\n  "11111111": { image: a, address: 198.18.0.7 }   # the lab Pi\n';
  const r = addPi(text, 'c.yaml', '11111111', 'b');
  assert.equal(r.text, text.replace('image: a, address', 'image: b, address'));
  const loaded = parseConfig(r.text, 'c.yaml');
  assert.ok(loaded.ok);
  assert.equal(loaded.config.pis['11111111']!.image, 'b');
});

test('addImage on the example config adds one line; an empty file and a missing section work', () => {
  const r = addImage(EXAMPLE, 'example.yaml', 'pios', { path: '/srv/images/pios.img' });
  assert.deepEqual(addedLines(EXAMPLE, r.text), ['  pios: { path: /srv/images/pios.img }']);
  const fresh = addPi(addImage('', 'c.yaml', 'x', { path: 'x.img' }).text, 'c.yaml', '3a4b5c6d', 'x');
  assert.equal(fresh.text, '\nimages:\n  x: { path: x.img }\n\npis:\n  "3a4b5c6d": { image: x }\n'.replace(/^\n/, ''));
  const flow = addPi('images: { x: { path: /x.img } }\npis: {}\n', 'c.yaml', '3a4b5c6d', 'x');
  assert.equal(flow.text, 'images: { x: { path: /x.img } }\npis: { "3a4b5c6d": { image: x } }\n');
  const empty = addPi('images: { x: { path: /x.img } }\npis:\n# nothing yet\n', 'c.yaml', '3a4b5c6d', 'x');
  assert.ok(parseConfig(empty.text, 'c.yaml').ok, empty.text);
  assert.match(empty.text, /^pis:\n {2}"3a4b5c6d": \{ image: x \}\n# nothing yet\n/m);
});

test('editing a config file that is not there says so and how to name one (no raw ENOENT)', async () => {
  const { editConfigFile } = await import('../../src/config/edit.js');
  await assert.rejects(editConfigFile('/nonexistent/netbootd.yaml', (t) => addPi(t, 'x', '12345678', 'a')), (e: Error) => {
    assert.match(e.message, /^\/nonexistent\/netbootd\.yaml: no such config file; name yours with -c FILE/);
    return true;
  });
});
