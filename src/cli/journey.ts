/** `netbootd status` views of the boot journeys: the client list with stages, one client's story, and --follow. */
import { columns } from './common.js';
import type { Boot, ClientJourney, ClientSummary } from '../registry/journey.js';

/** A client's row as /status sends it (the registry's summary, JSON-typed). */
export type BootSummary = Pick<ClientSummary, 'id' | 'ip' | 'mac' | 'serial' | 'model' | 'name' | 'stage' | 'lastBoot' | 'bootMs' | 'hints' | 'unknown' | 'last'>;

/** One client's journey as /journey sends it (what `Journey.get` returns, dates and all as JSON). */
export type JourneyJson = Pick<ClientJourney, 'id' | 'ip' | 'mac' | 'serial' | 'model' | 'name' | 'firmware' | 'vendorClass' | 'hostname' | 'unknown'> & {
  stage: string;
  boots: Array<Pick<Boot, 'start' | 'durationMs' | 'attached' | 'bytesRead' | 'bytesWritten' | 'dropped' | 'hints'> & { shown: string; events: Array<{ t: number }>; lines: string[] }>;
};

const when = (iso: string | undefined): string => iso?.replace('T', ' ').slice(0, 19) ?? '-';

/** The client table with stages (newest activity first). */
export function formatBoots(boots: BootSummary[]): string {
  if (boots.length === 0) return 'no boots seen yet\n';
  const rows = [['CLIENT', 'ADDRESS', 'MODEL', 'STAGE', 'LAST BOOT', 'TOOK', 'LAST']];
  for (const b of boots) {
    rows.push([b.name ? `${b.id} (${b.name})` : b.id, b.ip ?? '-', b.model ?? '-', b.stage, when(b.lastBoot), b.bootMs !== undefined ? `${(b.bootMs / 1000).toFixed(1)} s` : '-', (b.last ?? '-').slice(0, 80)]);
  }
  const out = [columns(rows).trimEnd()];
  for (const b of boots) for (const h of b.hints) out.push(`  ${b.id}: ${h.text}${h.fix ? `; run: ${h.fix}` : ''}`);
  return `${out.join('\n')}\n`;
}

/** One client's journey: each boot (newest first) as a timeline, with its hints. */
export function formatJourney(j: JourneyJson): string {
  const out: string[] = [];
  const ids = [j.serial ? `serial ${j.serial}` : '', j.mac ? `MAC ${j.mac}` : '', j.ip ? `address ${j.ip}` : ''].filter(Boolean).join(', ');
  out.push(`${j.id}${j.name ? ` (${j.name})` : ''}: ${ids}${j.model ? `, ${j.model}` : j.firmware ? `, ${j.firmware}` : ''}${j.vendorClass ? ` [${j.vendorClass}]` : ''}${j.hostname ? `, DHCP host name ${JSON.stringify(j.hostname)}` : ''}`);
  out.push(`stage: ${j.stage}`);
  if (j.unknown) out.push(`not served: ${j.unknown.reason}${j.unknown.fix ? `\n  to serve it: ${j.unknown.fix}` : ''}`);
  j.boots.forEach((b, n) => {
    out.push('');
    out.push(`${n === 0 ? 'latest boot' : 'earlier boot'}, ${new Date(b.start).toISOString().replace('T', ' ').slice(0, 19)}: ${b.shown}${b.durationMs !== undefined ? `, root attached after ${(b.durationMs / 1000).toFixed(1)} s` : ''}${b.attached ? `, root in use (read ${b.bytesRead} B, wrote ${b.bytesWritten} B)` : ''}`);
    b.lines.forEach((line, i) => out.push(`  +${(((b.events[i]?.t ?? b.start) - b.start) / 1000).toFixed(1).padStart(6)} s  ${line}`));
    if (b.dropped) out.push(`  (${b.dropped} events left out)`);
    for (const h of b.hints) out.push(`  hint: ${h.text}${h.fix ? `\n        run: ${h.fix}` : ''}`);
  });
  return `${out.join('\n')}\n`;
}

/**
 * `--follow`: reads the daemon's event stream and prints one line per change of a client's stage or last
 * event (like `journalctl -f`, per boot). Resolves when the stream ends; `signal` stops it.
 */
export async function follow(url: string, headers: Record<string, string>, write: (s: string) => void, signal?: AbortSignal): Promise<void> {
  const res = await fetch(`${url.replace(/\/$/, '')}/events`, { headers, ...(signal ? { signal } : {}) });
  if (!res.ok || !res.body) throw new Error(`the daemon at ${url} refused the event stream: HTTP ${res.status}`);
  const seen = new Map<string, string>();
  /** The first snapshot is the past: its clients are listed without their (old) hints; clients that appear later get theirs. */
  let snapshot = true;
  const decoder = new TextDecoder();
  let buf = '';
  try {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buf += decoder.decode(chunk, { stream: true });
      let end: number;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const data = block.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
        if (!data) continue;
        let s: { boots?: BootSummary[] };
        try {
          s = JSON.parse(data) as { boots?: BootSummary[] };
        } catch {
          continue;
        }
        for (const b of [...(s.boots ?? [])].reverse()) {
          const line = `${b.stage} ${b.last ?? ''}`;
          if (seen.get(b.id) === line) continue;
          const past = snapshot && !seen.has(b.id);
          seen.set(b.id, line);
          const hints = past ? '' : b.hints.map((h) => `\n    hint: ${h.text}${h.fix ? `; run: ${h.fix}` : ''}`).join('');
          write(`${new Date().toISOString().slice(11, 19)} ${b.id}${b.ip ? ` ${b.ip}` : ''} [${b.stage}] ${b.last ?? ''}${b.bootMs !== undefined && b.stage === 'root' ? ` (booted in ${(b.bootMs / 1000).toFixed(1)} s)` : ''}${hints}\n`);
        }
        snapshot = false;
      }
    }
  } catch (e) {
    if ((e as Error).name !== 'AbortError') throw e;
  }
}
