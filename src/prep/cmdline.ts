/**
 * Rewriting a kernel command line for a root on NBD: every argument is kept except `root=`, `ip=` and
 * `nbdroot=`, and `ip=dhcp nbdroot=SERVER/EXPORT root=/dev/nbd0pN` is appended. In a boot loader config
 * (PXELINUX/SYSLINUX `APPEND` lines, GRUB `linux` lines) only those lines' arguments change; every other
 * line stays byte for byte. Pure and idempotent: rewriting the result again gives the same text.
 */
import { isIPv6 } from 'node:net';
import { cmdlineValue, parseBootConfig, parseNbdroot, splitCmdline } from '../registry/cmdline.js';

export interface NbdRootTarget {
  server: string;
  exportName: string;
  /** The root partition number on the NBD disk (root=/dev/nbd0pN). */
  rootPartition: number;
}

const DROPPED = ['root', 'ip', 'nbdroot'];

/** The server and export named by an existing `nbdroot=` (for a rerun without --server), if any. */
export function existingNbdroot(text: string, path = 'cmdline.txt'): { server: string; exportName?: string } | undefined {
  const cfg = parseBootConfig(path, text);
  const args = 'error' in cfg ? splitCmdline(text) : cfg.lines.flatMap((l) => splitCmdline(l.args));
  const v = cmdlineValue(args, 'nbdroot');
  if (v === undefined) return undefined;
  const parsed = parseNbdroot(v);
  if ('error' in parsed || parsed.server === '') return undefined;
  return { server: parsed.server, ...(parsed.exportName ? { exportName: parsed.exportName } : {}) };
}

/** The arguments of one kernel command line, rewritten (no line end). */
function rewriteArgs(text: string, t: NbdRootTarget): string {
  const kept = splitCmdline(text).filter((a) => !DROPPED.some((k) => a === k || a.startsWith(`${k}=`)));
  // A bare IPv6 address needs brackets; `host:port` (one colon) and `[v6]:port` are written as given.
  const server = isIPv6(t.server) ? `[${t.server}]` : t.server;
  return [...kept, 'ip=dhcp', `nbdroot=${server}/${t.exportName}`, `root=/dev/nbd0p${t.rootPartition}`].join(' ');
}

/** The rewritten command line (one line, ending with a newline when the original did or was empty). */
export function rewriteCmdline(text: string, t: NbdRootTarget): string {
  const eol = text === '' || /\n$/.test(text) ? (/\r\n$/.test(text) ? '\r\n' : '\n') : '';
  return rewriteArgs(text, t) + eol;
}

/**
 * The boot loader config at `path` rewritten for a root on NBD, or why it cannot be: a file that is not a
 * kernel command line nor a config this understands, or a config with no kernel line to change.
 */
export function rewriteBootConfig(path: string, text: string, t: NbdRootTarget): { text: string } | { error: string } {
  const cfg = parseBootConfig(path, text);
  if ('error' in cfg) return cfg;
  if (cfg.kind === 'cmdline') return { text: rewriteCmdline(text, t) };
  if (cfg.lines.length === 0) {
    return { error: `${path}: no ${cfg.kind === 'grub' ? '`linux`' : '`APPEND`'} line to put the kernel arguments on: add one to the entry that boots this image` };
  }
  let out = '';
  let at = 0;
  for (const l of cfg.lines) {
    // `linux /vmlinuz` with no arguments yet: a space before the first one.
    const sep = l.start > 0 && !/\s/.test(text[l.start - 1]!) ? ' ' : '';
    out += text.slice(at, l.start) + sep + rewriteArgs(l.args, t);
    at = l.end;
  }
  return { text: out + text.slice(at) };
}
