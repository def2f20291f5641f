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
