/**
 * The demo image (scripts/make-demo-image.sh) is a Raspberry Pi OS style disk that netbootd can read, and
 * every file netbootd cats out of it equals what mtools copies out of the same image.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { cliCommand, haveTools, REPO_ROOT, run, tempDir } from '../helpers/tools.js';
import { sfdiskJson } from '../disk/images.js';

test('make-demo-image.sh builds a sparse Pi-style image that ls/cat read like mtools does', async (t) => {
  if (!haveTools(t, 'sfdisk', 'mkfs.vfat', 'mcopy', 'mmd', 'mkfs.ext4')) return;
  const img = join(tempDir(t), 'demo.img');
  await run('bash', [join(REPO_ROOT, 'scripts/make-demo-image.sh'), img]);
  const st = statSync(img);
  assert.ok(st.blocks * 512 < st.size / 4, 'sparse');
  const ref = await sfdiskJson(img);
  assert.equal(ref.id, '0x6e657462');
  assert.deepEqual(ref.partitions.map((p) => [p.start, p.type, p.bootable === true]), [[8192, 'c', true], [139264, '83', false]]);

  const { cmd, args } = cliCommand();
  const cli = (...a: string[]) => run(cmd, [...args, ...a]);
  const ls = (await cli('ls', img)).stdout.toString();
  assert.match(ls, /\n1\s+mbr\s+0c W95 FAT32 \(LBA\) \*\s+4194304\s+64 MiB\s+\(67108864\)\s+FAT32\s+bootfs\n/);
  assert.match(ls, /\n2\s+mbr\s+83 Linux\s+71303168\s+128 MiB\s+\(134217728\)\s+ext4\s+rootfs\n/);
  const cmdline = (await cli('cat', img, '1:/cmdline.txt')).stdout.toString();
  assert.equal(cmdline, 'console=serial0,115200 console=tty1 root=PARTUUID=6e657462-02 rootfstype=ext4 fsck.repair=yes rootwait\n');

  const at = `${img}@@${8192 * 512}`;
  const env = { ...process.env, MTOOLS_SKIP_CHECK: '1' };
  const names = (await run('mdir', ['-b', '-/', '-i', at, '::/'], { env })).stdout.toString().trim().split('\n')
    .filter((l) => !l.endsWith('/')).map((l) => l.replace(/^::/, ''));
  assert.ok(names.includes('/overlays/vc4-kms-v3d.dtbo') && names.includes('/LICENCE.broadcom'), names.join(' '));
  const some = ['/config.txt', '/start4.elf', '/kernel8.img', '/overlays/vc4-kms-v3d.dtbo', '/LICENCE.broadcom'];
  await Promise.all(some.map(async (name) => {
    assert.ok(names.includes(name), name);
    const [ours, theirs] = await Promise.all([
      cli('cat', img, `1:${name}`),
      run('mcopy', ['-n', '-i', at, `::${name}`, '-'], { env }),
    ]);
    assert.ok(ours.stdout.equals(theirs.stdout), `${name}: ${ours.stdout.length} vs ${theirs.stdout.length} bytes`);
  }));
  assert.equal((await cli('cat', img, '1:/start4.elf')).stdout.length, 393216);
});
