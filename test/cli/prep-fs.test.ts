/**
 * `netbootd cp` / `rm` / `mkdir` on IMAGE PART:/path (siblings of ls/cat), as the CLI subprocess, on a
 * partitioned image whose FAT32 partition is checked with fsck.fat and mtools after the writes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { mcopyOut, mdirAll, prng, randomBytes } from '../helpers/fatimg.js';
import { haveTools, run, tempDir } from '../helpers/tools.js';
import { PI_IMAGE_TOOLS, PI_OS_LAYOUT, buildPiOsImage, extractRange, netbootd } from '../helpers/piimage.js';

test('cp in and out, mkdir -p, rm, rm -r; fsck.fat clean; clear errors', async (t) => {
  if (!haveTools(t, ...PI_IMAGE_TOOLS, 'fsck.fat', 'mdir')) return;
  const dir = tempDir(t);
  const img = join(dir, 'pi.img');
  await buildPiOsImage(img);
  const at = PI_OS_LAYOUT.bootStart;
  const big = randomBytes(prng(9), 2 * 1024 * 1024 + 3);
  writeFileSync(join(dir, 'initrd.img'), big);
  mkdirSync(join(dir, 'tree/sub'), { recursive: true });
  writeFileSync(join(dir, 'tree/one.txt'), 'one\n');
  writeFileSync(join(dir, 'tree/sub/Ünïcødé name.txt'), 'two\n');
  const ok = async (...args: string[]): Promise<string> => {
    const r = await netbootd(args);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    return r.stdout.toString();
  };
  await ok('cp', join(dir, 'initrd.img'), img, '1:/initrd.img');
  await ok('mkdir', img, '1:/a/b/c', '-p');
  await ok('cp', join(dir, 'tree'), img, '1:/a/');
  await ok('cp', join(dir, 'tree/one.txt'), img, '1:/a/b'); // into an existing directory
  await ok('rm', img, '1:/issue.txt');
  await ok('rm', '-r', img, '1:/overlays');
  await ok('mkdir', img, '1:/empty');
  await ok('rm', img, '1:/empty'); // an empty directory without -r

  assert.ok((await mcopyOut(img, '/initrd.img', at)).equals(big));
  assert.equal((await mcopyOut(img, '/a/tree/sub/Ünïcødé name.txt', at)).toString(), 'two\n');
  assert.equal((await mcopyOut(img, '/a/b/one.txt', at)).toString(), 'one\n');
  const listing = await mdirAll(img, at);
  assert.deepEqual([...listing.dirs.keys()].sort(), ['/', '/a', '/a/b', '/a/b/c', '/a/tree', '/a/tree/sub']);
  const names = listing.dirs.get('/')!.map((e) => e.name);
  assert.ok(!names.includes('issue.txt') && !names.includes('overlays') && !names.includes('empty'));
  const part = join(dir, 'boot.fat');
  extractRange(img, at, PI_OS_LAYOUT.bootSize, part);
  const fsck = await run('fsck.fat', ['-n', part], { allowFail: true });
  assert.equal(fsck.code, 0, fsck.stdout.toString());

  // Out again: a file to a path, a file to stdout, a directory tree.
  await ok('cp', img, '1:/initrd.img', join(dir, 'out.img'));
  assert.ok(readFileSync(join(dir, 'out.img')).equals(big));
  assert.equal(await ok('cp', img, '1:/a/b/one.txt', '-'), 'one\n');
  mkdirSync(join(dir, 'outdir'));
  await ok('cp', img, '1:/a/tree', join(dir, 'outdir'));
  assert.equal(readFileSync(join(dir, 'outdir/tree/sub/Ünïcødé name.txt'), 'utf8'), 'two\n');

  const fails: Array<[string[], RegExp]> = [
    [['rm', img, '1:/a'], /not empty/],
    [['rm', img, '1:/nothing'], /no such file/],
    [['mkdir', img, '1:/a'], /exists/],
    [['mkdir', img, '1:/x/y'], /no such directory/],
    [['cp', join(dir, 'initrd.img'), img, '1:/bad:name'], /holds `:`/],
    [['cp', join(dir, 'nope'), img, '1:/x'], /nope: no such file or directory/],
    [['cp', join(dir, 'initrd.img'), img, '2:/x'], /not a FAT file system/],
    [['rm', img, '1:/'], /refusing to remove the root directory/],
  ];
  // All at once (each is a failing command that writes nothing): CLI start-up is the slow part.
  const results = await Promise.all(fails.map(([args]) => netbootd(args)));
  for (const [i, [args, re]] of fails.entries()) {
    const r = results[i]!;
    assert.equal(r.code, 1, args.join(' '));
    assert.match(r.stderr, re, args.join(' '));
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
});

test('cp fills the partition: a clear ENOSPC, and the partition stays clean', async (t) => {
  if (!haveTools(t, ...PI_IMAGE_TOOLS, 'fsck.fat')) return;
  const dir = tempDir(t);
  const img = join(dir, 'pi.img');
  await buildPiOsImage(img);
  writeFileSync(join(dir, 'huge.bin'), Buffer.alloc(70 * 1024 * 1024, 1));
  const r = await netbootd(['cp', join(dir, 'huge.bin'), img, '1:/huge.bin']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no space left: need \d+ clusters/);
  const part = join(dir, 'boot.fat');
  extractRange(img, PI_OS_LAYOUT.bootStart, PI_OS_LAYOUT.bootSize, part);
  const fsck = await run('fsck.fat', ['-n', part], { allowFail: true });
  assert.equal(fsck.code, 0, fsck.stdout.toString());
});
