/**
 * Attack: a FIFO in a TFTP directory root (issue 12). Opening it for reading blocked a libuv thread-pool
 * thread until a writer appeared; four such requests froze every file operation of the process (other
 * downloads, image reads, shutdown). Now only regular files are opened (lstat first, then O_NONBLOCK and
 * fstat), and FIFOs, sockets and devices are "file not found" at once.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { buildRequest, OP_RRQ, OP_ERROR } from '../../src/tftp/packet.js';
import { DirectoryResolver } from '../../src/tftp/resolver.js';
import { tmpdir } from 'node:os';
import { run, which } from '../helpers/tools.js';
import { RawClient, download } from './raw-client.js';
import { startServer, pattern } from './helpers.js';

/** A root holding a regular file, FIFOs (one behind a symlink), a unix socket and (as root) a char device. */
async function hostileRoot(t: { after(fn: () => unknown): void }): Promise<{ root: string; specials: string[]; file: Buffer }> {
  const root = fs.mkdtempSync(join(tmpdir(), 'netbootd-fifo-'));
  // Whatever happens, no open() stays blocked on a FIFO after the test: a writer (opened from this thread,
  // without the thread pool; O_RDWR on a FIFO never blocks on Linux) releases any blocked reader. Then
  // the folder goes (in this order: a FIFO unlinked first would leave its readers blocked for ever).
  // The writers stay open until the FIFOs are unlinked: an open() still queued for the thread pool then
  // either finds a writer or no file.
  t.after(() => {
    const writers: number[] = [];
    for (let i = 0; i < 6; i++) {
      try {
        writers.push(fs.openSync(join(root, `pipe${i}`), fs.constants.O_RDWR | fs.constants.O_NONBLOCK));
      } catch {
        /* not made */
      }
    }
    fs.rmSync(root, { recursive: true, force: true });
    for (const fd of writers) fs.closeSync(fd);
  });
  const file = pattern(300 * 1024 + 5, 21);
  fs.writeFileSync(join(root, 'ok.bin'), file);
  const specials: string[] = [];
  for (let i = 0; i < 6; i++) {
    await run('mkfifo', [join(root, `pipe${i}`)]);
    specials.push(`pipe${i}`);
  }
  fs.symlinkSync('pipe0', join(root, 'link-to-pipe'));
  specials.push('link-to-pipe');
  const sock = net.createServer().listen(join(root, 'sock'));
  await new Promise((r) => sock.once('listening', r));
  t.after(() => sock.close());
  specials.push('sock');
  if (process.getuid?.() === 0 && which('mknod')) {
    // A /dev/zero twin inside the root: a read of it would never end.
    if ((await run('mknod', [join(root, 'zero'), 'c', '1', '5'], { allowFail: true })).code === 0) specials.push('zero');
  }
  return { root, specials, file };
}

test('FIFOs, sockets and devices in a directory root: refused at once, other downloads and close() unaffected', async (t) => {
  const { root, specials, file } = await hostileRoot(t);
  const s = await startServer(t, new DirectoryResolver(root));
  const clients: RawClient[] = [];
  t.after(() => clients.forEach((c) => c.close()));
  // Every special file, twice (more than the 4 thread-pool threads), each from its own port.
  for (let round = 0; round < 2; round++) {
    for (const name of specials) {
      const c = await RawClient.open();
      clients.push(c);
      c.send(buildRequest(OP_RRQ, name, 'octet'), s.port);
    }
  }
  const t0 = Date.now();
  const answers = await Promise.all(clients.map((c) => c.recvPacket(2000).then((r) => r.p, () => null)));
  assert.ok(answers.every((p) => p !== null && p.op === OP_ERROR && (p as { code: number }).code === 1), 'each refused as "file not found"');
  // A regular file downloads as usual, quickly.
  const r = await Promise.race([
    download(s.port, 'ok.bin', { blksize: 1468 }),
    new Promise<null>((res) => setTimeout(() => res(null), 3000)),
  ]);
  assert.ok(r !== null, 'the download completed within 3 s');
  assert.ok(r.data.equals(file));
  const ms = Date.now() - t0;
  // And the server (and the process's file I/O) shuts down promptly.
  const c0 = Date.now();
  const closed = await Promise.race([s.server.close().then(() => true), new Promise<false>((res) => setTimeout(() => res(false), 2000))]);
  assert.ok(closed, 'close() completed');
  const fsOk = await Promise.race([fs.promises.stat(root).then(() => true), new Promise<false>((res) => setTimeout(() => res(false), 1000))]);
  assert.ok(fsOk, 'the thread pool is free');
  console.log(`# ${clients.length} requests for ${specials.join(', ')}: refused, regular download ${ms} ms, close ${Date.now() - c0} ms`);
});

test('DirectoryResolver opens only regular files (a FIFO swapped in later opens without blocking, then is refused)', async (t) => {
  const { root, specials } = await hostileRoot(t);
  const res = new DirectoryResolver(root);
  for (const name of specials) {
    const got = await Promise.race([
      res.resolve({ address: '127.0.0.1', port: 1, path: name }),
      new Promise<'blocked'>((r) => setTimeout(() => r('blocked'), 1000)),
    ]);
    assert.equal(got, null, `${name} refused at once`);
  }
  const ok = await res.resolve({ address: '127.0.0.1', port: 1, path: 'ok.bin' });
  assert.ok(ok);
  assert.equal(ok.size, 300 * 1024 + 5);
  ok.close();
});
