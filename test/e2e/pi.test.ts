/**
 * End to end, Raspberry Pi (issue 7): no emulator runs the Pi bootloader, so test/e2e/pi-client.ts plays
 * it in its own network namespace with a Pi MAC: raw DHCP DISCOVER as the EEPROM sends it (the router gives
 * the address, the boot stack the TFTP server), the start4.elf size probe aborted with ERROR 0 "Early
 * terminate" and re-read, the rest of the boot files, a Pi 5 asking `serial//config.txt` with blksize 1468,
 * an unknown serial (file not found), then an NBD read of the whole image. Every byte is compared with the
 * FAT of the image (mtools) and the root partition's ext4 superblock with the image file.
 * The image starts as a stock Raspberry Pi OS style disk and is made netbootable by `netbootd prep` (issue 8).
 * Runs against the reference stack (dnsmasq proxy + TFTP from per-serial directories, nbd-server) and
 * netbootd (skipped until src/daemon.ts exists).
 */
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliCommand, run } from '../helpers/tools.js';
import { E2E_ROOT, SCRIPTS, daemonAvailable, DAEMON_MISSING } from './artifacts.js';
import { fatFiles, partitionsOf, readRange } from './image.js';
import { createTopology, startStack, selectedStacks, STACK_TITLES, SERVER_ADDRESS, tailOf, type StackName, type Topology } from './stacks.js';
import type { PiJob, PiReport } from './pi-client.js';
import { e2eReady, report } from './setup.js';
import { runPiClient } from './pi-run.js';

const STACKS: StackName[] = selectedStacks();
const PI_EXPORT = 'pi';
// A serial with letters and one YAML would read as a number: both must stay the text they are.
const PI4 = { mac: 'dc:a6:32:4e:2e:01', serial: '3a4b5c6d', fourcc: 'RPi4' };
const PI5 = { mac: '2c:cf:67:5e:2e:02', serial: '12345678', fourcc: 'RPi5', boardRevision: 0x00d04170 };
const UNKNOWN_SERIAL = 'deadbeef';
const PI4_FILES = ['config.txt', 'fixup4.dat', 'cmdline.txt', 'kernel8.img', 'initrd.img', 'bcm2711-rpi-4-b.dtb',
  'overlays/vc4-kms-v3d-pi4.dtbo', 'overlays/disable-bt.dtbo'];
const PI5_FILES = ['cmdline.txt', 'kernel_2712.img', 'initrd.img', 'bcm2712-rpi-5-b.dtb', 'overlays/disable-bt.dtbo'];


for (const stackName of STACKS) {
  const skip = stackName === 'netbootd' && !daemonAvailable() ? DAEMON_MISSING : false;

  describe(`e2e Raspberry Pi (scripted bootloader) through the ${STACK_TITLES[stackName]}`, { skip }, () => {
    let workDir: string | undefined;
    const work = (): string => (workDir ??= mkdtempSync(join(tmpdir(), `netbootd-e2e-pi-${stackName}-`)));
    let topo: Topology | undefined;
    after(async () => {
      await topo?.destroy();
      if (!workDir) return;
      if (process.env.E2E_KEEP) console.log(`[e2e] kept ${workDir} (E2E_KEEP)`);
      else rmSync(workDir, { recursive: true, force: true });
    });

    test('Pi 4 and Pi 5: DHCP, TFTP boot files byte-exact from the FAT, size probe, unknown serial, NBD superblock',
      { timeout: 300_000 }, async (t) => {
        if (!e2eReady(t, ['nbdcopy', 'openssl'])) return;
        // A stock image (cmdline.txt with root=PARTUUID=…, as Raspberry Pi OS ships it) made netbootable by
        // `netbootd prep` — no mounts — with a new initrd.img and cloud-init packages, then served.
        const image = join(work(), 'pi.img');
        await run('bash', [join(SCRIPTS, 'build-pi-disk.sh'), image, '--stock']);
        const initrd = join(work(), 'initrd.img');
        writeFileSync(initrd, Buffer.alloc(2 * 1024 * 1024 + 333, 0x1d));
        const { cmd, args } = cliCommand();
        const prep = await run(cmd, [...args, 'prep', image, '--server', SERVER_ADDRESS, '--export', PI_EXPORT, '--root-partition', '2',
          '--copy', initrd, '--packages', 'nbd-client'], { cwd: E2E_ROOT });
        assert.match(prep.stdout.toString(), /cmdline\.txt/, prep.stdout.toString());
        const fat = await fatFiles(image, 1);
        assert.equal(fat.get('cmdline.txt')!.toString(),
          `console=serial0,115200 console=tty1 rootfstype=ext4 fsck.repair=yes rootwait ip=dhcp nbdroot=${SERVER_ADDRESS}/${PI_EXPORT} root=/dev/nbd0p2\n`);
        assert.ok(fat.get('initrd.img')!.equals(readFileSync(initrd)), 'prep copied the new initrd.img');
        topo = await createTopology(`e2ep${stackName[0]}`, work());
        const pi4 = await topo.lab.addHost('pi4', { mac: PI4.mac });
        const pi5 = await topo.lab.addHost('pi5', { mac: PI5.mac });
        // An unconfigured interface still needs a route for its 0.0.0.0 → 255.255.255.255 DISCOVERs.
        for (const h of [pi4, pi5]) await topo.lab.exec(h, 'ip', ['route', 'add', '255.255.255.255/32', 'dev', 'eth0']);
        const dir = join(work(), stackName);
        mkdirSync(dir, { recursive: true });
        const stack = await startStack(stackName, { topo, image, exportName: PI_EXPORT, hosts: [], pis: [PI4.serial, PI5.serial], workDir: dir });
        t.after(() => stack.stop());

        const runPi = async (host: typeof pi4, job: Omit<PiJob, 'ifname' | 'outDir'>, name: string): Promise<{ r: PiReport; out: string }> => {
          const { r, out, ms } = await runPiClient(topo!.lab, host, name, job, join(dir, name), 180_000);
          report(t, `${stackName} ${name}: scripted boot in ${(ms / 1000).toFixed(1)} s` +
            ` (${Object.keys(r.files).length} files, ${Object.values(r.files).reduce((n, f) => n + ('size' in f ? f.size : 0), 0)} bytes)`);
          assert.equal(r.error, undefined, `${name}: ${r.error}\n--- ${stack.logs[0]} ---\n${tailOf(stack.logs[0]!)}`);
          return { r, out };
        };

        const checkFiles = (name: string, r: PiReport, out: string, files: string[], blksize: string): void => {
          for (const f of files) {
            const got = r.files[f];
            assert.ok(got && 'size' in got, `${name}: ${f}: ${JSON.stringify(got)}`);
            const want = fat.get(f);
            assert.ok(want, `${f} not in the FAT`);
            assert.ok(readFileSync(join(out, f)).equals(want), `${name}: ${f}: bytes differ from the FAT (${got.size} vs ${want.length})`);
            if (got.oack) assert.equal(got.oack['blksize'], blksize, `${name}: ${f}: blksize granted`);
          }
        };

        // Pi 4: DHCP, probe, files, unknown serial, NBD.
        const { r: r4, out: out4 } = await runPi(pi4, {
          identity: PI4, model: 4, files: PI4_FILES, unknownSerial: UNKNOWN_SERIAL, nbd: { server: SERVER_ADDRESS, export: PI_EXPORT },
        }, 'Pi 4');
        assert.ok(r4.dhcp, 'Pi 4 ran DHCP');
        assert.match(r4.dhcp.address, /^198\.18\.0\.1\d\d$/, 'address from the router');
        assert.equal(r4.dhcp.router, '198.18.0.1');
        assert.equal(r4.dhcp.tftpServer, SERVER_ADDRESS, 'TFTP server named by the proxy reply');
        assert.equal(r4.dhcp.proxyFrom, SERVER_ADDRESS);
        assert.match(r4.dhcp.menu, /^Raspberry Pi Boot/, 'PXE menu text the Pi bootloader requires');
        assert.equal(r4.probe?.['tsize'], String(fat.get('start4.elf')!.length), 'tsize of the probe');
        checkFiles('Pi 4', r4, out4, ['start4.elf', ...PI4_FILES], '1024');
        assert.ok(r4.unknown && 'code' in r4.unknown, `unknown serial got a file: ${JSON.stringify(r4.unknown)}`);
        assert.equal(r4.unknown.code, 1, `unknown serial: TFTP error ${r4.unknown.code} ${r4.unknown.message}`);
        assert.ok(r4.nbd && 'bytes' in r4.nbd, `NBD: ${JSON.stringify(r4.nbd)}`);
        const parts = await partitionsOf(image);
        const root = parts.find((p) => p.number === 2)!;
        const sb = readRange(join(out4, 'nbd.img'), root.start + 1024, 1024);
        assert.equal(sb.readUInt16LE(56), 0xef53, 'ext4 superblock magic over NBD');
        assert.ok(sb.equals(readRange(image, root.start + 1024, 1024)), 'superblock bytes over NBD equal the image');

        // Pi 5: serial//config.txt with blksize 1468, then its files.
        const { r: r5, out: out5 } = await runPi(pi5, { identity: PI5, model: 5, files: PI5_FILES }, 'Pi 5');
        assert.equal(r5.dhcp?.tftpServer, SERVER_ADDRESS);
        checkFiles('Pi 5', r5, out5, ['config.txt', ...PI5_FILES], '1468');
      });
  });
}
