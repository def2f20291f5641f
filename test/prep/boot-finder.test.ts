/**
 * One boot-partition finder for `prep` and `serve`: on an image whose first FAT file system in table
 * order (partition 1, typed "Non-FS data") is not the FAT-typed partition (2), `prep` edits partition 2,
 * records it in the config it writes (images.<name>.bootPartition), and the daemon serves the edited
 * files from that same partition over TFTP, with the recorded number and without it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseConfig } from '../../src/config/load.js';
import { FileBlockDevice } from '../../src/disk/blockdev.js';
import { findBootPartition } from '../../src/fat/boot.js';
import { prepImage } from '../../src/prep/prep.js';
import { MTOOLS_ENV, mcopyOut } from '../helpers/fatimg.js';
import { haveTools, run, tempDir } from '../helpers/tools.js';
import { sfdisk, sparseFile } from '../disk/images.js';
import { startDaemon, testConfig } from '../daemon/harness.js';

const MiB = 1024 * 1024;
const SERIAL = '1a2b3c4d';
const CMDLINE = 'console=tty1 root=/dev/mmcblk0p3 rootfstype=ext4 rootwait\n';
/** Partition starts in 512-byte sectors; each FAT partition is 8 MiB. */
const P1 = 2048;
const P2 = 18432;
const P3 = 34816;

/** p1: FAT16 typed 'da' (Non-FS data, first in table order); p2: FAT16 typed 0c; p3: Linux. */
async function decoyImage(dir: string): Promise<string> {
  const img = join(dir, 'decoy.img');
  sparseFile(img, 40 * MiB);
  await sfdisk(img, `label: dos\nstart=${P1}, size=16384, type=da\nstart=${P2}, size=16384, type=c\nstart=${P3}, size=47104, type=83\n`);
  for (const [start, which] of [[P1, 'decoy'], [P2, 'boot']] as const) {
    await run('mkfs.vfat', ['-F', '16', '-s', '1', '-n', which.toUpperCase(), '--offset', String(start), img, '8192'], { env: MTOOLS_ENV });
    const files = join(dir, which);
    mkdirSync(files);
    writeFileSync(join(files, 'cmdline.txt'), CMDLINE);
    writeFileSync(join(files, 'which.txt'), which);
    await run('mcopy', ['-i', `${img}@@${start * 512}`, join(files, 'cmdline.txt'), join(files, 'which.txt'), '::'], { env: MTOOLS_ENV });
  }
  return img;
}

test('prep and serve agree on the boot partition when the first FAT in table order is not the FAT-typed one; prep --config records it', async (t) => {
  if (!haveTools(t, 'sfdisk', 'mkfs.vfat', 'mcopy', 'curl')) return;
  const dir = tempDir(t);
  const img = await decoyImage(dir);

  const dev = await FileBlockDevice.open(img, { readOnly: true });
  try {
    assert.equal((await findBootPartition(dev)).number, 2, 'the finder takes the FAT-typed partition');
  } finally {
    await dev.close();
  }

  // prep, with the config the daemon will run on.
  const state = join(dir, 'state');
  mkdirSync(state);
  const configFile = join(dir, 'netbootd.yaml');
  writeFileSync(configFile, testConfig(state, 'images: {}\n'));
  const r = await prepImage({ image: img, server: '127.0.0.1', exportName: 'img', serial: SERIAL, config: configFile });
  assert.equal(r.bootPartition, 2);
  assert.equal(r.rootPartition, 3);
  assert.ok(r.changes.some((c) => c.startsWith(`${img}:2:/cmdline.txt:`)), r.changes.join('\n'));
  const text = readFileSync(configFile, 'utf8');
  const parsed = parseConfig(text, configFile);
  assert.ok(parsed.ok, JSON.stringify(!parsed.ok && parsed.errors));
  assert.equal(parsed.config.images.img!.bootPartition, 2, 'prep --config records the partition it edited');
  assert.equal(parsed.config.pis[SERIAL]!.image, 'img');
  // The decoy is untouched; the FAT-typed partition has the new command line.
  assert.equal((await mcopyOut(img, '/cmdline.txt', P1 * 512)).toString(), CMDLINE);
  const edited = (await mcopyOut(img, '/cmdline.txt', P2 * 512)).toString();
  assert.match(edited, /nbdroot=\S+\/img/);
  assert.match(edited, /root=\/dev\/nbd0p3/);

  // serve on that config: the Pi gets the partition prep edited.
  const d = await startDaemon(t, dir, text);
  assert.equal((await d.fetch(`${SERIAL}/which.txt`))?.toString(), 'boot');
  assert.equal((await d.fetch(`${SERIAL}/cmdline.txt`))?.toString(), edited);

  // And without the recorded number the daemon's own search lands on the same partition.
  const bare = join(dir, 'bare');
  mkdirSync(bare);
  const unpinned = text.replace(/,?\s*bootPartition: 2/, '');
  assert.notEqual(unpinned, text);
  const u = parseConfig(unpinned, join(bare, 'netbootd.yaml'));
  assert.ok(u.ok && u.config.images.img!.bootPartition === undefined, unpinned);
  const d2 = await startDaemon(t, bare, unpinned);
  assert.equal((await d2.fetch(`${SERIAL}/which.txt`))?.toString(), 'boot');
  assert.equal((await d2.fetch(`${SERIAL}/cmdline.txt`))?.toString(), edited);
});

test('prep uses the boot partition the config names for the image file, and says so when it is not FAT', async (t) => {
  if (!haveTools(t, 'sfdisk', 'mkfs.vfat', 'mcopy')) return;
  const dir = tempDir(t);
  const img = await decoyImage(dir);
  const configFile = join(dir, 'netbootd.yaml');
  // The config pins partition 1 (the decoy): prep edits that one, as serve would serve it.
  writeFileSync(configFile, `images:\n  img: { path: ${img}, bootPartition: 1 }\n`);
  const r = await prepImage({ image: img, server: '198.18.0.1', exportName: 'img', config: configFile, dryRun: true });
  assert.equal(r.bootPartition, 1);
  assert.ok(r.changes.some((c) => c.startsWith(`${img}:1:/cmdline.txt:`)), r.changes.join('\n'));
  assert.ok(!r.changes.some((c) => c.includes('updated image')), 'the config already says so');
  // --boot-partition wins over the config.
  const r2 = await prepImage({ image: img, server: '198.18.0.1', exportName: 'img', config: configFile, bootPartition: 2, dryRun: true });
  assert.equal(r2.bootPartition, 2);
  assert.ok(r2.changes.some((c) => /updated image img/.test(c)), r2.changes.join('\n'));
  // A configured partition that holds no FAT: an error naming where the number came from.
  writeFileSync(configFile, `images:\n  img: { path: ${img}, bootPartition: 3 }\n`);
  await assert.rejects(
    prepImage({ image: img, server: '198.18.0.1', exportName: 'img', config: configFile, dryRun: true }),
    /partition 3 \(images\.img\.bootPartition in .*netbootd\.yaml\) is not a FAT partition/,
  );
});
