/**
 * netbootd's NBD server against real clients: nbdinfo (plain, --list, --map, TLS), nbdcopy both ways,
 * qemu-img info/convert/compare, fio's nbd engine with crc32c verification, nbd-client -l.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, readFileSync, mkdirSync, copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NbdServer } from '../../src/nbd/server.js';
import { StaticExportProvider } from '../../src/nbd/exports.js';
import { haveTools, run, which } from '../helpers/tools.js';

const SIZE = 16 << 20;
let dir = '';
let port = 0;
let server: NbdServer;
let provider: StaticExportProvider;
let data: Buffer;
let tlsClientDir = '';
let tlsOk = false;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'netbootd-nbd-interop-'));
  data = randomBytes(SIZE);
  writeFileSync(join(dir, 'rw.img'), data);
  writeFileSync(join(dir, 'ro.img'), data);
  // A base with data only in its first and third MiB: the rest reads as zeros.
  const base = Buffer.alloc(4 << 20);
  randomBytes(1 << 20).copy(base, 0);
  randomBytes(1 << 20).copy(base, 2 << 20);
  writeFileSync(join(dir, 'base.img'), base);
  // A self-signed CA and a server certificate for 127.0.0.1 (libnbd's tls-certificates layout: ca-cert.pem).
  let tls: { key: Buffer; cert: Buffer } | undefined;
  if (which('openssl')) {
    const t = join(dir, 'tls');
    mkdirSync(t);
    const o = (args: string[]): Promise<unknown> => run('openssl', args, { cwd: t });
    await o(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca-key.pem', '-out', 'ca-cert.pem', '-days', '2', '-subj', '/CN=netbootd test CA']);
    await o(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server-key.pem', '-out', 'server.csr', '-subj', '/CN=127.0.0.1']);
    writeFileSync(join(t, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n');
    await o(['x509', '-req', '-in', 'server.csr', '-CA', 'ca-cert.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial', '-out', 'server-cert.pem', '-days', '2', '-extfile', 'ext.cnf']);
    tlsClientDir = join(dir, 'tls-client');
    mkdirSync(tlsClientDir);
    copyFileSync(join(t, 'ca-cert.pem'), join(tlsClientDir, 'ca-cert.pem'));
    tls = { key: readFileSync(join(t, 'server-key.pem')), cert: readFileSync(join(t, 'server-cert.pem')) };
    tlsOk = true;
  }
  provider = new StaticExportProvider([
    { name: 'rw', path: join(dir, 'rw.img'), mode: 'readwrite', description: 'interop disk' },
    { name: 'ro', path: join(dir, 'ro.img'), mode: 'readonly' },
    { name: 'cow', path: join(dir, 'base.img'), mode: 'cow', stateDir: join(dir, 'state') },
    { name: 'sec', path: join(dir, 'ro.img'), mode: 'readonly', tlsRequired: true },
    { name: 'hidden', path: join(dir, 'ro.img'), mode: 'readonly', allow: ['192.0.2.0/24'] },
  ]);
  server = new NbdServer({ exports: provider, tls });
  port = (await server.listen(0, '127.0.0.1')).port;
});

after(async () => {
  await server?.close();
  await provider?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const uri = (name: string): string => `nbd://127.0.0.1:${port}/${name}`;

test('nbdinfo: export details, --list (allow-list and TLS-only exports hidden), --map', async (t) => {
  if (!haveTools(t, 'nbdinfo')) return;
  const info = (await run('nbdinfo', [uri('rw')])).stdout.toString();
  assert.match(info, /newstyle-fixed/);
  assert.match(info, new RegExp(`export-size: ${SIZE}`));
  assert.match(info, /description: interop disk/);
  assert.match(info, /base:allocation/);
  assert.match(info, /can_flush: true/);
  assert.match(info, /can_fua: true/);
  assert.match(info, /is_read_only: false/);
  assert.match((await run('nbdinfo', [uri('ro')])).stdout.toString(), /is_read_only: true/);
  const list = (await run('nbdinfo', ['--list', `nbd://127.0.0.1:${port}`])).stdout.toString();
  const names = [...list.matchAll(/export="([^"]*)"/g)].map((m) => m[1]);
  assert.deepEqual(names, ['rw', 'ro', 'cow']);
  const hidden = await run('nbdinfo', [uri('hidden')], { allowFail: true });
  assert.notEqual(hidden.code, 0);
  const map = (await run('nbdinfo', ['--map', uri('rw')])).stdout.toString().trim().split('\n');
  assert.equal(map.length, 1);
  assert.match(map[0]!, new RegExp(`^\\s*0\\s+${SIZE}\\s+0\\s+data`));
  const cowMap = (await run('nbdinfo', ['--map', uri('cow')])).stdout.toString().trim().split('\n').map((l) => l.trim().split(/\s+/));
  assert.deepEqual(
    cowMap.map((f) => [Number(f[0]), Number(f[1]), Number(f[2])]),
    [[0, 1 << 20, 0], [1 << 20, 1 << 20, 3], [2 << 20, 1 << 20, 0], [3 << 20, 1 << 20, 3]],
  );
});

test('nbdcopy both ways is byte-exact', async (t) => {
  if (!haveTools(t, 'nbdcopy')) return;
  const out = join(dir, 'copy-out.img');
  await run('nbdcopy', [uri('ro'), out]);
  assert.ok(readFileSync(out).equals(data));
  const src = join(dir, 'copy-in.img');
  const fresh = randomBytes(SIZE);
  writeFileSync(src, fresh);
  await run('nbdcopy', ['--connections=4', src, uri('rw')]);
  assert.ok(readFileSync(join(dir, 'rw.img')).equals(fresh));
  await run('nbdcopy', [uri('rw'), out]);
  assert.ok(readFileSync(out).equals(fresh));
});

test('qemu-img info, convert and compare', async (t) => {
  if (!haveTools(t, 'qemu-img')) return;
  const info = (await run('qemu-img', ['info', '--output=json', uri('ro')])).stdout.toString();
  assert.equal(JSON.parse(info)['virtual-size'], SIZE);
  const out = join(dir, 'qemu-out.raw');
  await run('qemu-img', ['convert', '-O', 'raw', `nbd:127.0.0.1:${port}:exportname=ro`, out]);
  assert.ok(readFileSync(out).equals(data));
  const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', out, uri('ro')], { allowFail: true });
  assert.equal(cmp.code, 0, cmp.stderr);
  // Write through qemu (convert -n into the export), then compare again.
  const src = join(dir, 'qemu-src.raw');
  writeFileSync(src, randomBytes(SIZE));
  await run('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', src, uri('rw')]);
  const cmp2 = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, uri('rw')], { allowFail: true });
  assert.equal(cmp2.code, 0, cmp2.stderr);
  const differ = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, uri('ro')], { allowFail: true });
  assert.equal(differ.code, 1, 'compare notices a difference');
});

test('fio --ioengine=nbd random writes verify with crc32c', async (t) => {
  if (!haveTools(t, 'fio')) return;
  const r = await run('fio', [
    '--name=verify', '--ioengine=nbd', `--uri=${uri('rw')}`, '--rw=randwrite', '--bs=4k', '--iodepth=32',
    `--size=${SIZE}`, '--verify=crc32c', '--do_verify=1', '--verify_state_save=0', '--output-format=json',
  ], { allowFail: true, cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  const text = r.stdout.toString();
  const job = JSON.parse(text.slice(text.indexOf('{'))).jobs[0];
  assert.equal(job.error, 0);
  assert.equal(job.write.io_bytes, SIZE);
  assert.ok(job.read.io_bytes >= SIZE, 'the verify pass read everything back');
});

test('nbd-client -l lists the exports this client may see', async (t) => {
  if (!haveTools(t, 'nbd-client')) return;
  const r = await run('nbd-client', ['-l', '127.0.0.1', String(port)], { allowFail: true });
  const out = r.stdout.toString() + r.stderr;
  assert.equal(r.code, 0, out);
  assert.match(out, /^rw: interop disk$/m);
  assert.match(out, /^ro$/m);
  assert.match(out, /^cow$/m);
  assert.doesNotMatch(out, /hidden|sec/);
});

test('TLS: nbdinfo/nbdcopy over nbds:// (self-signed CA); a TLS-only export is refused without TLS', async (t) => {
  if (!haveTools(t, 'nbdinfo', 'nbdcopy', 'openssl') || !tlsOk) return;
  const plain = await run('nbdinfo', [uri('sec')], { allowFail: true });
  assert.notEqual(plain.code, 0);
  const secure = `nbds://127.0.0.1:${port}/sec?tls-certificates=${tlsClientDir}`;
  const info = (await run('nbdinfo', [secure])).stdout.toString();
  assert.match(info, /with TLS/);
  assert.match(info, new RegExp(`export-size: ${SIZE}`));
  const list = (await run('nbdinfo', ['--list', `nbds://127.0.0.1:${port}/?tls-certificates=${tlsClientDir}`])).stdout.toString();
  assert.match(list, /export="sec"/);
  const out = join(dir, 'tls-out.img');
  await run('nbdcopy', [secure, out]);
  assert.ok(readFileSync(out).equals(readFileSync(join(dir, 'ro.img'))));
});
