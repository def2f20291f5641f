/**
 * End to end (issue 7): a QEMU PC with real firmware network-boots a Debian kernel whose root is an ext4
 * partition reached over NBD, in network namespaces: a router namespace gives the address (dnsmasq, no boot
 * options), a server namespace gives everything else. The same scenarios run against two boot stacks:
 *   - reference: dnsmasq proxy DHCP + TFTP from a directory, nbd-server (validates image, initramfs,
 *     harness; the "vs" half of `npm run bench:boot`)
 *   - netbootd: `netbootd serve` alone (skipped until src/daemon.ts exists)
 * The VM checks a marker on its root, writes /boot-result, and (boot 1) rewrites pxelinux.cfg/default on the
 * FAT partition over NBD; the test reads the results out of the image with debugfs and mtools, no mounts.
 */
import { describe, test, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { copyImage, daemonAvailable, DAEMON_MISSING, appendLine } from './artifacts.js';
import { checkBootResult, readExt4File, readFatFile, parseBootResult, readCowClients, type ParsedResult } from './image.js';
import { startStack, selectedStacks, STACK_TITLES, EXPORT_NAME, SERVER_ADDRESS, STATUS_PORT, tailOf, type StackName, type Topology, type BootStack } from './stacks.js';
import { bootVm, formatBoot, type BootReport, type Firmware } from './vm.js';
import { BOOT_TIMEOUT_MS, e2eReady, e2eWorkspace, report } from './setup.js';

const STACKS: StackName[] = selectedStacks();


interface JourneyView {
  id: string; mac?: string; name?: string; stage: string;
  boots: Array<{ shown: string; durationMs?: number; reached: Record<string, number>; lines: string[]; hints: Array<{ code: string; text: string }>; cmdline?: { path: string; nbdroot?: string; problem?: string } }>;
}

/**
 * Issue 17: the boot journey netbootd kept of a VM that booted (read from its status endpoint in the server
 * namespace): `boots` boots, each from DHCP through its loader and kernel to its NBD root, then down (the VM
 * powered off), with its duration, no hint, and the PXELINUX config it was served naming this server's export.
 */
async function assertJourney(t: TestContext, topo: Topology, mac: string, boots: number, label: string, stack: BootStack): Promise<void> {
  let j: JourneyView | undefined;
  const end = Date.now() + 10_000;
  for (;;) {
    const r = await topo.lab.exec(topo.server, 'curl', ['-sS', '--max-time', '5', `http://127.0.0.1:${STATUS_PORT}/journey?client=${mac}`], { allowFail: true });
    try {
      j = JSON.parse(r.stdout.toString()) as JourneyView;
    } catch {
      j = undefined;
    }
    // The NBD close reaches the daemon as the VM powers off.
    if ((j?.boots?.length === boots && j.stage === 'down') || Date.now() > end) break;
    await new Promise((res) => setTimeout(res, 250));
  }
  const story = `${label}: ${JSON.stringify(j).slice(0, 3000)}\n--- ${stack.logs[0]} ---\n${tailOf(stack.logs[0]!, 20)}`;
  assert.ok(j?.boots, story);
  assert.equal(j.mac, mac, story);
  assert.equal(j.boots.length, boots, `one boot per VM start: ${story}`);
  assert.equal(j.stage, 'down', story);
  for (const b of j.boots) {
    for (const stage of ['dhcp', 'loader', 'kernel', 'root', 'down']) assert.ok(b.reached[stage] !== undefined, `never reached ${stage}: ${story}`);
    assert.ok(b.durationMs !== undefined && b.durationMs > 0 && b.durationMs < BOOT_TIMEOUT_MS, story);
    assert.deepEqual(b.hints, [], story);
    assert.ok(b.lines.some((l) => /^DHCP .*answered/.test(l)), story);
    assert.ok(b.lines.some((l) => /^TFTP \S*vmlinuz\S*: sent/.test(l)), story);
    assert.ok(b.lines.some((l) => l.startsWith(`NBD attached export ${EXPORT_NAME} (read-write`)), story);
    assert.ok(b.lines.some((l) => l.startsWith(`NBD detached ${EXPORT_NAME}: read `)), story);
    assert.equal(b.cmdline?.nbdroot, `${SERVER_ADDRESS}/${EXPORT_NAME}`, `the kernel command line it was served: ${story}`);
    assert.equal(b.cmdline?.problem, undefined, story);
  }
  report(t, `${label}: journey ${j.boots.map((b) => `${b.shown} after ${((b.durationMs ?? 0) / 1000).toFixed(1)} s to its root`).join(', ')}`);
}

function assertBooted(r: BootReport, label: string, stack: BootStack): void {
  assert.ok(r.ok, `${label}: ${r.error}\n--- console ---\n${r.tail}\n--- ${stack.logs[0]} ---\n${stack.logs.map((l) => tailOf(l)).join('\n')}`);
}

for (const stackName of STACKS) {
  const skip = stackName === 'netbootd' && !daemonAvailable() ? DAEMON_MISSING : false;

  describe(`e2e PC boots through the ${STACK_TITLES[stackName]}`, { skip }, () => {
    const ws = e2eWorkspace(`netbootd-e2e-${stackName}-`, `e2e${stackName[0]}`);
    after(() => ws.destroy());
    const setup = ws.setup;

    async function boot(t: TestContext, topo: Topology, firmware: Firmware, mac: string, label: string, dir: string): Promise<BootReport> {
      const tap = await ws.tap(topo);
      const r = await bootVm({ lab: topo.lab, tap, firmware, mac, timeoutMs: BOOT_TIMEOUT_MS, serialLog: join(dir, `${label.replace(/\W+/g, '-')}.console.log`) });
      report(t, formatBoot(`${stackName} ${label}`, r));
      return r;
    }

    test(`BIOS (SeaBIOS + iPXE, e1000): PXE, TFTP, NBD root, write-back${stackName === 'netbootd' ? ', second boot sees the rewritten pxelinux.cfg' : ''}`,
      { timeout: 3 * BOOT_TIMEOUT_MS + 120_000 }, async (t) => {
        if (!e2eReady(t)) return;
        const { art, topo, dir } = await setup('bios');
        const image = await copyImage(art, join(dir, 'disk.img'));
        const mac = '52:54:00:e2:0b:01';
        const stack = await startStack(stackName, { topo, image, hosts: [{ mac, firmware: 'bios' }], workDir: dir, status: stackName === 'netbootd' });
        t.after(() => stack.stop());

        const started = Date.now();
        const r1 = await boot(t, topo, 'bios', mac, 'BIOS boot 1', dir);
        assertBooted(r1, 'BIOS boot 1', stack);
        if (stackName === 'netbootd') await assertJourney(t, topo, mac, 1, 'BIOS boot 1', stack);
        const res1 = checkBootResult(parseBootResultOrNull(await readExt4File(image, 2, '/boot-result', dir)), { mac, marker: art.marker, started }, 'BIOS boot 1');
        assert.match(res1.cmdline, /\be2e\.rewrite=1\b/);
        // The client changed its boot configuration on the FAT partition, over NBD.
        const cfg = (await readFatFile(image, 1, 'pxelinux.cfg/default'))?.toString() ?? '';
        assert.match(appendLine(cfg), /\be2e\.second=1\b/, 'pxelinux.cfg/default was not rewritten through NBD');

        if (stack.tftpRoot) {
          // A TFTP root that is a copy of the FAT still serves the old file (the seeds' stale boot partition
          // bug, which netbootd's second boot below must not have).
          const stale = readFileSync(join(stack.tftpRoot, 'pxelinux.cfg/default'), 'utf8');
          assert.match(appendLine(stale), /\be2e\.rewrite=1\b/);
          report(t, `${stackName}: its TFTP directory still holds the old pxelinux.cfg/default (stale boot partition), as expected`);
          return;
        }
        // Boot 2, same daemon, no restart: TFTP must serve the bytes the client wrote over NBD.
        const r2 = await boot(t, topo, 'bios', mac, 'BIOS boot 2', dir);
        assertBooted(r2, 'BIOS boot 2', stack);
        const res2 = checkBootResult(parseBootResultOrNull(await readExt4File(image, 2, '/boot-result', dir)), { mac, marker: art.marker, started }, 'BIOS boot 2');
        assert.match(res2.cmdline, /\be2e\.second=1\b/, `boot 2 came up with the stale command line: ${res2.cmdline}`);
        assert.doesNotMatch(res2.cmdline, /\be2e\.rewrite=1\b/);
        const log = (await readExt4File(image, 2, '/boot-log', dir)) ?? '';
        assert.equal(log.match(/^cmdline:/gm)?.length, 2, 'two boots logged on the root');
        await assertJourney(t, topo, mac, 2, 'BIOS boot 2', stack);
      });

    test('UEFI (OVMF, virtio-net without option ROM, EDK2 PXE): syslinux.efi + ldlinux.e64, same kernel and NBD root',
      { timeout: BOOT_TIMEOUT_MS + 120_000 }, async (t) => {
        if (!e2eReady(t)) return;
        const { art, topo, dir } = await setup('uefi');
        const image = await copyImage(art, join(dir, 'disk.img'));
        const mac = '52:54:00:e2:0e:01';
        const stack = await startStack(stackName, { topo, image, hosts: [{ mac, firmware: 'uefi' }], workDir: dir, status: stackName === 'netbootd' });
        t.after(() => stack.stop());
        const started = Date.now();
        const r = await boot(t, topo, 'uefi', mac, 'UEFI boot', dir);
        assertBooted(r, 'UEFI boot', stack);
        if (stackName === 'netbootd') await assertJourney(t, topo, mac, 1, 'UEFI boot', stack);
        checkBootResult(parseBootResultOrNull(await readExt4File(image, 2, '/boot-result', dir)), { mac, marker: art.marker, started }, 'UEFI boot');
        const cfg = (await readFatFile(image, 1, 'pxelinux.cfg/default'))?.toString() ?? '';
        assert.match(appendLine(cfg), /\be2e\.second=1\b/);
      });

    test('two VMs on one copy-on-write base image boot at once; each sees only its own writes',
      { timeout: 2 * BOOT_TIMEOUT_MS + 120_000, skip: stackName !== 'netbootd' ? 'netbootd serve only (per-client copy-on-write comes from the daemon\'s registry)' : false },
      async (t) => {
        if (!e2eReady(t)) return;
        const { art, topo, dir } = await setup('cow');
        const image = await copyImage(art, join(dir, 'base.img'));
        const macs = ['52:54:00:e2:c0:01', '52:54:00:e2:c0:02'];
        const stack = await startStack(stackName, { topo, image, mode: 'cow', hosts: macs.map((mac) => ({ mac, firmware: 'bios' as const })), workDir: dir });
        t.after(() => stack.stop());
        const started = Date.now();
        const reports = await Promise.all(macs.map((mac, i) => boot(t, topo, 'bios', mac, `cow VM ${i + 1}`, dir)));
        reports.forEach((r, i) => assertBooted(r, `cow VM ${i + 1}`, stack));
        // The base is untouched...
        assert.equal(await readExt4File(image, 2, '/boot-result', dir), null, 'a client wrote into the shared base image');
        assert.match(appendLine((await readFatFile(image, 1, 'pxelinux.cfg/default'))?.toString() ?? ''), /\be2e\.rewrite=1\b/);
        // ...and each overlay holds exactly its own client's boot.
        const views = await readCowClients(image, stack.stateDir!, EXPORT_NAME, 2, '/boot-log', dir);
        assert.equal(views.size, 2, `overlays: ${[...views.keys()].join(', ')}`);
        const seen = new Set<string>();
        for (const [client, text] of views) {
          assert.ok(text, `overlay of ${client} has no /boot-log`);
          assert.equal(text.match(/^cmdline:/gm)?.length, 1, `overlay of ${client} holds another client's boot`);
          const r = checkBootResult(parseBootResult(text), { mac: parseBootResult(text).mac, marker: art.marker, started }, client);
          assert.ok(macs.includes(r.mac), `overlay of ${client}: unknown MAC ${r.mac}`);
          seen.add(r.mac);
        }
        assert.equal(seen.size, 2, 'both clients wrote, each to its own overlay');
      });
  });
}

function parseBootResultOrNull(text: string | null): ParsedResult | null {
  return text === null ? null : parseBootResult(text);
}
