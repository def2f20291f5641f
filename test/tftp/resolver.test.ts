import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { normalizePath, DirectoryResolver } from '../../src/tftp/resolver.js';
import { parseConfig } from '../../src/config/load.js';
import { ClientTable } from '../../src/registry/clients.js';
import { ImagePool } from '../../src/registry/pool.js';
import { Registry } from '../../src/registry/registry.js';
import { haveTools, run, tempDir } from '../helpers/tools.js';
import { readAll } from '../fat/read.js';


test('normalizePath: separators, leading and repeated slashes, dot segments; refuses .., NUL, control characters', () => {
  const good: [string, string][] = [
    ['pxelinux.0', 'pxelinux.0'],
    ['/boot/vmlinuz', 'boot/vmlinuz'],
    ['1a2b3c4d//config.txt', '1a2b3c4d/config.txt'],
    ['\\EFI\\BOOT\\bootx64.efi', 'EFI/BOOT/bootx64.efi'],
    ['./a/./b/', 'a/b'],
    ['a..b/c', 'a..b/c'],
    ['ünïcode name.txt', 'ünïcode name.txt'],
  ];
  for (const [raw, want] of good) {
    const r = normalizePath(raw);
    assert.ok(r.ok, raw);
    assert.equal(r.value, want);
  }
  for (const bad of ['../etc/passwd', 'a/../../b', 'a\\..\\b', '..', 'a\0b', 'a\nb', 'a\x7fb', '', '/', '//./']) {
    assert.equal(normalizePath(bad).ok, false, JSON.stringify(bad));
  }
});

test('DirectoryResolver: regular files inside the root only; symlinks out, directories and missing files are not found', async (t) => {
  const base = tempDir(t);
  const root = join(base, 'root');
  mkdirSync(join(root, 'sub'), { recursive: true });
  writeFileSync(join(root, 'sub', 'file.bin'), 'inside');
  writeFileSync(join(base, 'secret'), 'outside');
  symlinkSync(join(base, 'secret'), join(root, 'escape'));
  symlinkSync(base, join(root, 'updir'));
  symlinkSync('sub/file.bin', join(root, 'inner-link'));
  const r = new DirectoryResolver(root);
  const req = (path: string) => ({ address: '127.0.0.1', port: 1, path });
  const f = await r.resolve(req('sub/file.bin'));
  assert.ok(f);
  assert.equal(f.size, 6);
  assert.equal((await readAll(f, 64 * 1024)).toString(), 'inside');
  f.close();
  f.close(); // twice is fine
  const inner = await r.resolve(req('inner-link'));
  assert.ok(inner, 'a symlink that stays inside the root is followed');
  inner.close();
  assert.equal(await r.resolve(req('escape')), null);
  assert.equal(await r.resolve(req('updir/secret')), null);
  assert.equal(await r.resolve(req('sub')), null);
  assert.equal(await r.resolve(req('missing')), null);
});

test('Registry + ImagePool (the daemon\'s TFTP resolution): serial/path from the FAT partition; serial case-insensitive; unknown serial or file is null', async (t) => {
  if (!haveTools(t, 'sfdisk', 'mkfs.vfat', 'mcopy')) return;
  const dir = tempDir(t);
  const img = join(dir, 'pi.img');
  await run('truncate', ['-s', `${40 * 1024 * 1024}`, img]);
  // Partition 1: a small Linux partition; partition 2: FAT16 boot files (not first, to test the search).
  await run('sfdisk', ['-q', img], { input: 'label: dos\nstart=2048, size=8192, type=83\nstart=10240, size=69632, type=e\n' });
  await run('mkfs.vfat', ['-F', '16', '-n', 'BOOT', '--offset', '10240', img, '34816']);
  writeFileSync(join(dir, 'config.txt'), 'arm_64bit=1\n');
  mkdirSync(join(dir, 'overlays'));
  writeFileSync(join(dir, 'overlays', 'x.dtbo'), Buffer.alloc(5000, 7));
  await run('mcopy', ['-s', '-i', `${img}@@${10240 * 512}`, join(dir, 'config.txt'), join(dir, 'overlays'), '::'], { env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });
  const blankImg = join(dir, 'blank.img');
  writeFileSync(blankImg, Buffer.alloc(1 << 20));
  const pool = new ImagePool();
  t.after(() => pool.close());
  const registry = (pis: string): Registry => {
    const c = parseConfig(`server: { stateDir: ${dir} }
images: { pi: { path: ${img}, mode: readonly }, blank: { path: ${blankImg}, mode: readonly } }
pis: ${pis}
`, join(dir, 'netbootd.yaml'));
    assert.ok(c.ok, c.ok ? '' : c.errors.map((e) => e.message).join('\n'));
    return new Registry(c.config, pool, new ClientTable());
  };
  const r = registry('{ ABCDEF01: { image: pi }, "00000000": { image: blank } }');
  const req = (path: string) => ({ address: '10.0.0.5', port: 1, path });
  const a = await r.resolve(req('abcdef01/config.txt'));
  assert.ok(a);
  assert.equal((await readAll(a, 64 * 1024)).toString(), 'arm_64bit=1\n');
  const b = await r.resolve(req('ABCDEF01/OVERLAYS/X.DTBO'));
  assert.ok(b, 'FAT names are case-insensitive too');
  assert.deepEqual(await readAll(b, 64 * 1024), Buffer.alloc(5000, 7));
  assert.equal(await r.resolve(req('abcdef02/config.txt')), null);
  assert.equal(await r.resolve(req('abcdef01/missing.txt')), null);
  assert.equal(await r.resolve(req('abcdef01/overlays')), null, 'a directory is not a file');
  assert.equal(await r.resolve(req('config.txt')), null);
  assert.equal(await r.resolve(req('notaserial/config.txt')), null);
  // An explicit partition that is not FAT: the registry rejects (the server logs it and answers not found).
  const wrong = registry('{ abcdef01: { image: pi, partition: 1 } }');
  await assert.rejects(wrong.resolve(req('abcdef01/config.txt')));
  // A device with no FAT at all.
  await assert.rejects(r.resolve(req('00000000/config.txt')));
});
