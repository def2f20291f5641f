/**
 * Rewriting a kernel command line (a Pi's cmdline.txt) for a root on NBD: every argument is kept except
 * `root=`, `ip=` and `nbdroot=`, and `ip=dhcp nbdroot=SERVER/EXPORT root=/dev/nbd0pN` is appended. Pure and
 * idempotent: rewriting the result again gives the same text.
 */
import { isIPv6 } from 'node:net';
import { cmdlineValue, parseNbdroot, splitCmdline } from '../registry/cmdline.js';

export interface NbdRootTarget {
  server: string;
  exportName: string;
  /** The root partition number on the NBD disk (root=/dev/nbd0pN). */
  rootPartition: number;
}

const DROPPED = ['root', 'ip', 'nbdroot'];

/** The server and export named by an existing `nbdroot=` (for a rerun without --server), if any. */
export function existingNbdroot(text: string): { server: string; exportName?: string } | undefined {
  const v = cmdlineValue(splitCmdline(text), 'nbdroot');
  if (v === undefined) return undefined;
  const parsed = parseNbdroot(v);
  if ('error' in parsed || parsed.server === '') return undefined;
  return { server: parsed.server, ...(parsed.exportName ? { exportName: parsed.exportName } : {}) };
}

/** The rewritten command line (one line, ending with a newline when the original did or was empty). */
export function rewriteCmdline(text: string, t: NbdRootTarget): string {
  const kept = splitCmdline(text).filter((a) => !DROPPED.some((k) => a === k || a.startsWith(`${k}=`)));
  // A bare IPv6 address needs brackets; `host:port` (one colon) and `[v6]:port` are written as given.
  const server = isIPv6(t.server) ? `[${t.server}]` : t.server;
  const args = [...kept, 'ip=dhcp', `nbdroot=${server}/${t.exportName}`, `root=/dev/nbd0p${t.rootPartition}`];
  const eol = text === '' || /\n$/.test(text) ? (/\r\n$/.test(text) ? '\r\n' : '\n') : '';
  return args.join(' ') + eol;
}
