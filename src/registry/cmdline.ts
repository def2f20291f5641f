/**
 * Kernel command lines (a Pi's cmdline.txt, a pxelinux APPEND): parsing, and what Debian/Ubuntu's
 * initramfs NBD script (nbd-client's `scripts/local-top/nbd`) would make of `nbdroot=` and `root=`.
 * `netbootd check` uses this to catch the most common silent netboot failure: a root that points at
 * another server, port or export than this one.
 */

export interface NbdRoot {
  /** Server host; '' means "from DHCP" (ROOTSERVER). */
  server: string;
  /** Port, when given (default 10809). */
  port?: number;
  /** Export name; undefined in the old `server,port` form (no name: the default export). */
  exportName?: string;
  /** Device named in the three-part form `server,export,nbd0`. */
  device?: string;
}

/** Splits a command line into arguments (quotes group, as the kernel does). */
export function splitCmdline(text: string): string[] {
  const out: string[] = [];
  const re = /(?:[^\s"]+|"[^"]*")+/g;
  for (const m of text.trim().matchAll(re)) out.push(m[0]);
  return out;
}

/** The value of the last `key=` argument (the kernel and initramfs scripts take the last), or undefined. */
export function cmdlineValue(args: string[], key: string): string | undefined {
  let v: string | undefined;
  for (const a of args) if (a.startsWith(`${key}=`)) v = a.slice(key.length + 1);
  return v;
}

function portOf(text: string): number | undefined | null {
  if (text === '') return undefined;
  if (!/^\d{1,5}$/.test(text)) return null;
  const n = Number(text);
  return n >= 1 && n <= 65535 ? n : null;
}

/**
 * Parses `nbdroot=` as nbd-client's initramfs script does. Returns an error string when the value
 * cannot be understood (the script would fail with "Insufficient information").
 */
export function parseNbdroot(value: string): NbdRoot | { error: string } {
  const bad = (why: string): { error: string } => ({ error: `nbdroot=${value}: ${why}` });
  if (value === '' || value === 'dhcp') return bad('takes the root path from DHCP option 17, which netbootd does not send; name server and export');
  const commas = value.split(',');
  if (commas.length >= 3) {
    const [server, exportName] = commas;
    return { server: server ?? '', exportName: exportName ?? '', device: commas[commas.length - 1] };
  }
  if (commas.length === 2) {
    const port = portOf(commas[1]!);
    if (port === null) return bad(`\`${commas[1]}\` is not a port`);
    return { server: commas[0]!, ...(port !== undefined ? { port } : {}) };
  }
  let server: string;
  let rest: string;
  if (value.startsWith('[')) {
    const close = value.indexOf(']');
    if (close < 0) return bad('unclosed [ in an IPv6 address');
    server = value.slice(1, close);
    rest = value.slice(close + 1);
    if (rest.startsWith(':/')) return { server, exportName: rest.slice(1) };
  } else {
    const m = /^[^:/]*/.exec(value)!;
    server = m[0];
    rest = value.slice(server.length);
    if (value.startsWith('/') || rest.startsWith(':/')) return { server, exportName: rest.replace(/^:/, '') };
  }
  rest = rest.replace(/^:/, '');
  const slash = rest.indexOf('/');
  const portText = slash < 0 ? rest : rest.slice(0, slash);
  const exportName = slash < 0 ? '' : rest.slice(slash + 1);
  const port = portOf(portText);
  if (port === null) return bad(`\`${portText}\` is not a port`);
  if (exportName === '') return bad('no export name (write nbdroot=SERVER/EXPORT)');
  return { server, exportName, ...(port !== undefined ? { port } : {}) };
}

/** `root=/dev/nbd0p2` → { device: 'nbd0', partition: 2 }; other roots → null. */
export function parseNbdDevice(root: string | undefined): { device: string; partition?: number } | null {
  const m = /^\/dev\/(nbd\d+)(?:p(\d+))?$/.exec(root ?? '');
  if (!m) return null;
  return { device: m[1]!, ...(m[2] !== undefined ? { partition: Number(m[2]) } : {}) };
}

// ------------------------------------------------------------------ boot loader configs

/** Where a PC image's boot partition keeps its kernel command line, in the order they are looked for. */
export const KERNEL_CONFIGS = [
  'pxelinux.cfg/default', 'syslinux.cfg', 'syslinux/syslinux.cfg', 'extlinux.conf', 'extlinux/extlinux.conf', 'boot/grub/grub.cfg', 'grub/grub.cfg',
];

/** Which kind of file holds the kernel command line. */
export type BootConfigKind = 'cmdline' | 'syslinux' | 'grub';

/** One kernel command line inside a boot loader config: `text.slice(start, end)` is the arguments. */
export interface KernelArgs {
  /** 1-based line number. */
  line: number;
  start: number;
  end: number;
  args: string;
}

export interface BootConfig {
  kind: BootConfigKind;
  /** Every place a kernel command line is given (a Pi's cmdline.txt: one). */
  lines: KernelArgs[];
}

const SYSLINUX_NAMES = /(^|\/)(pxelinux\.cfg\/[^/]+|syslinux\.cfg|isolinux\.cfg|extlinux\.conf)$/i;
const SYSLINUX_DIRECTIVE = /^\s*(default|label|kernel|linux|append|initrd|menu|prompt|timeout|ontimeout|say|include|ipappend|sysappend|localboot|ui)\b/i;
/** Directive words that cannot appear as kernel arguments: two of them on one line means lines were joined. */
const SYSLINUX_JOINED = /(^|\s)(label|kernel|append|initrd|default)\s+\S+.*\s(label|kernel|append|initrd)\s/i;
const GRUB_LINUX = /^(\s*)(linux|linuxefi|linux16)(\s+)(\S+)([ \t]*)(.*)$/;

/**
 * Finds the kernel command lines of a boot loader config: a Pi `cmdline.txt` (the whole first line),
 * PXELINUX/SYSLINUX/EXTLINUX (`APPEND` lines), or GRUB (`linux` lines, after the kernel path). The kind
 * comes from the file name, else from the content. A file that is none of these, or a SYSLINUX file whose
 * directives were joined into one line (PXELINUX reads one directive per line), is an error that says so.
 */
export function parseBootConfig(path: string, text: string): BootConfig | { error: string } {
  const name = path.replace(/^\/+/, '');
  const rows = text.split('\n');
  const nonEmpty = rows.filter((r) => r.trim() !== '' && !/^\s*#/.test(r));
  let kind: BootConfigKind;
  if (/(^|\/)cmdline\.txt$/i.test(name)) kind = 'cmdline';
  else if (SYSLINUX_NAMES.test(name)) kind = 'syslinux';
  else if (/(^|\/)grub\.cfg$/i.test(name)) kind = 'grub';
  else if (rows.some((r) => /^\s*menuentry\b/.test(r)) || rows.some((r) => GRUB_LINUX.test(r))) kind = 'grub';
  else if (nonEmpty.length > 0 && nonEmpty.every((r) => SYSLINUX_DIRECTIVE.test(r))) kind = 'syslinux';
  else if (nonEmpty.length <= 1) kind = 'cmdline';
  else {
    return { error: `${name}: ${nonEmpty.length} lines, and neither a kernel command line (one line, like a Pi's cmdline.txt) nor a PXELINUX/SYSLINUX or GRUB config: name the file that holds the kernel command line` };
  }
  const lines: KernelArgs[] = [];
  let offset = 0;
  if (kind === 'cmdline') {
    if (nonEmpty.length > 1) {
      return { error: `${name}: ${nonEmpty.length} lines; a kernel command line file is one line (the Pi firmware reads only the first)` };
    }
    const first = rows[0] ?? '';
    const end = first.endsWith('\r') ? first.length - 1 : first.length;
    lines.push({ line: 1, start: 0, end, args: first.slice(0, end) });
    return { kind, lines };
  }
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i]!;
    const body = row.endsWith('\r') ? row.slice(0, -1) : row;
    if (kind === 'syslinux') {
      if (SYSLINUX_JOINED.test(body)) {
        return { error: `${name}:${i + 1}: several PXELINUX directives on one line (\`${body.slice(0, 60)}…\`): the file was joined into one line; PXELINUX reads one directive per line` };
      }
      const m = /^(\s*append\s+)(.*)$/i.exec(body);
      if (m && m[2]!.trim() !== '-') lines.push({ line: i + 1, start: offset + m[1]!.length, end: offset + body.length, args: m[2]! });
    } else {
      const m = GRUB_LINUX.exec(body);
      if (m) {
        const start = offset + m[1]!.length + m[2]!.length + m[3]!.length + m[4]!.length + m[5]!.length;
        lines.push({ line: i + 1, start, end: offset + body.length, args: m[6]! });
      }
    }
    offset += row.length + 1;
  }
  return { kind, lines };
}
