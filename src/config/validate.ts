/**
 * Validates a YAML document (parsed with the failsafe schema: every scalar is text) against a schema
 * from schema-dsl.ts. Every problem carries the dotted key path and the node's position; values come
 * back converted (integers, booleans) with defaults applied. Never throws on any input.
 */
import { isMap, isScalar, isSeq, type Node, type Pair, type Scalar } from 'yaml';
import type { Schema } from './schema-dsl.js';

export interface Located {
  path: string;
  message: string;
  /** Offset into the source, when known. */
  offset?: number;
}

export interface ValidationContext {
  errors: Located[];
  warnings: Located[];
  /** Source offsets of every validated key path (for semantic checks that come later). */
  positions: Map<string, number>;
}

const join = (path: string, key: string): string => (path ? `${path}.${key}` : key);
const offsetOf = (node: unknown): number | undefined =>
  node && typeof node === 'object' && 'range' in node && Array.isArray((node as { range?: unknown }).range)
    ? ((node as { range: number[] }).range[0] as number)
    : undefined;

/** A plain empty scalar, `~` or `null` means "not given". */
function isNullish(node: unknown): boolean {
  if (node === null || node === undefined) return true;
  if (!isScalar(node)) return false;
  const sc = node as Scalar;
  return sc.type === 'PLAIN' && (sc.value === '' || sc.value === '~' || sc.value === 'null' || sc.value === 'Null' || sc.value === 'NULL');
}

function describe(node: unknown): string {
  if (isMap(node)) return 'a mapping';
  if (isSeq(node)) return 'a list';
  if (isScalar(node)) return `\`${String((node as Scalar).value)}\``;
  return 'nothing';
}

/** Levenshtein distance, for "did you mean" on unknown keys. */
function distance(a: string, b: string): number {
  const dp = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = dp[0]!;
    dp[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = dp[j]!;
      dp[j] = Math.min(dp[j]! + 1, dp[j - 1]! + 1, prev + (a[i - 1]!.toLowerCase() === b[j - 1]!.toLowerCase() ? 0 : 1));
      prev = tmp;
    }
  }
  return dp[b.length]!;
}

export function suggest(word: string, choices: readonly string[]): string {
  let best: string | null = null;
  let bestD = Infinity;
  for (const c of choices) {
    const d = distance(word, c);
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  return best !== null && bestD < word.length && bestD <= Math.max(1, Math.floor(word.length / 3)) ? ` (did you mean \`${best}\`?)` : '';
}

export function validateNode(schema: Schema, node: unknown, path: string, ctx: ValidationContext): unknown {
  const at = offsetOf(node);
  const fail = (message: string): undefined => {
    ctx.errors.push({ path, message, offset: at });
    return undefined;
  };
  if (at !== undefined && !ctx.positions.has(path)) ctx.positions.set(path, at);

  if (isNullish(node)) {
    if ('default' in schema && schema.default !== undefined) {
      return Array.isArray(schema.default) ? [...schema.default] : schema.default;
    }
    if (schema.kind === 'object' && schema.defaultEmpty) return validateObject(schema, null, path, ctx);
    if (schema.kind === 'map') return Object.create(null) as Record<string, unknown>;
    return undefined;
  }

  switch (schema.kind) {
    case 'string': {
      if (!isScalar(node)) return fail(`must be text, not ${describe(node)}`);
      const v = String((node as Scalar).value);
      if (schema.enum && !schema.enum.includes(v)) {
        const lower = schema.enum.find((e) => e.toLowerCase() === v.toLowerCase());
        if (lower) return lower;
        return fail(`must be one of ${schema.enum.map((e) => `\`${e}\``).join(', ')}, not \`${v}\`${suggest(v, schema.enum)}`);
      }
      const problem = schema.check?.(v);
      if (problem) return fail(problem);
      return v;
    }
    case 'integer': {
      if (!isScalar(node)) return fail(`must be a whole number, not ${describe(node)}`);
      const text = String((node as Scalar).value).trim().replace(/_/g, '');
      const n = /^[+-]?\d+$/.test(text) ? Number(text) : /^0x[0-9a-f]+$/i.test(text) ? Number.parseInt(text.slice(2), 16) : NaN;
      if (!Number.isSafeInteger(n)) return fail(`must be a whole number, not \`${text}\``);
      if (n < schema.minimum || n > schema.maximum) return fail(`must be between ${schema.minimum} and ${schema.maximum}, not ${n}`);
      return n;
    }
    case 'boolean': {
      if (!isScalar(node)) return fail(`must be true or false, not ${describe(node)}`);
      const text = String((node as Scalar).value).trim().toLowerCase();
      if (['true', 'yes', 'on'].includes(text)) return true;
      if (['false', 'no', 'off'].includes(text)) return false;
      return fail(`must be true or false, not \`${text}\``);
    }
    case 'array': {
      if (!isSeq(node)) return fail(`must be a list (e.g. [a, b]), not ${describe(node)}`);
      return node.items.map((item, i) => validateNode(schema.items, item, `${path}[${i}]`, ctx)).filter((x) => x !== undefined);
    }
    case 'object':
      if (!isMap(node)) return fail(`must be a mapping of keys, not ${describe(node)}`);
      return validateObject(schema, node.items as Pair[], path, ctx);
    case 'map': {
      if (!isMap(node)) return fail(`must be a mapping, not ${describe(node)}`);
      // No prototype: a key read from the network (an export, image or client name) never finds
      // `__proto__`, `constructor` or `toString` in a config map.
      const out = Object.create(null) as Record<string, unknown>;
      const seen = new Map<string, string>();
      for (const pair of node.items as Pair[]) {
        const rawKey = isScalar(pair.key) ? String((pair.key as Scalar).value) : null;
        const keyAt = offsetOf(pair.key);
        if (rawKey === null) {
          ctx.errors.push({ path, message: `keys must be text (${schema.key.description})`, offset: keyAt });
          continue;
        }
        const norm = schema.key.normalize(rawKey);
        const keyPath = join(path, rawKey);
        if ('error' in norm) {
          ctx.errors.push({ path: keyPath, message: norm.error, offset: keyAt });
          continue;
        }
        if (norm.warning) ctx.warnings.push({ path: keyPath, message: norm.warning, offset: keyAt });
        const prev = seen.get(norm.key);
        if (prev !== undefined) {
          ctx.errors.push({ path: keyPath, message: `\`${rawKey}\` is the same as \`${prev}\` (${norm.key}); give it once`, offset: keyAt });
          continue;
        }
        seen.set(norm.key, rawKey);
        if (keyAt !== undefined) ctx.positions.set(join(path, norm.key), keyAt);
        const v = validateNode(schema.values, pair.value, join(path, norm.key), ctx);
        if (v !== undefined) out[norm.key] = v;
        else if (isNullish(pair.value) && schema.values.kind === 'object') {
          out[norm.key] = validateObject(schema.values, null, join(path, norm.key), ctx);
        }
      }
      return out;
    }
    case 'stringOrObject':
      if (isScalar(node)) return validateNode(schema.string, node, path, ctx);
      if (isMap(node)) return validateNode(schema.object, node, path, ctx);
      return fail(`must be text or a mapping, not ${describe(node)}`);
  }
}

function validateObject(schema: Extract<Schema, { kind: 'object' }>, items: Pair[] | null, path: string, ctx: ValidationContext): unknown {
  const out: Record<string, unknown> = {};
  const given = new Map<string, Pair>();
  const known = Object.keys(schema.properties);
  for (const pair of items ?? []) {
    const key = isScalar(pair.key) ? String((pair.key as Scalar).value) : null;
    const keyAt = offsetOf(pair.key);
    if (key === null) {
      ctx.errors.push({ path, message: 'keys must be text', offset: keyAt });
      continue;
    }
    if (!Object.hasOwn(schema.properties, key)) {
      ctx.errors.push({
        path: join(path, key),
        message: `unknown key \`${key}\`${suggest(key, known)}; known keys here: ${known.join(', ')}`,
        offset: keyAt,
      });
      continue;
    }
    if (given.has(key)) {
      ctx.errors.push({ path: join(path, key), message: `\`${key}\` is given twice`, offset: keyAt });
      continue;
    }
    given.set(key, pair);
    if (keyAt !== undefined) ctx.positions.set(join(path, key), keyAt);
  }
  for (const [key, sub] of Object.entries(schema.properties)) {
    const pair = given.get(key);
    const v = validateNode(sub, pair?.value, join(path, key), ctx);
    if (v !== undefined) out[key] = v;
    else if ((schema.required ?? []).includes(key) && (pair === undefined || isNullish(pair.value))) {
      ctx.errors.push({ path: join(path, key), message: `\`${key}\` is required here`, offset: offsetOf(pair?.key) ?? ctx.positions.get(path) });
    }
  }
  return out;
}

export type { Node };
