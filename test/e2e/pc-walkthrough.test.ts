/**
 * The README's PC walk-through ("### A PC (BIOS or UEFI)"), run as written (issue 13, "No route for PCs"):
 * the shell blocks between `<!-- pc-walkthrough -->` markers are taken out of README.md and run with bash —
 * only their three settings lines get the test's values (server 198.18.0.2, the VM's MAC, a temp folder) —
 * in the repository folder, with `netbootd` being the source tree's CLI. That builds a Debian PC image with
 * scripts/build-pc-image.sh (no mounts), preps it, adds the host and checks. The serve block then runs, as
 * written, in the e2e server namespace, and a QEMU PC (SeaBIOS + iPXE, TCG) network-boots the image through
 * it: PXE, TFTP out of the image, the initramfs attaches the root over NBD and switch_roots, and the root's
 * own init prints its banner. The apt-get line of the walk-through must name only packages that
 * scripts/install-test-deps.sh installs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { IN_CI, run } from '../helpers/tools.js';
import { readmeBlocks, runBlock, testDepsPackages, walkthroughWork, withSettings } from '../helpers/readme.js';
import { E2E_ROOT, SCRIPTS, appendLine, daemonAvailable, DAEMON_MISSING } from './artifacts.js';
import { readFatFile } from './image.js';
import { createTopology, waitListening, SERVER_ADDRESS, type Topology } from './stacks.js';
import { addTap, bootVm, formatBoot } from './vm.js';
import { BOOT_TIMEOUT_MS, e2eReady, report } from './setup.js';

const MAC = '52:54:00:e2:a0:01';
const EXPORT = 'debian-pc';

test('README walk-through: its apt-get line names only packages install-test-deps.sh installs', () => {
  const [block] = readmeBlocks('pc-walkthrough-packages');
  const m = /apt-get install\s+(.*)$/m.exec(block!);
  assert.ok(m, 'no apt-get install line');
  const wanted = m[1]!.split(/\s+/).filter((w) => w && !w.startsWith('-'));
  const have = testDepsPackages();
  assert.deepEqual(wanted.filter((p) => !have.has(p)), [], 'packages missing from scripts/install-test-deps.sh');
});

test('README walk-through for a PC, run as written: build-pc-image.sh, prep, add-host, check, serve; a BIOS PC boots to its root over NBD',
  { timeout: 3 * 60_000 + BOOT_TIMEOUT_MS, skip: daemonAvailable() ? false : DAEMON_MISSING }, async (t) => {
    if (!e2eReady(t)) return;
    // The kernel and busybox-static come from Debian's mirror (cached): without it there is nothing to build.
    const fetched = await run('bash', [join(SCRIPTS, 'fetch-debs.sh')], { allowFail: true, timeoutMs: 10 * 60_000 });
    if (fetched.code !== 0) {
      const msg = `cannot fetch the Debian kernel debs (scripts/e2e/fetch-debs.sh): ${fetched.stderr.trim().split('\n').pop()}`;
      if (IN_CI) throw new Error(msg);
      t.skip(msg);
      return;
    }

    let topo: Topology | undefined;
    const { work, env: baseEnv } = walkthroughWork('netbootd-pc-walkthrough-', () => topo?.destroy());
    const dir = join(work, 'netboot');
    const settings = { SERVER: SERVER_ADDRESS, MAC, DIR: dir };
    // The serve block uses the settings as the user's shell would still have them.
    const env = { ...baseEnv, ...settings };

    // Step 2, as written.
    const [steps] = readmeBlocks('pc-walkthrough');
    const t0 = Date.now();
    const out = await runBlock(withSettings(steps!, settings), { cwd: E2E_ROOT, env, timeoutMs: 5 * 60_000 });
    report(t, `README PC walk-through (build-pc-image.sh, prep, add-host, check) took ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const image = join(dir, 'debian-pc.img');
    assert.match(out, /no errors/, `netbootd check did not pass:\n${out.slice(-3000)}`);
    assert.match(out, new RegExp(`added host ${MAC}`), 'add-host');

    // prep rewrote the APPEND line for this server, and kept every other line of pxelinux.cfg/default.
    const cfg = (await readFatFile(image, 1, 'pxelinux.cfg/default'))?.toString() ?? '';
    const append = appendLine(cfg);
    assert.match(append, new RegExp(`(^| )ip=dhcp nbdroot=${SERVER_ADDRESS.replace(/\./g, '\\.')}/${EXPORT} root=/dev/nbd0p2$`), cfg);
    assert.match(append, /console=ttyS0,115200/, 'the other arguments are kept');
    for (const line of ['SERIAL 0 115200', 'KERNEL vmlinuz', 'INITRD initrd.img', 'IPAPPEND 2']) assert.ok(cfg.includes(line), `${line} lost:\n${cfg}`);
    // The initramfs and the kernel are one version (the build puts that kernel's modules in the initramfs).
    const modules = await run('bash', ['-c', `mtype -i ${image}@@1048576 ::initrd.img | gzip -dc | cpio -t --quiet | grep -m1 'lib/modules/.*/kernel/'`],
      { env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });
    const initrdVersion = /lib\/modules\/([^/]+)\//.exec(modules.stdout.toString())?.[1];
    assert.ok(initrdVersion, 'no modules in initrd.img');

    // Step 3, as written, in the server namespace: the daemon on the real ports, reachable only by the VM.
    topo = await createTopology('pcw', work);
    const [serve] = readmeBlocks('pc-walkthrough-serve');
    const serveLine = serve!.trim();
    assert.equal(serveLine.split('\n').length, 1, 'the serve block is one command');
    const daemon = topo.lab.start(topo.server, 'bash', ['-c', serveLine], { cwd: E2E_ROOT, env });
    const chunks: Buffer[] = [];
    daemon.stdout?.on('data', (c: Buffer) => chunks.push(c));
    daemon.stderr?.on('data', (c: Buffer) => chunks.push(c));
    const daemonLog = (): string => Buffer.concat(chunks).toString();
    t.after(() => daemon.stop());
    await Promise.race([
      waitListening(topo.lab, topo.server, [['udp', 67], ['udp', 4011], ['udp', 69], ['tcp', 10809]], 30_000),
      new Promise((_, reject) => daemon.once('exit', (c) => reject(new Error(`${serveLine} exited ${c}:\n${daemonLog()}`)))),
    ]);

    // Step 4: the PC network-boots (BIOS: SeaBIOS + iPXE, e1000) up to the root's login prompt on ttyS0.
    const tap = await addTap(topo.lab, 'tap0');
    const b = await bootVm({
      lab: topo.lab, tap, firmware: 'bios', mac: MAC, timeoutMs: BOOT_TIMEOUT_MS,
      serialLog: join(work, 'console.log'), until: /netboot-pc login: $/,
    });
    report(t, formatBoot('README PC image, BIOS', b));
    assert.ok(b.ok, `${b.error}\n--- console ---\n${b.tail}\n--- netbootd ---\n${daemonLog().split('\n').slice(-40).join('\n')}`);
    const root = b.markers.find((m) => m.startsWith('ROOT '));
    assert.equal(root, `ROOT /dev/nbd0p2 mounted over NBD from ${SERVER_ADDRESS}:10809/${EXPORT}; starting /sbin/init`, b.markers.join('\n'));
    const up = b.markers.find((m) => m.startsWith('root up: '));
    assert.ok(up, b.markers.join('\n'));
    assert.match(up, /^root up: \/ is \/dev\/nbd0p2 over NBD, \/boot is \/dev\/nbd0p1, address \S+ 198\.18\.0\.1\d\d\/24, netbootd PC image: kernel (\S+),/);
    assert.equal(/kernel (\S+),/.exec(up)![1], initrdVersion, 'the booted kernel is the one the initramfs was built for');
    assert.ok(b.markers.some((m) => m.startsWith(`INIT kernel ${initrdVersion}`)), 'the initramfs ran under its own kernel');
    // netbootd served the boot files out of the image to this MAC.
    assert.match(daemonLog(), /initrd\.img/, 'TFTP of initrd.img not logged');
  });
