/**
 * Edits netbootd.yaml the way a person would: adds or updates one entry, keeps every comment and the
 * layout of everything else, and refuses to write a file that would not load.
 */
import { readFile, rename, writeFile } from 'node:fs/promises';
import { isMap, parseDocument, Scalar, type Document, type YAMLMap } from 'yaml';
import { formatIssue, parseConfig } from './load.js';
import { normalizeMac, normalizePiKey } from './schema.js';
import { NetbootError } from '../util/errors.js';

export class ConfigEditError extends NetbootError {}

export interface EditResult {
  text: string;
  /** What changed, for the user: `added Pi 89025d75 → jammy`. */
  summary: string;
  warnings: string[];
}

// ------------------------------------------------------------------ text-level edits
//
// An edit changes the lines it adds (or the values it updates) and nothing else: the document is parsed
// only to find where things are; the text is then spliced, so every other byte (comments and their
// alignment, flow sequences, commented-out blocks) stays as the user wrote it.

interface Splice {
  start: number;
  end: number;
  text: string;
}

function applySplices(text: string, splices: Splice[]): string {
  let out = text;
  for (const sp of [...splices].sort((a, b) => b.start - a.start)) out = out.slice(0, sp.start) + sp.text + out.slice(sp.end);
  return out;
}

function lineStart(text: string, pos: number): number {
  return text.lastIndexOf('\n', pos - 1) + 1;
}

function lineEnd(text: string, pos: number): number {
  const nl = text.indexOf('\n', pos);
  return nl < 0 ? text.length : nl;
}

/** A scalar as YAML text: plain when that reads back as the same string, else double-quoted. */
/** A value as YAML text: plain when it cannot be misread; anything with a colon (a MAC, which YAML 1.1 tools may read as a base-60 number) or an odd character is quoted. */
function yamlScalar(v: string): string {
  return /^[A-Za-z0-9_/.@+~][A-Za-z0-9_/.@+~-]*$/.test(v) ? v : JSON.stringify(v);
}

/** A key as YAML text: serials and MACs start with a digit or hold colons: quoted, so no YAML tool reads a number. */
function yamlKey(k: string): string {
  return /^[0-9]/.test(k) || k.includes(':') ? JSON.stringify(k) : yamlScalar(k);
}

function flowText(fields: Record<string, string>): string {
  return `{ ${Object.entries(fields).map(([k, v]) => `${k}: ${yamlScalar(v)}`).join(', ')} }`;
}

function rangeOf(node: unknown): [number, number] | null {
  const r = (node as { range?: [number, number, number] } | null)?.range;
  return r ? [r[0], r[1]] : null;
}

/** Splices that add `key: value` lines (or flow entries) to a map node. */
function addToMap(text: string, map: YAMLMap, entries: Array<[string, string]>, parentKeyEnd: number, parentIndent: number): Splice[] {
  if (entries.length === 0) return [];
  const r = rangeOf(map);
  if (map.flow && r) {
    const close = text.lastIndexOf('}', r[1]);
    const inner = text.slice(text.indexOf('{', r[0]) + 1, close);
    const items = entries.map(([k, v]) => `${k}: ${v}`).join(', ');
    if (inner.trim() === '') return [{ start: text.indexOf('{', r[0]), end: close + 1, text: `{ ${items} }` }];
    const before = inner.replace(/\s+$/, '');
    const at = text.indexOf('{', r[0]) + 1 + before.length;
    return [{ start: at, end: at, text: `${before.trimEnd().endsWith(',') ? '' : ','} ${items}` }];
  }
  const last = map.items[map.items.length - 1];
  const first = map.items[0];
  const firstKey = rangeOf(first?.key);
  const indent = firstKey ? firstKey[0] - lineStart(text, firstKey[0]) : parentIndent + 2;
  const anchor = last ? (rangeOf(last.value) ?? rangeOf(last.key))![1] : parentKeyEnd;
  const at = lineEnd(text, Math.max(anchor - 1, 0));
  const lines = entries.map(([k, v]) => `\n${' '.repeat(indent)}${k}: ${v}`).join('');
  return [{ start: at, end: at, text: lines }];
}

/** Sets `fields` on the map node at `key` of `section` (created where missing), as text splices. */
function setEntry(text: string, doc: Document, sectionName: string, keyNode: unknown, keyText: string, fields: Record<string, string>): string {
  const root = doc.contents;
  if (!isMap(root)) {
    const sep = text === '' || text.endsWith('\n') ? '' : '\n';
    return `${text}${sep}${sectionName}:\n  ${keyText}: ${flowText(fields)}\n`;
  }
  const sectionPair = root.items.find((p) => p.key instanceof Scalar && String(p.key.value) === sectionName);
  if (!sectionPair) {
    const sep = text === '' || text.endsWith('\n') ? '' : '\n';
    return `${text}${sep}\n${sectionName}:\n  ${keyText}: ${flowText(fields)}\n`;
  }
  const sectionKey = rangeOf(sectionPair.key)!;
  const sectionIndent = sectionKey[0] - lineStart(text, sectionKey[0]);
  const sectionEnd = lineEnd(text, sectionKey[1]);
  const section = sectionPair.value;
  if (!isMap(section)) {
    // `pis:` with nothing after it (or `pis: ~`): the entry goes on the next line.
    const r = rangeOf(section);
    const at = r && r[1] > r[0] ? lineEnd(text, r[1]) : sectionEnd;
    return applySplices(text, [{ start: at, end: at, text: `\n${' '.repeat(sectionIndent + 2)}${keyText}: ${flowText(fields)}` }]);
  }
  const existing = keyNode === undefined ? undefined : section.items.find((p) => p.key === keyNode);
  if (!existing) return applySplices(text, addToMap(text, section, [[keyText, flowText(fields)]], sectionEnd, sectionIndent));
  const value = existing.value;
  if (!isMap(value)) {
    const r = rangeOf(value);
    const k = rangeOf(existing.key)!;
    if (r && r[1] > r[0]) return applySplices(text, [{ start: r[0], end: r[1], text: flowText(fields) }]);
    const at = lineEnd(text, k[1]);
    return applySplices(text, [{ start: at, end: at, text: ` ${flowText(fields)}` }]);
  }
  const splices: Splice[] = [];
  const missing: Array<[string, string]> = [];
  for (const [k, v] of Object.entries(fields)) {
    const pair = value.items.find((p) => p.key instanceof Scalar && String(p.key.value) === k);
    const cur = pair?.value;
    if (pair && cur instanceof Scalar && rangeOf(cur)) {
      if (String(cur.value) !== v) splices.push({ start: rangeOf(cur)![0], end: rangeOf(cur)![1], text: yamlScalar(v) });
    } else if (pair && rangeOf(pair.value)) {
      splices.push({ start: rangeOf(pair.value)![0], end: rangeOf(pair.value)![1], text: yamlScalar(v) });
    } else {
      missing.push([k, yamlScalar(v)]);
    }
  }
  const k = rangeOf(existing.key)!;
  const keyIndent = k[0] - lineStart(text, k[0]);
  splices.push(...addToMap(text, value, missing, lineEnd(text, k[1]), keyIndent));
  return applySplices(text, splices);
}

/** Finds the key in a section whose normalized form is `key` (a serial or MAC may be spelled otherwise). */
function findKey(doc: Document, sectionName: string, norm: (k: string) => string | null, key: string): unknown {
  const section = doc.get(sectionName);
  if (!isMap(section)) return undefined;
  for (const pair of section.items) {
    const raw = pair.key instanceof Scalar ? String(pair.key.value) : null;
    if (raw !== null && norm(raw) === key) return pair.key;
  }
  return undefined;
}

function finish(text: string, file: string, summary: string, warnings: string[]): EditResult {
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

/**
 * Adds a Pi, or updates the fields given of an existing one (its other fields, such as a pinned address, stay).
 * The key is a serial (8 hex digits; 16-digit serials are shortened to their low 32 bits, with a warning) or a
 * MAC (a Pi known by its MAC: EEPROM TFTP_PREFIX=2, or TFTP_PREFIX=1 with `prefix`).
 */
export function addPi(
  text: string, file: string, serialRaw: string, image: string, partition?: number,
  more: { mac?: string; prefix?: string; model?: number } = {},
): EditResult {
  const { doc, images } = open(text, file);
  const norm = normalizePiKey(serialRaw);
  if ('error' in norm) throw new ConfigEditError('EINVAL', norm.error);
  requireImage(images, image);
  // A 16-digit serial whose high half is not 10000000/00000000 (Pi 5) is written whole: the loader shortens it
  // (with its warning) and refuses two whose low halves collide; another such serial with the same low half is
  // a different Pi, refused here naming both.
  const raw = serialRaw.trim().toLowerCase();
  const full = /^[0-9a-f]{16}$/.test(raw) && !/^(10000000|00000000)/.test(raw) ? raw : undefined;
  if (full !== undefined) {
    const section = doc.get('pis');
    for (const item of isMap(section) ? section.items : []) {
      const k = item.key instanceof Scalar ? String(item.key.value).trim().toLowerCase() : '';
      const n = normalizePiKey(k);
      if ('key' in n && n.key === norm.key && /^[0-9a-f]{16}$/.test(k) && k !== full) {
        throw new ConfigEditError('EINVAL', `Pi ${full} and Pi ${k} both ask for TFTP files under ${norm.key}/ (the bootloader uses the low 32 bits of the serial): they cannot both be configured`);
      }
    }
  }
  const existing = findKey(doc, 'pis', (k) => {
    const n = normalizePiKey(k);
    return 'key' in n ? n.key : null;
  }, norm.key);
  const value: Record<string, string> = { image };
  if (partition !== undefined) value.partition = String(partition);
  if (more.mac !== undefined) {
    const m = normalizeMac(more.mac);
    if ('error' in m) throw new ConfigEditError('EINVAL', m.error);
    if (norm.key.includes(':')) throw new ConfigEditError('EINVAL', `Pi ${norm.key} is listed by its MAC: --mac is for a Pi listed by serial`);
    value.mac = m.key;
  }
  if (more.prefix !== undefined) value.prefix = more.prefix;
  if (more.model !== undefined) {
    if (![3, 4, 5].includes(more.model)) throw new ConfigEditError('EINVAL', `--model must be 3, 4 or 5, not ${more.model}`);
    value.model = String(more.model);
  }
  const out = setEntry(text, doc, 'pis', existing, yamlKey(existing === undefined ? full ?? norm.key : norm.key), value);
  const summary = `${existing !== undefined ? 'updated' : 'added'} Pi ${norm.key} → image ${image}`;
  // A whole 16-digit serial gets the loader's own warning (with its line): not twice.
  return finish(out, file, summary, 'warning' in norm && norm.warning && full === undefined ? [norm.warning] : []);
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
  const existing = findKey(doc, 'hosts', (k) => {
    const n = normalizeMac(k);
    return 'key' in n ? n.key : null;
  }, norm.key);
  const value: Record<string, string> = {};
  if (target.name !== undefined) value.name = target.name;
  if (target.image !== undefined) value.image = target.image;
  if (target.tftpRoot !== undefined) value.tftpRoot = target.tftpRoot;
  if (target.bootFile !== undefined) value.bootFile = target.bootFile;
  let out = setEntry(text, doc, 'hosts', existing, yamlKey(norm.key), value);
  if (existing !== undefined) {
    // A host serves one image or one directory: the other goes.
    const drop = target.image !== undefined ? 'tftpRoot' : 'image';
    out = removeField(out, 'hosts', norm.key, drop);
  }
  const what = target.image !== undefined ? `image ${target.image}` : `directory ${target.tftpRoot}`;
  return finish(out, file, `${existing !== undefined ? 'updated' : 'added'} host ${norm.key} → ${what}`, []);
}

/** Removes one field line of a block-map host entry (or a flow entry's item) when present. */
function removeField(text: string, sectionName: string, macKey: string, field: string): string {
  const doc = parseDocument(text, { schema: 'failsafe' });
  const key = findKey(doc, sectionName, (k) => {
    const n = normalizeMac(k);
    return 'key' in n ? n.key : null;
  }, macKey);
  const section = doc.get(sectionName);
  if (!isMap(section) || key === undefined) return text;
  const entry = section.items.find((p) => p.key === key)?.value;
  if (!isMap(entry)) return text;
  const pair = entry.items.find((p) => p.key instanceof Scalar && String(p.key.value) === field);
  if (!pair) return text;
  const k = rangeOf(pair.key)!;
  const v = rangeOf(pair.value) ?? k;
  if (entry.flow) {
    const after = text.slice(v[1]).match(/^\s*,\s*/)?.[0] ?? '';
    return applySplices(text, [{ start: k[0], end: v[1] + after.length, text: '' }]);
  }
  const start = lineStart(text, k[0]);
  return applySplices(text, [{ start, end: Math.min(text.length, lineEnd(text, v[1]) + 1), text: '' }]);
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
  const images = doc.get('images');
  const existing = isMap(images) ? images.items.find((p) => p.key instanceof Scalar && String(p.key.value) === name) : undefined;
  const fields: Record<string, string> = { path: target.path };
  if (target.mode !== undefined) fields.mode = target.mode;
  if (target.export !== undefined) fields.export = target.export;
  if (target.bootPartition !== undefined) fields.bootPartition = String(target.bootPartition);
  const out = setEntry(text, doc, 'images', existing?.key, yamlKey(name), fields);
  const result = finish(out, file, `${existing ? 'updated' : 'added'} image ${name} → ${target.path}`, []);
  if (result.text === text) result.summary = `image ${name} already in the config (unchanged)`;
  return result;
}

/** Reads, edits and atomically replaces the config file. */
export async function editConfigFile(file: string, edit: (text: string) => EditResult): Promise<EditResult> {
  const text = await readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') throw new ConfigEditError('ENOENT', `${file}: no such config file; name yours with -c FILE (netbootd prep … --config FILE creates one)`);
    if (e.code === 'EACCES') throw new ConfigEditError('EACCES', `${file}: permission denied (run as a user who may edit it, e.g. with sudo)`);
    throw e;
  });
  const result = edit(text);
  const tmp = `${file}.netbootd-${process.pid}.tmp`;
  await writeFile(tmp, result.text, { mode: 0o644 });
  await rename(tmp, file);
  return result;
}
