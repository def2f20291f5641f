/**
 * The README's Raspberry Pi walk-through ("### A Raspberry Pi 4", step 2), run as written (issue 13): the
 * shell block between `<!-- pi-walkthrough -->` markers is taken out of README.md and run with bash — only
 * its settings lines get the test's values (server 198.18.0.2, a serial, a Pi OS style image built without
 * mounts by scripts/make-demo-image.sh, a config made as the Install section does) — in a folder holding the
 * Pi's initrd.img, with `netbootd` the source tree's CLI: `netbootd prep` then `netbootd check`. The daemon
 * then serves that config in a network namespace, and a client there fetches the Pi's boot files by TFTP
 * (curl) under its serial: byte for byte what the image's boot partition holds, the rewritten cmdline.txt
 * and the copied initrd.img included.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { haveTools, IN_CI } from '../helpers/tools.js';
import { NetLab } from '../helpers/netns.js';
import { readmeBlocks, runBlock, walkthroughWork, withSettings } from '../helpers/readme.js';
import { buildPiOsImage, PI_IMAGE_TOOLS } from '../helpers/piimage.js';
import { daemonAvailable, DAEMON_MISSING } from './artifacts.js';
import { fatFiles } from './image.js';
import { waitListening, SERVER_ADDRESS, PREFIX } from './stacks.js';
import { report } from './setup.js';

const SERIAL = '3a4b5c6d';

test('README walk-through for a Raspberry Pi, run as written: prep + check, then the boot files by TFTP from the daemon',
  { timeout: 180_000, skip: daemonAvailable() ? false : DAEMON_MISSING }, async (t) => {
    if (!NetLab.available()) {
      const msg = 'needs root (network namespaces) and iproute2';
      if (IN_CI) throw new Error(msg);
      t.skip(msg);
      return;
    }
    if (!haveTools(t, ...PI_IMAGE_TOOLS, 'curl', 'ss', 'mtype', 'mdir')) return;
    let lab: NetLab | undefined;
    const { work, env } = walkthroughWork('netbootd-pi-walkthrough-', () => lab?.destroy());

    // What step 1 leaves: the Pi OS image on the server, the Pi's initrd.img in the current folder, and the
    // config the Install section made (here: this server's address and a private state folder).
    const img = join(work, 'jammy.img');
    await buildPiOsImage(img);
    const initrd = Buffer.alloc(3 * 1024 * 1024 + 77, 0x5a);
    writeFileSync(join(work, 'initrd.img'), initrd);
    const config = join(work, 'netbootd.yaml');
    writeFileSync(config, `server:\n  address: ${SERVER_ADDRESS}\n  stateDir: ${join(work, 'state')}\nstatus:\n  enabled: false\n`);
    const settings = { SERVER: SERVER_ADDRESS, SERIAL, IMG: img, CONFIG: config };

    const [steps] = readmeBlocks('pi-walkthrough');
    const t0 = Date.now();
    const out = await runBlock(withSettings(steps!, settings), { cwd: work, env, timeoutMs: 120_000 });
    report(t, `README Pi walk-through (prep, check) took ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    assert.match(out, /no errors/, out);
    const fat = await fatFiles(img, 1);
    assert.match(fat.get('cmdline.txt')?.toString() ?? '', new RegExp(` ip=dhcp nbdroot=${SERVER_ADDRESS.replace(/\./g, '\\.')}/jammy root=/dev/nbd0p2\\n$`));
    assert.ok(fat.get('initrd.img')?.equals(initrd), 'prep copied initrd.img into the boot partition');
    const yaml = readFileSync(config, 'utf8');
    assert.match(yaml, /jammy:/);
    assert.match(yaml, new RegExp(`"?${SERIAL}"?:`));

    // The daemon on that config, in a namespace; a client there asks for the Pi's files under its serial.
    lab = await NetLab.create('piw');
    const server = await lab.addHost('server', { address: `${SERVER_ADDRESS}/${PREFIX}` });
    const client = await lab.addHost('pi', { address: `198.18.0.50/${PREFIX}`, mac: 'dc:a6:32:4e:2e:09' });
    const daemon = lab.start(server, 'netbootd', ['serve', '--config', config], { cwd: work, env });
    const chunks: Buffer[] = [];
    daemon.stdout?.on('data', (c: Buffer) => chunks.push(c));
    daemon.stderr?.on('data', (c: Buffer) => chunks.push(c));
    t.after(() => daemon.stop());
    await Promise.race([
      waitListening(lab, server, [['udp', 69], ['tcp', 10809]], 30_000),
      new Promise((_, reject) => daemon.once('exit', (c) => reject(new Error(`netbootd serve exited ${c}:\n${Buffer.concat(chunks).toString()}`)))),
    ]);
    const got = join(work, 'got');
    mkdirSync(got);
    for (const f of ['start4.elf', 'config.txt', 'cmdline.txt', 'initrd.img']) {
      const res = await lab.exec(client, 'curl', ['-sS', '--max-time', '20', '-o', join(got, f), `tftp://${SERVER_ADDRESS}/${SERIAL}/${f}`], { allowFail: true });
      assert.equal(res.code, 0, `TFTP ${SERIAL}/${f}: ${res.stderr}\n${Buffer.concat(chunks).toString().split('\n').slice(-20).join('\n')}`);
      assert.ok(readFileSync(join(got, f)).equals(fat.get(f)!), `${f} by TFTP differs from the image's boot partition`);
    }
    report(t, `README Pi walk-through: start4.elf, config.txt, cmdline.txt, initrd.img fetched by TFTP under ${SERIAL}, byte-exact`);
  });
