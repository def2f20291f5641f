/**
 * The status page in a real headless Chromium (Debian's `chromium`, driven by playwright-core; no browser
 * download): a Pi booting live (real DHCP packets of the Pi replay, real TFTP and NBD clients), a refused
 * client with its reason, unknown clients with their add command, reset-overlay end to end (refused while
 * attached, then done), hostile strings shown as text, the token required. Screenshots go to
 * test-artifacts/status-page/.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { haveTools, run, tempDir } from '../helpers/tools.js';
import { buildPiOsImage } from '../helpers/piimage.js';
import { startDaemon, testConfig } from '../daemon/harness.js';
import { RawNbd } from '../nbd/client.js';
import { piDhcpPacket } from '../e2e/pi-client.js';

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = join(process.cwd(), 'test-artifacts', 'status-page');
const TOKEN = 'status-page-test-token-0123456789';
const PI = { mac: 'dc:a6:32:01:02:03', serial: '11111111' };

function udp(port: number, payload: Buffer, from = '127.0.0.1'): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    s.on('error', reject);
    s.bind(0, from, () => s.send(payload, port, '127.0.0.1', (e) => (s.close(), e ? reject(e) : resolve())));
  });
}

/** A TFTP read request for a raw path (no URL escaping in the way). */
const rrq = (path: string): Buffer => Buffer.concat([Buffer.from([0, 1]), Buffer.from(path, 'latin1'), Buffer.from([0]), Buffer.from('octet'), Buffer.from([0])]);

test('status page: a live Pi boot, refused and unknown clients, reset-overlay, escaping, token', { timeout: 120_000 }, async (t) => {
  if (!existsSync(CHROMIUM)) return t.skip('Debian chromium not installed (scripts/install-test-deps.sh)');
  if (!haveTools(t, 'curl', 'qemu-io', 'mcopy', 'sfdisk', 'mkfs.vfat', 'mkfs.ext4')) return;
  const { chromium } = await import('playwright-core');
  mkdirSync(ARTIFACTS, { recursive: true });
  const dir = tempDir(t);
  const image = join(dir, 'pi.img');
  await buildPiOsImage(image);
  const config = testConfig(join(dir, 'state'), `images:
  pios: { path: ${image}, mode: cow }
  locked: { path: ${image}, mode: readonly, allow: [10.0.0.0/8] }
pis:
  "${PI.serial}": { image: pios }
`)
    .replace('status: { enabled: false }', `status: { address: 127.0.0.1, port: 0, token: ${TOKEN} }`)
    .replace('dhcp: { enabled: false }', 'dhcp: { port: 0, proxyPort: 0 }');
  const d = await startDaemon(t, dir, config);
  const base = `http://127.0.0.1:${d.daemon.bound.status!}`;
  const tftp = (source: string, path: string) => run('curl', ['-sS', '-o', '/dev/null', '--interface', source, `tftp://127.0.0.1:${d.tftpPort}/${path}`], { allowFail: true });

  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'], timeout: 30_000 });
  t.after(() => browser.close());
  const context = await browser.newContext({ viewport: { width: 1100, height: 1000 } });
  context.setDefaultTimeout(10_000);
  const page = await context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));

  // The token is required: without it, nothing (not the page, not the event stream).
  const denied = await page.goto(`${base}/ui`);
  assert.equal(denied?.status(), 401);
  assert.equal((await page.request.get(`${base}/events`)).status(), 401);
  // Given once in the address, it becomes an HttpOnly cookie and leaves the address bar.
  await page.goto(`${base}/ui?token=${TOKEN}`);
  assert.equal(new URL(page.url()).pathname, '/ui');
  assert.equal(new URL(page.url()).search, '');
  await page.locator('#conn.live').waitFor();
  const cookies = await context.cookies();
  assert.ok(cookies.some((c) => c.name === 'netbootd_token' && c.httpOnly && c.sameSite === 'Strict'));

  // A Pi boots while the page is open: DHCP (the replay's DISCOVER and REQUEST), TFTP, NBD.
  const dhcpPort = d.daemon.bound.dhcp!;
  await udp(dhcpPort, piDhcpPacket({ ...PI, fourcc: 'RPi4' }, 0x1234, 1));
  await udp(dhcpPort, piDhcpPacket({ ...PI, fourcc: 'RPi4' }, 0x1234, 3, { requested: '127.0.0.1' }));
  const row = (id: string) => page.locator(`tr.client[data-client="${id}"]`);
  await row(PI.mac).locator('.stage[data-stage="dhcp"]').waitFor();
  await page.screenshot({ path: join(ARTIFACTS, '1-dhcp.png'), fullPage: true });
  assert.equal((await tftp('127.0.0.1', `${PI.serial}/start4.elf`)).code, 0);
  await row(PI.serial).locator('.stage[data-stage="loader"]').waitFor();
  assert.equal(await row(PI.mac).count(), 0, 'the DHCP story and the TFTP story are one client');
  assert.equal((await tftp('127.0.0.1', `${PI.serial}/kernel8.img`)).code, 0);
  await row(PI.serial).locator('.stage[data-stage="kernel"]').waitFor();
  // Root: a real NBD client writes a block (the overlay is created), then disconnects.
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x55 0 4096', `nbd://127.0.0.1:${d.nbdPort}/pios`]);
  await row(PI.serial).locator('.stage[data-stage="down"]').waitFor();
  await row(PI.serial).click();
  await page.locator('#journey ol.timeline li', { hasText: 'NBD attached export pios' }).waitFor();
  assert.match(await page.locator('#journey').innerText(), /root attached after \d+\.\d s/);
  await page.screenshot({ path: join(ARTIFACTS, '2-pi-journey.png'), fullPage: true });

  // A refused client with its reason; an unknown Pi with its add command; a PC whose vendor class is hostile.
  const refused = await RawNbd.connect(d.nbdPort, { localAddress: '127.0.0.5' });
  await refused.handshake();
  await refused.go('locked').catch(() => undefined);
  refused.destroy();
  await row('127.0.0.5').locator('.hint', { hasText: "allow-list" }).waitFor();
  await tftp('127.0.0.3', '99999999/start4.elf');
  await page.locator('#unknown .unknown[data-client="99999999"] code.fix', { hasText: 'netbootd add-pi 99999999 --image' }).waitFor();
  const hostile = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>';
  const pc = piDhcpPacket({ mac: '52:54:00:12:34:56', serial: '00000000' }, 0x99, 1);
  const vc = Buffer.from(`PXEClient:Arch:00000:${hostile}`, 'latin1');
  const cut = pc.length - (2 + 'PXEClient:Arch:00000:UNDI:002001'.length + 1);
  // ...and a hostile DHCP host name (option 12) too.
  const hostname = '<script>window.__pwned=3</script>';
  const hn = Buffer.from(hostname, 'latin1');
  await udp(dhcpPort, Buffer.concat([pc.subarray(0, cut), Buffer.from([60, vc.length]), vc, Buffer.from([12, hn.length]), hn, Buffer.from([255])]));
  await page.locator('#unknown .unknown[data-client="52:54:00:12:34:56"] code.fix', { hasText: 'netbootd add-host 52:54:00:12:34:56 --image' }).waitFor();
  await udp(d.tftpPort, rrq(`${hostile}.img`), '127.0.0.6');
  await row('127.0.0.6').waitFor();
  assert.ok((await row('127.0.0.6').innerText()).includes(hostile), 'the hostile path is shown as text');
  await row('52:54:00:12:34:56').click();
  await page.locator('#journey .vc', { hasText: hostile }).waitFor();
  await page.locator('#journey .hn', { hasText: hostname }).waitFor();
  assert.ok((await row('52:54:00:12:34:56').innerText()).includes(hostname), 'the hostile host name is shown as text in the client list');
  assert.equal(await page.evaluate(() => (globalThis as unknown as { __pwned?: number }).__pwned), undefined, 'no client string ran as code');
  assert.equal(await page.locator('main img, main script').count(), 0, 'no client string became an element');
  await page.screenshot({ path: join(ARTIFACTS, '3-unknown-refused-hostile.png'), fullPage: true });

  // Reset-overlay: confirmation; refused while the Pi is attached; then done, and the overlay is gone.
  const reset = page.locator('button[data-reset="pios/pi-11111111"]');
  await reset.waitFor();
  const held = await RawNbd.connect(d.nbdPort, { localAddress: '127.0.0.1' });
  await held.handshake();
  await held.go('pios');
  await reset.click();
  assert.match(await page.locator('#confirm-text').innerText(), /Delete the copy-on-write overlay of image pios for pi-11111111/);
  await page.locator('#confirm-ok').click();
  await page.locator('#msg', { hasText: /refused: .*in use/ }).waitFor();
  held.destroy();
  await row(PI.serial).locator('.stage[data-stage="down"]').waitFor();
  await reset.click();
  await page.locator('#confirm button[value="cancel"]').click();
  assert.ok(existsSync(join(dir, 'state', 'pios', 'pi-11111111.overlay')), 'cancel keeps the overlay');
  await reset.click();
  await page.locator('#confirm-ok').click();
  await page.locator('#msg', { hasText: 'overlay pi-11111111 reset' }).waitFor();
  await reset.waitFor({ state: 'detached' });
  assert.ok(!existsSync(join(dir, 'state', 'pios', 'pi-11111111.overlay')));

  // The CSRF guard: a cookie-authenticated POST without the page's token is refused.
  const forged = await page.evaluate(async () => (await fetch('/reset-overlay', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"image":"pios","client":"11111111"}' })).status);
  assert.equal(forged, 403);

  // Readable on a phone.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: join(ARTIFACTS, '4-phone.png'), fullPage: true });
  assert.deepEqual(errors, [], 'no script errors');
});
