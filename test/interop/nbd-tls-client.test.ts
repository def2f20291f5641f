/**
 * Per-client TLS on NBD with real clients nobody here wrote: qemu-io (QEMU's GnuTLS x509 credentials) and
 * libnbd's nbdinfo / nbdcopy (`nbds://…?tls-certificates=DIR`). Certificates are made with openssl in a
 * temporary directory: one CA signs the server's certificate and each client's (CN = the Pi serial).
 * A client's certificate, not its address, picks its copy-on-write overlay; an export with `clientCert`
 * refuses connections without one, or with one naming a client of another image.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { haveTools, run, tempDir } from '../helpers/tools.js';
import { startDaemon, testConfig } from '../daemon/harness.js';

async function openssl(args: string[], cwd: string): Promise<void> {
  await run('openssl', args, { cwd });
}

/** A CA, a server certificate for 127.0.0.1, and one client directory per CN (libnbd/QEMU file names). */
async function makeCerts(dir: string, clients: string[]): Promise<{ ca: string; cert: string; key: string; dirs: Record<string, string>; none: string }> {
  await openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca-key.pem', '-out', 'ca-cert.pem', '-days', '2', '-subj', '/CN=netbootd test CA'], dir);
  const sign = async (name: string, cn: string, ext: string): Promise<void> => {
    await openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}-key.pem`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`], dir);
    writeFileSync(join(dir, `${name}.ext`), ext);
    await openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca-cert.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial', '-out', `${name}-cert.pem`, '-days', '2', '-extfile', `${name}.ext`], dir);
  };
  await sign('server', '127.0.0.1', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  const dirs: Record<string, string> = {};
  for (const cn of clients) {
    await sign(`client-${cn}`, cn, 'extendedKeyUsage=clientAuth\n');
    const d = join(dir, cn);
    mkdirSync(d);
    copyFileSync(join(dir, 'ca-cert.pem'), join(d, 'ca-cert.pem'));
    copyFileSync(join(dir, `client-${cn}-cert.pem`), join(d, 'client-cert.pem'));
    copyFileSync(join(dir, `client-${cn}-key.pem`), join(d, 'client-key.pem'));
    dirs[cn] = d;
  }
  const none = join(dir, 'none');
  mkdirSync(none);
  copyFileSync(join(dir, 'ca-cert.pem'), join(none, 'ca-cert.pem'));
  return { ca: join(dir, 'ca-cert.pem'), cert: join(dir, 'server-cert.pem'), key: join(dir, 'server-key.pem'), dirs, none };
}

test('NBD client certificates: a certificate picks its client\'s overlay; none, or another image\'s client, is refused', async (t) => {
  if (!haveTools(t, 'openssl', 'qemu-io', 'nbdinfo', 'nbdcopy')) return;
  const dir = tempDir(t);
  const certs = await makeCerts(dir, ['11111111', '22222222', '33333333', '44444444']);
  const image = join(dir, 'disk.img');
  writeFileSync(image, Buffer.alloc(1 << 20));
  const other = join(dir, 'other.img');
  writeFileSync(other, Buffer.alloc(1 << 20));
  const state = join(dir, 'state');
  const config = testConfig(state, `images:
  disk: { path: ${image}, mode: cow, clientCert: true }
  other: { path: ${other}, mode: cow }
pis:
  "11111111": { image: disk }
  "22222222": { image: disk }
  "33333333": { image: other }
  "44444444": { image: disk, address: 198.18.0.44 }
`).replace('nbd: { address: 127.0.0.1, port: 0 }', `nbd: { address: 127.0.0.1, port: 0, tls: { cert: ${certs.cert}, key: ${certs.key}, ca: ${certs.ca} } }`);
  const d = await startDaemon(t, dir, config);
  const uri = (certDir: string, exp = 'disk'): string => `nbds://127.0.0.1:${d.nbdPort}/${exp}?tls-certificates=${certDir}`;
  const qemu = (certDir: string, cmd: string) =>
    run('qemu-io', [
      '--object', `tls-creds-x509,id=tls0,endpoint=client,dir=${certDir}`,
      '--image-opts', `driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=${d.nbdPort},export=disk,tls-creds=tls0`,
      '-c', cmd,
    ], { allowFail: true });
  const readAll = async (certDir: string): Promise<Buffer> => {
    const out = join(dir, `read-${Math.random().toString(36).slice(2)}.bin`);
    const r = await run('nbdcopy', [uri(certDir), out], { allowFail: true });
    assert.equal(r.code, 0, r.stderr.toString());
    return readFileSync(out);
  };

  // Client A (Pi 11111111) writes through QEMU's NBD client and reads it back through libnbd.
  const w = await qemu(certs.dirs['11111111']!, 'write -P 0x41 65536 4096');
  assert.equal(w.code, 0, w.stderr.toString() + w.stdout.toString());
  const a = await readAll(certs.dirs['11111111']!);
  assert.ok(a.subarray(65536, 65536 + 4096).every((b) => b === 0x41), 'A reads what A wrote');
  const v = await qemu(certs.dirs['11111111']!, 'read -P 0x41 65536 4096');
  assert.equal(v.code, 0);
  assert.doesNotMatch(v.stdout.toString(), /verification failed/i);
  // The overlay is named by the certificate's client, though the address (127.0.0.1) is everyone's here.
  assert.ok(d.lines.some((l) => l.msg === 'NBD export opened' && l.identity === 'pi-11111111' && l.cert === true));

  // Client B (Pi 22222222), same address, same export: its own overlay, without A's bytes.
  const b = await readAll(certs.dirs['22222222']!);
  assert.ok(b.subarray(65536, 65536 + 4096).every((x) => x === 0), 'B does not see A\'s writes');
  const wb = await qemu(certs.dirs['22222222']!, 'write -P 0x42 131072 512');
  assert.equal(wb.code, 0);
  assert.ok((await readAll(certs.dirs['11111111']!)).subarray(131072, 131072 + 512).every((x) => x === 0), 'A does not see B\'s writes');

  // No client certificate: refused (libnbd and QEMU both).
  const noCert = await run('nbdinfo', [uri(certs.none)], { allowFail: true });
  assert.notEqual(noCert.code, 0, 'no certificate: refused');
  const qNoCert = await qemu(certs.none, 'read 0 512');
  assert.notEqual(qNoCert.code, 0);
  assert.match(qNoCert.stderr.toString() + qNoCert.stdout.toString(), /requires a valid client certificate/);
  // A certificate for a client of another image: refused; that client's own image is fine.
  const wrong = await run('nbdinfo', [uri(certs.dirs['33333333']!)], { allowFail: true });
  assert.notEqual(wrong.code, 0);
  const qWrong = await qemu(certs.dirs['33333333']!, 'read 0 512');
  assert.match(qWrong.stderr.toString() + qWrong.stdout.toString(), /requires a client certificate naming one of its clients/);
  const own = await run('nbdinfo', ['--size', uri(certs.dirs['33333333']!, 'other')], { allowFail: true });
  assert.equal(own.code, 0, own.stderr.toString());
  assert.equal(own.stdout.toString().trim(), String(1 << 20));
  // A valid certificate of a pinned client, used from outside its pin: refused.
  const qPinned = await qemu(certs.dirs['44444444']!, 'read 0 512');
  assert.notEqual(qPinned.code, 0);
  assert.ok(d.lines.some((l) => l.msg === 'NBD client certificate used outside its pin: refused' && l.serial === '44444444'));
  // Without TLS at all, the export asks for TLS first.
  const plain = await run('nbdinfo', [`nbd://127.0.0.1:${d.nbdPort}/disk`], { allowFail: true });
  assert.notEqual(plain.code, 0);
});
