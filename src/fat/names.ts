/**
 * Names for the FAT writer (pure, no I/O): long-name validation, and the 8.3 short name of a long name (with
 * the Windows NT lowercase bits when the name fits 8.3 in one case per part, else a `~N` numeric tail made
 * unique in its directory). The long-name slots themselves are encoded by dir.ts.
 *
 * Short names are written with ASCII characters only: any other character becomes '_' and makes the
 * conversion lossy (so a long name is stored), which keeps short names independent of code pages.
 */

/** The longest VFAT name, in UTF-16 code units. */
export const MAX_LONG_NAME = 255;
/** Characters that no FAT name (long or short) may hold, besides control characters. */
const FORBIDDEN = new Set([...'"*/:<>?\\|']);
/** Characters allowed in an 8.3 name besides A-Z and 0-9. */
const SHORT_SPECIAL = new Set([...'$%\'-_@~`!(){}^#&']);

/** Why `name` cannot be a FAT long name, or null when it can. */
export function checkLongName(name: string): string | null {
  if (typeof name !== 'string' || name.length === 0) return 'a name must not be empty';
  if (name === '.' || name === '..') return `\`${name}\` is not a file name`;
  if (name.length > MAX_LONG_NAME) return `name is ${name.length} UTF-16 units long, FAT allows ${MAX_LONG_NAME}`;
  for (const ch of name) {
    const c = ch.codePointAt(0)!;
    if (c < 0x20 || c === 0x7f) return `name \`${name}\` holds a control character`;
    if (FORBIDDEN.has(ch)) return `name \`${name}\` holds \`${ch}\`, which FAT does not allow`;
  }
  if (/[ .]$/.test(name)) return `name \`${name}\` ends with a dot or a space, which FAT drops`;
  return null;
}

function isShortChar(ch: string): boolean {
  return (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || SHORT_SPECIAL.has(ch);
}

/** 'lower' | 'upper' | 'none' (no letters) | 'mixed' */
function caseOf(s: string): 'lower' | 'upper' | 'none' | 'mixed' {
  const hasLower = /[a-z]/.test(s);
  const hasUpper = /[A-Z]/.test(s);
  return hasLower && hasUpper ? 'mixed' : hasLower ? 'lower' : hasUpper ? 'upper' : 'none';
}

export interface ShortName {
  /** The 11 bytes of the 8.3 entry (base padded to 8, extension to 3). */
  readonly raw: Buffer;
  /** Byte 12 of the entry: 0x08 lowercase base, 0x10 lowercase extension. */
  readonly ntCase: number;
  /** True when the long name must be stored in VFAT entries. */
  readonly needsLongName: boolean;
}

function pack(base: string, ext: string): Buffer {
  return Buffer.from(base.padEnd(8, ' ') + ext.padEnd(3, ' '), 'latin1');
}

/** The 8.3 name as a key for uniqueness checks (the 11 bytes as latin1). */
export function shortKey(raw: Buffer): string {
  return raw.toString('latin1', 0, 11);
}

/**
 * The short name for `name` (already checked with `checkLongName`) in a directory whose existing short
 * names are `taken` (keys from `shortKey`). Throws only if the numeric tail runs out (a million names).
 */
export function makeShortName(name: string, taken: ReadonlySet<string>): ShortName {
  // Exactly 8.3: one case per part, valid characters, no long name needed.
  const exact = /^([^.]{1,8})(?:\.([^.]{1,3}))?$/.exec(name);
  if (exact) {
    const base = exact[1]!;
    const ext = exact[2] ?? '';
    const cb = caseOf(base);
    const ce = caseOf(ext);
    const valid = [...(base + ext).toUpperCase()].every(isShortChar) && /^[\x20-\x7e]*$/.test(base + ext);
    if (valid && cb !== 'mixed' && ce !== 'mixed') {
      const raw = pack(base.toUpperCase(), ext.toUpperCase());
      if (!taken.has(shortKey(raw))) {
        return { raw, ntCase: (cb === 'lower' ? 0x08 : 0) | (ce === 'lower' ? 0x10 : 0), needsLongName: false };
      }
    }
  }
  // The basis name (Windows' algorithm, ASCII only).
  let lossy = false;
  const conv = (s: string): string => {
    let out = '';
    for (const ch of s) {
      if (ch === ' ') {
        lossy = true;
        continue;
      }
      const up = ch.toUpperCase();
      if (up.length === 1 && isShortChar(up)) out += up;
      else {
        out += '_';
        lossy = true;
      }
    }
    return out;
  };
  let stripped = name;
  if (stripped.startsWith('.')) {
    stripped = stripped.replace(/^\.+/, '');
    lossy = true;
  }
  const dot = stripped.lastIndexOf('.');
  let base = conv(dot >= 0 ? stripped.slice(0, dot).replace(/\./g, () => ((lossy = true), '')) : stripped);
  let ext = dot >= 0 ? conv(stripped.slice(dot + 1)) : '';
  if (ext.length > 3) {
    ext = ext.slice(0, 3);
    lossy = true;
  }
  if (base.length > 8) lossy = true;
  if (base === '') {
    base = '_';
    lossy = true;
  }
  if (!lossy) {
    const raw = pack(base, ext);
    if (!taken.has(shortKey(raw))) return { raw, ntCase: 0, needsLongName: true };
  }
  for (let n = 1; n < 1_000_000; n++) {
    const tail = `~${n}`;
    const raw = pack(base.slice(0, 8 - tail.length) + tail, ext);
    if (!taken.has(shortKey(raw))) return { raw, ntCase: 0, needsLongName: true };
  }
  throw new Error(`no free short name for \`${name}\``);
}
