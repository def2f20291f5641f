/**
 * What the daemon forwards to the boot journey (src/registry/journey.ts): it turns the servers' events
 * (DHCP policy verdicts, TFTP/HTTP transfers, files not found, NBD opens, refusals and closes, NBD I/O
 * polled every few seconds) into journey events about a client named as the client table names it, and
 * keeps the boot metrics (per-stage counters, boot-duration histogram). It also keeps the image and overlay
 * sizes the status page shows, measured off the serving paths (async stat, every 30 s at most).
 */
import fs from 'node:fs';
import type { Config } from '../config/schema.js';
import type { PxeClientInfo } from '../dhcp/pxe.js';
import type { BootDecision } from '../dhcp/policy.js';
import type { NbdClient, NbdRefusal, OpenExport } from '../nbd/exports.js';
import type { NbdConnectionInfo } from '../nbd/connection.js';
import type { TransferStats } from '../tftp/session.js';
import type { ResolveRequest } from '../tftp/resolver.js';
import type { HttpTransfer } from '../http/server.js';
import { overlayPaths } from '../disk/cow.js';
import type { ClientTable } from '../registry/clients.js';
import { Journey, type CmdlineSeen, type Stage, type Who } from '../registry/journey.js';
import { parseNbdroot } from '../registry/cmdline.js';
import { readAll, type FileSource } from '../util/source.js';
import { parseTftpPath } from '../registry/registry.js';
import type { MetricsRegistry } from '../util/metrics.js';
import { normalizeAddress } from '../util/net.js';

/** Boot-duration buckets (seconds): a Pi 4 boots in 10–40 s, a PC through iPXE in 5–60 s. */
export const BOOT_BUCKETS = [2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600];

export interface ImageSizes {
  name: string;
  bytes?: number;
  overlays: Array<{ client: string; bytes: number }>;
}

export class JourneyFeed {
  private readonly sizes = new Map<string, ImageSizes>();
  private sizesAt = 0;
  private measuring = false;
  private listeners = new Set<() => void>();

  constructor(
    readonly journey: Journey,
    private readonly clients: ClientTable,
    private readonly config: () => Config,
    metrics: MetricsRegistry,
    private readonly nbdInfo: () => NbdConnectionInfo[] = () => [],
    /** Opens a file in a client's view (the registry's TFTP resolution): to read back the kernel command line it was served. */
    private readonly open?: (req: ResolveRequest) => Promise<FileSource | null>,
  ) {
    const stages = metrics.counter('netbootd_boot_stage_total', 'Boots that reached each stage (dhcp, loader, kernel, root, up, down)');
    const stalled = metrics.counter('netbootd_boot_stalled_total', 'Boots that went quiet before their root was up, by the stage they stalled at');
    const duration = metrics.histogram('netbootd_boot_duration_seconds', 'Time from a boot\'s first DHCP packet (else its first file) to its NBD root attach', BOOT_BUCKETS);
    journey.hooks = {
      stage: (s: Stage) => stages.inc({ stage: s }),
      stalled: (s: Stage) => stalled.inc({ stage: s }),
      bootDuration: (ms: number) => duration.observe(ms / 1000),
      changed: () => this.notify(),
    };
  }

  /** Live views: called (synchronously) after each change. */
  subscribe(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private notify(): void {
    for (const fn of this.listeners) fn();
  }

  private who(ip: string | undefined, extra: Who = {}): Who {
    if (ip === undefined) return extra;
    const id = this.clients.identity(normalizeAddress(ip));
    return { ...id, ...Object.fromEntries(Object.entries(extra).filter(([, v]) => v !== undefined)) };
  }

  private image(): string {
    const images = Object.keys(this.config().images);
    return images.length === 1 ? images[0]! : 'IMAGE';
  }

  /** A proxy DHCP verdict: answered (with what) or left silent (and why). */
  dhcp(c: PxeClientInfo, verdict: { decision: BootDecision | null; reason: string }): void {
    const ip = c.ciaddr !== '0.0.0.0' ? c.ciaddr : this.clients.holder('mac', c.mac);
    const firmware = c.isPi ? 'pi' : c.firmware;
    const who = this.who(ip, { mac: c.mac, firmware, ...(c.piModel ? { model: c.piModel.name } : {}) });
    const d = verdict.decision;
    const fix = !d && /not under hosts/.test(verdict.reason) ? `netbootd add-host ${c.mac} --image ${this.image()}` : undefined;
    this.journey.dhcp(who, {
      answered: d !== null,
      reason: verdict.reason,
      arch: c.arch,
      vendorClass: c.vendorClass,
      ...(c.hostname !== undefined ? { hostname: c.hostname } : {}),
      ...(d && !c.isPi ? { bootFile: d.url ? `http://…:${d.url.port}${d.url.path}` : d.bootFile } : {}),
      ...(c.isIpxe ? { message: 'iPXE' } : c.isHttpClient ? { message: 'HTTP boot' } : {}),
      ...(fix ? { fix } : {}),
    });
  }

  transfer(s: TransferStats): void {
    this.journey.file(this.who(s.address), { via: 'tftp', path: s.path, outcome: s.outcome, bytes: s.bytes, size: s.size, ms: s.ms, ...(s.detail ? { detail: s.detail } : {}) });
    if (s.outcome === 'complete' && isKernelConfig(s.path)) void this.readCmdline(s.address, s.port, s.path);
  }

  /** Reads back the kernel command line file a client was served and notes what its `nbdroot=` names. */
  private async readCmdline(address: string, port: number, path: string): Promise<void> {
    if (!this.open || this.reading >= 4) return; // bounded: a flood of config fetches reads a few at a time, the rest unchecked
    this.reading++;
    let src: FileSource | null = null;
    try {
      src = await this.open({ address, port, path });
      if (!src || src.size > 64 * 1024) return;
      const text = (await readAll(src, 64 * 1024)).toString('latin1');
      const ip = normalizeAddress(address);
      this.journey.cmdline(this.who(ip), { ...this.checkNbdroot(path, text), exports: this.exports() });
    } catch {
      /* gone or unreadable: nothing to say */
    } finally {
      src?.close();
      this.reading--;
    }
  }
  private reading = 0;

  private exports(): string[] {
    return Object.values(this.config().images).map((i) => i.export!).filter(Boolean);
  }

  /** The first `nbdroot=` of a kernel command line file, against this server's address, NBD port and exports. */
  checkNbdroot(path: string, text: string): CmdlineSeen {
    const m = /(?:^|[\s"'])nbdroot=("[^"]*"|\S*)/.exec(text);
    if (!m) {
      const exports = this.exports();
      const names = `${this.config().server.address ?? 'SERVER'}/${exports.length === 1 ? exports[0] : 'EXPORT'}`;
      return { path, problem: `its kernel looks for no NBD root: add nbdroot=${names} (netbootd prep does)` };
    }
    const value = m[1]!.replace(/^"|"$/g, '');
    const parsed = parseNbdroot(value);
    if ('error' in parsed) return { path, nbdroot: value, problem: parsed.error };
    const c = this.config();
    const problems: string[] = [];
    const address = c.server.address;
    if (parsed.server !== '' && address !== undefined && parsed.server !== address) problems.push(`it names server ${parsed.server}, not this server (${address})`);
    const port = c.nbd.port; // 0 (tests: any free port): not compared
    if (parsed.port !== undefined && port !== 0 && parsed.port !== port) problems.push(`it names port ${parsed.port}, this server's NBD port is ${port}`);
    const exports = this.exports();
    if (parsed.exportName === undefined) problems.push('it names no export (the old server,port form): netbootd serves named exports only');
    else if (!exports.includes(parsed.exportName)) problems.push(`export \`${parsed.exportName}\` is not one this server exports (${exports.slice(0, 8).join(', ') || 'none'})`);
    return { path, nbdroot: value, ...(problems.length ? { problem: problems.join('; ') } : {}) };
  }


  http(t: HttpTransfer): void {
    if (t.status === 404) return; // told by notFound, with why
    const outcome = t.status >= 200 && t.status < 300 ? 'complete' : t.status === 304 ? 'complete' : 'error';
    this.journey.file(this.who(t.address), { via: 'http', path: t.path, outcome, status: t.status, bytes: t.bytes, ms: t.ms });
    if (outcome === 'complete' && isKernelConfig(t.path)) void this.readCmdline(t.address, 0, t.path);
  }

  /** A resolution that found nothing: why (unserved clients) or where it was looked for. */
  notFound(via: 'tftp' | 'http', req: ResolveRequest): void {
    const ip = normalizeAddress(req.address);
    const u = this.clients.unserved()[0];
    const unserved = u && u.ip === ip && u.path === req.path && Date.now() - u.last < 1000 ? u : undefined;
    const who = this.who(ip, unserved ? { serial: unserved.serial, mac: unserved.mac } : {});
    if (unserved) {
      this.journey.notFound(who, { via, path: req.path, reason: unserved.reason, served: false, ...(unserved.fix ? { fix: unserved.fix } : {}) });
      return;
    }
    const looked = this.where(ip, req.path);
    this.journey.notFound(who, { via, path: req.path, reason: 'no such file', served: true, ...(looked ? { looked } : {}) });
  }

  /** Where a served client's files are looked for, in words. */
  private where(ip: string, path: string): string | undefined {
    const c = this.config();
    const ask = parseTftpPath(path);
    const inImage = (image: string | undefined, root: string | undefined): string | undefined =>
      image !== undefined ? `the boot partition of image ${image}` : root !== undefined ? `the folder ${root}` : undefined;
    if (ask.kind === 'pi') {
      const p = c.pis[ask.serial] as { image?: string; tftpRoot?: string } | undefined;
      return p ? inImage(p.image, p.tftpRoot) : undefined;
    }
    const mac = this.clients.get(ip)?.mac;
    const h = (mac !== undefined ? c.hosts[mac] : undefined) ?? c.defaults;
    return h ? inImage((h as { image?: string }).image, (h as { tftpRoot?: string }).tftpRoot) : undefined;
  }

  /** An NBD open, refused or not; the returned export's release notes the detach. */
  nbdOpen(name: string, c: NbdClient, r: OpenExport | NbdRefusal): OpenExport | NbdRefusal {
    const ip = normalizeAddress(c.address);
    const who = this.who(ip);
    if ('refused' in r) {
      const exports = this.exports();
      // The client is told `unknown` for an export its allow-list hides; the journey says what happened.
      const hidden = r.reason === 'unknown' && exports.includes(name);
      this.journey.refused(who, hidden ? { export: name, reason: 'policy', message: `address ${ip} is not in the export's allow-list` } : { export: name, reason: r.reason, message: r.message, exports });
      return r;
    }
    const img = Object.values(this.config().images).find((i) => i.export === r.name);
    const mode = img?.mode;
    this.journey.attach(who, { export: r.name, readOnly: r.readOnly, ...(mode ? { mode } : {}), ...(mode === 'cow' ? { overlay: this.clients.stateKey(ip) } : {}) });
    const release = r.release;
    let done = false;
    return {
      ...r,
      release: () => {
        if (!done) {
          done = true;
          const io = this.ioOf(ip);
          this.journey.detach(this.who(ip), { export: r.name, ...io });
        }
        release();
        if (mode === 'cow') void this.measure(); // its overlay may have grown
      },
    };
  }

  private ioOf(ip: string): { bytesRead: number; bytesWritten: number } {
    let bytesRead = 0;
    let bytesWritten = 0;
    for (const x of this.nbdInfo()) {
      if (normalizeAddress(x.ip) !== ip) continue;
      bytesRead += x.bytesRead;
      bytesWritten += x.bytesWritten;
    }
    return { bytesRead, bytesWritten };
  }

  /** Polls root I/O, notes stalls, refreshes image sizes now and then. */
  tick(now = Date.now()): void {
    const ips = new Set(this.nbdInfo().map((x) => normalizeAddress(x.ip)));
    for (const ip of ips) {
      const io = this.ioOf(ip);
      this.journey.io(this.who(ip), io.bytesRead, io.bytesWritten, now);
    }
    this.journey.tick(now);
    if (now - this.sizesAt > 30_000) void this.measure();
  }

  /** Image and overlay sizes (bytes on disk) as last measured. */
  imageSizes(): ImageSizes[] {
    if (this.sizesAt === 0) void this.measure();
    return [...this.sizes.values()];
  }

  /** Measures now (after a reset, say); concurrent calls share nothing but do no harm. */
  async measure(): Promise<void> {
    if (this.measuring) return;
    this.measuring = true;
    this.sizesAt = Date.now();
    try {
      const c = this.config();
      const next = new Map<string, ImageSizes>();
      for (const [name, img] of Object.entries(c.images)) {
        const entry: ImageSizes = { name, overlays: [] };
        try {
          entry.bytes = (await fs.promises.stat(img.path!)).size;
        } catch {
          /* missing: shown without a size */
        }
        if (img.mode === 'cow') {
          const dir = overlayPaths(c.server.stateDir, img.export!, 'x').dir;
          try {
            for (const f of (await fs.promises.readdir(dir)).slice(0, 1024)) {
              if (!f.endsWith('.overlay')) continue;
              const st = await fs.promises.stat(`${dir}/${f}`);
              entry.overlays.push({ client: f.slice(0, -'.overlay'.length), bytes: st.blocks * 512 });
            }
          } catch {
            /* no overlays yet */
          }
        }
        next.set(name, entry);
      }
      this.sizes.clear();
      for (const [k, v] of next) this.sizes.set(k, v);
      this.notify();
    } finally {
      this.measuring = false;
    }
  }
}

/** Files that hold a kernel command line: a Pi's cmdline.txt, PXELINUX/SYSLINUX/EXTLINUX and GRUB configs, iPXE scripts. */
export function isKernelConfig(path: string): boolean {
  const p = path.toLowerCase();
  return /(^|\/)(cmdline\.txt|syslinux\.cfg|extlinux\.conf|grub\.cfg|[^/]*\.ipxe)$/.test(p) || /(^|\/)pxelinux\.cfg\/[^/]+$/.test(p);
}
