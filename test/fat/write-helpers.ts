/**
 * Helpers for the FAT writer tests: an in-memory model of a tree (case-insensitive names, as FAT), and
 * checks of an image against it with the real tools (fsck.fat -n, mdir, mcopy) and with our reader.
 */
import assert from 'node:assert/strict';
import { closeSync, mkdirSync, openSync, readFileSync, readSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { FileBlockDevice, readAt } from '../../src/disk/blockdev.js';
import { parseBootSector } from '../../src/fat/bpb.js';
import { FatVolume } from '../../src/fat/volume.js';
import { MTOOLS_ENV, mcopyTree, mdirAll } from '../helpers/fatimg.js';
import { run } from '../helpers/tools.js';
import { readAll } from './read.js';

export type Node = { dir: true } | { dir: false; data: Buffer };

/** Path → node; keys are display paths ('/a/B.txt'); lookups fold case. */
export class Model {
  readonly nodes = new Map<string, Node>();
  private key(p: string): string | undefined {
    const u = p.toUpperCase();
    for (const k of this.nodes.keys()) if (k.toUpperCase() === u) return k;
    return undefined;
  }
  get(p: string): Node | undefined {
    const k = this.key(p);
    return k === undefined ? undefined : this.nodes.get(k);
  }
  has(p: string): boolean {
    return this.key(p) !== undefined;
  }
  set(p: string, n: Node): void {
    const k = this.key(p);
    this.nodes.set(k ?? this.canon(p), n);
  }
  /** `p` with its parent directories spelled as they exist. */
  canon(p: string): string {
    const i = p.lastIndexOf('/');
    if (i <= 0) return p;
    const parent = this.key(p.slice(0, i)) ?? this.canon(p.slice(0, i));
    return `${parent}/${p.slice(i + 1)}`;
  }
  delete(p: string): void {
    const k = this.key(p);
    if (k !== undefined) this.nodes.delete(k);
  }
  /** Renames a node and (for a directory) everything under it. */
  move(from: string, to: string): void {
    const pre = from.toUpperCase();
    for (const [k, v] of [...this.nodes]) {
      const u = k.toUpperCase();
      if (u === pre || u.startsWith(`${pre}/`)) {
        this.nodes.delete(k);
        this.nodes.set(this.canon(to) + k.slice(from.length), v);
      }
    }
  }
  children(dir: string): string[] {
    const pre = dir === '/' ? '/' : `${dir.toUpperCase()}/`;
    return [...this.nodes.keys()].filter((k) => k.toUpperCase().startsWith(pre) && k.length > pre.length && !k.slice(pre.length).includes('/'));
  }
}

/** `fsck.fat -n` must exit 0 and print no complaint. */
export async function fsckClean(image: string, what = ''): Promise<void> {
  const r = await run('fsck.fat', ['-n', image], { allowFail: true });
  const out = r.stdout.toString() + r.stderr;
  assert.equal(r.code, 0, `fsck.fat -n ${what}: exit ${r.code}\n${out}`);
  const lines = out.split('\n').filter((l) => l.trim() !== '' && !/^fsck\.fat \d/.test(l) && !/: \d+ files, \d+\/\d+ clusters$/.test(l));
  assert.deepEqual(lines, [], `fsck.fat -n ${what} complained`);
}

/** Every FAT copy holds the same bytes. */
export function fatsIdentical(image: string): void {
  const fd = openSync(image, 'r');
  try {
    const boot = Buffer.alloc(512);
    readSync(fd, boot, 0, 512, 0);
    const bpb = parseBootSector(boot);
    assert.ok(bpb.ok);
    const b = bpb.value;
    const first = b.reservedSectors * b.bytesPerSector;
    const fats = Buffer.alloc(b.numFats * b.fatBytes);
    readSync(fd, fats, 0, fats.length, first);
    for (let i = 1; i < b.numFats; i++) {
      assert.ok(fats.subarray(0, b.fatBytes).equals(fats.subarray(i * b.fatBytes, (i + 1) * b.fatBytes)), `FAT copy ${i} differs from FAT 0`);
    }
  } finally {
    closeSync(fd);
  }
}

function hostTree(root: string, rel = '', out = new Map<string, Node>()): Map<string, Node> {
  for (const name of readdirSync(join(root, rel))) {
    const r = `${rel}/${name}`;
    if (statSync(join(root, r)).isDirectory()) {
      out.set(r, { dir: true });
      hostTree(root, r, out);
    } else out.set(r, { dir: false, data: readFileSync(join(root, r)) });
  }
  return out;
}

function describeTree(m: Map<string, Node>): string[] {
  return [...m.entries()].map(([k, v]) => (v.dir ? `${k}/` : `${k} ${v.data.length}`)).sort();
}

/**
 * The image holds exactly the model: fsck clean, FAT copies identical, `mdir` names/sizes, `mcopy` bytes,
 * and our reader's listing and bytes.
 */
export async function expectTree(image: string, model: Model, work: string, what = ''): Promise<void> {
  await fsckClean(image, what);
  fatsIdentical(image);
  const want = describeTree(model.nodes);
  // mdir: names and sizes.
  // mdir and mcopy fail on an empty volume ("::/ not found").
  const empty = model.nodes.size === 0;
  const listing = await mdirAll(image).catch((e: unknown) => {
    if (empty && /not found/.test(String(e))) return { label: '', dirs: new Map() };
    throw e;
  });
  const seen = new Map<string, Node>();
  for (const [dir, entries] of listing.dirs) {
    for (const e of entries) {
      const p = dir === '/' ? `/${e.name}` : `${dir}/${e.name}`;
      seen.set(p, e.isDirectory ? { dir: true } : { dir: false, data: Buffer.alloc(e.size) });
    }
  }
  assert.deepEqual(describeTree(seen), want, `mdir tree ${what}`);
  // mcopy: bytes.
  const out = join(work, 'extract');
  rmSync(out, { recursive: true, force: true });
  await mcopyTree(image, out).catch((e: unknown) => {
    if (!(empty && /not found/.test(String(e)))) throw e;
  });
  mkdirSync(out, { recursive: true });
  const host = hostTree(out);
  assert.deepEqual(describeTree(host), want, `mcopy tree ${what}`);
  for (const [p, n] of model.nodes) {
    if (n.dir) continue;
    const h = host.get(p);
    assert.ok(h && !h.dir && h.data.equals(n.data), `mcopy bytes of ${p} ${what}`);
  }
  // Our reader.
  const dev = await FileBlockDevice.open(image, { readOnly: true });
  try {
    const vol = await FatVolume.open(dev);
    const ours = new Map<string, Node>();
    const walk = async (dir: string): Promise<void> => {
      for (const e of await vol.readdir(dir)) {
        const p = dir === '/' ? `/${e.name}` : `${dir}/${e.name}`;
        if (e.isDirectory) {
          ours.set(p, { dir: true });
          await walk(p);
        } else {
          const src = await vol.open(p);
          ours.set(p, { dir: false, data: await readAll(src, 65536) });
          src.close();
        }
      }
    };
    await walk('/');
    vol.close();
    assert.deepEqual(describeTree(ours), want, `reader tree ${what}`);
    for (const [p, n] of model.nodes) {
      if (!n.dir) assert.ok((ours.get(p) as { data: Buffer }).data.equals(n.data), `reader bytes of ${p} ${what}`);
    }
  } finally {
    await dev.close();
  }
}

/** FSInfo free count and next-free hint (FAT32), or undefined. */
export async function fsinfo(image: string): Promise<{ free: number; next: number } | undefined> {
  const dev = await FileBlockDevice.open(image, { readOnly: true });
  try {
    const boot = await readAt(dev, 0, 512);
    if (boot.readUInt16LE(22) !== 0) return undefined;
    const at = boot.readUInt16LE(48) * boot.readUInt16LE(11);
    const fi = await readAt(dev, at, 512);
    return { free: fi.readUInt32LE(488), next: fi.readUInt32LE(492) };
  } finally {
    await dev.close();
  }
}

export { MTOOLS_ENV };
