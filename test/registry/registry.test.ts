import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseConfig } from '../../src/config/load.js';
import { parseDhcp } from '../../src/dhcp/packet.js';
import { classify } from '../../src/dhcp/pxe.js';
import { ClientTable } from '../../src/registry/clients.js';
import { ImagePool } from '../../src/registry/pool.js';
import { Registry } from '../../src/registry/registry.js';
import { RegistryDhcpPolicy } from '../../src/registry/policy.js';
import { haveTools, tempDir } from '../helpers/tools.js';
import { mcopyIn, mmd } from '../helpers/fatimg.js';
import { buildPiOsImage, PI_OS_LAYOUT } from '../helpers/piimage.js';
import { buildRequest, PERSONAS } from '../dhcp/client.js';
import { readAll } from '../fat/read.js';


function config(text: string) {
  const r = parseConfig(text, '/etc/netbootd/netbootd.yaml');
  assert.ok(r.ok, r.ok ? '' : r.errors.map((e) => e.message).join('\n'));
  return r.config;
}

const pxe = (p: keyof typeof PERSONAS, extra: { userClass?: string } = {}) => {
  const m = parseDhcp(buildRequest({ ...PERSONAS[p], ...extra }, 1));
  assert.ok(m.ok);
  return classify(m.value);
};

test('DHCP policy: listed hosts by firmware, iPXE, defaults, Pis by switch, silence otherwise', () => {
  const base = `images: { d: { path: /d.img } }
hosts:
  "${PERSONAS.bios.mac}": { image: d, bootFile: { bios: lpxelinux.0, uefi: grubx64.efi, ipxe: boot.ipxe } }
  "${PERSONAS.uefi.mac}": { image: d }
`;
  const p = new RegistryDhcpPolicy(config(base));
  assert.equal(p.decide(pxe('bios'))?.bootFile, 'lpxelinux.0');
  assert.equal(p.decide(pxe('bios', { userClass: 'iPXE' }))?.bootFile, 'boot.ipxe');
  assert.equal(p.decide(pxe('uefi'))?.bootFile, 'syslinux.efi', 'default UEFI boot file');
  assert.equal(p.decide(pxe('pi4'))?.piBoot, true);
  assert.deepEqual(p.explain({ ...pxe('bios'), mac: '02:00:00:00:00:99' }), { decision: null, reason: 'MAC not under hosts and no defaults' });
  const q = new RegistryDhcpPolicy(config(`${base}dhcp: { answerPis: false }\ndefaults: { image: d, bootFile: { bios: undionly.kpxe } }\n`));
  assert.equal(q.decide(pxe('pi4')), null);
  assert.equal(q.decide({ ...pxe('bios'), mac: '02:00:00:00:00:99' })?.bootFile, 'undionly.kpxe');
  assert.equal(q.explain({ ...pxe('uefi'), mac: '02:00:00:00:00:99' }).reason, 'no boot file for firmware uefi64');
});

test('TFTP: a PC is found by the MAC in its PXELINUX lookups, a Pi by serial, a directory host by MAC; unknown clients get nothing', async (t) => {
  if (!haveTools(t, 'sfdisk', 'mkfs.vfat', 'mcopy', 'mmd')) return;
  const dir = tempDir(t);
  const image = join(dir, 'pc.img');
  await buildPiOsImage(image);
  writeFileSync(join(dir, 'default'), 'DEFAULT linux\nLABEL linux\n  KERNEL vmlinuz\n  APPEND ip=dhcp nbdroot=127.0.0.1/pc root=/dev/nbd0p2\n');
  writeFileSync(join(dir, 'pxelinux.0'), Buffer.alloc(1000, 7));
  await mmd(image, ['/pxelinux.cfg'], PI_OS_LAYOUT.bootStart);
  await mcopyIn(image, [join(dir, 'default')], '::/pxelinux.cfg/', { offset: PI_OS_LAYOUT.bootStart });
  await mcopyIn(image, [join(dir, 'pxelinux.0')], '::/', { offset: PI_OS_LAYOUT.bootStart });
  mkdirSync(join(dir, 'tftp'));
  writeFileSync(join(dir, 'tftp', 'ipxe.efi'), 'ipxe');
  const cfg = config(`server: { stateDir: ${dir}/state }
images: { pc: { path: ${image}, mode: readonly } }
pis: { "12345678": { image: pc } }
hosts:
  "52:54:00:aa:bb:01": { image: pc, name: desk }
  "52:54:00:aa:bb:02": { tftpRoot: ${dir}/tftp }
`);
  const pool = new ImagePool();
  t.after(() => pool.close());
  const clients = new ClientTable();
  const reg = new Registry(cfg, pool, clients);
  const get = async (address: string, path: string) => {
    const src = await reg.resolve({ address, port: 2000, path });
    return src ? (await readAll(src, 64 * 1024)).toString() : null;
  };
  // PXELINUX asks for its config by MAC first: that ties the address to the host (and the file is absent).
  assert.equal(await get('198.18.0.10', 'pxelinux.cfg/01-52-54-00-aa-bb-01'), null);
  assert.equal(clients.identity('198.18.0.10').mac, '52:54:00:aa:bb:01');
  assert.equal(clients.identity('198.18.0.10').name, 'desk');
  assert.equal(await get('198.18.0.10', 'pxelinux.cfg/C612000A'), null);
  assert.match((await get('198.18.0.10', 'PXELINUX.CFG/Default'))!, /nbdroot=127\.0\.0\.1\/pc/, 'FAT lookups are case-insensitive');
  assert.equal((await get('198.18.0.10', 'pxelinux.0'))!.length, 1000);
  // A Pi by the serial prefix of its paths.
  assert.equal(await get('198.18.0.11', '12345678/cmdline.txt'), PI_OS_LAYOUT.cmdline);
  assert.equal(clients.identity('198.18.0.11').serial, '12345678');
  // A host served from a directory, learned from DHCP (the daemon feeds the DHCPREQUEST's address in).
  clients.learn('198.18.0.12', { mac: '52:54:00:aa:bb:02' });
  assert.equal(await get('198.18.0.12', 'ipxe.efi'), 'ipxe');
  // Unknown: no MAC known for the address, no defaults; an unconfigured serial.
  assert.equal(await get('198.18.0.13', 'pxelinux.0'), null);
  assert.equal(await get('198.18.0.13', 'abcdef01/start4.elf'), null);
  assert.equal(clients.identity('198.18.0.13').serial, undefined, 'an unconfigured serial is not learned');
});

test('NBD: exports follow the config, allow-lists hide exports, one writer per read-write image', async (t) => {
  const dir = tempDir(t);
  const img = join(dir, 'a.img');
  writeFileSync(img, Buffer.alloc(1 << 20));
  const cfg = config(`server: { stateDir: ${dir}/state }
images:
  a: { path: ${img}, export: root-a, allow: [198.18.0.0/24] }
  b: { path: ${img}, mode: readonly }
`);
  const pool = new ImagePool();
  t.after(() => pool.close());
  const reg = new Registry(cfg, pool, new ClientTable());
  assert.deepEqual(reg.list({ address: '198.18.0.5', tls: false }).map((e) => e.name), ['root-a', 'b']);
  assert.deepEqual(reg.list({ address: '198.18.1.5', tls: false }).map((e) => e.name), ['b']);
  const hidden = await reg.open('root-a', { address: '198.18.1.5', tls: false });
  assert.ok('refused' in hidden && hidden.reason === 'unknown');
  const first = await reg.open('root-a', { address: '198.18.0.5', tls: false });
  assert.ok(!('refused' in first) && !first.readOnly);
  const second = await reg.open('root-a', { address: '198.18.0.6', tls: false });
  assert.ok('refused' in second && second.reason === 'policy' && /in use by another client/.test(second.message) && !second.message.includes('198.18.0.5'), 'the refusal does not say who holds it');
  // A reload (a new snapshot over the same pool) keeps the writer lock.
  const reg2 = new Registry(cfg, pool, new ClientTable());
  const third = await reg2.open('root-a', { address: '198.18.0.6', tls: false });
  assert.ok('refused' in third);
  first.release();
  const fourth = await reg2.open('root-a', { address: '198.18.0.6', tls: false });
  assert.ok(!('refused' in fourth));
  fourth.release();
  const ro = await reg.open('b', { address: '198.18.1.9', tls: false });
  assert.ok(!('refused' in ro) && ro.readOnly);
});
