/**
 * Hot reload survives every way a config file is saved: replaced by rename (sed -i, editors, add-pi), written
 * in place, deleted then created. Each save is picked up, not just the first.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/tools.js';
import { startDaemon, testConfig } from './harness.js';
import { netbootd } from '../helpers/piimage.js';

async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

test('the config is reloaded after 3 replace-style saves, 2 in-place writes, a delete-then-create and add-pi', async (t) => {
  const dir = tempDir(t);
  const image = join(dir, 'a.img');
  writeFileSync(image, Buffer.alloc(1 << 20));
  const base = testConfig(join(dir, 'state'), `images:\n  a: { path: ${image} }\npis:\n`);
  const d = await startDaemon(t, dir, base, { watch: true });
  const pis = (): string[] => Object.keys(d.daemon.config.pis).sort();
  const withPis = (...serials: string[]): string => base + serials.map((s) => `  "${s}": { image: a }\n`).join('');

  const saves: Array<[string, (text: string) => void]> = [
    ['rename 1', (text) => { writeFileSync(`${d.configPath}.tmp`, text); renameSync(`${d.configPath}.tmp`, d.configPath); }],
    ['rename 2', (text) => { writeFileSync(`${d.configPath}.new`, text); renameSync(`${d.configPath}.new`, d.configPath); }],
    ['rename 3', (text) => { writeFileSync(`${d.configPath}~`, text); renameSync(`${d.configPath}~`, d.configPath); }],
    ['in place 1', (text) => writeFileSync(d.configPath, text)],
    ['in place 2', (text) => writeFileSync(d.configPath, text)],
    ['delete then create', (text) => { unlinkSync(d.configPath); setTimeout(() => writeFileSync(d.configPath, text), 50); }],
  ];
  const serials = ['00000001', '00000002', '00000003', '00000004', '00000005', '00000006'];
  for (const [i, [how, save]] of saves.entries()) {
    const want = serials.slice(0, i + 1);
    save(withPis(...want));
    await until(`${how} to be reloaded`, () => pis().join() === want.join());
  }
  // add-pi replaces the file too.
  const r = await netbootd(['add-pi', '00000007', '--image', 'a', '--config', d.configPath]);
  assert.equal(r.code, 0, r.stderr);
  await until('add-pi to be reloaded', () => pis().includes('00000007'));
  // An editor's swap file beside it is not the config (counted once every reload above has settled).
  await new Promise((res) => setTimeout(res, 800));
  const reloads = d.lines.filter((l) => l.msg?.startsWith('config reloaded')).length;
  writeFileSync(join(dir, '.netbootd.yaml.swp'), 'junk');
  await new Promise((res) => setTimeout(res, 600));
  assert.equal(d.lines.filter((l) => l.msg?.startsWith('config reloaded')).length, reloads);
  assert.match(readFileSync(d.configPath, 'utf8'), /00000007/);
});
