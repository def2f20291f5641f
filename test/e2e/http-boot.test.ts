/**
 * End to end, HTTP boot (issue 15): real firmware loads the kernel and initramfs over HTTP, out of the FAT
 * inside the image (per client view), then mounts its root over NBD — `netbootd serve` alone, with
 * `http.enabled`, in the namespaces of test/e2e/stacks.ts:
 *   1. BIOS: SeaBIOS + QEMU's iPXE ROM (e1000). iPXE's DHCP carries user class `iPXE`: netbootd answers with
 *      http://SERVER:8080/boot.ipxe, a script it writes from the host's kernel / initrd / cmdline keys (the
 *      image has no boot.ipxe). No TFTP at all.
 *   2. UEFI: OVMF's own HTTP boot (HttpBootDxe; PXE switched off by fw_cfg so HTTPv4 is its first network
 *      option): vendor class HTTPClient -> ipxe.efi over HTTP -> iPXE's DHCP -> boot.ipxe written from the
 *      image's pxelinux.cfg/default (no kernel keys) -> kernel + initrd over HTTP.
 *   3. UEFI, plain PXE ROM (OVMF's EDK2 PXE) with `http.chainIpxe`: ipxe.efi by TFTP, then as in 2.
 *   4. Copy-on-write (BIOS): boot 1 appends a cpio archive holding /e2e-initrd-marker to initrd.img on its
 *      FAT over NBD (e2e.growinitrd=1, scripts/e2e/init.sh); boot 2 loads its own grown initrd.img over
 *      HTTP (the daemon's log shows the bigger size) and its initramfs sees the marker; the base is untouched.
 * Each test proves the large files (vmlinuz, initrd.img) went over HTTP, not TFTP: the daemon's
 * 'http file sent' lines (path, bytes = the file's size in the FAT) and no TFTP 'file sent' line for them,
 * and the /status `http` counters.
 */
import { describe, test, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { copyImage, daemonAvailable, DAEMON_MISSING, appendLine } from './artifacts.js';
import { checkBootResult, readExt4File, readFatFile, parseBootResult, readCowClients, type ParsedResult } from './image.js';
import { startStack, EXPORT_NAME, SERVER_ADDRESS, STATUS_PORT, HTTP_PORT, tailOf, type Topology, type BootStack, type StackOptions } from './stacks.js';
import { bootVm, formatBoot, type BootReport, type Firmware } from './vm.js';
import { BOOT_TIMEOUT_MS, e2eReady, e2eWorkspace, report } from './setup.js';
import { IN_CI } from '../helpers/tools.js';

/** Debian's ipxe package: the ipxe.efi netbootd serves by default (http.ipxeUefi). */
const IPXE_EFI = '/usr/lib/ipxe/ipxe.efi';

/** e2eReady, plus Debian's ipxe.efi (skips without it; fails under CI=true). */
function uefiReady(t: TestContext, extraTools: string[] = []): boolean {
  if (!e2eReady(t, extraTools)) return false;
  if (existsSync(IPXE_EFI)) return true;
  const msg = `missing ${IPXE_EFI} (Debian package ipxe; run scripts/install-test-deps.sh)`;
  if (IN_CI) throw new Error(msg);
  t.skip(msg);
  return false;
}

/** One pino line of the daemon's log (the fields these tests read). */
interface LogLine {
  msg?: string;
  component?: string;
  time?: number;
  path?: string;
  bytes?: number;
  status?: number;
  mac?: string;
  ip?: string;
  firmware?: string;
  ipxe?: boolean;
  bootFile?: string;
}

function logLines(file: string): LogLine[] {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const out: LogLine[] = [];
  for (const l of text.split('\n')) {
    if (!l.startsWith('{')) continue;
    try {
      out.push(JSON.parse(l) as LogLine);
    } catch {
      /* a line cut by the periodic flush */
    }
  }
  return out;
}

const base = (p: string | undefined): string => (p ?? '').replace(/^.*\//, '');
const httpSent = (lines: LogLine[], name: string): LogLine[] =>
  lines.filter((l) => l.msg === 'http file sent' && base(l.path) === name);
const tftpSent = (lines: LogLine[], name: string): LogLine[] =>
  lines.filter((l) => l.component === 'tftp' && l.msg === 'file sent' && base(l.path) === name);

/** The kernel and initrd went over HTTP (a 200 line of exactly the FAT file's size each) and never over TFTP. */
function assertLargeFilesOverHttp(lines: LogLine[], sizes: Record<string, number>, label: string, logFile: string): void {
  for (const [name, size] of Object.entries(sizes)) {
    const sent = httpSent(lines, name);
    assert.ok(sent.some((l) => l.status === 200 && l.bytes === size),
      `${label}: no 'http file sent' line for ${name} with ${size} bytes (lines: ${JSON.stringify(sent)})\n${tailOf(logFile, 40)}`);
    assert.deepEqual(tftpSent(lines, name), [], `${label}: ${name} went over TFTP`);
  }
}

interface HttpStatus {
  http: { served: number; notFound: number; failed: number; bytes: number } | null;
  tftp: { served?: number } | null;
}

function parseResult(text: string | null, label: string): ParsedResult & { initrdMarker: string } {
  assert.ok(text, `${label}: /boot-result missing from the root partition`);
  const r = parseBootResult(text);
  return { ...r, initrdMarker: /^initrd-marker: (.*)$/m.exec(text)?.[1]?.trim() ?? '' };
}


function assertBooted(r: BootReport, label: string, stack: BootStack): void {
  assert.ok(r.ok, `${label}: ${r.error}\n--- console ---\n${r.tail}\n--- ${stack.logs[0]} ---\n${stack.logs.map((l) => tailOf(l, 40)).join('\n')}`);
}

/** The kernel command line the BIOS tests give by config (nbdroot as in the image's pxelinux.cfg). */
function configCmdline(extra: string): string {
  return `console=ttyS0,115200 panic=-1 nbdroot=${SERVER_ADDRESS}/${EXPORT_NAME} root=/dev/nbd0p2 ${extra}`;
}

describe('e2e HTTP boot through netbootd serve (iPXE, UEFI HTTP boot, copy-on-write)', { skip: daemonAvailable() ? false : DAEMON_MISSING }, () => {
  const ws = e2eWorkspace('netbootd-e2e-http-', 'e2eh');
  after(() => ws.destroy());
  const setup = ws.setup;

  async function start(t: TestContext, o: StackOptions): Promise<BootStack> {
    const stack = await startStack('netbootd', o);
    t.after(() => stack.stop());
    return stack;
  }

  async function boot(t: TestContext, topo: Topology, firmware: Firmware, mac: string, label: string, dir: string, uefiHttp = false): Promise<BootReport> {
    const tap = await ws.tap(topo);
    const r = await bootVm({
      lab: topo.lab, tap, firmware, mac, uefiHttp, timeoutMs: BOOT_TIMEOUT_MS,
      serialLog: join(dir, `${label.replace(/\W+/g, '-')}.console.log`),
    });
    report(t, formatBoot(`netbootd HTTP ${label}`, r));
    return r;
  }

  async function status(topo: Topology): Promise<HttpStatus> {
    const r = await topo.lab.exec(topo.server, 'curl', ['-sS', '--max-time', '5', `http://127.0.0.1:${STATUS_PORT}/status`]);
    return JSON.parse(r.stdout.toString()) as HttpStatus;
  }

  /** Stops the daemon (its log is flushed at exit) and returns the log's lines. */
  async function finalLog(stack: BootStack): Promise<LogLine[]> {
    await stack.stop();
    await new Promise((r) => setTimeout(r, 200));
    return logLines(stack.logs[0]!);
  }

  async function fatSize(image: string, path: string): Promise<number> {
    const b = await readFatFile(image, 1, path);
    assert.ok(b, `${path} missing from the image's FAT`);
    return b.length;
  }

  test('BIOS (SeaBIOS + iPXE ROM, e1000): boot.ipxe written from the host\'s kernel/initrd/cmdline keys, kernel + initrd over HTTP, NBD root; no TFTP',
    { timeout: BOOT_TIMEOUT_MS + 120_000 }, async (t) => {
      if (!e2eReady(t, ['curl'])) return;
      const { art, topo, dir } = await setup('bios');
      const image = await copyImage(art, join(dir, 'disk.img'));
      const mac = '52:54:00:e2:4b:01';
      const cmdline = configCmdline('e2e.via=http-config');
      const stack = await start(t, {
        topo, image, workDir: dir, http: {}, status: true,
        hosts: [{ mac, firmware: 'bios', kernel: 'vmlinuz', initrd: ['initrd.img'], cmdline }],
      });
      const sizes = { vmlinuz: await fatSize(image, 'vmlinuz'), 'initrd.img': await fatSize(image, 'initrd.img') };
      const started = Date.now();
      const r = await boot(t, topo, 'bios', mac, 'BIOS iPXE', dir);
      assertBooted(r, 'BIOS iPXE', stack);
      const res = parseResult(await readExt4File(image, 2, '/boot-result', dir), 'BIOS iPXE');
      checkBootResult(res, { mac, marker: art.marker, started }, 'BIOS iPXE');
      // The command line is the config's, not the image's pxelinux.cfg APPEND (which has e2e.rewrite=1).
      assert.match(res.cmdline, /\be2e\.via=http-config\b/, `not booted from the config's script: ${res.cmdline}`);
      assert.doesNotMatch(res.cmdline, /\be2e\.rewrite=1\b/);

      const st = await status(topo);
      assert.ok(st.http, '/status has no http section');
      assert.ok(st.http.served >= 3, `http.served ${st.http.served}: boot.ipxe, vmlinuz, initrd.img`);
      assert.ok(st.http.bytes >= sizes.vmlinuz + sizes['initrd.img'], `http.bytes ${st.http.bytes} < kernel + initrd`);
      assert.equal(st.tftp?.served ?? 0, 0, 'an iPXE client steered to HTTP needs no TFTP at all');

      const lines = await finalLog(stack);
      const offers = lines.filter((l) => l.msg === 'proxy DHCP offer' && l.mac === mac);
      assert.ok(offers.some((l) => l.ipxe === true && l.bootFile === `http://${SERVER_ADDRESS}:${HTTP_PORT}/boot.ipxe`),
        `iPXE was not steered to the HTTP script: ${JSON.stringify(offers)}`);
      assert.ok(httpSent(lines, 'boot.ipxe').some((l) => l.status === 200), 'boot.ipxe not sent over HTTP');
      assertLargeFilesOverHttp(lines, sizes, 'BIOS iPXE', stack.logs[0]!);
      assert.deepEqual(lines.filter((l) => l.component === 'tftp' && l.msg === 'file sent'), [], 'no TFTP transfer at all');
    });

  test('UEFI (OVMF HTTP boot, PXE off): HTTPClient -> ipxe.efi over HTTP -> boot.ipxe from the image\'s pxelinux.cfg -> kernel + initrd over HTTP, NBD root',
    { timeout: BOOT_TIMEOUT_MS + 120_000 }, async (t) => {
      if (!uefiReady(t, ['curl'])) return;
      const { art, topo, dir } = await setup('uefi');
      const image = await copyImage(art, join(dir, 'disk.img'));
      const mac = '52:54:00:e2:4e:01';
      const stack = await start(t, { topo, image, workDir: dir, http: {}, status: true, hosts: [{ mac, firmware: 'uefi' }] });
      const sizes = { vmlinuz: await fatSize(image, 'vmlinuz'), 'initrd.img': await fatSize(image, 'initrd.img') };
      const started = Date.now();
      const r = await boot(t, topo, 'uefi', mac, 'UEFI HTTP boot', dir, true);
      assertBooted(r, 'UEFI HTTP boot', stack);
      const res = parseResult(await readExt4File(image, 2, '/boot-result', dir), 'UEFI HTTP boot');
      checkBootResult(res, { mac, marker: art.marker, started }, 'UEFI HTTP boot');
      // The script came from pxelinux.cfg/default (its APPEND, plus initrd= for the EFI stub).
      assert.match(res.cmdline, /\be2e\.rewrite=1\b/, `not the pxelinux.cfg command line: ${res.cmdline}`);
      assert.match(res.cmdline, /\binitrd=initrd\.img\b/);
      const cfg = (await readFatFile(image, 1, 'pxelinux.cfg/default'))?.toString() ?? '';
      assert.match(appendLine(cfg), /\be2e\.second=1\b/, 'the client did not rewrite pxelinux.cfg/default over NBD');

      const st = await status(topo);
      assert.ok(st.http && st.http.bytes >= sizes.vmlinuz + sizes['initrd.img'], `http counters: ${JSON.stringify(st.http)}`);
      assert.equal(st.tftp?.served ?? 0, 0, 'UEFI HTTP boot needs no TFTP');

      const lines = await finalLog(stack);
      const offers = lines.filter((l) => l.msg === 'proxy DHCP offer' && l.mac === mac);
      assert.ok(offers.some((l) => l.firmware === 'http' && l.bootFile === `http://${SERVER_ADDRESS}:${HTTP_PORT}/ipxe.efi`),
        `the firmware's HTTP boot was not answered with ipxe.efi: ${JSON.stringify(offers)}`);
      assert.ok(offers.some((l) => l.ipxe === true && l.bootFile === `http://${SERVER_ADDRESS}:${HTTP_PORT}/boot.ipxe`),
        `ipxe.efi was not steered to the HTTP script: ${JSON.stringify(offers)}`);
      const ipxeSize = readFileSync(IPXE_EFI).length;
      assert.ok(httpSent(lines, 'ipxe.efi').some((l) => l.status === 200 && l.bytes === ipxeSize), 'ipxe.efi not sent whole over HTTP');
      assert.ok(httpSent(lines, 'boot.ipxe').some((l) => l.status === 200), 'boot.ipxe not sent over HTTP');
      assertLargeFilesOverHttp(lines, sizes, 'UEFI HTTP boot', stack.logs[0]!);
    });

  test('UEFI (OVMF, EDK2 PXE) with http.chainIpxe: ipxe.efi by TFTP, then boot.ipxe, kernel + initrd over HTTP, NBD root',
    { timeout: BOOT_TIMEOUT_MS + 120_000 }, async (t) => {
      if (!uefiReady(t)) return;
      const { art, topo, dir } = await setup('uefi-chain');
      const image = await copyImage(art, join(dir, 'disk.img'));
      const mac = '52:54:00:e2:4e:02';
      const stack = await start(t, { topo, image, workDir: dir, http: { chainIpxe: true }, hosts: [{ mac, firmware: 'uefi' }] });
      const sizes = { vmlinuz: await fatSize(image, 'vmlinuz'), 'initrd.img': await fatSize(image, 'initrd.img') };
      const started = Date.now();
      const r = await boot(t, topo, 'uefi', mac, 'UEFI PXE chain', dir);
      assertBooted(r, 'UEFI PXE chain', stack);
      const res = parseResult(await readExt4File(image, 2, '/boot-result', dir), 'UEFI PXE chain');
      checkBootResult(res, { mac, marker: art.marker, started }, 'UEFI PXE chain');

      const lines = await finalLog(stack);
      const offers = lines.filter((l) => l.msg === 'proxy DHCP offer' && l.mac === mac);
      assert.ok(offers.some((l) => l.firmware === 'uefi64' && l.ipxe !== true && l.bootFile === 'ipxe.efi'), `EDK2 PXE was not sent ipxe.efi: ${JSON.stringify(offers)}`);
      assert.ok(offers.some((l) => l.ipxe === true && l.bootFile === `http://${SERVER_ADDRESS}:${HTTP_PORT}/boot.ipxe`),
        `ipxe.efi was not steered to the HTTP script: ${JSON.stringify(offers)}`);
      const ipxeSize = readFileSync(IPXE_EFI).length;
      assert.ok(tftpSent(lines, 'ipxe.efi').some((l) => l.bytes === ipxeSize), 'ipxe.efi not sent whole by TFTP');
      assert.ok(!offers.some((l) => l.ipxe === true && !/^http:/.test(l.bootFile ?? '')), 'iPXE was told to load iPXE again (loop)');
      assertLargeFilesOverHttp(lines, sizes, 'UEFI PXE chain', stack.logs[0]!);
    });

  test('copy-on-write (BIOS iPXE): boot 1 grows its initrd.img over NBD; boot 2 gets its own grown initrd over HTTP; the base is untouched',
    { timeout: 2 * BOOT_TIMEOUT_MS + 120_000 }, async (t) => {
      if (!e2eReady(t, ['curl'])) return;
      const { art, topo, dir } = await setup('cow');
      const image = await copyImage(art, join(dir, 'base.img'));
      const mac = '52:54:00:e2:4c:01';
      const stack = await start(t, {
        topo, image, mode: 'cow', workDir: dir, http: {},
        hosts: [{ mac, firmware: 'bios', kernel: 'vmlinuz', initrd: ['initrd.img'], cmdline: configCmdline('e2e.growinitrd=1') }],
      });
      const size0 = await fatSize(image, 'initrd.img');
      const kernelSize = await fatSize(image, 'vmlinuz');
      const started = Date.now();
      const r1 = await boot(t, topo, 'bios', mac, 'cow boot 1', dir);
      assertBooted(r1, 'cow boot 1', stack);
      const grew = r1.markers.find((m) => m.startsWith('GREW initrd.img'));
      assert.ok(grew, `boot 1 did not grow initrd.img: ${r1.markers.join(' | ')}`);
      const size1 = Number(/to (\d+) bytes/.exec(grew)?.[1]);
      assert.ok(size1 > size0, `grown size ${size1} vs ${size0}`);

      const r2 = await boot(t, topo, 'bios', mac, 'cow boot 2', dir);
      assertBooted(r2, 'cow boot 2', stack);
      assert.ok(!r2.markers.some((m) => m.startsWith('GREW')), 'boot 2 did not see the marker in its initramfs, so it grew the file again');

      // The base image is untouched; the client's overlay holds both boots and boot 2 saw the appended archive.
      assert.equal(await fatSize(image, 'initrd.img'), size0, 'initrd.img changed in the shared base');
      assert.equal(await readExt4File(image, 2, '/boot-result', dir), null, 'a client wrote into the shared base image');
      const views = await readCowClients(image, stack.stateDir!, EXPORT_NAME, 2, '/boot-result', dir);
      assert.equal(views.size, 1, `overlays: ${[...views.keys()].join(', ')}`);
      const res = parseResult([...views.values()][0]!, 'cow boot 2');
      checkBootResult(res, { mac, marker: art.marker, started }, 'cow boot 2');
      assert.equal(res.initrdMarker, 'appended over NBD by boot 1', 'boot 2 did not load the initrd it wrote over NBD');

      const lines = await finalLog(stack);
      const initrds = httpSent(lines, 'initrd.img').filter((l) => l.status === 200).map((l) => l.bytes);
      assert.deepEqual(initrds, [size0, size1], `initrd.img over HTTP: boot 1 the base's ${size0} bytes, boot 2 its own ${size1}`);
      assert.equal(httpSent(lines, 'vmlinuz').filter((l) => l.status === 200 && l.bytes === kernelSize).length, 2, 'vmlinuz over HTTP, both boots');
      assert.deepEqual(lines.filter((l) => l.component === 'tftp' && l.msg === 'file sent'), [], 'no TFTP transfer at all');
      report(t, `cow: initrd.img over HTTP ${size0} bytes (boot 1, base) then ${size1} bytes (boot 2, its own overlay)`);
    });
});
