/**
 * A small boot storm against netbootd (issue 18): 20 clients of every kind (Pi 4, Pi 5, PXELINUX, iPXE over
 * HTTP, a plain PXE ROM chain-loaded to iPXE) power on within half a second, with 5% of the packets lost each
 * way (nftables in the clients' namespace: UDP and TCP; the clients' own UDP loss without nft), two clients vanishing
 * mid-transfer (one in its kernel over TFTP, one half-way through its NBD replay) and a reload (SIGHUP) in
 * the middle. Every other client must end booted, and every byte it received must be exact: boot files by
 * SHA-256 against the image's FAT, NBD reads of the recorded root-file-system trace against the base image
 * with the client's own writes over it (copy-on-write). The load and its checks: test/helpers/storm-load.ts;
 * the benchmark with the reference stack: bench/storm.ts.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { existsSync, readdirSync } from 'node:fs';
import { NetLab } from '../helpers/netns.js';
import { IN_CI, haveTools, tempDir } from '../helpers/tools.js';
import { buildStormImage, createLab, makeClients, runStorm, startNetbootd } from '../helpers/storm-lab.js';

const N = 20;

test('boot storm: 20 clients, 5% loss, two vanish, a reload mid-storm: every other client boots with exact bytes', { timeout: 110_000 }, async (t: TestContext) => {
  if (!haveTools(t, 'ip', 'dnsmasq', 'sfdisk', 'mkfs.vfat', 'mcopy', 'mkfs.ext4')) return;
  if (!NetLab.available()) {
    if (IN_CI) throw new Error('CI must run this as root: it creates network namespaces');
    t.skip('needs root to create network namespaces');
    return;
  }
  if (!existsSync('/usr/lib/PXELINUX/pxelinux.0')) {
    t.skip('needs pxelinux (scripts/install-test-deps.sh)');
    return;
  }
  const work = tempDir(t, 'netbootd-storm-test-');
  const img = await buildStormImage(join(work, 'image'), false);
  const clients = makeClients(N, { pi4: 1, pi5: 1, pxelinux: 1, ipxe: 1, pxe: 1 }, 2);
  const l = await createLab(work, clients);
  t.after(() => l.destroy());
  const stack = await startNetbootd(l, img, clients, work, { daemon: 'tsx' });
  t.after(() => stack.stop());
  const t0 = Date.now();
  const fig = await runStorm(l, stack, img, work, {
    clients, loss: 0.05, timeoutMs: 250, tries: 10, spreadMs: 500, reloadAtMs: 1500, daemon: 'tsx',
  });
  const took = Date.now() - t0;
  const vanishing = clients.filter((c) => c.vanish).map((c) => c.i);
  const failures = fig.results.filter((r) => !r.ok && !vanishing.includes(r.i));
  assert.deepEqual(failures.map((r) => `client ${r.i} (${r.kind}): ${r.error}`), [], 'every client that did not vanish boots');
  assert.equal(fig.booted, N - vanishing.length);
  assert.deepEqual(fig.results.filter((r) => r.vanished).map((r) => r.i).sort((a, b) => a - b), vanishing, 'the vanishing clients vanished where planned');
  // The loss was real: packets were dropped and clients had to retransmit; with kernel loss (CI installs
  // nftables) TCP lost segments too, which the server's TCP retransmitted.
  assert.ok(fig.lost > 0 && fig.retrans > 0, `loss ${fig.lost}, retransmissions ${fig.retrans}`);
  if (IN_CI) assert.equal(fig.lossBy, 'kernel', 'CI has nft: the loss is made in the kernel');
  if (fig.lossBy === 'kernel') assert.ok(fig.tcpRetrans > 0, `TCP segments retransmitted by the server: ${fig.tcpRetrans}`);
  // Each kind booted over its own path: Pis and PXELINUX by TFTP, iPXE over HTTP, a plain PXE ROM chain-loaded
  // to iPXE (http.chainIpxe) and then over HTTP.
  const path = { pi4: 'tftp', pi5: 'tftp', pxelinux: 'tftp', ipxe: 'http', pxe: 'chain' } as const;
  for (const [kind, via] of Object.entries(path)) {
    const booted = fig.results.filter((r) => r.kind === kind && r.ok);
    assert.ok(booted.length > 0, `a ${kind} client booted`);
    assert.deepEqual([...new Set(booted.map((r) => r.via))], [via], `${kind} clients booted by ${via}`);
  }
  // The daemon stayed up through the reload and the vanishing clients, and every booted client's
  // copy-on-write overlay exists (its trace's writes landed in its own overlay).
  const overlays = readdirSync(join(work, 'netbootd', 'state'), { recursive: true }).map(String).filter((f) => /overlay|\.cow|pi-|mac-/.test(f));
  assert.ok(overlays.length >= fig.booted, `overlays: ${overlays.length} for ${fig.booted} booted clients`);
  t.diagnostic(`${fig.booted}/${N} booted in ${fig.allBootedS.toFixed(1)} s (test ${took} ms); lost ${fig.lost} (${fig.lossBy}), retransmitted ${fig.retrans} UDP, ${fig.tcpRetrans} TCP, dupes ${fig.dupes}; netbootd ${fig.cpuS.toFixed(1)} CPU-s, peak RSS ${fig.peakRssMB.toFixed(0)} MB`);
});
