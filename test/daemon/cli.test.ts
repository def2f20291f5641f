import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cliCommand, haveTools, REPO_ROOT, run, startProcess, tempDir } from '../helpers/tools.js';
import { mcopyIn } from '../helpers/fatimg.js';
import { buildPiOsImage, netbootd, PI_OS_LAYOUT } from '../helpers/piimage.js';
import { testConfig } from './harness.js';
import { RawNbd } from '../nbd/client.js';
import * as P from '../../src/nbd/packet.js';
import { openSync, readSync, closeSync, readFileSync } from 'node:fs';

test('serve: SIGHUP reloads; SIGTERM with an NBD client attached exits 0 within seconds, and its writes are in the image', async (t) => {
  if (!haveTools(t, 'sfdisk', 'mkfs.vfat', 'mcopy', 'nbdinfo')) return;
  const dir = tempDir(t);
  const image = join(dir, 'pi.img');
  await buildPiOsImage(image);
  const config = join(dir, 'netbootd.yaml');
  writeFileSync(config, testConfig(join(dir, 'state'), `images:\n  pios: { path: ${image} }\npis:\n  "12345678": { image: pios }\n`));
  const { cmd, args } = cliCommand();
  const p = startProcess(cmd, [...args, 'serve', '--config', config], { cwd: REPO_ROOT });
  t.after(() => p.stop());
  let out = '';
  p.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  p.stderr!.on('data', (b: Buffer) => (out += b.toString()));
  for (let i = 0; i < 100 && !out.includes('netbootd started'); i++) await new Promise((r) => setTimeout(r, 100));
  const started = JSON.parse(out.split('\n').find((l) => l.includes('netbootd started'))!) as { nbd: number };
  // An NBD client that stays connected, with a write acknowledged but never flushed by the client.
  await run('nbdinfo', ['--size', `nbd://127.0.0.1:${started.nbd}/pios`]);
  const c = await RawNbd.connect(started.nbd);
  t.after(() => c.destroy());
  await c.handshake();
  await c.go('pios');
  const payload = Buffer.alloc(4096, 0x5a);
  const at = PI_OS_LAYOUT.rootStart + 1024 * 1024;
  c.request(P.CMD_WRITE, 0, 1n, at, payload.length, payload);
  assert.equal((await c.simpleReply()).error, 0);
  // SIGHUP reloads (the unit's ExecReload): a Pi added to the file is served afterwards.
  writeFileSync(config, testConfig(join(dir, 'state'), `images:\n  pios: { path: ${image} }\npis:\n  "12345678": { image: pios }\n  "abcdef01": { image: pios }\n`).replace('tftp: { address: 127.0.0.1, port: 0 }', 'tftp: { address: 127.0.0.1, port: 0, maxBlksize: 1468 }'));
  process.kill(p.pid!, 'SIGHUP');
  for (let i = 0; i < 50 && !/"why":"SIGHUP"/.test(out); i++) await new Promise((r) => setTimeout(r, 100));
  assert.match(out, /"why":"SIGHUP".*"msg":"config reloaded/);
  const t0 = Date.now();
  const exited = new Promise<number | null>((res) => p.once('exit', (code) => res(code)));
  process.kill(p.pid!, 'SIGTERM');
  const code = await exited;
  const ms = Date.now() - t0;
  assert.equal(code, 0, out);
  assert.ok(ms < 5000, `took ${ms} ms`);
  assert.match(out, /"msg":"netbootd stopped"/);
  const fd = openSync(image, 'r');
  const back = Buffer.alloc(payload.length);
  readSync(fd, back, 0, back.length, at);
  closeSync(fd);
  assert.ok(back.equals(payload), 'the acknowledged write is in the image');
});

test('check: catches a wrong nbdroot= and passes once it is right', async (t) => {
  if (!haveTools(t, 'sfdisk', 'mkfs.vfat', 'mcopy')) return;
  const dir = tempDir(t);
  const image = join(dir, 'pi.img');
  await buildPiOsImage(image);
  const config = join(dir, 'netbootd.yaml');
  writeFileSync(config, testConfig(join(dir, 'state'), `images:\n  pios: { path: ${image} }\npis:\n  "12345678": { image: pios }\n`));
  const setCmdline = async (text: string): Promise<void> => {
    writeFileSync(join(dir, 'cmdline.txt'), text);
    await mcopyIn(image, [join(dir, 'cmdline.txt')], '::/', { offset: PI_OS_LAYOUT.bootStart, overwrite: true });
  };

  let r = await netbootd(['check', '--config', config]);
  assert.equal(r.code, 1);
  assert.match(r.stdout.toString(), /ERROR pi 12345678 cmdline\.txt: no nbdroot=/);

  await setCmdline('console=tty1 ip=dhcp nbdroot=127.0.0.1/jammy root=/dev/nbd0p2 rootwait\n');
  r = await netbootd(['check', '--config', config]);
  assert.equal(r.code, 1);
  assert.match(r.stdout.toString(), /ERROR pi 12345678 cmdline\.txt: nbdroot=127\.0\.0\.1\/jammy names export `jammy`, but this image is exported as `pios`/);

  await setCmdline('console=tty1 ip=dhcp nbdroot=127.0.0.1:10810/pios root=/dev/nbd0p1 rootwait\n');
  r = await netbootd(['check', '--config', config]);
  assert.equal(r.code, 1);
  const text = r.stdout.toString();
  assert.match(text, /uses port 10810, but NBD listens on 0/);
  assert.match(text, /root=\/dev\/nbd0p1 is the boot \(FAT\) partition/);

  writeFileSync(config, testConfig(join(dir, 'state'), `images:\n  pios: { path: ${image} }\npis:\n  "12345678": { image: pios }\n`).replace('port: 0 }\nstatus', 'port: 10809 }\nstatus'));
  await setCmdline('console=tty1 ip=dhcp nbdroot=127.0.0.1/pios root=/dev/nbd0p2 rootwait\n');
  r = await netbootd(['check', '--config', config, '--quiet']);
  assert.equal(r.code, 0, r.stdout.toString());
  assert.match(r.stdout.toString(), /^no errors, 0 warnings$/m);
});

test('check: a missing image and a bad config are errors with their reasons', async (t) => {
  const dir = tempDir(t);
  const config = join(dir, 'netbootd.yaml');
  writeFileSync(config, testConfig(join(dir, 'state'), `images:\n  gone: { path: ${join(dir, 'gone.img')} }\npis:\n  "12345678": { image: gone }\n`));
  let r = await netbootd(['check', '--config', config]);
  assert.equal(r.code, 1);
  assert.match(r.stdout.toString(), /ERROR image gone: .*gone\.img: no such file/);
  assert.match(r.stdout.toString(), /ERROR pi 12345678: its image `gone` cannot be used/);
  writeFileSync(config, 'pis:\n  zz: {}\n');
  r = await netbootd(['check', '--config', config]);
  assert.equal(r.code, 1);
  assert.match(r.stdout.toString(), /ERROR config: .*netbootd\.yaml:2:3: pis\.zz: serial must be 8 hex digits/);
});

test('add-pi and add-host edit the config file in place, keeping its comments', async (t) => {
  const dir = tempDir(t);
  const config = join(dir, 'netbootd.yaml');
  writeFileSync(config, '# my server\nimages:\n  jammy: { path: /srv/jammy.img }  # the Pi image\n');
  let r = await netbootd(['add-pi', '1000000089025d75', '--image', 'jammy', '--config', config]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout.toString(), /added Pi 89025d75 → image jammy/);
  assert.match(r.stderr, /shortened to `89025d75`/);
  r = await netbootd(['add-host', '52:54:00:AA:BB:01', '--image', 'jammy', '--boot-file', 'pxelinux.0', '--config', config]);
  assert.equal(r.code, 0, r.stderr);
  const text = readFileSync(config, 'utf8');
  assert.match(text, /# my server/);
  assert.match(text, /# the Pi image/);
  assert.match(text, /"89025d75": \{ image: jammy \}/);
  assert.match(text, /"52:54:00:aa:bb:01": \{ image: jammy, bootFile: pxelinux\.0 \}/);
  r = await netbootd(['add-pi', '89025d75', '--image', 'nope', '--config', config]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^netbootd: image `nope` is not defined in the config \(known images: jammy\)$/m);
  assert.equal(readFileSync(config, 'utf8'), text, 'a refused edit leaves the file alone');
});

test('serve: a port already in use is a clear one-line error, exit 1', async (t) => {
  const dir = tempDir(t);
  const { createSocket } = await import('node:dgram');
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  t.after(() => s.close());
  const port = s.address().port;
  const config = join(dir, 'netbootd.yaml');
  writeFileSync(config, testConfig(join(dir, 'state'), '').replace('tftp: { address: 127.0.0.1, port: 0 }', `tftp: { address: 127.0.0.1, port: ${port} }`));
  const r = await netbootd(['serve', '--config', config]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`^netbootd: TFTP: udp port ${port} is already in use by another program`, 'm'));
});
