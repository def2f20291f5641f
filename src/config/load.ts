/**
 * Reads netbootd.yaml: YAML syntax errors, schema errors and cross-reference errors all come back as
 * `file:line:column: key: message`, every one of them at once. Warnings (a shortened serial) do not stop
 * the config from loading. Paths in the file are relative to the file's folder.
 */
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { LineCounter, parseDocument } from 'yaml';
import { configSchema, normalizeMac, type Config } from './schema.js';
import { validateNode, type Located, type ValidationContext } from './validate.js';

export interface ConfigIssue {
  file: string;
  line: number;
  column: number;
  path: string;
  message: string;
}

export function formatIssue(i: ConfigIssue): string {
  return `${i.file}:${i.line}:${i.column}: ${i.path ? `${i.path}: ` : ''}${i.message}`;
}

export type LoadResult =
  | { ok: true; config: Config; warnings: ConfigIssue[]; file: string }
  | { ok: false; errors: ConfigIssue[]; warnings: ConfigIssue[]; file: string };

/** Parses and validates config text. `file` names it in messages and anchors relative paths. */
export function parseConfig(text: string, file = 'netbootd.yaml'): LoadResult {
  const lc = new LineCounter();
  const doc = parseDocument(text, { schema: 'failsafe', lineCounter: lc, uniqueKeys: true, prettyErrors: false });
  const locate = (l: Located): ConfigIssue => {
    const pos = l.offset !== undefined ? lc.linePos(l.offset) : { line: 1, col: 1 };
    return { file, line: pos.line, column: pos.col, path: l.path, message: l.message };
  };
  const yamlErrors = doc.errors.map((e) => ({
    file,
    line: e.linePos?.[0]?.line ?? 1,
    column: e.linePos?.[0]?.col ?? 1,
    path: '',
    message: `YAML: ${e.message.split('\n')[0]}`,
  }));
  if (yamlErrors.length) return { ok: false, errors: yamlErrors, warnings: [], file };

  const ctx: ValidationContext = { errors: [], warnings: [], positions: new Map() };
  const value = validateNode(configSchema, doc.contents ?? null, '', ctx) as Config | undefined;
  // A wrong shape leaves sections missing (undefined): crossCheck copes, so every error comes at once.
  if (value) crossCheck(value, ctx, dirname(resolve(file)));
  const byPosition = (a: ConfigIssue, b: ConfigIssue): number => a.line - b.line || a.column - b.column;
  const errors = ctx.errors.map(locate).sort(byPosition);
  const warnings = ctx.warnings.map(locate).sort(byPosition);
  if (errors.length || !value) return { ok: false, errors, warnings, file };
  return { ok: true, config: value, warnings, file };
}

export async function loadConfig(file: string): Promise<LoadResult> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : String((e as Error).message);
    return { ok: false, errors: [{ file, line: 1, column: 1, path: '', message: `cannot read the config: ${why}` }], warnings: [], file };
  }
  return parseConfig(text, file);
}

/** References between sections, and relative paths made absolute. */
function crossCheck(c: Partial<Config>, ctx: ValidationContext, baseDir: string): void {
  const at = (path: string): number | undefined => ctx.positions.get(path);
  const error = (path: string, message: string): void => {
    ctx.errors.push({ path, message, offset: at(path) });
  };
  const images = c.images ?? {};
  const imageNames = Object.keys(images);
  const knownImages = imageNames.length ? `known images: ${imageNames.join(', ')}` : 'no images are defined under `images`';
  const checkImageRef = (path: string, name: string | undefined): void => {
    if (name !== undefined && !(name in images)) error(path, `image \`${name}\` is not defined (${knownImages})`);
  };

  const exports = new Map<string, string>();
  const files = new Map<string, string>();
  for (const [name, img] of Object.entries(images)) {
    if (img.path !== undefined) {
      img.path = resolve(baseDir, img.path);
      const other = files.get(img.path);
      if (other !== undefined) {
        ctx.warnings.push({
          path: `images.${name}.path`,
          message: `image \`${other}\` uses the same file: give each file one image entry (writes through one are not seen through the other)`,
          offset: at(`images.${name}.path`),
        });
      }
      files.set(img.path, name);
    }
    const exp = img.export ?? name;
    img.export = exp;
    const other = exports.get(exp);
    if (other !== undefined) error(`images.${name}.export`, `NBD export name \`${exp}\` is already used by image \`${other}\``);
    exports.set(exp, name);
    if (img.tls && !c.nbd?.tls) error(`images.${name}.tls`, 'requires TLS but `nbd.tls` (cert and key) is not configured');
    if (img.clientCert && !c.nbd?.tls?.ca) error(`images.${name}.clientCert`, 'requires client certificates but `nbd.tls.ca` (the CA that signs them) is not configured');
  }
  for (const [serial, pi] of Object.entries(c.pis ?? {})) checkImageRef(`pis.${serial}.image`, pi.image);
  checkPiMacs(c, error);

  const checkPc = (path: string, t: { image?: string; tftpRoot?: string }): void => {
    if (t.image !== undefined && t.tftpRoot !== undefined) error(path, 'give either `image` or `tftpRoot`, not both');
    if (t.image === undefined && t.tftpRoot === undefined) error(path, 'needs `image` (serve its boot partition) or `tftpRoot` (serve a directory)');
    checkImageRef(`${path}.image`, t.image);
    if (t.tftpRoot !== undefined) t.tftpRoot = resolve(baseDir, t.tftpRoot);
  };
  for (const [mac, host] of Object.entries(c.hosts ?? {})) checkPc(`hosts.${mac}`, host);
  if (c.defaults !== undefined) checkPc('defaults', c.defaults);
  checkNbdCapacity(c, ctx);
  if (c.nbd?.tls) {
    c.nbd.tls.cert = resolve(baseDir, c.nbd.tls.cert);
    c.nbd.tls.key = resolve(baseDir, c.nbd.tls.key);
    if (c.nbd.tls.ca !== undefined) c.nbd.tls.ca = resolve(baseDir, c.nbd.tls.ca);
  }
  if (c.server?.stateDir !== undefined) c.server.stateDir = resolve(baseDir, c.server.stateDir);
}

/**
 * A running client keeps its root disk attached: one NBD connection at least, for as long as it is up. More
 * clients booting an image than `nbd.maxConnections` means the ones past the cap are refused their root disk
 * at connect (a storm where they all power on finds it first). Clients of `defaults` are not known in
 * advance and are not counted.
 */
function checkNbdCapacity(c: Partial<Config>, ctx: ValidationContext): void {
  const nbd = c.nbd;
  if (!nbd || nbd.enabled === false || typeof nbd.maxConnections !== 'number') return;
  const clients =
    Object.values(c.pis ?? {}).filter((p) => p.image !== undefined).length +
    Object.values(c.hosts ?? {}).filter((h) => h.image !== undefined).length;
  if (clients <= nbd.maxConnections) return;
  ctx.warnings.push({
    path: 'nbd.maxConnections',
    message: `${clients} Pis and hosts boot an image but at most ${nbd.maxConnections} NBD connections are accepted: a running client holds one for as long as it is up, so the clients past ${nbd.maxConnections} are refused their root disk; raise nbd.maxConnections to at least ${clients} (each connection may hold 2 MiB of request memory)`,
    offset: ctx.positions.get('nbd.maxConnections'),
  });
}

/**
 * Pis known by MAC (a MAC key, or `mac:` under a serial): stored lowercase with colons; one MAC names one
 * Pi; a `prefix` needs a MAC (its requests are matched by the address the MAC's DHCP exchange took).
 */
function checkPiMacs(c: Partial<Config>, error: (path: string, message: string) => void): void {
  const byMac = new Map<string, string>();
  for (const [key, pi] of Object.entries(c.pis ?? {})) {
    const keyIsMac = key.includes(':');
    if (pi.mac !== undefined) {
      const m = normalizeMac(pi.mac);
      if ('key' in m) pi.mac = m.key;
      if (keyIsMac) error(`pis.${key}.mac`, 'this Pi is already listed by its MAC: drop `mac:` (or list it by serial)');
    }
    const mac = keyIsMac ? key : pi.mac;
    if (pi.prefix !== undefined) {
      pi.prefix = pi.prefix.replace(/^\/+|\/+$/g, '');
      if (mac === undefined) error(`pis.${key}.prefix`, 'a TFTP_PREFIX_STR directory names no Pi: give this Pi\'s `mac` too (netbootd tells Pis apart by the MAC of their DHCP exchange)');
    }
    if (mac === undefined) continue;
    const other = byMac.get(mac);
    if (other !== undefined) error(`pis.${key}`, `MAC ${mac} is already the MAC of Pi \`${other}\``);
    else byMac.set(mac, key);
    if (c.hosts?.[mac] !== undefined) error(`pis.${key}`, `MAC ${mac} is also under \`hosts\`: a MAC is a Pi or a PC, not both`);
  }
}
