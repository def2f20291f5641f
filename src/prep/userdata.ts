/**
 * cloud-init `user-data` edits with the `yaml` Document API, so comments and the layout of everything
 * else are kept: `package_update: true` and `packages:` entries appended (no duplicates), or the top-level
 * keys of another user-data file merged in. A file that is not YAML, or not a mapping, is refused rather
 * than broken. Pure; the result is idempotent.
 */
import { isMap, isScalar, isSeq, parseDocument, YAMLSeq, type Document } from 'yaml';
import { NetbootError } from '../util/errors.js';

export class UserDataError extends NetbootError {}

const HEADER = '#cloud-config';

/** `#cloud-config` as the first line. */
const CLOUD_CONFIG = /^#cloud-config\b/;

function load(text: string, what: string): Document {
  if (/^## template: *jinja/.test(text)) {
    throw new UserDataError('EINVAL', `${what} is a jinja template: edit it by hand (a YAML rewrite could break the template); not changed`);
  }
  if (text.trim() !== '' && !CLOUD_CONFIG.test(text.replace(/^\uFEFF/, ''))) {
    throw new UserDataError('EINVAL', `${what} does not start with #cloud-config (a script or MIME multi-part?); not changed`);
  }
  const doc = parseDocument(text.trim() === '' ? '{}' : text, { keepSourceTokens: false });
  if (doc.errors.length > 0) {
    throw new UserDataError('EINVAL', `${what} is not valid YAML (${doc.errors[0]!.message.split('\n')[0]}); not changed`);
  }
  if (doc.contents === null) doc.contents = doc.createNode({}) as never;
  if (!isMap(doc.contents)) throw new UserDataError('EINVAL', `${what} is not a YAML mapping; not changed`);
  if (text.trim() === '') (doc.contents as { flow?: boolean }).flow = false;
  return doc;
}

function finish(doc: Document): string {
  const out = doc.toString({ lineWidth: 0 });
  return CLOUD_CONFIG.test(out) ? out : `${HEADER}\n${out}`;
}

function packageName(node: unknown): string | undefined {
  if (isScalar(node)) return String(node.value);
  return undefined;
}

/** Adds `package_update: true` (unless set) and the packages not yet listed. */
export function addPackages(text: string, packages: readonly string[], what = 'user-data'): string {
  const doc = load(text, what);
  if (!doc.has('package_update')) doc.set('package_update', true);
  let seq = doc.get('packages');
  if (seq === undefined || seq === null) {
    seq = new YAMLSeq();
    doc.set('packages', seq);
  }
  if (!isSeq(seq)) throw new UserDataError('EINVAL', `${what}: \`packages\` is not a list; not changed`);
  const have = new Set(seq.items.map(packageName).filter((x): x is string => x !== undefined));
  for (const p of packages) {
    if (!have.has(p)) {
      seq.add(doc.createNode(p));
      have.add(p);
    }
  }
  return finish(doc);
}

/** Merges the top-level keys of `incoming` into `text` (incoming wins; `packages` lists are joined). */
export function mergeUserData(text: string, incoming: string, what = 'user-data', from = 'the --user-data file'): string {
  const doc = load(text, what);
  const add = load(incoming, from);
  for (const pair of (add.contents as { items: Array<{ key: unknown; value: unknown }> }).items) {
    const key = isScalar(pair.key) ? String(pair.key.value) : undefined;
    if (key === undefined) continue;
    const mine = doc.get(key);
    if (key === 'packages' && isSeq(mine) && isSeq(pair.value)) {
      const have = new Set(mine.items.map(packageName));
      for (const item of pair.value.items) if (!have.has(packageName(item))) mine.add(item);
      continue;
    }
    doc.set(key, pair.value);
  }
  return finish(doc);
}
