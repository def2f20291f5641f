/**
 * The pure parts of prep: cmdline.txt rewriting, cloud-init user-data edits, sizes and names, the config
 * edit (addImage), and the GPT/MBR growth planner (checked by re-reading the table with our parser).
 */
import { craftGpt } from '../disk/craft.js';
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parse as parseYaml } from 'yaml';
import { rewriteCmdline, existingNbdroot } from '../../src/prep/cmdline.js';
import { addPackages, mergeUserData, UserDataError } from '../../src/prep/userdata.js';
import { parseSize, planGrow } from '../../src/prep/grow.js';
import { defaultExportName } from '../../src/prep/prep.js';
import { addImage, addPi } from '../../src/config/edit.js';
import { parseConfig } from '../../src/config/load.js';
import { MemoryBlockDevice } from '../../src/testing/memory-device.js';
import { readPartitionTable } from '../../src/disk/partitions.js';

const T = { server: '192.168.1.10', exportName: 'pios', rootPartition: 2 };

describe('cmdline.txt', () => {
  it('drops root=, ip=, nbdroot=; keeps the rest in order; appends the NBD root', () => {
    const pi = 'console=serial0,115200 console=tty1 root=PARTUUID=6e657462-02 rootfstype=ext4 fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n';
    assert.equal(rewriteCmdline(pi, T),
      'console=serial0,115200 console=tty1 rootfstype=ext4 fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot ip=dhcp nbdroot=192.168.1.10/pios root=/dev/nbd0p2\n');
    const old = 'ip=10.0.0.5::10.0.0.1:255.255.255.0 root=/dev/nbd0 nbdroot=old/x splash  root=/dev/sda2 dwc_otg.lpm_enable=0';
    assert.equal(rewriteCmdline(old, T), 'splash dwc_otg.lpm_enable=0 ip=dhcp nbdroot=192.168.1.10/pios root=/dev/nbd0p2');
    assert.equal(rewriteCmdline('a "b c" d\r\n', T), 'a "b c" d ip=dhcp nbdroot=192.168.1.10/pios root=/dev/nbd0p2\r\n');
    assert.equal(rewriteCmdline('', T), 'ip=dhcp nbdroot=192.168.1.10/pios root=/dev/nbd0p2\n');
    assert.match(rewriteCmdline('x', { ...T, server: 'fd00::1' }), /nbdroot=\[fd00::1\]\/pios/);
    assert.match(rewriteCmdline('x', { ...T, server: '192.168.1.10:10810' }), /nbdroot=192\.168\.1\.10:10810\/pios /, 'host:port is not bracketed');
    // Arguments that merely start like the dropped ones stay.
    assert.equal(rewriteCmdline('rootwait rootfstype=ext4 ipv6.disable=1', T), 'rootwait rootfstype=ext4 ipv6.disable=1 ip=dhcp nbdroot=192.168.1.10/pios root=/dev/nbd0p2');
  });

  it('is idempotent, and an existing nbdroot= gives the server and export for a rerun', () => {
    for (const s of ['console=tty1 root=/dev/mmcblk0p2 rootwait\n', 'ip=dhcp a b', '', 'x\r\n']) {
      const once = rewriteCmdline(s, T);
      assert.equal(rewriteCmdline(once, T), once);
    }
    assert.deepEqual(existingNbdroot('a nbdroot=10.0.0.1/pi root=/dev/nbd0p2'), { server: '10.0.0.1', exportName: 'pi' });
    assert.equal(existingNbdroot('a root=/dev/sda2'), undefined);
    assert.equal(existingNbdroot('nbdroot=dhcp'), undefined);
  });
});

describe('cloud-init user-data', () => {
  const ud = '#cloud-config\n# set up the user\nhostname: pi   # the name\nusers:\n  - name: pi\npackages:\n  - vim # editor\n';
  it('adds package_update and the missing packages, keeping comments; idempotent', () => {
    const out = addPackages(ud, ['nbd-client', 'vim']);
    assert.match(out, /^#cloud-config\n# set up the user\n/);
    assert.match(out, /# the name/);
    assert.match(out, /- vim # editor/);
    assert.deepEqual(parseYaml(out), { hostname: 'pi', users: [{ name: 'pi' }], packages: ['vim', 'nbd-client'], package_update: true });
    assert.equal(addPackages(out, ['nbd-client', 'vim']), out);
    const keep = addPackages('#cloud-config\npackage_update: false\n', ['x']);
    assert.equal((parseYaml(keep) as { package_update: boolean }).package_update, false, 'an explicit choice is kept');
  });
  it('creates a file from nothing, and refuses what is not a YAML mapping', () => {
    assert.equal(addPackages('', ['nbd-client']), '#cloud-config\npackage_update: true\npackages:\n  - nbd-client\n');
    assert.throws(() => addPackages('#cloud-config\na: [', ['x']), (e: unknown) => e instanceof UserDataError && /not valid YAML/.test(e.message));
    assert.throws(() => addPackages('#cloud-config\n- a\n- b\n', ['x']), /not a YAML mapping/);
    assert.throws(() => addPackages('#cloud-config\npackages: vim\n', ['x']), /`packages` is not a list/);
    assert.throws(() => addPackages('#!/bin/sh\necho hi\n', ['x']), /does not start with #cloud-config/);
    const jinja = '## template: jinja\n#cloud-config\nhostname: {{ v1.instance_id }}\n';
    assert.throws(() => addPackages(jinja, ['x']), /jinja template/); // braces would be re-serialized as YAML: refused
  });
  it('merges another user-data: its keys win, package lists are joined', () => {
    const out = mergeUserData(ud, '#cloud-config\nhostname: netpi\nruncmd: [[touch, /x]]\npackages: [vim, curl]\n');
    assert.match(out, /# set up the user/);
    assert.deepEqual(parseYaml(out), { hostname: 'netpi', users: [{ name: 'pi' }], packages: ['vim', 'curl'], runcmd: [['touch', '/x']] });
    assert.equal(mergeUserData(out, '#cloud-config\nhostname: netpi\nruncmd: [[touch, /x]]\npackages: [vim, curl]\n'), out);
    assert.equal(mergeUserData('', '#cloud-config\na: 1\n'), '#cloud-config\na: 1\n');
  });
});

describe('sizes, names and the config', () => {
  it('parses sizes and derives export names', () => {
    assert.equal(parseSize('16G'), 16 * 1024 ** 3);
    assert.equal(parseSize('512M'), 512 * 1024 ** 2);
    assert.equal(parseSize('1.5GiB'), 1.5 * 1024 ** 3);
    assert.equal(parseSize('4096'), 4096);
    for (const bad of ['', 'G', '-1G', '12X', '0']) assert.equal(parseSize(bad), undefined, bad);
    assert.equal(defaultExportName('/srv/2024-11-19-raspios-bookworm-arm64-lite.img'), '2024-11-19-raspios-bookworm-arm64-lite');
    assert.equal(defaultExportName('ubuntu 24.04 (pi).img.xz'), 'ubuntu-24.04-pi-');
    assert.equal(defaultExportName('___'), 'image');
  });
  it('addImage adds or updates an image, keeps comments, says when nothing changes', () => {
    const base = '# mine\nimages:\n  a: { path: /srv/a.img }   # keep\n  b:\n    path: /srv/b.img\n    mode: cow # overlays\n';
    const r = addImage(base, 'c.yaml', 'pios', { path: '/srv/pios.img' });
    assert.equal(r.summary, 'added image pios → /srv/pios.img');
    assert.match(r.text, /# keep/);
    const again = addImage(r.text, 'c.yaml', 'pios', { path: '/srv/pios.img' });
    assert.equal(again.text, r.text);
    assert.match(again.summary, /unchanged/);
    const upd = addImage(base, 'c.yaml', 'b', { path: '/srv/b2.img', bootPartition: 1 });
    assert.match(upd.text, /# overlays/);
    const loaded = parseConfig(upd.text, 'c.yaml');
    assert.ok(loaded.ok);
    assert.deepEqual(loaded.config.images.b, { path: '/srv/b2.img', mode: 'cow', bootPartition: 1, shared: false, tls: false, clientCert: false, export: 'b' });
    const withPi = addPi(addImage('', 'c.yaml', 'x', { path: '/x.img' }).text, 'c.yaml', '3a4b5c6d', 'x');
    assert.ok(parseConfig(withPi.text, 'c.yaml').ok);
  });
});

/** A GPT disk of `sectors` 512-byte sectors with two Linux partitions (test/disk/craft.ts builds it). */
function gptDisk(sectors: number): Buffer {
  const linux = '0fc63daf-8483-4772-8e79-3d69d8477de4';
  return craftGpt(512, sectors, [
    { type: linux, guid: '00000001-0000-0000-0000-000000000000', firstLba: 2048, lastLba: 4095, name: 'boot' },
    { type: linux, guid: '00000002-0000-0000-0000-000000000000', firstLba: 4096, lastLba: sectors - 34, name: 'root' },
  ]);
}

describe('growth planner', () => {
  it('GPT: moves the backup, fixes both CRCs, optionally grows the last partition; the result parses clean', async () => {
    for (const grow of [false, true]) {
      const small = gptDisk(8192);
      const dev0 = new MemoryBlockDevice(small, true);
      const table0 = await readPartitionTable(dev0);
      assert.equal(table0.scheme, 'gpt');
      const plan = await planGrow(dev0, table0, 16384 * 512, grow);
      assert.match(plan.changes[0]!, /move the backup GPT header from LBA 8191 to 16383/);
      const big = Buffer.alloc(16384 * 512);
      small.copy(big);
      const dev = new MemoryBlockDevice(big);
      await plan.apply(dev);
      const t = await readPartitionTable(dev);
      assert.deepEqual(t.warnings, []);
      assert.equal(t.partitions[1]!.start + t.partitions[1]!.size, grow ? (16384 - 33) * 512 : (8192 - 33) * 512);
      // The primary damaged: the backup at the new end is found and is consistent.
      big.fill(0, 512, 1024);
      const t2 = await readPartitionTable(new MemoryBlockDevice(big, true));
      assert.match(t2.warnings.join(' '), /backup/);
      assert.deepEqual(t2.partitions.map((p) => [p.start, p.size, p.name]), t.partitions.map((p) => [p.start, p.size, p.name]));
      assert.equal(big.readUInt32LE(446 + 12), 16383, 'protective MBR covers the disk');
      assert.equal(big.subarray(8191 * 512, 8191 * 512 + 8).toString('latin1') === 'EFI PART', false, 'old backup wiped');
    }
  });
  it('MBR: only with growLast, the last primary partition grows; logical partitions are refused', async () => {
    const d = Buffer.alloc(4096 * 512);
    d[510] = 0x55;
    d[511] = 0xaa;
    const entry = (slot: number, type: number, start: number, size: number): void => {
      const o = 446 + (slot - 1) * 16;
      d[o + 4] = type;
      d.writeUInt32LE(start, o + 8);
      d.writeUInt32LE(size, o + 12);
    };
    entry(1, 0x0c, 2048, 1024);
    entry(2, 0x83, 3072, 1024);
    const dev = new MemoryBlockDevice(d, true);
    const t = await readPartitionTable(dev);
    assert.deepEqual((await planGrow(dev, t, 8192 * 512, false)).changes, []);
    const plan = await planGrow(dev, t, 8192 * 512, true);
    assert.deepEqual(plan.changes, ['grow partition 2 from 1024 to 5120 sectors (to the end of the image)']);
    const big = Buffer.alloc(8192 * 512);
    d.copy(big);
    const w = new MemoryBlockDevice(big);
    await plan.apply(w);
    const t2 = await readPartitionTable(w);
    assert.equal(t2.partitions[1]!.size, 5120 * 512);
  });
});
