/**
 * HTTP boot steering (issue 15): which boot file proxy DHCP gives each kind of client when HTTP is on or
 * off, the reply's URL, the iPXE script netbootd writes, and — through a running daemon with real clients
 * (curl) — the per-client script, the iPXE builds by TFTP and HTTP, and a kernel written over NBD into a
 * copy-on-write view being what HTTP serves next.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseConfig } from '../../src/config/load.js';
import { parseDhcp } from '../../src/dhcp/packet.js';
import { classify, type PxeClientInfo } from '../../src/dhcp/pxe.js';
import { buildProxyReply } from '../../src/dhcp/reply.js';
import { getOptionString, Opt } from '../../src/dhcp/packet.js';
import { RegistryDhcpPolicy, isIpxeBinary } from '../../src/registry/policy.js';
import { ipxeScript, kernelFromPxelinux, relativeUrl } from '../../src/registry/ipxe.js';
import { buildRequest, PERSONAS, type Persona } from '../dhcp/client.js';
import { buildPcImage, PC_BOOT_OFFSET } from '../helpers/pcimage.js';
import { mcopyIn } from '../helpers/fatimg.js';
import { haveTools, run, tempDir } from '../helpers/tools.js';
import { startDaemon, testConfig, writeChangedBlocks } from '../daemon/harness.js';

function config(text: string) {
  const r = parseConfig(text, '/etc/netbootd/netbootd.yaml');
  assert.ok(r.ok, r.ok ? '' : r.errors.map((e) => e.message).join('\n'));
  return r.config;
}

const HTTP_UEFI: Persona = { mac: '02:42:c6:12:00:33', vendorClass: 'HTTPClient:Arch:00016:UNDI:003001', arch: 16 };
const HTTP_ARM: Persona = { mac: '02:42:c6:12:00:35', vendorClass: 'HTTPClient:Arch:00019:UNDI:003001', arch: 19 };

function client(p: Persona, extra: Partial<Persona> = {}): PxeClientInfo {
  const m = parseDhcp(buildRequest({ ...p, ...extra }, 7));
  assert.ok(m.ok);
  return classify(m.value);
}

const BASE = `images: { d: { path: /d.img } }
hosts:
  "${PERSONAS.bios.mac}": { image: d }
  "${PERSONAS.uefi.mac}": { image: d, bootFile: { uefi: grubx64.efi } }
  "${HTTP_UEFI.mac}": { image: d }
  "${HTTP_ARM.mac}": { image: d }
  "02:42:c6:12:00:40": { image: d, http: false }
  "02:42:c6:12:00:41": { image: d, bootFile: { bios: undionly.kpxe, ipxe: http://10.0.0.9/menu.ipxe } }
`;

test('DHCP steering: HTTP off changes nothing; on, iPXE gets its script URL, UEFI HTTP boot gets ipxe.efi, chainIpxe sends plain ROMs iPXE; never a loop', () => {
  const ipxe = { userClass: 'iPXE' };
  // HTTP off: today's answers; an iPXE client whose boot file is an iPXE build gets silence (it would loop).
  const off = new RegistryDhcpPolicy(config(BASE));
  assert.equal(off.decide(client(PERSONAS.bios))?.bootFile, 'pxelinux.0');
  assert.equal(off.decide(client(PERSONAS.bios, ipxe))?.bootFile, 'pxelinux.0');
  assert.equal(off.decide(client(PERSONAS.bios, ipxe))?.url, undefined);
  assert.equal(off.decide(client(PERSONAS.uefi))?.bootFile, 'grubx64.efi');
  assert.equal(off.decide(client(HTTP_UEFI)), null, 'no bootFile.http and HTTP off: silent');
  assert.equal(off.decide(client({ ...PERSONAS.bios, mac: '02:42:c6:12:00:41' }))?.bootFile, 'undionly.kpxe');
  assert.equal(off.decide(client({ ...PERSONAS.bios, mac: '02:42:c6:12:00:41' }, ipxe))?.bootFile, 'http://10.0.0.9/menu.ipxe', 'an explicit bootFile.ipxe is kept');
  const loop = new RegistryDhcpPolicy(config(`${BASE}defaults: { image: d, bootFile: undionly.kpxe }\n`));
  const v = loop.explain(client({ ...PERSONAS.bios, mac: '02:42:c6:12:00:99' }, ipxe));
  assert.equal(v.decision, null);
  assert.match(v.reason, /already runs iPXE/);

  // HTTP on.
  const on = new RegistryDhcpPolicy(config(`${BASE}http: { enabled: true, port: 8081 }\n`));
  assert.equal(on.decide(client(PERSONAS.bios))?.bootFile, 'pxelinux.0', 'plain PXE without chainIpxe: TFTP as before');
  assert.deepEqual(on.decide(client(PERSONAS.bios, ipxe))?.url, { port: 8081, path: '/boot.ipxe' });
  assert.deepEqual(on.decide(client(PERSONAS.uefi, ipxe))?.url, { port: 8081, path: '/boot.ipxe' });
  assert.deepEqual(on.decide(client(HTTP_UEFI))?.url, { port: 8081, path: '/ipxe.efi' });
  assert.equal(on.decide(client(HTTP_ARM)), null, 'the ipxe.efi served is x86-64: not for an ARM64 HTTP client');
  assert.equal(on.decide(client({ ...PERSONAS.bios, mac: '02:42:c6:12:00:40' }, ipxe))?.url, undefined, 'http: false keeps a host on TFTP');
  assert.equal(on.decide(client({ ...PERSONAS.bios, mac: '02:42:c6:12:00:41' }, ipxe))?.bootFile, 'http://10.0.0.9/menu.ipxe');

  const chain = new RegistryDhcpPolicy(config(`${BASE}http: { enabled: true, chainIpxe: true }\n`));
  assert.equal(chain.decide(client(PERSONAS.bios))?.bootFile, 'undionly.kpxe');
  assert.equal(chain.decide(client(PERSONAS.uefi))?.bootFile, 'ipxe.efi');
  assert.equal(chain.decide(client(PERSONAS.bios))?.url, undefined, 'iPXE itself goes by TFTP');
  for (const c of [client(PERSONAS.bios, ipxe), client(PERSONAS.uefi, ipxe)]) {
    const d = chain.decide(c);
    assert.deepEqual(d?.url, { port: 8080, path: '/boot.ipxe' }, 'a client running iPXE is never sent iPXE again');
  }
  assert.equal(chain.decide(client({ ...PERSONAS.bios, mac: '02:42:c6:12:00:40' }))?.bootFile, 'pxelinux.0', 'http: false: no chain-load');
  assert.equal(chain.decide(client(PERSONAS.pi4))?.piBoot, true, 'Pis are untouched');

  for (const f of ['undionly.kpxe', 'ipxe.efi', 'snponly.efi', 'x/ipxe.pxe', 'UNDIONLY.KKPXE']) assert.ok(isIpxeBinary(f), f);
  for (const f of ['pxelinux.0', 'boot.ipxe', 'syslinux.efi', 'grubx64.efi']) assert.ok(!isIpxeBinary(f), f);
});

test('proxy reply: the URL names the address the reply gives; UEFI HTTP boot gets option 60 HTTPClient and no option 43', () => {
  const on = new RegistryDhcpPolicy(config(`${BASE}http: { enabled: true, port: 8081 }\n`));
  const req = parseDhcp(buildRequest({ ...PERSONAS.bios, userClass: 'iPXE' }, 9));
  assert.ok(req.ok);
  const c = classify(req.value);
  const r = buildProxyReply(req.value, c, on.decide(c)!, '198.18.0.2', 'offer');
  assert.equal(r.file.subarray(0, r.file.indexOf(0)).toString(), 'http://198.18.0.2:8081/boot.ipxe');
  assert.equal(getOptionString(r, Opt.VendorClass), 'PXEClient');

  const hreq = parseDhcp(buildRequest(HTTP_UEFI, 10));
  assert.ok(hreq.ok);
  const hc = classify(hreq.value);
  const hr = buildProxyReply(hreq.value, hc, on.decide(hc)!, '198.18.0.2', 'offer');
  assert.equal(hr.file.subarray(0, hr.file.indexOf(0)).toString(), 'http://198.18.0.2:8081/ipxe.efi');
  assert.equal(getOptionString(hr, Opt.VendorClass), 'HTTPClient');
  assert.equal(hr.options.some((o) => o.code === Opt.VendorSpecific), false);
  assert.equal(hr.yiaddr, '0.0.0.0', 'never an address');
});

test('iPXE script: relative URLs, initrd= for EFI-stub kernels, one command per line; PXELINUX DEFAULT entries read', () => {
  assert.equal(
    ipxeScript({ kernel: '/vmlinuz', initrds: ['initrd.img', 'boot/µcode.img'], cmdline: 'root=/dev/nbd0p2 nbdroot=10.0.0.1/d\nip=dhcp' }, 'netbootd: desk'),
    [
      '#!ipxe',
      '# netbootd: desk',
      'kernel vmlinuz initrd=initrd.img initrd=_code.img root=/dev/nbd0p2 nbdroot=10.0.0.1/d ip=dhcp || goto failed',
      'initrd --name initrd.img initrd.img || goto failed',
      'initrd --name _code.img boot/%C2%B5code.img || goto failed',
      'boot || goto failed',
      ':failed',
      'echo netbootd: boot failed, retrying in 10 s',
      'sleep 10',
      'reboot',
      '',
    ].join('\n'),
  );
  assert.equal(relativeUrl('/a b/./c#d'), 'a%20b/c%23d');
  const pxelinux = 'DEFAULT live\nPROMPT 0\nLABEL rescue\n  KERNEL rescue.img\nLABEL live\n  KERNEL debian/vmlinuz\n  INITRD debian/initrd.img\n  APPEND root=/dev/nbd0p2 nbdroot=10.0.0.1/d ip=dhcp\n';
  assert.deepEqual(kernelFromPxelinux(pxelinux), { kernel: 'debian/vmlinuz', initrds: ['debian/initrd.img'], cmdline: 'root=/dev/nbd0p2 nbdroot=10.0.0.1/d ip=dhcp' });
  assert.deepEqual(kernelFromPxelinux('default linux\nlabel linux\nkernel vmlinuz\nappend initrd=a.img,b.img quiet\n'), { kernel: 'vmlinuz', initrds: ['a.img', 'b.img'], cmdline: 'initrd=a.img,b.img quiet' });
  assert.equal(kernelFromPxelinux('DEFAULT x\nLABEL x\n  LOCALBOOT 0\n'), null);
  assert.equal(kernelFromPxelinux(''), null);
});

const KERNEL = 'K'.repeat(300_000);
const INITRD = 'I'.repeat(120_000);
const DEFAULT_CFG = 'DEFAULT linux\nLABEL linux\n  KERNEL vmlinuz\n  APPEND initrd=initrd.img root=/dev/nbd0p2 nbdroot=127.0.0.1/pc\n';
const MAC_KEYS = '52:54:00:15:00:01';
const MAC_PXELINUX = '52:54:00:15:00:02';
const MAC_SCRIPT = '52:54:00:15:00:03';

test('a running daemon serves each PC its script (boot.ipxe, else its keys, else its PXELINUX entry), its kernel, and iPXE by TFTP and HTTP only to clients it serves', async (t) => {
  if (!haveTools(t, 'curl', 'mcopy', 'sfdisk', 'mkfs.vfat')) return;
  const dir = tempDir(t);
  const pc = await buildPcImage(dir, { vmlinuz: KERNEL, 'initrd.img': INITRD, 'pxelinux.cfg/default': DEFAULT_CFG });
  const scripted = await buildPcImage(dir, { 'boot.ipxe': '#!ipxe\nchain http://example.invalid/menu\n', vmlinuz: KERNEL }, 'scripted.img');
  writeFileSync(join(dir, 'undionly.kpxe'), 'bios-ipxe-build');
  writeFileSync(join(dir, 'ipxe.efi'), 'uefi-ipxe-build');
  const cfg = `${testConfig(join(dir, 'state'), `images:
  pc: { path: ${pc} }
  scripted: { path: ${scripted} }
hosts:
  "${MAC_KEYS}": { name: keys, image: pc, kernel: /vmlinuz, initrd: [initrd.img], cmdline: "root=/dev/nbd0p2 nbdroot=127.0.0.1/pc" }
  "${MAC_PXELINUX}": { image: pc }
  "${MAC_SCRIPT}": { image: scripted }
`)}http: { enabled: true, address: 127.0.0.1, port: 0, chainIpxe: true, ipxeBios: ${join(dir, 'undionly.kpxe')}, ipxeUefi: ${join(dir, 'ipxe.efi')} }\n`;
  const d = await startDaemon(t, dir, cfg);
  // What the proxy DHCP server learns from each PC's DHCP exchange: its MAC at its address.
  d.daemon.clients.learn('127.0.0.1', { mac: MAC_KEYS, dhcp: true });
  d.daemon.clients.learn('127.0.0.2', { mac: MAC_PXELINUX, dhcp: true });
  d.daemon.clients.learn('127.0.0.3', { mac: MAC_SCRIPT, dhcp: true });
  const base = `http://127.0.0.1:${d.daemon.bound.http}`;
  const get = async (from: string, path: string): Promise<{ code: string; body: string }> => {
    const out = join(dir, `body-${from}`);
    const r = await run('curl', ['-s', '--interface', from, '-o', out, '-w', '%{http_code}', `${base}/${path}`]);
    const { readFileSync, existsSync } = await import('node:fs');
    return { code: r.stdout.toString(), body: existsSync(out) ? readFileSync(out, 'latin1') : '' };
  };

  const keys = await get('127.0.0.1', 'boot.ipxe');
  assert.equal(keys.code, '200');
  assert.equal(keys.body, ipxeScript({ kernel: '/vmlinuz', initrds: ['initrd.img'], cmdline: 'root=/dev/nbd0p2 nbdroot=127.0.0.1/pc' }, 'netbootd: keys, from config'));
  const fromCfg = await get('127.0.0.2', 'boot.ipxe');
  assert.equal(fromCfg.code, '200');
  assert.match(fromCfg.body, /^kernel vmlinuz initrd=initrd\.img root=\/dev\/nbd0p2 nbdroot=127\.0\.0\.1\/pc \|\| goto failed$/m);
  assert.match(fromCfg.body, /^initrd --name initrd\.img initrd\.img \|\| goto failed$/m);
  assert.match(fromCfg.body, /from pxelinux\.cfg\/default/);
  assert.deepEqual(await get('127.0.0.3', 'boot.ipxe'), { code: '200', body: '#!ipxe\nchain http://example.invalid/menu\n' }, 'the boot partition\'s own script wins');
  assert.equal((await get('127.0.0.4', 'boot.ipxe')).code, '404', 'a client the config does not serve gets no script');

  // The files the script loads, byte-exact, counted as HTTP transfers with the client on the line.
  assert.deepEqual(await get('127.0.0.1', 'vmlinuz'), { code: '200', body: KERNEL });
  assert.deepEqual(await get('127.0.0.2', 'initrd.img'), { code: '200', body: INITRD });
  const sent = d.lines.find((l) => l.msg === 'http file sent' && l.path === 'vmlinuz');
  assert.equal(sent?.mac, MAC_KEYS);
  assert.equal(sent?.bytes, KERNEL.length);

  // iPXE builds: by HTTP (UEFI HTTP boot) and TFTP (chain-load), from the configured files, for served clients only.
  assert.deepEqual(await get('127.0.0.1', 'ipxe.efi'), { code: '200', body: 'uefi-ipxe-build' });
  assert.equal((await get('127.0.0.4', 'ipxe.efi')).code, '404');
  assert.equal((await d.fetch('undionly.kpxe'))?.toString(), 'bios-ipxe-build', 'TFTP from 127.0.0.1 (a served PC)');
  const unknown = await run('curl', ['-s', '--interface', '127.0.0.4', `tftp://127.0.0.1:${d.tftpPort}/undionly.kpxe`], { allowFail: true });
  assert.notEqual(unknown.code, 0, 'TFTP of iPXE to an unknown client: not found');
});

test('coherence: a kernel a copy-on-write PC writes over NBD is what HTTP serves it next; another PC still gets the base', async (t) => {
  if (!haveTools(t, 'curl', 'mcopy', 'sfdisk', 'mkfs.vfat', 'qemu-io')) return;
  const dir = tempDir(t);
  const pc = await buildPcImage(dir, { vmlinuz: KERNEL, 'initrd.img': INITRD });
  const cfg = `${testConfig(join(dir, 'state'), `images:
  pc: { path: ${pc}, mode: cow }
hosts:
  "${MAC_KEYS}": { image: pc, kernel: vmlinuz, initrd: [initrd.img], cmdline: "nbdroot=127.0.0.1/pc" }
  "${MAC_PXELINUX}": { image: pc, kernel: vmlinuz }
`)}http: { enabled: true, address: 127.0.0.1, port: 0 }\n`;
  const d = await startDaemon(t, dir, cfg);
  d.daemon.clients.learn('127.0.0.1', { mac: MAC_KEYS, dhcp: true });
  d.daemon.clients.learn('127.0.0.2', { mac: MAC_PXELINUX, dhcp: true });
  const base = `http://127.0.0.1:${d.daemon.bound.http}`;
  const get = async (from: string, path: string): Promise<string> => (await run('curl', ['-sS', '--fail', '--interface', from, `${base}/${path}`])).stdout.toString('latin1');
  assert.equal(await get('127.0.0.1', 'vmlinuz'), KERNEL);

  // The PC installs a new kernel: its NBD client (qemu-io, from 127.0.0.1) writes the changed FAT blocks and flushes.
  const copy = join(dir, 'copy.img');
  copyFileSync(pc, copy);
  const NEW_KERNEL = 'N'.repeat(310_000);
  writeFileSync(join(dir, 'vmlinuz'), NEW_KERNEL);
  await mcopyIn(copy, [join(dir, 'vmlinuz')], '::/', { offset: PC_BOOT_OFFSET, overwrite: true });
  await writeChangedBlocks(dir, pc, copy, PC_BOOT_OFFSET, 20 * 1024 * 1024, `nbd://127.0.0.1:${d.nbdPort}/pc`);

  assert.equal(await get('127.0.0.1', 'vmlinuz'), NEW_KERNEL, 'its own new kernel, over HTTP');
  assert.equal(await get('127.0.0.2', 'vmlinuz'), KERNEL, 'the other PC still boots the base kernel');
  const status = d.daemon.statusJson() as { http: { served: number; bytes: number; recent: Array<{ mac?: string; path: string; status: number; bytes: number }> } };
  assert.equal(status.http.served, 3);
  assert.deepEqual(
    status.http.recent.map((r) => [r.mac, r.path, r.status, r.bytes]),
    [[MAC_KEYS, 'vmlinuz', 200, KERNEL.length], [MAC_KEYS, 'vmlinuz', 200, NEW_KERNEL.length], [MAC_PXELINUX, 'vmlinuz', 200, KERNEL.length]],
    '/status lists each HTTP transfer with its client',
  );
  const { formatStatus } = await import('../../src/cli/serve.js');
  const text = formatStatus(d.daemon.statusJson() as Parameters<typeof formatStatus>[0]);
  assert.match(text, /^HTTP: 3 served, 0 not found, 0 failed/m);
  assert.match(text, new RegExp(`^vmlinuz +${MAC_KEYS} 127\\.0\\.0\\.1 +200 +${NEW_KERNEL.length} bytes in \\d+ ms$`, 'm'), 'netbootd status shows them');
});
