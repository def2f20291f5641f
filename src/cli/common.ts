/** What the CLI commands share: one-line errors, `PART:/path` arguments, streaming a file out, columns. */
import type { FileSource } from '../util/source.js';

/** A failure to show as-is on one line. */
export class CliError extends Error {}

const CAT_BUFFER = 1 << 20;

/** `1`, `1:/dir`, `0:/x`, `:/x`, `/x` → partition number (0 = whole image) and path. */
export function parseWhere(where: string): { part: number; path: string } {
  const m = /^(\d*)(?::(.*))?$/s.exec(where);
  if (m) {
    const path = m[2] === undefined || m[2] === '' ? '/' : m[2];
    return { part: m[1] === '' ? 0 : Number(m[1]), path: path.startsWith('/') ? path : `/${path}` };
  }
  if (where.startsWith('/')) return { part: 0, path: where };
  throw new CliError(`${where}: expected PART[:/path], e.g. 1:/config.txt`);
}

/** Copies a source to a writable stream through one fixed buffer, waiting for each write to be taken. */
export async function streamTo(src: FileSource, out: NodeJS.WritableStream): Promise<void> {
  const buf = Buffer.allocUnsafe(Math.min(CAT_BUFFER, Math.max(1, src.size)));
  let broken: Error | null = null;
  const onError = (e: Error): void => {
    broken = e;
  };
  out.on('error', onError);
  try {
    let pos = 0;
    while (pos < src.size && !broken) {
      const n = await new Promise<number>((resolve, reject) =>
        src.read(buf, 0, Math.min(buf.length, src.size - pos), pos, (e, got) => (e ? reject(e) : resolve(got))),
      );
      if (n === 0) break;
      // The buffer is reused only after the stream has taken these bytes (its callback), which also
      // makes a slow reader hold us back.
      await new Promise<void>((resolve) => {
        out.write(buf.subarray(0, n), (e) => {
          if (e) broken = e;
          resolve();
        });
      });
      pos += n;
    }
  } finally {
    out.off('error', onError);
  }
  const b = broken as (Error & { code?: string }) | null;
  if (b && b.code !== 'EPIPE') throw b; // a closed pipe (`| head`) is the reader's choice, not an error
}

/** Left-aligned columns separated by two spaces; columns listed in `right` are right-aligned. */
export function columns(rows: string[][], right: ReadonlySet<number> = new Set()): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, [...c].length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => {
          const pad = ' '.repeat(widths[i]! - [...c].length);
          return right.has(i) ? pad + c : i === r.length - 1 ? c : c + pad;
        })
        .join('  ')
        .trimEnd(),
    )
    .join('\n') + '\n';
}
