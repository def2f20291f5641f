/**
 * `netbootd prep` end to end, as the CLI subprocess, on a Raspberry Pi OS style image (FAT32 bootfs with
 * config.txt, cmdline.txt, user-data, start4.elf, kernel8.img, initramfs8, overlays/; ext4 rootfs), checked
 * with mtools, fsck.fat, sfdisk and the YAML; a second run changes nothing (byte for byte); --dry-run
 * writes nothing; MBR and GPT growth with the last partition grown; --remove, --user-data, directories.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { parseConfig } from '../../src/config/load.js';
import { MTOOLS_ENV, mcopyOut, mdirAll, mkfsVfat } from '../helpers/fatimg.js';
import { haveTools, run, tempDir } from '../helpers/tools.js';
import { sfdisk, sfdiskJson, sparseFile } from '../disk/images.js';
import {
  PI_IMAGE_TOOLS, PI_OS_LAYOUT, buildPiOsImage, buildPreppedPiImage, extractRange, netbootd,
} from '../helpers/piimage.js';

const TOOLS = [...PI_IMAGE_TOOLS, 'fsck.fat', 'mdir'];
const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

function sha(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

async function fsckPartition(image: string, start: number, size: number, dir: string): Promise<void> {
  const part = join(dir, `part-${start}.fat`);
  extractRange(image, start, size, part);
  const r = await run('fsck.fat', ['-n', part], { allowFail: true });
  const out = r.stdout.toString() + r.stderr;
  assert.equal(r.code, 0, out);
  assert.doesNotMatch(out, /differ|wrong|Reclaimed|lost|invalid|bad/i, out);
}

async function sfdiskVerify(image: string): Promise<string> {
  const r = await run('sfdisk', ['--verify', image], { allowFail: true });
  const out = r.stdout.toString() + r.stderr;
  assert.equal(r.code, 0, out);
  assert.doesNotMatch(out, /not on the end|corrupt|mismatch|invalid|overlap|error:|warning/i, out);
  assert.match(out, /No errors detected/);
  return out;
}

describe('netbootd prep on a Raspberry Pi OS style image', () => {
  it('grows, rewrites cmdline.txt, copies initrd.img, adds packages and the config; a second run changes nothing', async (t) => {
    if (!haveTools(t, ...TOOLS)) return;
    const dir = tempDir(t);
    const orig = join(dir, 'orig.img');
    await buildPiOsImage(orig);
    const p = await buildPreppedPiImage(dir, { from: orig, server: '198.18.0.1', exportName: 'pios', serial: '3A4B5C6D', packages: ['nbd-client', 'vim'] });
    const L = PI_OS_LAYOUT;
    const at = L.bootStart;

    // What it printed.
    assert.match(p.stdout, /boot partition 1, root partition 2, export pios/);
    assert.match(p.stdout, /grow the file from 196 MiB to 1 GiB \(sparse\)/);
    assert.match(p.stdout, /1:\/cmdline.txt: .*root=PARTUUID=6e657462-02.*→.*root=\/dev\/nbd0p2/);
    assert.match(p.stdout, new RegExp(`1:/initrd.img: copy .*initrd.img \\(${p.initrd.length} bytes\\)`));
    assert.match(p.stdout, /1:\/user-data: add packages nbd-client, vim/);
    assert.match(p.stdout, /added image pios/);
    assert.match(p.stdout, /added Pi 3a4b5c6d → image pios/);
    assert.match(p.stdout, /done: 6 change\(s\)/);

    // Size, sparseness, partition table.
    const st = statSync(p.image);
    assert.equal(st.size, GiB);
    assert.ok(st.blocks * 512 < 64 * MiB, `sparse: ${st.blocks * 512} bytes allocated`);
    await sfdiskVerify(p.image);
    const table = await sfdiskJson(p.image);
    assert.deepEqual(table.partitions.map((x) => [x.start, x.size, x.type]), [[8192, 131072, 'c'], [139264, 262144, '83']]);

    // The boot partition: clean, cmdline.txt, initrd bytes, untouched files equal the original.
    await fsckPartition(p.image, at, L.bootSize, dir);
    const cmdline = (await mcopyOut(p.image, '/cmdline.txt', at)).toString();
    assert.equal(cmdline, 'console=serial0,115200 console=tty1 rootfstype=ext4 fsck.repair=yes rootwait ip=dhcp nbdroot=198.18.0.1/pios root=/dev/nbd0p2\n');
    assert.ok((await mcopyOut(p.image, '/initrd.img', at)).equals(p.initrd), 'initrd.img bytes');
    for (const f of ['/config.txt', '/start4.elf', '/kernel8.img', '/initramfs8', '/overlays/vc4-kms-v3d.dtbo']) {
      assert.ok((await mcopyOut(p.image, f, at)).equals(await mcopyOut(orig, f, at)), `${f} unchanged`);
    }
    const listing = await mdirAll(p.image, at);
    assert.ok(listing.dirs.get('/')!.some((e) => e.name === 'initrd.img' && e.size === p.initrd.length));

    // user-data: still the user's YAML (comment, hostname, users) plus package_update and the packages.
    const ud = (await mcopyOut(p.image, '/user-data', at)).toString();
    assert.match(ud, /^#cloud-config\n/);
    assert.match(ud, /# netbootd demo: cloud-init user-data as Raspberry Pi Imager writes it/);
    assert.match(ud, /# set by Imager/);
    const udv = parseYaml(ud) as Record<string, unknown>;
    assert.equal(udv.hostname, 'raspberrypi');
    assert.equal(udv.package_update, true);
    assert.deepEqual(udv.packages, ['nbd-client', 'vim']);
    assert.equal((udv.users as Array<{ name: string }>)[0]!.name, 'pi');

    // The root partition is left alone (it grows itself on first boot).
    const rootOrig = readFileSync(orig).subarray(L.rootStart, L.rootStart + L.rootSize);
    const rootNow = readFileSync(p.image).subarray(L.rootStart, L.rootStart + L.rootSize);
    assert.ok(rootNow.equals(rootOrig), 'rootfs untouched');

    // The config: comments kept, the image and the Pi added, and it loads.
    const cfgText = readFileSync(p.config, 'utf8');
    assert.match(cfgText, /# netbootd test config/);
    assert.match(cfgText, /# another image, kept as is/);
    const cfg = parseConfig(cfgText, p.config);
    assert.ok(cfg.ok, JSON.stringify(!cfg.ok && cfg.errors));
    assert.equal(cfg.config.images.pios!.path, p.image);
    assert.equal(cfg.config.images.other!.path, '/srv/other.img');
    assert.equal(cfg.config.pis['3a4b5c6d']!.image, 'pios');

    // Twice: nothing changes, byte for byte.
    const h1 = sha(p.image);
    const c1 = readFileSync(p.config, 'utf8');
    const again = await netbootd(p.prepArgs);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout.toString(), /nothing to change/);
    assert.equal(sha(p.image), h1, 'the image is byte-identical after the second run');
    assert.equal(readFileSync(p.config, 'utf8'), c1);
  });

  it('--dry-run prints every change and writes nothing', async (t) => {
    if (!haveTools(t, ...TOOLS)) return;
    const dir = tempDir(t);
    const img = join(dir, 'pi.img');
    await buildPiOsImage(img);
    const cfg = join(dir, 'c.yaml');
    writeFileSync(cfg, '# mine\nimages: {}\n');
    writeFileSync(join(dir, 'initrd.img'), 'initrd');
    const before = sha(img);
    const r = await netbootd(['prep', img, '--size', '2G', '--grow-partition', '--server', 'boot.lan', '--copy', join(dir, 'initrd.img'),
      '--remove', 'issue.txt', '--packages', 'nbd-client', '--config', cfg, '--serial', '12345678', '--dry-run']);
    assert.equal(r.code, 0, r.stderr);
    const out = r.stdout.toString();
    for (const re of [/would: .*grow the file from 196 MiB to 2 GiB/, /would: .*grow partition 2 from 262144 to \d+ sectors/,
      /would: .*cmdline.txt: .*nbdroot=boot.lan\/pi root=\/dev\/nbd0p2/, /would: .*1:\/issue.txt: remove/,
      /would: .*1:\/initrd.img: copy/, /would: .*user-data: add packages nbd-client/, /would: .*added image pi /, /would: .*added Pi 12345678/,
      /dry run: 8 change\(s\), nothing written/]) {
      assert.match(out, re);
    }
    assert.equal(sha(img), before, 'image unchanged');
    assert.equal(statSync(img).size, PI_OS_LAYOUT.size);
    assert.equal(readFileSync(cfg, 'utf8'), '# mine\nimages: {}\n');
  });

  it('MBR: --grow-partition grows the last partition to the new end; --remove, --user-data merge, a directory copy', async (t) => {
    if (!haveTools(t, ...TOOLS)) return;
    const dir = tempDir(t);
    const img = join(dir, 'pi.img');
    await buildPiOsImage(img);
    mkdirSync(join(dir, 'extra/deeper'), { recursive: true });
    writeFileSync(join(dir, 'extra/a.txt'), 'a\n');
    writeFileSync(join(dir, 'extra/deeper/Long Name Ü.bin'), Buffer.alloc(70000, 7));
    writeFileSync(join(dir, 'ud.yaml'), '#cloud-config\nruncmd:\n  - [ touch, /netbooted ]\npackages: [nbd-client]\n');
    const r = await netbootd(['prep', img, '--size', '512M', '--grow-partition', '--server', '10.1.2.3', '--export', 'e1',
      '--remove', '/issue.txt', '--remove', 'overlays', '--copy', join(dir, 'extra'), '--copy', `${join(dir, 'extra/a.txt')}:/renamed.txt`,
      '--user-data', join(dir, 'ud.yaml')]);
    assert.equal(r.code, 0, r.stderr);
    await sfdiskVerify(img);
    const table = await sfdiskJson(img);
    assert.equal(table.partitions[1]!.start + table.partitions[1]!.size, 512 * 2048, 'partition 2 ends at the end');
    assert.equal(statSync(img).size, 512 * MiB);
    const at = PI_OS_LAYOUT.bootStart;
    await fsckPartition(img, at, PI_OS_LAYOUT.bootSize, dir);
    const listing = await mdirAll(img, at);
    assert.deepEqual([...listing.dirs.keys()].sort(), ['/', '/extra', '/extra/deeper']);
    const root = listing.dirs.get('/')!.map((e) => e.name);
    assert.ok(!root.includes('issue.txt') && !root.includes('overlays') && root.includes('renamed.txt'), root.join(' '));
    assert.ok((await mcopyOut(img, '/extra/deeper/Long Name Ü.bin', at)).equals(Buffer.alloc(70000, 7)));
    const ud = parseYaml((await mcopyOut(img, '/user-data', at)).toString()) as Record<string, unknown>;
    assert.equal(ud.hostname, 'raspberrypi');
    assert.deepEqual(ud.runcmd, [['touch', '/netbooted']]);
    assert.deepEqual(ud.packages, ['nbd-client']);
    // Again: nothing to do (removed paths are gone, copies equal).
    const h = sha(img);
    const again = await netbootd(['prep', img, '--size', '512M', '--grow-partition', '--server', '10.1.2.3', '--export', 'e1',
      '--remove', '/issue.txt', '--remove', 'overlays', '--copy', join(dir, 'extra'), '--copy', `${join(dir, 'extra/a.txt')}:/renamed.txt`,
      '--user-data', join(dir, 'ud.yaml')]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout.toString(), /nothing to change/);
    assert.equal(sha(img), h);
  });

  it('GPT: the backup header moves to the new end (CRCs right), with and without growing the last partition', async (t) => {
    if (!haveTools(t, ...TOOLS)) return;
    const dir = tempDir(t);
    for (const grow of [false, true]) {
      const img = join(dir, `gpt-${grow}.img`);
      sparseFile(img, 64 * MiB);
      await sfdisk(img, 'label: gpt\nunit: sectors\nstart=2048, size=40960, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name=boot\nstart=43008, size=20480, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n');
      const fat = join(dir, `fat-${grow}.img`);
      await mkfsVfat(fat, { fat: 16, sizeKiB: 20480, clusterSectors: 1 });
      writeFileSync(join(dir, 'cmdline.txt'), 'console=tty1 root=/dev/sda2 ip=none\n');
      await run('mcopy', ['-i', fat, join(dir, 'cmdline.txt'), '::/cmdline.txt'], { env: MTOOLS_ENV });
      await run('dd', [`if=${fat}`, `of=${img}`, 'bs=1M', 'seek=1', 'conv=notrunc', 'status=none']);
      const args = ['prep', img, '--size', '256M', '--server', '10.0.0.9', '--export', 'g'];
      if (grow) args.push('--grow-partition');
      const r = await netbootd(args);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout.toString(), /move the backup GPT header from LBA 131071 to 524287/);
      const out = await sfdiskVerify(img);
      assert.doesNotMatch(out, /backup/i);
      const table = await sfdiskJson(img) as unknown as { lastlba: number; partitions: Array<{ start: number; size: number; name?: string }> };
      assert.equal(table.lastlba, 524287 - 33);
      assert.equal(table.partitions[1]!.start + table.partitions[1]!.size - 1, grow ? 524287 - 33 : 43008 + 20480 - 1);
      assert.equal(table.partitions[0]!.name, 'boot');
      assert.equal((await mcopyOut(img, '/cmdline.txt', MiB)).toString(), 'console=tty1 ip=dhcp nbdroot=10.0.0.9/g root=/dev/nbd0p2\n');
      await fsckPartition(img, MiB, 20 * MiB, dir);
    }
  });

  it('clear one-line errors, nothing written', async (t) => {
    if (!haveTools(t, ...TOOLS)) return;
    const dir = tempDir(t);
    const img = join(dir, 'pi.img');
    await buildPiOsImage(img);
    const before = sha(img);
    const cases: Array<[string[], RegExp]> = [
      [['prep', img, '--size', '100M', '--server', 'x'], /--size 100 MiB is smaller than the image \(196 MiB\); netbootd prep never shrinks/],
      [['prep', img], /--server HOST is needed to write nbdroot= into \/cmdline.txt/],
      [['prep', img, '--server', 'x', '--size', 'lots'], /--size lots: give a size such as 16G/],
      [['prep', img, '--server', 'x', '--boot-partition', '2'], /partition 2 is not a FAT partition/],
      [['prep', img, '--server', 'x', '--copy', join(dir, 'nope')], /--copy .*nope: no such file or directory/],
      [['prep', img, '--server', 'x', '--packages', 'a', '--user-data', 'f'], /give --user-data or --packages, not both/],
      [['prep', join(dir, 'missing.img'), '--server', 'x'], /missing.img: no such file/],
    ];
    const results = await Promise.all(cases.map(([args]) => netbootd(args)));
    for (const [i, [args, re]] of cases.entries()) {
      const r = results[i]!;
      assert.equal(r.code, 1, args.join(' '));
      assert.match(r.stderr, re);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }
    assert.equal(sha(img), before);
  });
});
