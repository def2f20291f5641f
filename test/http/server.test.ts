/**
 * HTTP boot files against real clients (curl, wget): the same per-client resolution as TFTP, byte-exact
 * against the FAT contents (mtools), HEAD, single ranges (206/416), keep-alive reuse; and what a hostile or
 * slow client meets: traversal, other methods, unknown clients, oversized headers, a client that never
 * finishes its headers while others are served.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { join } from 'node:path';
import { mcopyOut } from '../helpers/fatimg.js';
import { buildPiOsImage, PI_IMAGE_TOOLS, PI_OS_LAYOUT } from '../helpers/piimage.js';
import { haveTools, run, tempDir } from '../helpers/tools.js';
import { startDaemon, testConfig } from '../daemon/harness.js';
import { parseRange } from '../../src/http/server.js';

test('parseRange: one bytes range, suffix, open end; several ranges or none serve the whole file', () => {
  assert.deepEqual(parseRange('bytes=0-99', 1000), { start: 0, end: 99 });
  assert.deepEqual(parseRange('bytes=900-', 1000), { start: 900, end: 999 });
  assert.deepEqual(parseRange('bytes=-100', 1000), { start: 900, end: 999 });
  assert.deepEqual(parseRange('bytes=990-2000', 1000), { start: 990, end: 999 });
  assert.equal(parseRange('bytes=1000-', 1000), 'unsatisfiable');
  assert.equal(parseRange('bytes=-0', 1000), 'unsatisfiable');
  assert.equal(parseRange('bytes=5-1', 1000), 'unsatisfiable');
  assert.equal(parseRange('bytes=0-1,5-6', 1000), null);
  assert.equal(parseRange('items=0-1', 1000), null);
  assert.equal(parseRange(undefined, 1000), null);
});

async function daemonWithHttp(t: Parameters<typeof startDaemon>[0], dir: string) {
  const image = join(dir, 'pi.img');
  await buildPiOsImage(image);
  const config = `${testConfig(join(dir, 'state'), `images:\n  pios: { path: ${image} }\npis:\n  "12345678": { image: pios }\n`)}http: { enabled: true, address: 127.0.0.1, port: 0 }\n`;
  const d = await startDaemon(t, dir, config);
  return { d, image, base: `http://127.0.0.1:${d.daemon.bound.http}` };
}

test('curl and wget get the Pi\'s boot files byte-exact; HEAD, ranges and keep-alive work', async (t) => {
  if (!haveTools(t, ...PI_IMAGE_TOOLS, 'curl', 'wget', 'mcopy')) return;
  const dir = tempDir(t);
  const { d, image, base } = await daemonWithHttp(t, dir);
  const kernel = await mcopyOut(image, '/kernel8.img', PI_OS_LAYOUT.bootStart);
  const get = await run('curl', ['-sS', '--fail', `${base}/12345678/kernel8.img`]);
  assert.ok(get.stdout.equals(kernel), 'curl GET is byte-exact');
  const out = join(dir, 'w.img');
  await run('wget', ['-q', '-O', out, `${base}/12345678/kernel8.img`]);
  assert.ok((await import('node:fs')).readFileSync(out).equals(kernel), 'wget GET is byte-exact');

  const head = await run('curl', ['-sS', '-I', `${base}/12345678/kernel8.img`]);
  assert.match(head.stdout.toString(), /^HTTP\/1\.1 200/);
  assert.match(head.stdout.toString(), new RegExp(`content-length: ${kernel.length}\\r`, 'i'));
  assert.match(head.stdout.toString(), /accept-ranges: bytes/i);

  const part = await run('curl', ['-sS', '-D', '-', '-o', join(dir, 'part'), '-r', '1000-4999', `${base}/12345678/kernel8.img`]);
  assert.match(part.stdout.toString(), /^HTTP\/1\.1 206/);
  assert.match(part.stdout.toString(), new RegExp(`content-range: bytes 1000-4999/${kernel.length}`, 'i'));
  assert.ok((await import('node:fs')).readFileSync(join(dir, 'part')).equals(kernel.subarray(1000, 5000)));
  const beyond = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '-r', `${kernel.length}-`, `${base}/12345678/kernel8.img`]);
  assert.equal(beyond.stdout.toString(), '416');

  // Keep-alive: two files over one connection.
  const two = await run('curl', ['-sS', '-o', '/dev/null', '-o', '/dev/null', '-w', '%{num_connects}\n', `${base}/12345678/config.txt`, `${base}/12345678/cmdline.txt`]);
  assert.deepEqual(two.stdout.toString().trim().split('\n').map(Number), [1, 0], 'the second request reused the connection');
  const cmdline = await run('curl', ['-sS', `${base}/12345678/cmdline.txt`]);
  assert.equal(cmdline.stdout.toString(), PI_OS_LAYOUT.cmdline);
  assert.ok(d.lines.some((l) => l.msg === 'http file sent' && l.serial === '12345678' && l.path === '12345678/kernel8.img'), 'logged with the client');
});

test('traversal, other methods, unknown clients and oversized headers are refused; a slow client blocks nobody', async (t) => {
  if (!haveTools(t, ...PI_IMAGE_TOOLS, 'curl')) return;
  const dir = tempDir(t);
  const { base, d } = await daemonWithHttp(t, dir);
  const code = async (...args: string[]): Promise<string> => (await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', ...args])).stdout.toString();
  assert.equal(await code('--path-as-is', `${base}/12345678/../../etc/passwd`), '403');
  assert.equal(await code('--path-as-is', `${base}/12345678/%2e%2e/%2e%2e/etc/passwd`), '403');
  assert.equal(await code('-X', 'POST', `${base}/12345678/config.txt`), '405');
  assert.equal(await code('-X', 'PUT', '--data', 'x', `${base}/12345678/config.txt`), '405');
  assert.equal(await code(`${base}/deadbeef/config.txt`), '404', 'a serial the config does not serve');
  assert.equal(await code(`${base}/12345678/`), '404', 'no directory listings');
  assert.equal(await code(`${base}/12345678/overlays`), '404', 'no directory listings');
  assert.equal(await code('-H', `X-Big: ${'a'.repeat(20_000)}`, `${base}/12345678/config.txt`), '431');

  // A client that sends half its headers and then nothing: others are served at once.
  const slow = net.connect(d.daemon.bound.http!, '127.0.0.1');
  await new Promise((res) => slow.on('connect', res));
  slow.write('GET /12345678/config.txt HTTP/1.1\r\nHost: x\r\n');
  slow.on('error', () => {});
  const t0 = Date.now();
  assert.equal(await code(`${base}/12345678/config.txt`), '200');
  assert.ok(Date.now() - t0 < 2000, `served in ${Date.now() - t0} ms beside a stalled client`);
  slow.destroy();
  const st = d.daemon.statusJson() as { http: { served: number; notFound: number; failed: number } };
  assert.ok(st.http.served >= 1 && st.http.notFound >= 3 && st.http.failed >= 4, JSON.stringify(st.http));
});
