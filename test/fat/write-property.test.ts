/**
 * Property test of the FAT writer: random sequences of create / overwrite / write / truncate / delete /
 * mkdir / rmdir / rename, applied to an image through FatWriter and to an in-memory model, give the same
 * outcome for every operation (success, or the same error code), the same tree through our reader after
 * every operation, and at the end of each sequence the same tree through mdir/mcopy with `fsck.fat -n`
 * clean and identical FAT copies. 25 sequences per FAT type (CI time).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { FileBlockDevice } from '../../src/disk/blockdev.js';
import { FatVolume } from '../../src/fat/volume.js';
import { FatWriter } from '../../src/fat/writer.js';
import { FAT_TOOLS, mkfsVfat, prng, randomBytes, type MkfsOptions } from '../helpers/fatimg.js';
import { haveTools, tempDir } from '../helpers/tools.js';
import { readAll } from './read.js';
import { Model, expectTree } from './write-helpers.js';

const RUNS = Number(process.env.FAT_PROPERTY_RUNS ?? 25);
const SEED = process.env.FAT_PROPERTY_SEED === undefined ? undefined : Number(process.env.FAT_PROPERTY_SEED);
const NAMES = ['a.txt', 'A.TXT', 'Long name ü.bin', 'dir', 'DIR2', 'sub directory', 'ファイル', 'x'];

type Op =
  | { op: 'create'; path: string[]; size: number; seed: number }
  | { op: 'write'; path: string[]; pos: number; size: number; seed: number }
  | { op: 'truncate'; path: string[]; size: number }
  | { op: 'remove'; path: string[] }
  | { op: 'mkdir'; path: string[] }
  | { op: 'rmdir'; path: string[] }
  | { op: 'rename'; path: string[]; to: string[] };

function opArb(cs: number): fc.Arbitrary<Op> {
  const name = fc.constantFrom(...NAMES);
  const path = fc.oneof(
    { weight: 3, arbitrary: fc.tuple(name) },
    { weight: 3, arbitrary: fc.tuple(name, name) },
    { weight: 1, arbitrary: fc.tuple(name, name, name) },
  ) as fc.Arbitrary<string[]>;
  const size = fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 4 * cs + 3 }));
  return fc.oneof(
    { weight: 4, arbitrary: fc.record({ op: fc.constant('create' as const), path, size, seed: fc.integer({ min: 1, max: 1e9 }) }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('write' as const), path, pos: fc.integer({ min: 0, max: 3 * cs }), size, seed: fc.integer({ min: 1, max: 1e9 }) }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('truncate' as const), path, size }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('remove' as const), path }) },
    { weight: 3, arbitrary: fc.record({ op: fc.constant('mkdir' as const), path }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('rmdir' as const), path }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('rename' as const), path, to: path }) },
  );
}

const p = (parts: string[]): string => `/${parts.join('/')}`;

/** What the model says: an error code, or undefined (and the model is changed). */
function applyModel(m: Model, o: Op): string | undefined {
  const parentOk = (parts: string[]): string | undefined => {
    for (let i = 1; i < parts.length; i++) {
      const n = m.get(p(parts.slice(0, i)));
      if (!n) return 'ENOENT';
      if (!n.dir) return 'ENOTDIR';
    }
    return undefined;
  };
  const bad = parentOk(o.path);
  if (bad) return bad;
  const path = p(o.path);
  const cur = m.get(path);
  switch (o.op) {
    case 'create':
      if (cur?.dir) return 'EISDIR';
      m.set(path, { dir: false, data: randomBytes(prng(o.seed), o.size) });
      return undefined;
    case 'write': {
      if (!cur) return 'ENOENT';
      if (cur.dir) return 'EISDIR';
      const data = randomBytes(prng(o.seed), o.size);
      const out = Buffer.alloc(Math.max(cur.data.length, o.pos + o.size));
      cur.data.copy(out);
      data.copy(out, o.pos);
      m.set(path, { dir: false, data: out });
      return undefined;
    }
    case 'truncate': {
      if (!cur) return 'ENOENT';
      if (cur.dir) return 'EISDIR';
      const out = Buffer.alloc(o.size);
      cur.data.copy(out, 0, 0, Math.min(o.size, cur.data.length));
      m.set(path, { dir: false, data: out });
      return undefined;
    }
    case 'remove':
      if (!cur) return 'ENOENT';
      if (cur.dir) return 'EISDIR';
      m.delete(path);
      return undefined;
    case 'mkdir':
      if (cur) return 'EEXIST';
      m.set(path, { dir: true });
      return undefined;
    case 'rmdir':
      if (!cur) return 'ENOENT';
      if (!cur.dir) return 'ENOTDIR';
      if (m.children(path).length > 0) return 'ENOTEMPTY';
      m.delete(path);
      return undefined;
    case 'rename': {
      if (!cur) return 'ENOENT';
      const to = p(o.to);
      const bad2 = parentOk(o.to);
      if (bad2) return bad2;
      if (cur.dir) {
        const a = o.path.map((x) => x.toUpperCase());
        const b = o.to.map((x) => x.toUpperCase());
        if (b.length > a.length && a.every((x, i) => x === b[i])) return 'EINVAL';
      }
      const target = m.get(to);
      const sameEntry = to.toUpperCase() === path.toUpperCase();
      if (target && !sameEntry) {
        if (target.dir) return 'EEXIST';
        if (cur.dir) return 'ENOTDIR';
        m.delete(to);
      }
      const key = [...m.nodes.keys()].find((k) => k.toUpperCase() === path.toUpperCase())!;
      m.move(key, to);
      return undefined;
    }
  }
}

async function applyWriter(w: FatWriter, o: Op): Promise<string | undefined> {
  const path = p(o.path);
  try {
    switch (o.op) {
      case 'create':
        await w.writeFile(path, randomBytes(prng(o.seed), o.size));
        break;
      case 'write':
        await w.write(path, o.pos, randomBytes(prng(o.seed), o.size));
        break;
      case 'truncate':
        await w.truncate(path, o.size);
        break;
      case 'remove':
        await w.remove(path);
        break;
      case 'mkdir':
        await w.mkdir(path);
        break;
      case 'rmdir':
        await w.rmdir(path);
        break;
      case 'rename':
        await w.rename(path, p(o.to));
        break;
    }
    return undefined;
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (typeof code !== 'string') throw e;
    return code;
  }
}

async function readerTree(vol: FatVolume): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string, depth: number): Promise<void> => {
    assert.ok(depth < 8);
    for (const e of await vol.readdir(dir)) {
      const q = dir === '/' ? `/${e.name}` : `${dir}/${e.name}`;
      if (e.isDirectory) {
        out.push(`${q}/`);
        await walk(q, depth + 1);
      } else {
        const src = await vol.open(q);
        out.push(`${q} ${(await readAll(src, 65536)).toString('base64')}`);
        src.close();
      }
    }
  };
  await walk('/', 0);
  return out.sort();
}

function modelTree(m: Model): string[] {
  return [...m.nodes].map(([k, v]) => (v.dir ? `${k}/` : `${k} ${v.data.toString('base64')}`)).sort();
}

const TYPES: MkfsOptions[] = [
  { fat: 12, sizeKiB: 1024, clusterSectors: 1, rootEntries: 64 },
  { fat: 16, sizeKiB: 4200, clusterSectors: 1 },
  { fat: 32, sizeKiB: 34000, clusterSectors: 1 },
];

describe('FAT writer property: random operation sequences equal an in-memory model', () => {
  for (const c of TYPES) {
    it(`FAT${c.fat}: ${RUNS} sequences`, async (t) => {
      if (!haveTools(t, ...FAT_TOOLS, 'fsck.fat')) return;
      const dir = tempDir(t);
      const template = join(dir, 'template.img');
      await mkfsVfat(template, c);
      const img = join(dir, 'fat.img');
      let seq = 0;
      await fc.assert(
        fc.asyncProperty(fc.array(opArb(512), { minLength: 5, maxLength: 30 }), async (ops) => {
          seq++;
          copyFileSync(template, img);
          const dev = await FileBlockDevice.open(img);
          const m = new Model();
          try {
            const w = await FatWriter.open(dev);
            const vol = await FatVolume.open(dev);
            for (const [i, o] of ops.entries()) {
              const want = applyModel(m, o);
              const got = await applyWriter(w, o);
              assert.equal(got, want, `op ${i} ${JSON.stringify(o)}`);
              assert.deepEqual(await readerTree(vol), modelTree(m), `reader tree after op ${i} ${JSON.stringify(o)}`);
            }
            vol.close();
            w.close();
          } finally {
            await dev.close();
          }
          await expectTree(img, m, dir, `sequence ${seq}`);
        }),
        { numRuns: RUNS, seed: (SEED ?? 0x5eed) + c.fat, endOnFailure: true },
      );
    });
  }
});
