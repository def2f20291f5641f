import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Journey, fileStage, shownStage, type Stage } from '../../src/registry/journey.js';

const PI = { mac: 'dc:a6:32:01:02:03', model: 'pi4-eeprom', firmware: 'pi' };
const SERIAL = '1234abcd';
const IP = '198.18.0.10';

/** A Pi 4 boot: DHCP by MAC, TFTP by serial, NBD by address. */
function piBoot(j: Journey, t0: number): void {
  j.dhcp(PI, { answered: true, reason: 'raspberry pi', vendorClass: 'PXEClient:Arch:00000:UNDI:002001' }, t0);
  j.dhcp({ ...PI, ip: IP }, { answered: true, reason: 'raspberry pi' }, t0 + 100);
  j.notFound({ ip: IP, serial: SERIAL, mac: PI.mac }, { via: 'tftp', path: `${SERIAL}/recover4.elf`, reason: 'no such file', served: true, looked: 'the boot partition of image pios' }, t0 + 200);
  j.file({ ip: IP, serial: SERIAL, mac: PI.mac }, { via: 'tftp', path: `${SERIAL}/start4.elf`, outcome: 'complete', bytes: 2_000_000, size: 2_000_000, ms: 400 }, t0 + 600);
  j.file({ ip: IP, serial: SERIAL }, { via: 'tftp', path: `${SERIAL}/kernel8.img`, outcome: 'complete', bytes: 8_000_000, ms: 1500 }, t0 + 2500);
  j.attach({ ip: IP, serial: SERIAL }, { export: 'pios', readOnly: false, mode: 'cow', overlay: `pi-${SERIAL}` }, t0 + 9000);
}

test('a Pi boot is one story: DHCP by MAC and TFTP by serial merge; stages in order; duration first DHCP → attach', () => {
  const reached: Stage[] = [];
  const durations: number[] = [];
  const j = new Journey({ stalledAfterMs: 60_000, upAfterMs: 30_000 });
  j.hooks = { stage: (s) => reached.push(s), bootDuration: (ms) => durations.push(ms) };
  piBoot(j, 1_000_000);
  assert.equal(j.size, 1, 'one client, not one per identity');
  const c = j.get(SERIAL, 1_009_000)!;
  assert.equal(c.id, SERIAL);
  assert.equal(c.mac, PI.mac);
  assert.equal(c.model, 'pi4-eeprom');
  assert.equal(c.boots.length, 1);
  assert.equal(c.stage, 'root');
  assert.equal(c.boots[0]!.durationMs, 9000);
  assert.deepEqual(durations, [9000]);
  assert.deepEqual(reached, ['dhcp', 'loader', 'kernel', 'root']);
  // recover4.elf is an optional probe: no hint for it.
  assert.equal(c.boots[0]!.hints.length, 0);
  assert.equal(j.get(PI.mac)?.id, SERIAL, 'found by MAC');
  assert.equal(j.get(IP)?.id, SERIAL, 'found by address');
  // Root in use: written → up; detach → down.
  j.io({ ip: IP }, 1 << 20, 4096, 1_010_000);
  assert.equal(j.get(SERIAL, 1_010_000)!.stage, 'up');
  j.detach({ ip: IP }, { export: 'pios' }, 1_020_000);
  const after = j.get(SERIAL, 1_020_000)!;
  assert.equal(after.stage, 'down');
  assert.match(after.boots[0]!.lines.at(-1)!, /NBD detached pios: read 1\.0 MiB, wrote 4\.0 KiB/);
  // The next DHCP starts a new boot.
  j.dhcp(PI, { answered: true, reason: 'raspberry pi' }, 1_100_000);
  assert.equal(j.get(SERIAL, 1_100_000)!.boots.length, 2);
  assert.equal(j.get(SERIAL, 1_100_000)!.stage, 'dhcp');
});

test('a read-only root counts as up after upAfterMs', () => {
  const j = new Journey({ upAfterMs: 5000 });
  j.file({ ip: IP }, { via: 'tftp', path: 'pxelinux.0', outcome: 'complete', bytes: 40_000, ms: 10 }, 0);
  j.attach({ ip: IP }, { export: 'ro', readOnly: true }, 1000);
  j.io({ ip: IP }, 100, 0, 2000);
  assert.equal(j.get(IP, 2000)!.stage, 'root');
  j.io({ ip: IP }, 200, 0, 6500);
  assert.equal(j.get(IP, 6500)!.stage, 'up');
});

test('stalled-at-<stage> after the quiet time, with the hint that fits', () => {
  const stalled: Stage[] = [];
  const j = new Journey({ stalledAfterMs: 10_000 });
  j.hooks = { stalled: (s) => stalled.push(s) };
  // Answered by DHCP, never asked for a file: firewall?
  j.dhcp({ mac: '52:54:00:00:00:01', ip: '198.18.0.20' }, { answered: true, reason: 'listed host', bootFile: 'pxelinux.0' }, 0);
  // Loaded its kernel, never attached: nbdroot?
  j.dhcp({ mac: '52:54:00:00:00:02', ip: '198.18.0.21' }, { answered: true, reason: 'listed host' }, 0);
  j.file({ ip: '198.18.0.21', mac: '52:54:00:00:00:02' }, { via: 'tftp', path: 'vmlinuz', outcome: 'complete', bytes: 1, ms: 1 }, 100);
  assert.equal(j.get('52:54:00:00:00:01', 5000)!.stage, 'dhcp');
  j.tick(10_500);
  const a = j.get('52:54:00:00:00:01', 10_500)!;
  assert.equal(a.stage, 'stalled-at-dhcp');
  assert.equal(a.boots[0]!.hints[0]!.code, 'no-tftp');
  assert.match(a.boots[0]!.hints[0]!.text, /firewall/);
  const b = j.get('198.18.0.21', 10_500)!;
  assert.equal(b.stage, 'stalled-at-kernel');
  assert.equal(b.boots[0]!.hints[0]!.code, 'no-nbd');
  assert.match(b.boots[0]!.hints[0]!.text, /nbdroot=/);
  j.tick(20_000);
  assert.deepEqual(stalled.sort(), ['dhcp', 'kernel'], 'noted once per boot');
});

test('unknown clients carry the exact add command; serving them clears it', () => {
  const j = new Journey();
  j.notFound({ ip: IP, serial: 'deadbeef' }, { via: 'tftp', path: 'deadbeef/start4.elf', reason: 'Pi serial deadbeef is not under `pis`', fix: 'netbootd add-pi deadbeef --image pios', served: false }, 0);
  j.dhcp({ mac: '52:54:00:aa:bb:cc' }, { answered: false, reason: 'MAC not under hosts and no defaults', fix: 'netbootd add-host 52:54:00:aa:bb:cc --image pios' }, 0);
  const unknown = j.unknown(1);
  assert.deepEqual(unknown.map((u) => u.unknown!.fix).sort(), ['netbootd add-host 52:54:00:aa:bb:cc --image pios', 'netbootd add-pi deadbeef --image pios']);
  assert.equal(j.get('deadbeef')!.boots[0]!.hints[0]!.code, 'serial-not-configured');
  assert.equal(j.get('52:54:00:aa:bb:cc')!.boots[0]!.hints[0]!.code, 'host-not-configured');
  assert.equal(j.get('deadbeef', 1)!.stage, 'refused', 'given nothing, with a reason: refused, not "dhcp"');
  assert.equal(j.get('52:54:00:aa:bb:cc', 1)!.stage, 'refused');
  j.file({ ip: IP, serial: 'deadbeef' }, { via: 'tftp', path: 'deadbeef/start4.elf', outcome: 'complete', bytes: 1, ms: 1 }, 1000);
  assert.equal(j.get('deadbeef')!.unknown, undefined);
  assert.notEqual(j.get('deadbeef', 1001)!.stage, 'refused', 'once served, its real stage');
});

test('missing essential files give hints (start4.elf: the Pi 5-only image); optional probes do not', () => {
  const j = new Journey();
  const who = { ip: IP, serial: SERIAL };
  for (const f of ['recover4.elf', 'pieeprom.sig', 'dt-blob.bin', 'config.txt']) j.notFound(who, { via: 'tftp', path: `${SERIAL}/${f}`, reason: 'no such file', served: true, looked: 'the boot partition of image pi5' }, 0);
  assert.equal(j.get(SERIAL)!.boots[0]!.hints.length, 0);
  j.notFound(who, { via: 'tftp', path: `${SERIAL}/start4.elf`, reason: 'no such file', served: true, looked: 'the boot partition of image pi5' }, 10);
  const codes = j.get(SERIAL)!.boots[0]!.hints.map((h) => h.code);
  assert.deepEqual(codes, ['file-missing', 'pi5-only']);
  assert.match(j.get(SERIAL)!.boots[0]!.hints[0]!.text, /is not in the boot partition of image pi5/);
  assert.match(j.get(SERIAL)!.boots[0]!.hints[1]!.text, /Pi 5 only/);
  // A PC's DHCP boot file is essential whatever its name.
  j.notFound({ ip: '198.18.0.30' }, { via: 'tftp', path: 'weird/boot.bin', reason: 'no such file', served: true, bootFile: 'weird/boot.bin' }, 0);
  assert.equal(j.get('198.18.0.30')!.boots[0]!.hints[0]!.code, 'file-missing');
});

test('NBD refusals: an unknown export points at cmdline.txt; allow-list and writer refusals say so', () => {
  const j = new Journey();
  j.refused({ ip: IP, serial: SERIAL }, { export: 'other', reason: 'unknown', message: "no export named 'other'", exports: ['pios'] }, 0);
  const h1 = j.get(SERIAL)!.boots[0]!.hints[0]!;
  assert.equal(h1.code, 'cmdline-export');
  assert.match(h1.text, /cmdline\.txt \(nbdroot=\)/);
  assert.match(h1.text, /pios/);
  j.refused({ ip: '198.18.0.40' }, { export: 'pios', reason: 'policy', message: "export 'pios' is in use by another client" }, 0);
  assert.match(j.get('198.18.0.40')!.boots[0]!.hints[0]!.text, /held by another writer/);
  j.refused({ ip: '198.18.0.41' }, { export: 'pios', reason: 'policy', message: 'address not allowed' }, 0);
  assert.match(j.get('198.18.0.41')!.boots[0]!.hints[0]!.text, /allow-list/);
  // Refusals repeated: folded into one event with a count.
  for (let i = 0; i < 50; i++) j.refused({ ip: '198.18.0.41' }, { export: 'pios', reason: 'policy', message: 'address not allowed' }, i);
  const boot = j.get('198.18.0.41')!.boots[0]!;
  assert.equal(boot.events.length, 1);
  assert.equal(boot.events[0]!.count, 51);
});

test('DHCP ignored says why; iPXE asking again mid-boot stays the same boot', () => {
  const j = new Journey();
  j.dhcp({ mac: '52:54:00:00:00:09', ip: '198.18.0.9' }, { answered: false, reason: 'dhcp.answerPis is false' }, 0);
  assert.equal(j.get('52:54:00:00:00:09')!.boots[0]!.hints[0]!.code, 'dhcp-ignored');
  const pc = { mac: '52:54:00:00:00:0a', ip: '198.18.0.10' };
  j.dhcp(pc, { answered: true, reason: 'listed host, iPXE chain-load by TFTP' }, 0);
  j.file(pc, { via: 'tftp', path: 'undionly.kpxe', outcome: 'complete', bytes: 70_000, ms: 50 }, 500);
  j.dhcp(pc, { answered: true, reason: 'listed host, iPXE: HTTP script', message: 'iPXE' }, 1500);
  j.file(pc, { via: 'http', path: '/boot.ipxe', outcome: 'complete', status: 200, bytes: 300, ms: 2 }, 1600);
  j.file(pc, { via: 'http', path: '/vmlinuz', outcome: 'complete', status: 200, bytes: 8e6, ms: 300 }, 2000);
  const c = j.get(pc.mac, 2000)!;
  assert.equal(c.boots.length, 1);
  assert.equal(c.stage, 'kernel');
  assert.equal(c.boots[0]!.events.length, 5);
});

test('memory is bounded: clients, boots per client, events per boot, string lengths', () => {
  const j = new Journey({ maxClients: 10, bootsPerClient: 3, eventsPerBoot: 20 });
  for (let i = 0; i < 100; i++) j.dhcp({ mac: `52:54:00:00:01:${(i % 256).toString(16).padStart(2, '0')}`, ip: `198.18.1.${i}` }, { answered: true, reason: 'x' }, i);
  assert.equal(j.size, 10);
  assert.equal(j.get('52:54:00:00:01:00'), null, 'the oldest went first');
  const who = { ip: IP, serial: SERIAL };
  for (let b = 0; b < 10; b++) {
    j.attach(who, { export: 'e', readOnly: true }, b * 1e6);
    j.detach(who, { export: 'e' }, b * 1e6 + 1);
    j.file(who, { via: 'tftp', path: 'start4.elf', outcome: 'complete', bytes: 1, ms: 1 }, b * 1e6 + 2);
  }
  assert.equal(j.get(SERIAL)!.boots.length, 3);
  for (let i = 0; i < 500; i++) j.file(who, { via: 'tftp', path: `f${i}/${'x'.repeat(5000)}`, outcome: 'complete', bytes: 1, ms: 1 }, 2e7 + i);
  const boot = j.get(SERIAL)!.boots[0]!;
  assert.equal(boot.events.length, 20);
  assert.ok(boot.dropped > 0);
  assert.ok(boot.events.every((e) => !('path' in e) || e.path.length <= 256));
  assert.ok(JSON.stringify(j.toJSON()).length < 400_000);
});

test('journeys survive a save and load (attachments do not: attached becomes down)', () => {
  const j = new Journey();
  piBoot(j, 5_000_000);
  j.notFound({ ip: '198.18.0.99', serial: 'feedface' }, { via: 'tftp', path: 'feedface/start4.elf', reason: 'Pi serial feedface is not under `pis`', fix: 'netbootd add-pi feedface --image pios', served: false }, 5_000_000);
  const saved = JSON.parse(JSON.stringify(j.toJSON())) as unknown;
  const k = new Journey();
  assert.equal(k.load(saved), 2);
  const c = k.get(PI.mac, 5_010_000)!;
  assert.equal(c.id, SERIAL);
  assert.equal(c.stage, 'down');
  assert.equal(c.boots[0]!.durationMs, 9000);
  assert.equal(k.get('feedface')!.unknown!.fix, 'netbootd add-pi feedface --image pios');
  assert.equal(k.load({ clients: [null, 1, { boots: 'x' }, { ip: 5, boots: [] }] }), 0, 'garbage is skipped');
  assert.equal(k.load('nonsense'), 0);
});

test('file stages and shown stages', () => {
  for (const f of ['kernel8.img', '1234abcd/kernel_2712.img', 'vmlinuz-6.1.0-18-amd64', 'initrd.img', 'bcm2711-rpi-4-b.dtb', 'overlays/vc4-kms-v3d.dtbo', 'cmdline.txt', 'casper/vmlinuz']) assert.equal(fileStage(f), 'kernel', f);
  for (const f of ['start4.elf', 'bootcode.bin', 'config.txt', 'pxelinux.0', 'ldlinux.c32', 'pxelinux.cfg/default', 'ipxe.efi', '/boot.ipxe']) assert.equal(fileStage(f), 'loader', f);
  const boot = { stage: 'loader', lastActivity: 0, attached: 0 } as Parameters<typeof shownStage>[0];
  assert.equal(shownStage(boot, 5, 10), 'loader');
  assert.equal(shownStage(boot, 10, 10), 'stalled-at-loader');
  assert.equal(shownStage({ ...boot, stage: 'up' }, 1e9, 10), 'up');
});

test('the kernel command line a client was served: a refusal noted before it was read is rewritten with what its nbdroot= names; a stall quotes it', () => {
  const j = new Journey({ stalledAfterMs: 60_000 });
  const who = { ip: IP, serial: SERIAL };
  const t0 = 2_000_000;
  j.file(who, { via: 'tftp', path: `${SERIAL}/cmdline.txt`, outcome: 'complete', bytes: 100, ms: 2 }, t0);
  // The NBD refusal arrives before the daemon has read the file back: the generic hint first...
  j.refused(who, { export: 'other', reason: 'unknown', message: 'no such export', exports: ['pios'] }, t0 + 50);
  assert.match(j.get(SERIAL)!.boots[0]!.hints[0]!.text, /its cmdline\.txt \(nbdroot=\) names another export, port or server$/);
  // ...then what the file says, in its place (one hint, not two).
  j.cmdline(who, { path: `${SERIAL}/cmdline.txt`, nbdroot: '198.18.0.2/other', problem: 'export `other` is not one this server exports (pios)', exports: ['pios'] });
  const hints = j.get(SERIAL)!.boots[0]!.hints;
  assert.deepEqual(hints.map((h) => h.code), ['cmdline-export']);
  assert.equal(hints[0]!.text, 'asked for NBD export `other`, which is not configured (this server exports: pios): the 1234abcd/cmdline.txt it was served says nbdroot=198.18.0.2/other: export `other` is not one this server exports (pios)');

  // Another client loaded its kernel and a command line naming another server, then never came: the stall says so.
  const pc = { ip: '198.18.0.11', mac: '52:54:00:00:00:01' };
  j.file(pc, { via: 'tftp', path: 'vmlinuz', outcome: 'complete', bytes: 1000, ms: 10 }, t0);
  j.file(pc, { via: 'tftp', path: 'pxelinux.cfg/default', outcome: 'complete', bytes: 100, ms: 1 }, t0 + 10);
  j.cmdline(pc, { path: 'pxelinux.cfg/default', nbdroot: '10.0.0.9/pios', problem: 'it names server 10.0.0.9, not this server (198.18.0.2)' });
  j.tick(t0 + 70_000);
  const stalled = j.get(pc.mac, t0 + 70_000)!;
  assert.equal(stalled.stage, 'stalled-at-kernel');
  assert.deepEqual(stalled.boots[0]!.hints.map((h) => h.text), ['loaded its kernel, then never connected to NBD (60 s): the pxelinux.cfg/default it was served says nbdroot=10.0.0.9/pios: it names server 10.0.0.9, not this server (198.18.0.2)']);
});

test('DHCP host name (option 12): kept per client, clipped, control characters replaced; it survives a save and load', () => {
  const j = new Journey();
  j.dhcp({ mac: '52:54:00:00:00:02' }, { answered: true, reason: 'hosts', hostname: `<script>x</script>\u0007${'h'.repeat(100)}` }, 1000);
  const c = j.get('52:54:00:00:00:02')!;
  assert.equal(c.hostname!.length, 64);
  assert.ok(c.hostname!.startsWith('<script>x</script>?hhh'), c.hostname);
  assert.equal(j.summaries()[0]!.hostname, c.hostname);
  const again = new Journey();
  again.load(JSON.parse(JSON.stringify(j.toJSON())));
  assert.equal(again.get('52:54:00:00:00:02')!.hostname, c.hostname);
});
