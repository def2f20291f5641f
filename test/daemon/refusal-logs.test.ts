/**
 * Every NBD refusal leaves one line at info (rate-limited), with the client and the reason: an unknown
 * export, an address off the allow-list, a second writer, an export that needs TLS. No log line of the
 * daemon ever carries a key twice (`jq` keeps only the last one).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/tools.js';
import { RawNbd } from '../nbd/client.js';
import * as P from '../../src/nbd/packet.js';
import { startDaemon, testConfig } from './harness.js';

/** The top-level keys of a JSON object text, in order, duplicates included. */
function topLevelKeys(json: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < json.length; i++) {
    const c = json[i]!;
    if (c === '"') {
      let j = i + 1;
      while (json[j] !== '"') j += json[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) keys.push(JSON.parse(json.slice(i, j + 1)) as string);
      expectKey = false;
      i = j;
    } else if (c === '{' || c === '[') {
      depth++;
      expectKey = c === '{' && depth === 1;
    } else if (c === '}' || c === ']') depth--;
    else if (c === ',' && depth === 1) expectKey = true;
  }
  return keys;
}

async function tryGo(port: number, from: string, name: string): Promise<{ ok: boolean; c: RawNbd }> {
  const c = await RawNbd.connect(port, { localAddress: from });
  await c.handshake();
  c.sendOption(P.OPT_GO, RawNbd.infoData(name));
  for (;;) {
    const r = await c.readOptionReply();
    if (r.type === P.REP_ACK) return { ok: true, c };
    if (r.type >= 0x80000000) return { ok: false, c };
  }
}

test('each kind of NBD refusal is one info line with the client and the reason; no duplicate keys anywhere', async (t) => {
  const dir = tempDir(t);
  const image = join(dir, 'a.img');
  writeFileSync(image, Buffer.alloc(1 << 20));
  const d = await startDaemon(t, dir, testConfig(join(dir, 'state'), `images:
  open: { path: ${image} }
  lab: { path: ${image}, mode: readonly, allow: [127.0.0.9] }
`));
  const port = d.nbdPort;
  const held = await tryGo(port, '127.0.0.2', 'open');
  assert.equal(held.ok, true);
  const refusals: Array<[string, string, RegExp]> = [
    ['127.0.0.3', 'nope', /no export named 'nope'/],
    ['127.0.0.4', 'lab', /no export named 'lab'/],
    ['127.0.0.5', 'open', /one writer/],
  ];
  for (const [from, name] of refusals) {
    const r = await tryGo(port, from, name);
    assert.equal(r.ok, false, `${from} ${name} refused`);
    r.c.destroy();
  }
  // The same refusal again at once: rate-limited, not a second line.
  (await tryGo(port, '127.0.0.3', 'nope')).c.destroy();
  held.c.destroy();
  await new Promise((r) => setTimeout(r, 100));
  const info = d.lines.filter((l) => l.level >= 30 && l.msg === 'nbd export refused');
  for (const [from, name, reason] of refusals) {
    const mine = info.filter((l) => l.ip === from && l.export === name);
    assert.equal(mine.length, 1, `one info line for ${name} from ${from}: ${JSON.stringify(info)}`);
    assert.match(String(mine[0]!.reason), reason);
  }
  // The refusal never names who holds the export.
  assert.ok(!info.some((l) => String(l.reason).includes('127.0.0.2')));
  for (const line of d.raw) {
    const keys = topLevelKeys(line);
    assert.equal(new Set(keys).size, keys.length, `duplicate key in ${line}`);
  }
  assert.ok(d.raw.length > 5);
});

test('an unconfigured Pi is named by the serial it asked for, with the reason and the command that would serve it', async (t) => {
  const { buildPiOsImage } = await import('../helpers/piimage.js');
  const { formatStatus } = await import('../../src/cli/serve.js');
  const dir = tempDir(t);
  const image = join(dir, 'pi.img');
  await buildPiOsImage(image);
  const d = await startDaemon(t, dir, testConfig(join(dir, 'state'), `images:\n  pios: { path: ${image} }\npis:\n  "12345678": { image: pios }\n`));
  // A known Pi boots from 127.0.0.1; then something there asks for an unknown serial.
  assert.ok(await d.fetch('12345678/config.txt'));
  assert.equal(await d.fetch('deadbeef/start4.elf'), null);
  const line = d.lines.find((l) => l.msg === 'TFTP request from a client this config does not serve');
  assert.ok(line, 'logged');
  assert.equal(line.level, 30);
  assert.equal(line.serial, 'deadbeef', 'named by the serial asked for, not the known Pi at that address');
  assert.match(String(line.reason), /Pi serial deadbeef is not under `pis`/);
  assert.equal(line.fix, 'netbootd add-pi deadbeef --image pios');
  const text = formatStatus(d.daemon.statusJson() as Parameters<typeof formatStatus>[0]);
  assert.match(text, /Asked but not served:\n {2}deadbeef 127\.0\.0\.1: Pi serial deadbeef is not under `pis` \(1 request, last deadbeef\/start4\.elf\); to serve it: netbootd add-pi deadbeef --image pios/);
  assert.match(text, /^NBD: 0 connections$/m);
});
