/**
 * Boot journeys through the real daemon: real TFTP (curl) and NBD clients from several loopback addresses,
 * each ending in the stage and with the hint its story calls for; the CLI view; the metrics; kept across a
 * reload and a restart.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { haveTools, run, tempDir } from '../helpers/tools.js';
import { buildPiOsImage, PI_OS_LAYOUT } from '../helpers/piimage.js';
import { startDaemon, testConfig } from './harness.js';
import { RawNbd } from '../nbd/client.js';
import { formatJourney, type JourneyJson } from '../../src/cli/journey.js';
import { Daemon } from '../../src/daemon.js';
import { createLogger } from '../../src/util/log.js';

async function until<T>(what: string, f: () => T | undefined | null | false, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

test('journeys: a Pi boots to its root and detaches; an unknown Pi, a Pi 5-only image and refused exports each end with their hint', async (t) => {
  if (!haveTools(t, 'curl', 'mcopy', 'mdel', 'sfdisk', 'mkfs.vfat', 'mkfs.ext4')) return;
  const dir = tempDir(t);
  const image = join(dir, 'pi.img');
  await buildPiOsImage(image);
  const pi5 = join(dir, 'pi5.img');
  copyFileSync(image, pi5);
  await run('mdel', ['-i', `${pi5}@@${PI_OS_LAYOUT.bootStart}`, '::/start4.elf']);
  const state = join(dir, 'state');
  const config = testConfig(state, `images:
  pios: { path: ${image}, mode: cow }
  pi5: { path: ${pi5}, mode: readonly }
  locked: { path: ${image}, mode: readonly, allow: [10.0.0.0/8] }
pis:
  "11111111": { image: pios }
  "33333333": { image: pi5 }
`).replace('status: { enabled: false }', 'status: { address: 127.0.0.1, port: 0, stalledAfterS: 5 }');
  const d = await startDaemon(t, dir, config);
  const status = `http://127.0.0.1:${d.daemon.bound.status!}`;
  const tftp = async (source: string, path: string): Promise<number> =>
    (await run('curl', ['-sS', '-o', '/dev/null', '--interface', source, `tftp://127.0.0.1:${d.tftpPort}/${path}`], { allowFail: true })).code;
  const j = (q: string) => d.daemon.journey.get(q);

  // Pi 1 from 127.0.0.1: loader, kernel, then its root over NBD.
  assert.equal(await tftp('127.0.0.1', '11111111/start4.elf'), 0);
  await until('loader', () => j('11111111')?.stage === 'loader');
  assert.equal(await tftp('127.0.0.1', '11111111/recover4.elf'), 68, 'an optional probe, not found');
  assert.equal(await tftp('127.0.0.1', '11111111/kernel8.img'), 0);
  await until('kernel', () => j('11111111')?.stage === 'kernel');
  const nbd = await RawNbd.connect(d.nbdPort, { localAddress: '127.0.0.1' });
  await nbd.handshake();
  await nbd.go('pios');
  const attached = await until('root', () => (j('11111111')?.stage === 'root' ? j('11111111') : null));
  const boot = attached.boots[0]!;
  assert.ok(boot.durationMs !== undefined && boot.durationMs >= 0, 'boot duration measured');
  assert.deepEqual(boot.hints, [], 'a probe for an optional file is no problem');
  assert.ok(boot.lines.some((l) => /TFTP 11111111\/start4\.elf: sent/.test(l)), boot.lines.join('\n'));
  assert.ok(boot.lines.some((l) => /NBD attached export pios \(read-write, cow, overlay pi-11111111\)/.test(l)), boot.lines.join('\n'));
  nbd.destroy();
  await until('down', () => j('11111111')?.stage === 'down');

  // An unknown Pi: the exact command that would serve it.
  assert.equal(await tftp('127.0.0.3', '99999999/start4.elf'), 68);
  const unknown = await until('unknown', () => j('99999999'));
  assert.match(unknown.unknown!.fix!, /^netbootd add-pi 99999999 --image /);
  assert.equal(unknown.boots[0]!.hints[0]!.code, 'serial-not-configured');

  // A Pi 4 asking for start4.elf from an image without one.
  assert.equal(await tftp('127.0.0.4', '33333333/start4.elf'), 68);
  const p5 = await until('pi5', () => j('33333333'));
  assert.deepEqual(p5.boots[0]!.hints.map((h) => h.code), ['file-missing', 'pi5-only']);
  assert.match(p5.boots[0]!.hints[0]!.text, /start4\.elf` is not in the boot partition of image pi5/);

  // NBD refused: by the allow-list, and an export that is not configured (cmdline.txt names another).
  for (const name of ['locked', 'nope']) {
    const c = await RawNbd.connect(d.nbdPort, { localAddress: '127.0.0.5' });
    await c.handshake();
    await c.go(name).catch(() => undefined);
    c.destroy();
  }
  const refused = await until('refusals', () => (j('127.0.0.5')?.boots[0]?.hints.length === 2 ? j('127.0.0.5') : null));
  assert.deepEqual(refused.boots[0]!.hints.map((h) => h.code).sort(), ['cmdline-export', 'export-refused']);

  // The status JSON and the CLI view.
  const s = (await (await fetch(`${status}/status`)).json()) as { boots: Array<{ id: string; stage: string; unknown?: { fix?: string } }> };
  assert.equal(s.boots.find((b) => b.id === '11111111')?.stage, 'down');
  assert.match(s.boots.find((b) => b.id === '99999999')!.unknown!.fix!, /add-pi 99999999/);
  const text = formatJourney((await (await fetch(`${status}/journey?client=11111111`)).json()) as JourneyJson);
  assert.match(text, /^11111111: serial 11111111, address 127\.0\.0\.1/);
  assert.match(text, /latest boot, .*: down, root attached after/);
  assert.match(text, /\+ +\d+\.\d s {2}TFTP 11111111\/kernel8\.img: sent/);
  assert.equal((await fetch(`${status}/journey?client=nobody`)).status, 404);

  // Prometheus: one boot attached, stages counted.
  const metrics = await (await fetch(`${status}/metrics`)).text();
  assert.match(metrics, /^netbootd_boot_duration_seconds_count 1$/m);
  assert.match(metrics, /^netbootd_boot_stage_total\{stage="root"\} 1$/m);
  assert.match(metrics, /^netbootd_boot_stage_total\{stage="loader"\} 1$/m);
  assert.match(metrics, /^netbootd_boot_duration_seconds_bucket\{le="\+Inf"\} 1$/m);

  // A reload keeps the journeys; a restart restores them from stateDir.
  assert.equal(await d.daemon.reload('test'), true);
  assert.equal(j('11111111')?.stage, 'down');
  await d.daemon.stop();
  const again = new Daemon({ configPath: d.configPath, logger: createLogger({ level: 'silent' }), watch: false });
  await again.start();
  t.after(() => again.stop());
  assert.equal(again.journey.get('11111111')?.stage, 'down', 'restored from stateDir/journeys.json');
  assert.match(again.journey.get('99999999')!.unknown!.fix!, /add-pi 99999999/);
});

test('journeys over HTTP (curl): files with status, bytes and time; a 404 with where it was looked for; an unknown Pi; the cmdline.txt it was served explains a stall', async (t) => {
  if (!haveTools(t, 'curl', 'mcopy', 'sfdisk', 'mkfs.vfat', 'mkfs.ext4')) return;
  const dir = tempDir(t);
  const image = join(dir, 'pi.img');
  await buildPiOsImage(image);
  const config = `${testConfig(join(dir, 'state'), `images:
  pios: { path: ${image}, mode: cow }
pis:
  "11111111": { image: pios }
`).replace('status: { enabled: false }', 'status: { address: 127.0.0.1, port: 0, stalledAfterS: 30 }')}http: { enabled: true, address: 127.0.0.1, port: 0 }\n`;
  const d = await startDaemon(t, dir, config);
  const base = `http://127.0.0.1:${d.daemon.bound.http!}`;
  const get = async (source: string, path: string): Promise<{ code: string; bytes: number }> => {
    const r = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code} %{size_download}', '--interface', source, `${base}/${path}`], { allowFail: true });
    const [code, bytes] = r.stdout.toString().split(' ');
    return { code: code!, bytes: Number(bytes) };
  };
  const j = (q: string) => d.daemon.journey.get(q);

  // A Pi loads its kernel and command line over HTTP: each file a line with its status, size and time.
  const kernel = await get('127.0.0.1', '11111111/kernel8.img');
  assert.equal(kernel.code, '200');
  assert.ok(kernel.bytes > 0);
  assert.equal((await get('127.0.0.1', '11111111/cmdline.txt')).code, '200');
  const pi = await until('kernel over HTTP', () => (j('11111111')?.boots[0]?.cmdline ? j('11111111') : null));
  const boot = pi.boots[0]!;
  assert.equal(pi.stage, 'kernel');
  const line = boot.lines.find((l) => l.startsWith('HTTP 11111111/kernel8.img'));
  assert.match(line ?? '', new RegExp(`^HTTP 11111111/kernel8\\.img: sent 200, ${(kernel.bytes / 1024).toFixed(1)} KiB in \\d+ ms`), boot.lines.join('\n'));
  const ev = boot.events.find((e) => e.kind === 'file' && e.path === '11111111/kernel8.img');
  assert.ok(ev && ev.kind === 'file' && ev.via === 'http' && ev.bytes === kernel.bytes && ev.status === 200 && ev.outcome === 'complete', JSON.stringify(ev));
  assert.equal(boot.files, 2);

  // A boot file missing from its image: HTTP 404, and the hint says where it was looked for.
  assert.equal((await get('127.0.0.1', '11111111/kernel7l.img')).code, '404');
  const missing = await until('404', () => j('11111111')?.boots[0]?.hints.find((h) => h.code === 'file-missing'));
  assert.match(missing.text, /`11111111\/kernel7l\.img` is not in the boot partition of image pios/);
  assert.ok(j('11111111')!.boots[0]!.lines.some((l) => l === 'HTTP 11111111/kernel7l.img: not found — no such file (looked in the boot partition of image pios)'), j('11111111')!.boots[0]!.lines.join('\n'));

  // An unknown Pi asking over HTTP: not served, with the command that would.
  assert.equal((await get('127.0.0.3', '99999999/start4.elf')).code, '404');
  const unknown = await until('unknown', () => j('99999999'));
  assert.match(unknown.unknown?.fix ?? '', /^netbootd add-pi 99999999 --image pios$/);

  // The Pi never comes for its root: the stall hint quotes the cmdline.txt it was served (Pi OS: no nbdroot=).
  assert.deepEqual(boot.cmdline, { path: '11111111/cmdline.txt', problem: 'its kernel looks for no NBD root: add nbdroot=127.0.0.1/pios (netbootd prep does)' });
  const later = Date.now() + 31_000;
  d.daemon.feed.tick(later);
  const stalled = d.daemon.journey.get('11111111', later)!;
  assert.equal(stalled.stage, 'stalled-at-kernel');
  const hint = stalled.boots[0]!.hints.find((h) => h.code === 'cmdline-export');
  assert.match(hint?.text ?? '', /^loaded its kernel, then never connected to NBD \(30 s\): the 11111111\/cmdline\.txt it was served has no nbdroot=: its kernel looks for no NBD root: add nbdroot=127\.0\.0\.1\/pios/, JSON.stringify(stalled.boots[0]!.hints));
});
