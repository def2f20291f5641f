/**
 * How the TFTP server finds what to serve: `(client address, normalized path) → FileSource | null`.
 * The server normalizes and vets the path (see `normalizePath`) before any resolver sees it. The daemon's
 * resolver is the registry (src/registry/registry.ts: Pi serials and PCs → an image's boot FAT through the
 * image pool, or a directory); `DirectoryResolver` here serves a confined directory root.
 */
import fs from 'node:fs';
import path from 'node:path';
import { FdSource, type FileSource } from '../util/source.js';
import { ParseError, type Result, ok, err } from '../util/errors.js';

export interface ResolveRequest {
  /** Client IPv4 address. */
  address: string;
  port: number;
  /** Normalized: no leading `/`, `/` separators, no empty, `.` or `..` segments, no control characters. */
  path: string;
}

export interface TftpResolver {
  /** The file to serve, or null when there is none. Rejections are logged and answered as "not found". */
  resolve(req: ResolveRequest): Promise<FileSource | null>;
  /**
   * Optional, synchronous and side-effect free: whether the request comes from a configured client
   * ('known': served first when transfer slots are short) or not ('unknown': limited to a share of the
   * slots and a per-subnet budget). Without it every client is 'unknown' (the share limit is then off).
   */
  priority?(address: string, path: string): ClientPriority;
}

export type ClientPriority = 'known' | 'unknown';

/**
 * Normalizes a requested filename: `\` becomes `/`, leading and repeated `/` and `.` segments go
 * (a Pi 5 asks for `serial//config.txt`); `..`, NUL and control characters are refused.
 */
export function normalizePath(raw: string): Result<string> {
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return err(new ParseError('TFTP_BAD_PATH', 'control character in path'));
  }
  const parts: string[] = [];
  for (const seg of raw.replace(/\\/g, '/').split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') return err(new ParseError('TFTP_BAD_PATH', '".." in path'));
    parts.push(seg);
  }
  if (parts.length === 0) return err(new ParseError('TFTP_BAD_PATH', 'empty path'));
  return ok(parts.join('/'));
}

function isInside(root: string, p: string): boolean {
  return p === root || p.startsWith(root.endsWith(path.sep) ? root : root + path.sep);
}

/**
 * Serves regular files under `root`. The resolved path is realpath'd and must stay inside the realpath'd
 * root (no symlinks out); after opening, the fd's own path (/proc/self/fd) is checked again, which closes
 * the window where a component is swapped for a symlink between the check and the open. Only regular files
 * are opened (no FIFO, device or socket), without blocking.
 */
export class DirectoryResolver implements TftpResolver {
  private rootReal: Promise<string> | null = null;
  constructor(readonly root: string) {}

  private realRoot(): Promise<string> {
    if (!this.rootReal) {
      const p = fs.promises.realpath(this.root);
      this.rootReal = p;
      // A root that does not exist yet is looked up again next time.
      p.catch(() => {
        if (this.rootReal === p) this.rootReal = null;
      });
    }
    return this.rootReal;
  }

  async resolve(req: ResolveRequest): Promise<FileSource | null> {
    const root = await this.realRoot();
    let real: string;
    try {
      real = await fs.promises.realpath(path.join(root, req.path));
    } catch {
      return null;
    }
    if (!isInside(root, real)) return null;
    // Only regular files are ever opened: a FIFO opened for reading blocks a thread-pool thread until a
    // writer appears (four of them freeze every fs call of the process), and a device may act on open.
    // lstat first; open with O_NONBLOCK (a FIFO swapped in after the lstat opens without blocking) and
    // O_NOCTTY; then fstat the fd itself below.
    const pre = await new Promise<fs.Stats | null>((resolve) => fs.lstat(real, (e, s) => resolve(e ? null : s)));
    if (!pre || !pre.isFile()) return null;
    const C = fs.constants;
    const fd = await new Promise<number | null>((resolve) =>
      fs.open(real, C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK | C.O_NOCTTY, (e, fd) => resolve(e ? null : fd)),
    );
    if (fd === null) return null;
    const st = await new Promise<fs.Stats | null>((resolve) => fs.fstat(fd, (e, s) => resolve(e ? null : s)));
    let okay = st !== null && st.isFile();
    if (okay) {
      const viaProc = await new Promise<string | null>((resolve) =>
        fs.readlink(`/proc/self/fd/${fd}`, (e, p) => resolve(e ? null : p)),
      );
      if (viaProc !== null && !isInside(root, viaProc)) okay = false;
    }
    if (!okay) {
      fs.close(fd, () => {});
      return null;
    }
    return new FdSource(fd, st!.size);
  }
}
