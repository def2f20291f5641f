/**
 * Issue 16: every Raspberry Pi bootloader replayed against `netbootd serve` in network namespaces (router
 * dnsmasq gives addresses, netbootd is the proxy DHCP + TFTP + NBD server), each Pi by test/e2e/pi-client.ts
 * in its own namespace with its own MAC, sending the DHCP and TFTP sequences its bootloader sends:
 *
 *   Pi 3B+ boot ROM  b8:27:eb (MAC derived from the serial); DISCOVER with option 97 = 00 + 0x44×16 and no
 *                    DHCPREQUEST (raspberrypi/documentation bootmodes/net.md, tcpdump decode and "known
 *                    problems"); ARP for the server, then `RRQ "bootcode.bin" octet` and `RRQ "bootsig.bin"
 *                    octet` without options (raspberrypi/firmware issue #745 capture), then bootcode.bin asks
 *                    `<serial>/start.elf` … (net.md). netbootd ties the root request to the Pi through its
 *                    neighbour table (src/registry/pi.ts).
 *   Pi 4 TFTP_PREFIX=0  `<serial>/start4.elf` size probe (tsize, ERROR 0 "Early terminate"), then the files;
 *   Pi 4 TFTP_PREFIX=1  `pxe/start4.elf` (TFTP_PREFIX_STR), the Pi known by the MAC of its DHCPREQUEST;
 *   Pi 4 TFTP_PREFIX=2  `dc-a6-32-4e-2e-21/start4.elf`, lowercase with dashes (raspberrypi/documentation PR
 *                    #1562), listed by serial with `mac:` (one identity either way);
 *                    (TFTP_PREFIX modes: bootloader configuration docs, raspberrypi/documentation PR #1426)
 *   CM4              RPi4 FourCC, board revision 0x00d03141 (type 0x14), OUI e4:5f:01;
 *   Pi 5             RPi5 FourCC, board revision 0x00d04170, OUI 88:a2:9e, a 16-digit serial that does not start
 *                    with 10000000 (0c8f7e5cbd989ae1, rpi-eeprom issue #563: the TFTP prefix is its low 32 bits,
 *                    bd989ae1), `bd989ae1//config.txt` with a double slash, never start4.elf, and a 100 MB
 *                    `boot.img` (ramdisk boot): more than 65535 blocks of 1468 bytes, so block numbers roll
 *                    over; fetched with windowsize 64 and checked by SHA-256 (the file is sparse in the image);
 *   unconfigured     a Pi 4 and a Pi 3 that are not under `pis`: no boot files at all.
 * Each configured Pi ends with an NBD attach from its own address: it sees the image (MBR, FAT boot sector, root
 * superblock) through its own copy-on-write overlay, named by its one identity. A second test is the
 * copy-on-write scenario: the Pi 4 and the Pi 5 each rewrite cmdline.txt over NBD, and at their next boot each
 * gets its own rewritten cmdline.txt by TFTP while another Pi still gets the image's.
 * Namespaces and processes are removed by pid (test/helpers/netns.ts), also when a test fails.
 */
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, closeSync, rmSync, writeFileSync, writeSync, ftruncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { haveTools, IN_CI, run } from '../helpers/tools.js';
import { NetLab, type NetHost } from '../helpers/netns.js';
import { MTOOLS_ENV, prng, randomBytes } from '../helpers/fatimg.js';
import { E2E_ROOT, daemonAvailable, DAEMON_MISSING } from './artifacts.js';
import { createTopology, waitListening, SERVER_ADDRESS, STATUS_PORT, tailOf, type Topology } from './stacks.js';
import { buildPiOsImage, PI_OS_LAYOUT } from '../helpers/piimage.js';
import type { PiJob, PiReport } from './pi-client.js';
import { report } from './setup.js';
import { runPiClient } from './pi-run.js';
import { readRange } from './image.js';

const MiB = 1024 * 1024;
const EXPORT = 'pis';
const BOOT_START = 4 * MiB;
const BOOT_SIZE = 128 * MiB;
const ROOT_START = BOOT_START + BOOT_SIZE;
const ROOT_SIZE = 8 * MiB;
const BIG = 100 * 1000 * 1000; // boot.img: 68120 blocks of 1468 bytes

interface Pi {
  host: string;
  mac: string;
  serial: string;
  fourcc?: string;
  boardRevision?: number;
  model: 3 | 4 | 5;
  prefix?: string;
  /** Its overlay file (identity key). */
  key: string;
  files: string[];
}

const PIS: Record<string, Pi> = {
  pi3: { host: 'pi3', mac: 'b8:27:eb:12:34:56', serial: 'a0123456', fourcc: 'ROM3', model: 3, key: 'pi-a0123456',
    files: ['config.txt', 'fixup.dat', 'cmdline.txt', 'kernel8.img', 'bcm2710-rpi-3-b-plus.dtb'] },
  p4s: { host: 'pi4p0', mac: 'dc:a6:32:4e:2e:01', serial: '3a4b5c6d', model: 4, key: 'pi-3a4b5c6d',
    files: ['config.txt', 'fixup4.dat', 'cmdline.txt', 'kernel8.img', 'bcm2711-rpi-4-b.dtb', 'overlays/disable-bt.dtbo'] },
  p4f: { host: 'pi4p1', mac: 'dc:a6:32:4e:2e:11', serial: '4b5c6d7e', model: 4, prefix: 'pxe', key: 'mac-dc-a6-32-4e-2e-11',
    files: ['config.txt', 'fixup4.dat', 'cmdline.txt', 'kernel8.img', 'bcm2711-rpi-4-b.dtb'] },
  p4m: { host: 'pi4p2', mac: 'dc:a6:32:4e:2e:21', serial: '5c6d7e8f', model: 4, prefix: 'dc-a6-32-4e-2e-21', key: 'pi-5c6d7e8f',
    files: ['config.txt', 'fixup4.dat', 'cmdline.txt', 'kernel8.img', 'bcm2711-rpi-4-b.dtb'] },
  cm4: { host: 'cm4', mac: 'e4:5f:01:6e:2e:31', serial: '7e8f9a0b', boardRevision: 0x00d03141, model: 4, key: 'pi-7e8f9a0b',
    files: ['config.txt', 'fixup4.dat', 'cmdline.txt', 'kernel8.img', 'bcm2711-rpi-cm4.dtb'] },
  pi5: { host: 'pi5', mac: '88:a2:9e:7e:2e:41', serial: 'bd989ae1', fourcc: 'RPi5', boardRevision: 0x00d04170, model: 5, key: 'pi-bd989ae1',
    files: ['cmdline.txt', 'kernel_2712.img', 'bcm2712-rpi-5-b.dtb', 'boot.sig', 'overlays/disable-bt.dtbo'] },
};
const UNKNOWN4 = { host: 'unk4', mac: 'dc:a6:32:99:00:01', serial: '99000001' };
const UNKNOWN3 = { host: 'unk3', mac: 'b8:27:eb:99:00:02', serial: 'c0990002' };
/**
 * Issue 17, Pis that fail, each with the hint its journey must end with: a Pi 4 on an image without start4.elf
 * (made for the Pi 5 only), a Pi 4 whose cmdline.txt names an export this server does not have, and a Pi 4
 * asking for an export whose allow-list leaves its address out.
 */
const FAILING = {
  pi5only: { host: 'f4a', mac: 'dc:a6:32:4e:2f:01', serial: '6d7e8f01', image: 'pi5only' },
  wrongcmd: { host: 'f4b', mac: 'dc:a6:32:4e:2f:02', serial: '6d7e8f02', image: 'wrongcmd' },
  locked: { host: 'f4c', mac: 'dc:a6:32:4e:2f:03', serial: '6d7e8f03', image: EXPORT },
} as const;

const CMDLINE = `console=serial0,115200 console=tty1 root=/dev/nbd0p2 nbdroot=${SERVER_ADDRESS}/${EXPORT} rootfstype=ext4 rootwait\n`;

/** The boot partition's files (random bytes of plausible sizes; the test compares bytes, not behaviour). */
function bootFiles(): Map<string, Buffer> {
  const r = prng(0x16);
  const f = new Map<string, Buffer>();
  const rnd = (name: string, n: number): void => void f.set(name, randomBytes(r, n));
  rnd('bootcode.bin', 52_456);
  rnd('start.elf', 2_952_960);
  rnd('fixup.dat', 7_315);
  rnd('start4.elf', 2_281_760);
  rnd('fixup4.dat', 5_446);
  rnd('kernel8.img', 1_048_577);
  rnd('kernel_2712.img', 1_179_649);
  rnd('bcm2710-rpi-3-b-plus.dtb', 34_228);
  rnd('bcm2711-rpi-4-b.dtb', 55_793);
  rnd('bcm2711-rpi-cm4.dtb', 56_129);
  rnd('bcm2712-rpi-5-b.dtb', 78_525);
  rnd('boot.sig', 1_024);
  rnd('overlays/disable-bt.dtbo', 1_073);
  f.set('config.txt', Buffer.from('# netbootd issue 16 replay\n[pi5]\nkernel=kernel_2712.img\n[all]\narm_64bit=1\ndtoverlay=disable-bt\n'));
  f.set('cmdline.txt', Buffer.from(CMDLINE));
  return f;
}

/** boot.img: 100 MB of zeros with an 8-byte marker (its own offset) every MiB and at each 1468-byte block rollover. */
function writeBigFile(path: string): string {
  const fd = openSync(path, 'w');
  const hash = createHash('sha256');
  try {
    ftruncateSync(fd, BIG);
    const marks = new Set<number>();
    for (let o = 0; o + 8 <= BIG; o += MiB) marks.add(o);
    for (const o of [65535 * 1468 - 4, 65536 * 1468 - 4]) marks.add(o);
    const sorted = [...marks].sort((a, b) => a - b);
    for (const o of sorted) {
      const m = Buffer.alloc(8);
      m.writeBigUInt64LE(BigInt(o) | 0x4e42000000000000n);
      writeSync(fd, m, 0, 8, o);
    }
    // Its hash, computed from the same layout without reading 100 MB back.
    const zero = Buffer.alloc(MiB);
    let at = 0;
    for (const o of sorted) {
      while (at < o) {
        const n = Math.min(zero.length, o - at);
        hash.update(zero.subarray(0, n));
        at += n;
      }
      const m = Buffer.alloc(8);
      m.writeBigUInt64LE(BigInt(o) | 0x4e42000000000000n);
      hash.update(m);
      at += 8;
    }
    while (at < BIG) {
      const n = Math.min(zero.length, BIG - at);
      hash.update(zero.subarray(0, n));
      at += n;
    }
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}

interface Built {
  image: string;
  files: Map<string, Buffer>;
  bigSha: string;
  /** Byte offset of cmdline.txt's data in the image. */
  cmdlineAt: number;
}

/** MBR image: FAT32 boot partition (mtools, no mounts) at 4 MiB, ext4 root after it; sparse. */
async function buildImage(dir: string): Promise<Built> {
  const files = bootFiles();
  const src = join(dir, 'boot');
  mkdirSync(join(src, 'overlays'), { recursive: true });
  for (const [name, data] of files) writeFileSync(join(src, name), data);
  const bigSha = writeBigFile(join(src, 'boot.img'));
  const fat = join(dir, 'boot.fat');
  await run('truncate', ['-s', String(BOOT_SIZE), fat]);
  await run('mkfs.vfat', ['-F', '32', '-n', 'bootfs', fat], { env: MTOOLS_ENV });
  await run('mmd', ['-i', fat, '::/overlays'], { env: MTOOLS_ENV });
  // cmdline.txt first (its clusters are looked up below), boot.img last.
  const order = ['cmdline.txt', ...[...files.keys()].filter((n) => n !== 'cmdline.txt'), 'boot.img'];
  for (const name of order) await run('mcopy', ['-i', fat, join(src, name), `::/${name}`], { env: MTOOLS_ENV });
  const show = (await run('mshowfat', ['-i', fat, '::/cmdline.txt'], { env: MTOOLS_ENV })).stdout.toString();
  const cluster = Number(/<(\d+)/.exec(show)?.[1]);
  assert.ok(cluster >= 2, `mshowfat: ${show}`);
  const bs = Buffer.alloc(512);
  const fd = openSync(fat, 'r');
  readSync(fd, bs, 0, 512, 0);
  closeSync(fd);
  const bps = bs.readUInt16LE(11);
  const dataStart = (bs.readUInt16LE(14) + bs[16]! * bs.readUInt32LE(36)) * bps;
  const cmdlineAt = BOOT_START + dataStart + (cluster - 2) * bs[13]! * bps;
  const rootDir = join(dir, 'root');
  mkdirSync(rootDir);
  writeFileSync(join(rootDir, 'e2e-marker'), 'netbootd issue 16\n');
  const ext = join(dir, 'root.ext4');
  await run('truncate', ['-s', String(ROOT_SIZE), ext]);
  await run('mkfs.ext4', ['-q', '-F', '-L', 'rootfs', '-d', rootDir, ext]);
  const image = join(dir, 'pis.img');
  await run('bash', [join(E2E_ROOT, 'scripts/lib/assemble-mbr.sh'), image, '--fat', fat, String(BOOT_START / 512), String(BOOT_SIZE / 512),
    '--linux', ext, String(ROOT_START / 512), String(ROOT_SIZE / 512)]);
  rmSync(fat);
  rmSync(join(src, 'boot.img'));
  const check = Buffer.alloc(CMDLINE.length);
  const ifd = openSync(image, 'r');
  readSync(ifd, check, 0, check.length, cmdlineAt);
  closeSync(ifd);
  assert.equal(check.toString(), CMDLINE, 'cmdline.txt located in the image');
  return { image, files, bigSha, cmdlineAt };
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** The ranges each Pi reads over NBD: MBR, the FAT boot sector, the root ext4 superblock. */
const VIEW_READS = [{ offset: 0, length: 512 }, { offset: BOOT_START, length: 512 }, { offset: ROOT_START + 1024, length: 1024 }];
/** Where each Pi writes its tag over NBD (unused space between the MBR and partition 1). */
const TAG_AT = 1 * MiB;
const tagOf = (key: string): Buffer => Buffer.from(key.padEnd(32, '.'), 'latin1');

describe('e2e Raspberry Pi bootloader replays (issue 16) against netbootd serve', { skip: daemonAvailable() ? false : DAEMON_MISSING }, () => {
  let work: string | undefined;
  let topo: Topology | undefined;
  let stop: (() => Promise<void>) | undefined;
  let built: Built | undefined;
  let stateDir = '';
  let log = '';
  const hosts = new Map<string, NetHost>();
  const firstRuns = new Map<string, PiReport>();
  after(async () => {
    await stop?.();
    await topo?.destroy();
    if (work && !process.env.E2E_KEEP) rmSync(work, { recursive: true, force: true });
  });

  const runClient = async (t: { diagnostic(s: string): void }, name: string, host: NetHost, job: Omit<PiJob, 'ifname' | 'outDir'>): Promise<{ r: PiReport; out: string }> => {
    const { r, out, ms } = await runPiClient(topo!.lab, host, name, job, join(work!, 'out', `${name}-${Date.now()}`), 90_000);
    report(t as never, `${name}: ${(ms / 1000).toFixed(1)} s, ${Object.keys(r.files).length} TFTP requests`);
    return { r, out };
  };

  const fail = (name: string, r: PiReport): string => `${name}: ${JSON.stringify(r).slice(0, 1500)}\n--- netbootd ---\n${tailOf(log, 30)}`;

  const checkFiles = (name: string, r: PiReport, out: string, names: string[]): void => {
    for (const f of names) {
      const got = r.files[f];
      assert.ok(got && 'size' in got, `${name}: ${f}: ${JSON.stringify(got)}\n${tailOf(log, 20)}`);
      assert.ok(readFileSync(join(out, f)).equals(built!.files.get(f)!), `${name}: ${f}: bytes differ from the boot partition`);
    }
  };

  test('each model and prefix mode boots its files and attaches its own view; unconfigured Pis get nothing', { timeout: 240_000 }, async (t) => {
    if (!NetLab.available()) {
      if (IN_CI) throw new Error('needs root (network namespaces) and iproute2');
      t.skip('needs root (network namespaces) and iproute2');
      return;
    }
    if (!haveTools(t, 'dnsmasq', 'ss', 'mkfs.vfat', 'mcopy', 'mmd', 'mshowfat', 'sfdisk', 'mkfs.ext4')) return;
    work = mkdtempSync(join(tmpdir(), 'netbootd-e2e-pi-replay-'));
    const t0 = performance.now();
    built = await buildImage(work);
    report(t, `image with a 100 MB boot.img built in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    topo = await createTopology('pirp', work, { ipv6Ra: false });
    for (const p of [...Object.values(PIS), UNKNOWN4, UNKNOWN3, ...Object.values(FAILING)]) {
      const h = await topo.lab.addHost(p.host, { mac: p.mac });
      await topo.lab.exec(h, 'ip', ['route', 'add', '255.255.255.255/32', 'dev', 'eth0']);
      hosts.set(p.host, h);
    }
    stateDir = join(work, 'state');
    mkdirSync(stateDir);
    // Issue 17's failing Pis: a Pi OS image without start4.elf, and one whose cmdline.txt names export `other`.
    const pios = join(work, 'pios.img');
    await buildPiOsImage(pios);
    const at = `@@${PI_OS_LAYOUT.bootStart}`;
    await run('cp', ['--sparse=always', pios, join(work, 'wrongcmd.img')]);
    await run('mdel', ['-i', `${pios}${at}`, '::/start4.elf'], { env: MTOOLS_ENV });
    writeFileSync(join(work, 'cmdline.txt'), CMDLINE.replace(`/${EXPORT} `, '/other '));
    await run('mcopy', ['-o', '-i', `${join(work, 'wrongcmd.img')}${at}`, join(work, 'cmdline.txt'), '::/cmdline.txt'], { env: MTOOLS_ENV });
    const cfg = {
      server: { address: SERVER_ADDRESS, stateDir },
      dhcp: { enabled: true },
      tftp: { enabled: true, port: 69 },
      nbd: { enabled: true, port: 10809 },
      // The boot journeys (issue 17) are read from the status endpoint, inside the server's namespace.
      status: { enabled: true, address: '127.0.0.1', port: STATUS_PORT },
      images: {
        [EXPORT]: { path: built.image, mode: 'cow', export: EXPORT },
        pi5only: { path: pios, mode: 'readonly' },
        wrongcmd: { path: join(work, 'wrongcmd.img'), mode: 'readonly' },
        locked: { path: built.image, mode: 'readonly', allow: ['10.0.0.0/8'] },
      },
      pis: {
        [PIS.pi3!.serial]: { image: EXPORT, model: 3 },
        [PIS.p4s!.serial]: { image: EXPORT, model: 4 },
        [PIS.p4f!.mac]: { image: EXPORT, prefix: 'pxe', model: 4 },
        [PIS.p4m!.serial]: { image: EXPORT, mac: PIS.p4m!.mac, model: 4 },
        [PIS.cm4!.serial]: { image: EXPORT, model: 4 },
        '0c8f7e5cbd989ae1': { image: EXPORT, model: 5 },
        ...Object.fromEntries(Object.values(FAILING).map((f) => [f.serial, { image: f.image, model: 4 }])),
      },
      logging: { level: 'info', pretty: false },
    };
    const configFile = join(work, 'netbootd.yaml');
    writeFileSync(configFile, stringify(cfg, { defaultKeyType: 'PLAIN', defaultStringType: 'QUOTE_DOUBLE' }));
    log = join(work, 'netbootd.log');
    const proc = topo.lab.start(topo.server, process.execPath, ['--import', 'tsx', join(E2E_ROOT, 'src/cli/main.ts'), 'serve', '--config', configFile], { cwd: E2E_ROOT });
    const chunks: string[] = [];
    proc.stdout?.on('data', (c: Buffer) => chunks.push(c.toString()));
    proc.stderr?.on('data', (c: Buffer) => chunks.push(c.toString()));
    const flush = (): void => writeFileSync(log, chunks.join(''));
    const timer = setInterval(flush, 1000);
    stop = async () => {
      clearInterval(timer);
      await proc.stop();
      flush();
    };
    try {
      await Promise.race([
        waitListening(topo.lab, topo.server, [['udp', 67], ['udp', 69], ['tcp', 10809], ['tcp', STATUS_PORT]], 30_000),
        new Promise((_, reject) => proc.once('exit', (c) => reject(new Error(`netbootd serve exited ${c}`)))),
      ]);
    } catch (e) {
      flush();
      throw new Error(`${(e as Error).message}\n${chunks.join('').slice(-3000)}`);
    }
    const nbd = { server: SERVER_ADDRESS, export: EXPORT, reads: VIEW_READS };
    const want = VIEW_READS.map((r) => sha(readRange(built!.image, r.offset, r.length)));

    // Two at a time (two shared cores): the Pi 5 with its 100 MB file beside the others.
    const jobs: [string, Pi][] = Object.entries(PIS);
    const runOne = async ([name, p]: [string, Pi]): Promise<void> => {
      const { r, out } = await runClient(t, name, hosts.get(p.host)!, {
        identity: { mac: p.mac, serial: p.serial, ...(p.fourcc ? { fourcc: p.fourcc } : {}), ...(p.boardRevision ? { boardRevision: p.boardRevision } : {}) },
        model: p.model, ...(p.prefix !== undefined ? { prefix: p.prefix } : {}), files: p.files,
        ...(p.model === 5 ? { hashFiles: ['boot.img'] } : {}),
        // Its view: the image as it is, plus a tag it writes in the gap before partition 1 (its overlay, created by the write).
        nbd: { ...nbd, write: { offset: TAG_AT, hex: tagOf(p.key).toString('hex') }, reads: [...VIEW_READS, { offset: TAG_AT, length: 32 }] },
      });
      firstRuns.set(name, r);
      assert.equal(r.error, undefined, fail(name, r));
      assert.equal(r.dhcp?.tftpServer, SERVER_ADDRESS, `${name}: TFTP server from the proxy reply`);
      assert.match(r.dhcp?.menu ?? '', /^Raspberry Pi Boot/, `${name}: option 43 menu`);
      if (p.model === 3) {
        assert.equal(r.dhcp?.menu, 'Raspberry Pi Boot   ', 'the Pi 3 ROM form: padded to 20 bytes');
        checkFiles(name, r, out, ['bootcode.bin']);
        assert.equal((r.files['bootcode.bin'] as { blocks: number }).blocks, Math.floor(52_456 / 512) + 1, 'plain 512-byte blocks');
        const sig = r.files['bootsig.bin'];
        assert.ok(sig && 'error' in sig && sig.error.code === 1, `bootsig.bin: file not found, not ${JSON.stringify(sig)}`);
        checkFiles(name, r, out, ['start.elf', ...p.files]);
      } else if (p.model === 4) {
        assert.equal(r.probe?.['tsize'], String(built!.files.get('start4.elf')!.length), `${name}: tsize of the probe`);
        checkFiles(name, r, out, ['start4.elf', ...p.files]);
      } else {
        checkFiles(name, r, out, ['config.txt', ...p.files]);
        assert.equal(r.files['start4.elf'], undefined);
        const big = r.files['boot.img'];
        assert.ok(big && 'sha256' in big, `boot.img: ${JSON.stringify(big)}`);
        assert.equal(big.size, BIG);
        assert.equal(big.blocks, Math.floor(BIG / 1468) + 1, 'every block, across the rollover');
        assert.equal(big.sha256, built!.bigSha, 'boot.img bytes (SHA-256) across the 65535-block rollover');
        assert.equal(big.oack?.['windowsize'], '64');
        report(t, `Pi 5 boot.img: ${BIG} bytes, ${big.blocks} blocks, windowsize 64, ${big.ms} ms`);
      }
      assert.ok(r.nbd && 'reads' in r.nbd, `${name}: NBD ${JSON.stringify(r.nbd)}`);
      assert.deepEqual(r.nbd.reads.slice(0, 3).map((x) => x.sha256), want, `${name}: MBR, FAT boot sector and root superblock over NBD equal the image`);
      assert.equal(r.nbd.reads[3]!.sha256, sha(tagOf(p.key)), `${name}: reads its own write back`);
      assert.ok(existsSync(join(stateDir, EXPORT, `${p.key}.overlay`)), `${name}: its own overlay ${p.key} (identity)`);
    };
    const queue = jobs.slice();
    const worker = async (): Promise<void> => {
      for (let j = queue.shift(); j; j = queue.shift()) await runOne(j);
    };
    await Promise.all([worker(), worker()]);

    // Unconfigured Pis: whatever DHCP says, not one boot file.
    for (const [u, model] of [[UNKNOWN4, 4], [UNKNOWN3, 3]] as const) {
      const { r } = await runClient(t, `unconfigured Pi ${model}`, hosts.get(u.host)!, {
        identity: { mac: u.mac, serial: u.serial, ...(model === 3 ? { fourcc: 'ROM3' } : {}) }, model, files: ['config.txt', 'cmdline.txt'],
      });
      const served = Object.entries(r.files).filter(([, f]) => 'size' in f).map(([n]) => n);
      assert.deepEqual(served, [], `unconfigured Pi ${model} was served ${served.join(', ')}`);
      if (model === 4) assert.match(r.error ?? '', /no proxy DHCP reply|start4\.elf probe: TFTP error 1/, fail('unconfigured Pi 4', r));
      else assert.ok(r.error !== undefined || (r.files['bootcode.bin'] && 'error' in r.files['bootcode.bin']), fail('unconfigured Pi 3', r));
    }
    const overlays = ['pi-a0123456', 'pi-3a4b5c6d', 'mac-dc-a6-32-4e-2e-11', 'pi-5c6d7e8f', 'pi-7e8f9a0b', 'pi-bd989ae1'];
    for (const k of overlays) assert.ok(existsSync(join(stateDir, EXPORT, `${k}.overlay`)), k);
    await new Promise((r) => setTimeout(r, 1100)); // the log is flushed every second
    const text = readFileSync(log, 'utf8');
    assert.match(text, /"mac":"b8:27:eb:12:34:56"[^\n]*neighbour table/, 'the Pi 3 was bound through the neighbour table');
    for (const m of ['pi3-bootrom', 'pi4-eeprom', 'pi5-eeprom']) assert.match(text, new RegExp(`"model":"${m}"`), `log lines name the model ${m}`);
  });

  /** GET on the status endpoint, from inside the server's namespace (it listens on its loopback). */
  const statusGet = async <T,>(path: string): Promise<T> => {
    const r = await topo!.lab.exec(topo!.server, 'curl', ['-sS', '--max-time', '5', `http://127.0.0.1:${STATUS_PORT}${path}`]);
    return JSON.parse(r.stdout.toString()) as T;
  };
  interface JourneyView {
    id: string; serial?: string; mac?: string; ip?: string; stage: string; unknown?: { reason: string; fix?: string };
    boots: Array<{ shown: string; durationMs?: number; reached: Record<string, number>; lines: string[]; hints: Array<{ code: string; text: string; fix?: string }>; events: Array<{ kind: string; answered?: boolean }> }>;
  }
  /** A client's journey once `ok` holds (the NBD close reaches the daemon after the client exits), else the last one seen. */
  const journeyOf = async (client: string, ok: (j: JourneyView) => boolean): Promise<JourneyView> => {
    const end = Date.now() + 10_000;
    for (;;) {
      const j = await statusGet<JourneyView>(`/journey?client=${client}`);
      if ((j.boots && ok(j)) || Date.now() > end) return j;
      await new Promise((r) => setTimeout(r, 250));
    }
  };

  test('boot journeys (issue 17): each Pi\'s boot ends down after DHCP, loader, kernel and root; unknown and failing Pis end with their hints', { timeout: 120_000 }, async (t) => {
    if (!built || !topo || firstRuns.size < Object.keys(PIS).length) {
      t.skip('needs the replay test above');
      return;
    }
    const t0 = performance.now();
    // Every configured Pi: one story from its DHCP exchange to its NBD detach, the boot's duration measured.
    for (const [name, p] of Object.entries(PIS)) {
      const j = await journeyOf(p.mac, (x) => x.stage === 'down');
      const b = j.boots[0]!;
      const story = `${name}: ${JSON.stringify({ stage: j.stage, shown: b?.shown, reached: b?.reached, hints: b?.hints })}\n${b?.lines.join('\n')}\n--- netbootd ---\n${tailOf(log, 20)}`;
      // One story for its MAC (DHCP) and its serial (TFTP); the Pi listed by MAC (TFTP_PREFIX=1) is known by MAC only.
      assert.equal(j.mac, p.mac, story);
      if (p.prefix !== 'pxe') assert.equal(j.serial, p.serial, story);
      assert.equal(j.stage, 'down', story);
      for (const stage of ['dhcp', 'loader', 'kernel', 'root', 'down']) assert.ok(b.reached[stage] !== undefined, `${name}: never reached ${stage}: ${story}`);
      assert.ok(b.events.some((e) => e.kind === 'dhcp' && e.answered), story);
      assert.ok(b.durationMs !== undefined && b.durationMs >= 0 && b.durationMs < 90_000, `${name}: boot duration ${b.durationMs}`);
      assert.deepEqual(b.hints, [], story);
      const first = p.model === 3 ? 'bootcode\\.bin' : p.model === 4 ? 'start4\\.elf' : 'config\\.txt';
      assert.ok(b.lines.some((l) => new RegExp(`^TFTP \\S*${first}: sent`).test(l)), `${name}: its first file: ${story}`);
      assert.ok(b.lines.some((l) => /^TFTP \S*cmdline\.txt: sent/.test(l)), story);
      assert.ok(b.lines.some((l) => l.startsWith(`NBD attached export ${EXPORT} (read-write, cow, overlay ${p.key})`)), story);
      assert.ok(b.lines.some((l) => /^NBD detached pis: read \d/.test(l)), story);
    }
    // Unconfigured Pis: not served, with the command that would serve them.
    const u4 = await journeyOf(UNKNOWN4.serial, (x) => x.unknown !== undefined);
    assert.match(u4.unknown?.fix ?? '', new RegExp(`^netbootd add-pi ${UNKNOWN4.serial} --image `), JSON.stringify(u4));
    assert.equal(u4.boots[0]!.hints[0]?.code, 'serial-not-configured', JSON.stringify(u4.boots[0]));

    // A Pi 4 on an image made for the Pi 5 only: its start4.elf probe fails; the hint says why.
    const f = FAILING;
    const r1 = await runClient(t, 'Pi 4 on a Pi 5-only image', hosts.get(f.pi5only.host)!, { identity: { mac: f.pi5only.mac, serial: f.pi5only.serial }, model: 4, files: ['config.txt'] });
    assert.match(r1.r.error ?? '', /start4\.elf probe: TFTP error 1/, fail('pi5only', r1.r));
    const j1 = await journeyOf(f.pi5only.serial, (x) => x.boots[0]!.hints.length >= 2);
    assert.deepEqual(j1.boots[0]!.hints.map((h) => h.code), ['file-missing', 'pi5-only'], JSON.stringify(j1.boots[0]));
    assert.match(j1.boots[0]!.hints[0]!.text, /start4\.elf` is not in the boot partition of image pi5only/);
    assert.equal(j1.stage, 'dhcp', 'it got no file at all');

    // A Pi 4 whose cmdline.txt names export `other`: it asks for it, is refused, and the hint quotes its cmdline.txt.
    const r2 = await runClient(t, 'Pi 4 with a cmdline.txt naming another export', hosts.get(f.wrongcmd.host)!, {
      identity: { mac: f.wrongcmd.mac, serial: f.wrongcmd.serial }, model: 4, files: ['config.txt', 'cmdline.txt', 'kernel8.img'],
      nbd: { server: SERVER_ADDRESS, export: 'other', reads: [{ offset: 0, length: 512 }] },
    });
    assert.equal(r2.r.error, undefined, fail('wrongcmd', r2.r));
    assert.ok(r2.r.nbd && 'error' in r2.r.nbd, `export other must be refused: ${JSON.stringify(r2.r.nbd)}`);
    const j2 = await journeyOf(f.wrongcmd.serial, (x) => x.boots[0]!.hints.some((h) => /nbdroot=/.test(h.text) && /it was served/.test(h.text)));
    const h2 = j2.boots[0]!.hints.find((h) => h.code === 'cmdline-export');
    assert.ok(h2, JSON.stringify(j2.boots[0]));
    assert.match(h2.text, new RegExp(`export \`other\`.*cmdline\\.txt it was served says nbdroot=${SERVER_ADDRESS.replace(/\./g, '\\.')}/other: export \`other\` is not one this server exports`), h2.text);
    assert.equal(j2.stage, 'kernel', 'its root never attached');

    // A Pi 4 asking for an export whose allow-list leaves its address out.
    const r3 = await runClient(t, 'Pi 4 refused by an allow-list', hosts.get(f.locked.host)!, {
      identity: { mac: f.locked.mac, serial: f.locked.serial }, model: 4, files: ['cmdline.txt'],
      nbd: { server: SERVER_ADDRESS, export: 'locked', reads: [{ offset: 0, length: 512 }] },
    });
    assert.ok(r3.r.nbd && 'error' in r3.r.nbd, `export locked must be refused: ${JSON.stringify(r3.r.nbd)}`);
    const j3 = await journeyOf(f.locked.serial, (x) => x.boots[0]!.hints.some((h) => h.code === 'export-refused'));
    const h3 = j3.boots[0]!.hints.find((h) => h.code === 'export-refused');
    assert.match(h3?.text ?? '', /export `locked` refused: .*allow-list/, JSON.stringify(j3.boots[0]));

    // The client list (what `netbootd status` and the page show) agrees, and the boots were counted.
    const st = await statusGet<{ boots: Array<{ id: string; stage: string; bootMs?: number }> }>('/status');
    const listed = (p: Pi) => st.boots.find((b) => b.id === (p.prefix === 'pxe' ? p.mac : p.serial));
    for (const p of Object.values(PIS)) assert.equal(listed(p)?.stage, 'down', p.serial);
    const metrics = (await topo.lab.exec(topo.server, 'curl', ['-sS', '--max-time', '5', `http://127.0.0.1:${STATUS_PORT}/metrics`])).stdout.toString();
    assert.match(metrics, /^netbootd_boot_duration_seconds_count (\d+)$/m);
    assert.ok(Number(/^netbootd_boot_duration_seconds_count (\d+)$/m.exec(metrics)![1]) >= Object.keys(PIS).length, metrics);
    report(t, `journeys of ${Object.keys(PIS).length} Pis and 4 failing ones checked in ${((performance.now() - t0) / 1000).toFixed(1)} s; boot durations ${Object.values(PIS).map((p) => `${p.serial} ${listed(p)?.bootMs} ms`).join(', ')}`);
  });

  test('copy-on-write: the Pi 4 and the Pi 5 each rewrite cmdline.txt over NBD and get their own at the next boot', { timeout: 120_000 }, async (t) => {
    if (!built || !topo || firstRuns.size < Object.keys(PIS).length) {
      t.skip('needs the replay test above');
      return;
    }
    const edits: Record<string, string> = { p4s: CMDLINE.replace('console=tty1', 'console=tty4'), pi5: CMDLINE.replace('console=tty1', 'console=tty5') };
    for (const [name, text] of Object.entries(edits)) {
      const p = PIS[name]!;
      const { r } = await runClient(t, `${name} writes cmdline.txt`, hosts.get(p.host)!, {
        identity: { mac: p.mac, serial: p.serial }, model: p.model, files: [], tftpServer: SERVER_ADDRESS,
        nbd: { server: SERVER_ADDRESS, export: EXPORT, write: { offset: built.cmdlineAt, hex: Buffer.from(text).toString('hex') }, reads: [{ offset: built.cmdlineAt, length: text.length }] },
      });
      assert.equal(r.error, undefined, fail(name, r));
      assert.ok(r.nbd && 'reads' in r.nbd, JSON.stringify(r.nbd));
      assert.equal(r.nbd.reads[0]!.sha256, sha(Buffer.from(text)), `${name}: reads its write back`);
    }
    // Next boot: each gets its own cmdline.txt by TFTP (from its overlay); the CM4 still gets the image's.
    for (const [name, want] of [['p4s', edits.p4s!], ['pi5', edits.pi5!], ['cm4', CMDLINE]] as const) {
      const p = PIS[name]!;
      const { r, out } = await runClient(t, `${name} next boot`, hosts.get(p.host)!, {
        identity: { mac: p.mac, serial: p.serial }, model: p.model, files: ['cmdline.txt'], tftpServer: SERVER_ADDRESS,
      });
      assert.equal(r.error, undefined, fail(name, r));
      assert.equal(readFileSync(join(out, 'cmdline.txt'), 'utf8'), want, `${name}: cmdline.txt at its next boot`);
    }
    assert.equal(readRange(built.image, built.cmdlineAt, CMDLINE.length).toString(), CMDLINE, 'the base image is untouched');
    assert.ok(readRange(built.image, TAG_AT, 32).equals(Buffer.alloc(32)), 'no tag reached the base image');
  });
});
