/**
 * Edits netbootd.yaml the way a person would: adds or updates one entry, keeps every comment and the
 * layout of everything else, and refuses to write a file that would not load.
 */
import { readFile, rename, writeFile } from 'node:fs/promises';
import { isMap, parseDocument, Scalar, YAMLMap, type Document } from 'yaml';
import { formatIssue, parseConfig } from './load.js';
import { normalizeMac, normalizeSerial } from './schema.js';
import { NetbootError } from '../util/errors.js';

export class ConfigEditError extends NetbootError {}

export interface EditResult {
  text: string;
  /** What changed, for the user: `added Pi 89025d75 → jammy`. */
  summary: string;
  warnings: string[];
}

function keyScalar(key: string): Scalar {
  const k = new Scalar(key);
  // A key that starts with a digit could be read as a number by other YAML tools: quote it.
  if (/^[0-9]/.test(key)) k.type = Scalar.QUOTE_DOUBLE;
  return k;
}

function flowMap(doc: Document, entries: Record<string, string>): YAMLMap {
  const m = doc.createNode(entries) as YAMLMap;
  m.flow = true;
  return m;
}

/** Finds the key in a section whose normalized form is `key` (a serial or MAC may be spelled otherwise). */
function findKey(section: YAMLMap, norm: (k: string) => string | null, key: string): unknown {
  for (const pair of section.items) {
    const raw = pair.key instanceof Scalar ? String(pair.key.value) : null;
    if (raw !== null && norm(raw) === key) return pair.key;
  }
  return undefined;
}

function section(doc: Document, name: string): YAMLMap {
  let node = doc.get(name);
  if (!isMap(node)) {
    node = new YAMLMap();
    doc.set(name, node);
  }
  return node as YAMLMap;
}

function finish(doc: Document, file: string, summary: string, warnings: string[]): EditResult {
  const text = doc.toString({ lineWidth: 0 });
  const check = parseConfig(text, file);
  if (!check.ok) {
    throw new ConfigEditError('EINVAL', `the edited config would not load:\n${check.errors.map(formatIssue).join('\n')}`);
  }
  return { text, summary, warnings: [...warnings, ...check.warnings.map(formatIssue)] };
}

function open(text: string, file: string): { doc: Document; images: string[] } {
  const loaded = parseConfig(text, file);
  if (!loaded.ok) throw new ConfigEditError('EINVAL', `fix the config first:\n${loaded.errors.map(formatIssue).join('\n')}`);
  const doc = parseDocument(text, { schema: 'failsafe' });
  return { doc, images: Object.keys(loaded.config.images) };
}

function requireImage(images: string[], image: string): void {
  if (!images.includes(image)) {
    throw new ConfigEditError(
      'ENOENT',
      `image \`${image}\` is not defined in the config (${images.length ? `known images: ${images.join(', ')}` : 'no images yet: add one under `images`'})`,
    );
  }
}

export function addPi(text: string, file: string, serialRaw: string, image: string, partition?: number): EditResult {
  const { doc, images } = open(text, file);
  const norm = normalizeSerial(serialRaw);
  if ('error' in norm) throw new ConfigEditError('EINVAL', norm.error);
  requireImage(images, image);
  const pis = section(doc, 'pis');
  const existing = findKey(pis, (k) => {
    const n = normalizeSerial(k);
    return 'key' in n ? n.key : null;
  }, norm.key);
  const value: Record<string, string> = { image };
  if (partition !== undefined) value.partition = String(partition);
  if (existing !== undefined) pis.set(existing, flowMap(doc, value));
  else pis.add(doc.createPair(keyScalar(norm.key), flowMap(doc, value)));
  const summary = `${existing !== undefined ? 'updated' : 'added'} Pi ${norm.key} → image ${image}`;
  return finish(doc, file, summary, norm.warning ? [norm.warning] : []);
}

export function addHost(
  text: string,
  file: string,
  macRaw: string,
  target: { image?: string; tftpRoot?: string; bootFile?: string; name?: string },
): EditResult {
  const { doc, images } = open(text, file);
  const norm = normalizeMac(macRaw);
  if ('error' in norm) throw new ConfigEditError('EINVAL', norm.error);
  if (target.image !== undefined) requireImage(images, target.image);
  if ((target.image === undefined) === (target.tftpRoot === undefined)) {
    throw new ConfigEditError('EINVAL', 'give exactly one of --image or --tftp-root');
  }
  const hosts = section(doc, 'hosts');
  const existing = findKey(hosts, (k) => {
    const n = normalizeMac(k);
    return 'key' in n ? n.key : null;
  }, norm.key);
  const value: Record<string, string> = {};
  if (target.name !== undefined) value.name = target.name;
  if (target.image !== undefined) value.image = target.image;
  if (target.tftpRoot !== undefined) value.tftpRoot = target.tftpRoot;
  if (target.bootFile !== undefined) value.bootFile = target.bootFile;
  if (existing !== undefined) hosts.set(existing, flowMap(doc, value));
  else {
    const k = new Scalar(norm.key);
    k.type = Scalar.QUOTE_DOUBLE;
    hosts.add(doc.createPair(k, flowMap(doc, value)));
  }
  const what = target.image !== undefined ? `image ${target.image}` : `directory ${target.tftpRoot}`;
  return finish(doc, file, `${existing !== undefined ? 'updated' : 'added'} host ${norm.key} → ${what}`, []);
}

/**
 * Adds an image (or updates the fields given of an existing one, keeping its other fields and comments).
 * The summary says `unchanged` when the text comes out the same.
 */
export function addImage(
  text: string,
  file: string,
  name: string,
  target: { path: string; mode?: 'readwrite' | 'readonly' | 'cow'; export?: string; bootPartition?: number },
): EditResult {
  const { doc } = open(text, file);
  const images = section(doc, 'images');
  const existing = images.items.find((p) => p.key instanceof Scalar && String(p.key.value) === name);
  const fields: Record<string, string> = { path: target.path };
  if (target.mode !== undefined) fields.mode = target.mode;
  if (target.export !== undefined) fields.export = target.export;
  if (target.bootPartition !== undefined) fields.bootPartition = String(target.bootPartition);
  let summary: string;
  if (existing && isMap(existing.value)) {
    const node = existing.value as YAMLMap;
    for (const [k, v] of Object.entries(fields)) {
      const cur = node.get(k);
      if (cur === undefined || String(cur instanceof Scalar ? cur.value : cur) !== v) node.set(k, v);
    }
    summary = `updated image ${name} → ${target.path}`;
  } else if (existing) {
    existing.value = flowMap(doc, fields);
    summary = `updated image ${name} → ${target.path}`;
  } else {
    images.add(doc.createPair(keyScalar(name), flowMap(doc, fields)));
    summary = `added image ${name} → ${target.path}`;
  }
  const result = finish(doc, file, summary, []);
  if (result.text === text) result.summary = `image ${name} already in the config (unchanged)`;
  return result;
}

/** Reads, edits and atomically replaces the config file. */
export async function editConfigFile(file: string, edit: (text: string) => EditResult): Promise<EditResult> {
  const text = await readFile(file, 'utf8');
  const result = edit(text);
  const tmp = `${file}.netbootd-${process.pid}.tmp`;
  await writeFile(tmp, result.text, { mode: 0o644 });
  await rename(tmp, file);
  return result;
}
