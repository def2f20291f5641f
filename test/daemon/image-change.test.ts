/**
 * Through the daemon: an image file replaced or deleted under it is noticed (logged once, new TFTP
 * clients get the new file, a reload reports a deletion), and a corrupt boot FAT reaches the TFTP client
 * as an error that says so (not "file not found"), logged once per volume with the client.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, openSync, readSync, renameSync, unlinkSync, writeFileSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { haveTools, tempDir } from '../helpers/tools.js';
import { FAT_TOOLS, mcopyIn, mkfsVfat } from '../helpers/fatimg.js';
import { buildRequest, OP_ERROR, OP_RRQ } from '../../src/tftp/packet.js';
import { RawClient } from '../tftp/raw-client.js';
import { startDaemon, testConfig, type LogLine } from './harness.js';
import { Writable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { Daemon } from '../../src/daemon.js';
import { createLogger } from '../../src/util/log.js';
import * as P from '../../src/nbd/packet.js';
import { RawNbd } from '../nbd/client.js';

async function fatImage(dir: string, name: string, cmdline: string, fat: 16 | 32 = 16): Promise<string> {
  const img = join(dir, name);
  await mkfsVfat(img, { fat, sizeKiB: fat === 32 ? 40 * 1024 : 4 * 1024, ...(fat === 16 ? { clusterSectors: 1 } : {}) });
  const f = join(dir, 'cmdline.txt');
  writeFileSync(f, cmdline);
  await mcopyIn(img, [f], '::/', { overwrite: true });
  return img;
}

test('image replaced by a rename: the next TFTP request gets the new file, the change is logged once; a deletion is reported on reload', async (t) => {
  if (!haveTools(t, 'curl', ...FAT_TOOLS)) return;
  const dir = tempDir(t);
  const img = await fatImage(dir, 'boot.img', 'console=serial0 old');
  const d = await startDaemon(t, dir, testConfig(join(dir, 'state'), `images:
  boot: { path: ${img}, mode: readonly }
pis:
  "11111111": { image: boot }
`));
  assert.equal((await d.fetch('11111111/cmdline.txt'))?.toString(), 'console=serial0 old');

  const next = join(dir, 'next.img');
  copyFileSync(img, next);
  writeFileSync(join(dir, 'cmdline.txt'), 'console=serial0 new');
  await mcopyIn(next, [join(dir, 'cmdline.txt')], '::/', { overwrite: true });
  renameSync(next, img);
  assert.equal((await d.fetch('11111111/cmdline.txt'))?.toString(), 'console=serial0 new', 'the new file, not the old fd');
  assert.equal((await d.fetch('11111111/cmdline.txt'))?.toString(), 'console=serial0 new');
  const replaced = d.lines.filter((l) => /image file replaced/.test(l.msg));
  assert.equal(replaced.length, 1, 'logged once');
  assert.equal(replaced[0]!.image, img);

  unlinkSync(img);
  await d.daemon.reload();
  assert.equal(d.lines.filter((l) => /image file deleted/.test(l.msg)).length, 1, 'a reload checks open images');
  assert.ok(d.lines.some((l) => l.msg === 'image cannot be opened: its clients will not boot' && l.image === 'boot'));
});

test('a corrupt boot FAT (cluster loop) reaches the TFTP client as an error saying so, logged once per volume with the client', async (t) => {
  if (!haveTools(t, 'curl', ...FAT_TOOLS)) return;
  const dir = tempDir(t);
  const img = await fatImage(dir, 'bad.img', 'console=serial0', 32);
  // The root directory's cluster chain (FAT32, root at cluster 2) points back at itself: a loop.
  const fd = openSync(img, 'r+');
  const bpb = Buffer.alloc(64);
  readSync(fd, bpb, 0, 64, 0);
  const fatOffset = bpb.readUInt16LE(14) * bpb.readUInt16LE(11);
  const root = bpb.readUInt32LE(44);
  const entry = Buffer.alloc(4);
  entry.writeUInt32LE(root);
  writeSync(fd, entry, 0, 4, fatOffset + root * 4);
  closeSync(fd);

  const d = await startDaemon(t, dir, testConfig(join(dir, 'state'), `images:
  bad: { path: ${img}, mode: readonly }
pis:
  "22222222": { image: bad }
`));
  const c = await RawClient.open();
  t.after(() => c.sock.close());
  for (let i = 0; i < 3; i++) {
    c.send(buildRequest(OP_RRQ, '22222222/cmdline.txt', 'octet', []), d.tftpPort);
    const { p } = await c.recvPacket();
    assert.equal(p.op, OP_ERROR);
    if (p.op !== OP_ERROR) return;
    assert.equal(p.code, 0, 'not "file not found" (1)');
    assert.match(p.message, /corrupt/i);
  }
  const logged = d.lines.filter((l) => /corrupt/.test(l.msg));
  assert.equal(logged.length, 1, `one log line for three requests: ${JSON.stringify(logged)}`);
  assert.equal(logged[0]!.ip, '127.0.0.1');
  assert.match(String(logged[0]!.err), /loop/);
});

test('the periodic check finds an image deleted under an idle NBD connection: logged once, the connection gets errors', async (t) => {
  const dir = tempDir(t);
  const img = join(dir, 'disk.img');
  writeFileSync(img, randomBytes(1 << 20));
  const configPath = join(dir, 'netbootd.yaml');
  writeFileSync(configPath, testConfig(join(dir, 'state'), `images:
  disk: { path: ${img}, mode: readwrite }
`));
  const lines: LogLine[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as LogLine);
      cb();
    },
  });
  const daemon = new Daemon({ configPath, logger: createLogger({ level: 'debug', destination: sink }), watch: false, imageCheckMs: 100 });
  await daemon.start();
  t.after(() => daemon.stop());
  const c = await RawNbd.connect(daemon.bound.nbd!);
  t.after(() => c.destroy());
  await c.handshake();
  await c.go('disk');
  unlinkSync(img);
  const until = Date.now() + 3000;
  while (!lines.some((l) => /image file deleted/.test(l.msg)) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 300)); // a few more periodic checks: still one line
  assert.equal(lines.filter((l) => /image file deleted/.test(l.msg)).length, 1);
  c.request(P.CMD_READ, 0, 1n, 0, 4096);
  assert.notEqual((await c.simpleReply(4096)).error, 0, 'the connection to the deleted file is told');
});
