/**
 * `netbootd status --follow` as a user runs it: the real CLI process, following the daemon's event stream
 * (with the status token from the config), prints one line per step of a Pi's boot driven by real TFTP
 * (curl) and NBD clients, and an unknown Pi that appears while it follows comes with its add-pi command.
 * Stopped with SIGINT by its pid, it exits 0.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { cliCommand, haveTools, run, tempDir } from '../helpers/tools.js';
import { buildPiOsImage } from '../helpers/piimage.js';
import { startDaemon, testConfig } from './harness.js';
import { RawNbd } from '../nbd/client.js';

const TOKEN = 'follow-test-token-0123456789';

test('status --follow: a line per stage of a live Pi boot, an unknown Pi with its add command; SIGINT ends it', { timeout: 60_000 }, async (t) => {
  if (!haveTools(t, 'curl', 'mcopy', 'sfdisk', 'mkfs.vfat', 'mkfs.ext4')) return;
  const dir = tempDir(t);
  const image = join(dir, 'pi.img');
  await buildPiOsImage(image);
  const config = testConfig(join(dir, 'state'), `images:
  pios: { path: ${image}, mode: cow }
pis:
  "11111111": { image: pios }
`).replace('status: { enabled: false }', `status: { address: 127.0.0.1, port: 0, token: ${TOKEN} }`);
  const d = await startDaemon(t, dir, config);
  const url = `http://127.0.0.1:${d.daemon.bound.status!}`;
  const tftp = async (source: string, path: string): Promise<number> =>
    (await run('curl', ['-sS', '-o', '/dev/null', '--interface', source, `tftp://127.0.0.1:${d.tftpPort}/${path}`], { allowFail: true })).code;

  // A boot before the CLI starts: the first snapshot lists it once, without old hints.
  assert.equal(await tftp('127.0.0.2', '88888888/start4.elf'), 68);

  const { cmd, args } = cliCommand();
  const child = spawn(cmd, [...args, 'status', '--follow', '--config', d.configPath, '--url', url], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const lines = (): string[] => out.split('\n').filter(Boolean);
  const waitLine = async (re: RegExp, what: string): Promise<string> => {
    const end = Date.now() + 10_000;
    for (;;) {
      const l = lines().find((x) => re.test(x));
      if (l) return l;
      if (Date.now() > end || child.exitCode !== null) throw new Error(`--follow never printed ${what}; it printed:\n${out}\nstderr: ${err}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  const past = await waitLine(/ 88888888 127\.0\.0\.2 \[refused\] /, 'the client seen before it started');
  assert.doesNotMatch(out, /hint:/, `old hints are not repeated at start: ${past}`);

  // The live boot, step by step (the stream sends at most one update a second: each step waits for its line).
  assert.equal(await tftp('127.0.0.1', '11111111/start4.elf'), 0);
  await waitLine(/^\d\d:\d\d:\d\d 11111111 127\.0\.0\.1 \[loader\] TFTP 11111111\/start4\.elf: sent/, 'the loader line');
  assert.equal(await tftp('127.0.0.1', '11111111/kernel8.img'), 0);
  await waitLine(/ 11111111 127\.0\.0\.1 \[kernel\] TFTP 11111111\/kernel8\.img: sent/, 'the kernel line');
  const nbd = await RawNbd.connect(d.nbdPort, { localAddress: '127.0.0.1' });
  await nbd.handshake();
  await nbd.go('pios');
  await waitLine(/ 11111111 127\.0\.0\.1 \[root\] NBD attached export pios \(read-write, cow, overlay pi-11111111\) \(booted in \d+\.\d s\)/, 'the root line');
  nbd.destroy();
  await waitLine(/ 11111111 127\.0\.0\.1 \[down\] NBD detached pios: /, 'the down line');

  // A Pi that is not configured shows up while following: its line carries the command that would serve it.
  assert.equal(await tftp('127.0.0.3', '99999999/start4.elf'), 68);
  await waitLine(/ 99999999 127\.0\.0\.3 \[refused\] TFTP 99999999\/start4\.elf: not found/, 'the unknown Pi');
  assert.match(out, /\n {4}hint: Pi serial 99999999 is not under `pis`; run: netbootd add-pi 99999999 --image pios\n/);

  const stages = lines().filter((l) => / 11111111 /.test(l)).map((l) => /\[(\S+)\]/.exec(l)![1]);
  assert.deepEqual(stages, ['loader', 'kernel', 'root', 'down'], out);

  // Ctrl-C, by pid: it stops following and exits cleanly.
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  process.kill(child.pid!, 'SIGINT');
  assert.equal(await exited, 0, err);
});
