/**
 * The boot journey of each client: one story per boot, from the DHCP exchange to the NBD root and back.
 *
 * Pure and bounded: the daemon forwards what its servers saw (DHCP answered or ignored and why, each boot
 * file by TFTP/HTTP, files not found and where they were looked for, NBD attach/refusal/detach, root I/O)
 * and this module keeps, per client, the last `bootsPerClient` boots of at most `eventsPerBoot` events each,
 * for at most `maxClients` clients (the least recently active goes first). It never does I/O; `toJSON` /
 * `load` let the daemon persist it in stateDir.
 *
 * A client is joined as the client table joins it: by Pi serial, by MAC, else by address. A Pi shows up
 * by MAC in DHCP and by serial in TFTP: the two stories are merged when an event names both.
 *
 * Stages of a boot, in order: dhcp → loader (first boot files) → kernel (kernel, initrd, DTBs, cmdline) →
 * root (NBD attached) → up (root written to, or read for `upAfterMs`) → down (NBD detached). A boot that
 * is neither up nor down and has been quiet for `stalledAfterMs` is shown as `stalled-at-<stage>`. The boot
 * duration is the time from its first DHCP packet (else its first file) to its NBD attach.
 */

export const STAGES = ['dhcp', 'loader', 'kernel', 'root', 'up', 'down'] as const;
export type Stage = (typeof STAGES)[number];

/** Who an event is about: what the client table knows of the address (any subset). */
export interface Who {
  ip?: string | undefined;
  mac?: string | undefined;
  serial?: string | undefined;
  model?: string | undefined;
  name?: string | undefined;
  firmware?: string | undefined;
}

export interface Hint {
  code: HintCode;
  text: string;
  /** A command that would fix it. */
  fix?: string;
}

export type HintCode =
  | 'serial-not-configured'
  | 'host-not-configured'
  | 'dhcp-ignored'
  | 'file-missing'
  | 'pi5-only'
  | 'cmdline-export'
  | 'export-refused'
  | 'no-tftp'
  | 'no-nbd'
  | 'transfer-failed'
  | 'stalled';

interface EventBase {
  t: number;
  /** Repeats of the same event folded into this one (retransmissions, probes). */
  count?: number;
}
export type JourneyEvent = EventBase &
  (
    | { kind: 'dhcp'; answered: boolean; reason: string; message?: string; firmware?: string; arch?: number; vendorClass?: string; model?: string; bootFile?: string }
    | { kind: 'file'; via: 'tftp' | 'http'; path: string; outcome: string; bytes: number; size?: number; ms: number; mibps?: number; status?: number; detail?: string }
    | { kind: 'not-found'; via: 'tftp' | 'http'; path: string; reason: string; looked?: string }
    | { kind: 'attach'; export: string; readOnly: boolean; mode?: string; overlay?: string }
    | { kind: 'refused'; export: string; reason: string; message: string }
    | { kind: 'detach'; export: string; bytesRead: number; bytesWritten: number; ms: number }
  );

export interface Boot {
  seq: number;
  start: number;
  stage: Stage;
  /** When each stage was first reached. */
  reached: Partial<Record<Stage, number>>;
  lastActivity: number;
  /** First DHCP packet (else first file) to NBD attach. */
  durationMs?: number;
  /** Whether the boot's start was a DHCP packet (else its first file). */
  fromDhcp: boolean;
  attachedAt?: number;
  /** Open NBD exports of this boot. */
  attached: number;
  bytesRead: number;
  bytesWritten: number;
  files: number;
  fileBytes: number;
  events: JourneyEvent[];
  /** Events left out to bound memory (the first few and the latest are kept). */
  dropped: number;
  hints: Hint[];
  /** The stall was noted (hint and counter) once. */
  stallNoted?: boolean;
  /** The kernel command line file the client was served (cmdline.txt, a PXELINUX config, an iPXE script) and its `nbdroot=`. */
  cmdline?: CmdlineSeen;
}

/** What the kernel command line a client was served says about its NBD root, checked against this server. */
export interface CmdlineSeen {
  /** The file it came from, as the client asked for it. */
  path: string;
  /** The `nbdroot=` value (absent: the file names none). */
  nbdroot?: string;
  /** What in it does not match this server (address, port, export), or undefined when it all matches. */
  problem?: string;
}

/** Who a client is, as the journey knows it (the story and its summary both carry it). */
interface ClientNames {
  /** serial, else MAC, else address: what the CLI and the page name it by. */
  id: string;
  ip?: string;
  mac?: string;
  serial?: string;
  model?: string;
  name?: string;
  firmware?: string;
  /** DHCP option 12 as the client sent it last (client-controlled: clipped, shown as text only). */
  hostname?: string;
}

export interface ClientJourney extends ClientNames {
  vendorClass?: string;
  lastActivity: number;
  /** Set while the config does not serve it, with the command that would. */
  unknown?: { reason: string; fix?: string };
  boots: Boot[];
}

export interface JourneyOptions {
  maxClients?: number;
  bootsPerClient?: number;
  eventsPerBoot?: number;
  /** Quiet time after which a boot that is neither up nor down is stalled (ms). */
  stalledAfterMs?: number;
  /** Time attached after which a root that was only read counts as up (ms). */
  upAfterMs?: number;
}

export interface JourneyHooks {
  /** A boot reached a stage for the first time. */
  stage?(stage: Stage, client: ClientJourney): void;
  /** A boot attached its root: first DHCP (or file) to attach, in ms. */
  bootDuration?(ms: number, client: ClientJourney): void;
  /** A boot was noted stalled at a stage. */
  stalled?(stage: Stage, client: ClientJourney): void;
  /** Anything changed (for live views; called synchronously, keep it cheap). */
  changed?(client: ClientJourney): void;
}

const MAX_STR = 256;
const KEEP_FIRST = 8;
const ORDER: Record<Stage, number> = { dhcp: 0, loader: 1, kernel: 2, root: 3, up: 4, down: 5 };

/** A string from a client, bounded (and without control characters, which no view wants). */
export function clip(s: string, max = MAX_STR): string {
  // eslint-disable-next-line no-control-regex
  const clean = s.replace(/[\u0000-\u001f\u007f]/g, '?');
  return clean.length > max ? `${clean.slice(0, max - 1)}…` : clean;
}

const base = (path: string): string => {
  const p = path.replace(/\\/g, '/');
  return p.slice(p.lastIndexOf('/') + 1).toLowerCase();
};

/** The stage a boot file belongs to: the kernel and what comes with it, else the loader. */
export function fileStage(path: string): 'loader' | 'kernel' {
  const b = base(path);
  const p = path.toLowerCase();
  if (/^(kernel[\w-]*\.img|vmlinu[xz].*|linux(\.efi)?|bzimage|zimage|image(\.gz)?|initrd.*|initramfs.*|.*\.dtbo?|cmdline\.txt)$/.test(b)) return 'kernel';
  if (/(^|\/)(overlays|casper|live|boot\/vmlinuz)/.test(p) || /vmlinuz|initrd/.test(b)) return 'kernel';
  return 'loader';
}

/** Files a boot cannot do without: when one is missing, say so (Pis probe many optional files: those stay quiet). */
export function isEssential(path: string, bootFile?: string): boolean {
  const b = base(path);
  if (bootFile !== undefined && base(bootFile) === b) return true;
  return /^(start4?\.elf|start_cd\.elf|start4cd\.elf|fixup4?\.dat|bootcode\.bin|kernel(7l?|8|_2712)?\.img|cmdline\.txt|vmlinuz.*|initrd.*|initramfs.*|pxelinux\.0|lpxelinux\.0|ldlinux\.c32|syslinux\.efi|grubx64\.efi|grubnetx64\.efi|shimx64\.efi|bootx64\.efi|undionly\.kpxe|ipxe\.efi|boot\.ipxe)$/.test(b);
}

/** Hints for a file that was not found for a client the config serves. */
export function missingFileHints(path: string, looked: string | undefined): Hint[] {
  const b = base(path);
  const where = looked ?? 'its boot files';
  const hints: Hint[] = [{ code: 'file-missing', text: `\`${clip(path, 128)}\` is not in ${where}` }];
  if (b === 'start4.elf' || b === 'fixup4.dat') {
    hints.push({
      code: 'pi5-only',
      text: `a Pi 4 asked for ${b}, which ${where} lacks: an image made for the Pi 5 only has no start4.elf/fixup4.dat (the Pi 5 needs none); use an image (or firmware files) that also supports the Pi 4`,
    });
  }
  return hints;
}

/** Hints for an NBD refusal. */
export function refusalHints(exportName: string, reason: string, message: string, exports: readonly string[] = [], cmdline?: CmdlineSeen): Hint[] {
  if (reason === 'unknown') {
    const known = exports.length ? ` (this server exports: ${exports.slice(0, 8).map((x) => clip(x, 64)).join(', ')})` : '';
    const why = cmdline ? `the ${cmdlineSays(cmdline)}` : 'its cmdline.txt (nbdroot=) names another export, port or server';
    return [{ code: 'cmdline-export', text: `asked for NBD export \`${clip(exportName, 64)}\`, which is not configured${known}: ${why}` }];
  }
  const held = /in use|held|another (writer|client)|already open/i.test(message);
  return [{ code: 'export-refused', text: held ? `export \`${clip(exportName, 64)}\` is held by another writer: ${clip(message)}` : `export \`${clip(exportName, 64)}\` refused: ${clip(message)} (allow-list, TLS or certificate)` }];
}

/** `cmdline.txt it was served says nbdroot=…: problem`, in words. */
export function cmdlineSays(c: CmdlineSeen): string {
  const said = c.nbdroot !== undefined ? `says nbdroot=${clip(c.nbdroot, 128)}` : 'has no nbdroot=';
  return `${clip(c.path, 96)} it was served ${said}${c.problem ? `: ${clip(c.problem)}` : ''}`;
}

/**
 * A boot's stage as shown: `stalled-at-<stage>` after the quiet time; `refused` for a client that was given
 * nothing at all (no DHCP answer, no file) and has a hint saying why — an unknown or refused client, which
 * never reached the DHCP stage in any useful sense.
 */
export function shownStage(boot: Boot, now: number, stalledAfterMs: number): string {
  if (boot.stage === 'up' || boot.stage === 'down' || boot.attached > 0) return boot.stage;
  if (boot.stage === 'dhcp' && boot.files === 0 && boot.hints.length > 0 && !boot.events.some((e) => e.kind === 'dhcp' && e.answered)) return 'refused';
  return now - boot.lastActivity >= stalledAfterMs ? `stalled-at-${boot.stage}` : boot.stage;
}

export interface ClientSummary extends ClientNames {
  stage: string;
  lastBoot?: string;
  lastActivity: string;
  bootMs?: number;
  boots: number;
  hints: Hint[];
  unknown?: { reason: string; fix?: string };
  /** A short line: what happened last. */
  last?: string;
}

export class Journey {
  readonly opts: Required<JourneyOptions>;
  /** Clients by id, least recently active first. */
  private readonly clients = new Map<string, ClientJourney>();
  /** s:<serial>, m:<mac>, i:<ip> → client. */
  private readonly alias = new Map<string, ClientJourney>();
  private seq = 0;
  hooks: JourneyHooks = {};

  constructor(opts: JourneyOptions = {}) {
    this.opts = {
      maxClients: opts.maxClients ?? 256,
      bootsPerClient: opts.bootsPerClient ?? 5,
      eventsPerBoot: Math.max(KEEP_FIRST + 4, opts.eventsPerBoot ?? 64),
      stalledAfterMs: opts.stalledAfterMs ?? 120_000,
      upAfterMs: opts.upAfterMs ?? 30_000,
    };
  }

  /** New limits (a reload): the smaller bounds apply from the next event on. */
  configure(opts: JourneyOptions): void {
    Object.assign(this.opts, Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)));
    this.trim();
  }

  get size(): number {
    return this.clients.size;
  }

  // ------------------------------------------------------------------ events

  /** A DHCP packet the proxy answered (or stayed silent to, and why). */
  dhcp(who: Who, e: { answered: boolean; reason: string; message?: string; arch?: number; vendorClass?: string; hostname?: string; bootFile?: string; fix?: string }, now = Date.now()): void {
    const c = this.client(who, now);
    if (e.vendorClass !== undefined) c.vendorClass = clip(e.vendorClass);
    if (e.hostname !== undefined) c.hostname = clip(e.hostname, 64);
    let boot = this.current(c);
    // iPXE and GRUB ask DHCP again mid-boot: that is the same boot, unless it had reached its root or went quiet.
    if (!boot || ORDER[boot.stage] >= ORDER.root || now - boot.lastActivity >= this.opts.stalledAfterMs) boot = this.newBoot(c, now, true);
    this.push(c, boot, {
      t: now, kind: 'dhcp', answered: e.answered, reason: clip(e.reason),
      ...(e.message !== undefined ? { message: e.message } : {}),
      ...(who.firmware !== undefined ? { firmware: clip(who.firmware, 32) } : {}),
      ...(e.arch !== undefined ? { arch: e.arch } : {}),
      ...(e.vendorClass !== undefined ? { vendorClass: clip(e.vendorClass) } : {}),
      ...(who.model !== undefined ? { model: clip(who.model, 32) } : {}),
      ...(e.bootFile !== undefined ? { bootFile: clip(e.bootFile) } : {}),
    });
    if (e.answered) {
      if (c.unknown && !c.serial) delete c.unknown;
      boot.hints = boot.hints.filter((h) => h.code !== 'dhcp-ignored');
    } else {
      const fix = e.fix;
      if (fix !== undefined) c.unknown = { reason: clip(e.reason), fix };
      this.hint(boot, { code: fix !== undefined ? 'host-not-configured' : 'dhcp-ignored', text: `DHCP not answered: ${clip(e.reason)}`, ...(fix !== undefined ? { fix } : {}) });
    }
    this.changed(c);
  }

  /** A boot file transfer ended (TFTP or HTTP), whatever its outcome. */
  file(who: Who, e: { via: 'tftp' | 'http'; path: string; outcome: string; bytes: number; size?: number; ms: number; status?: number; detail?: string }, now = Date.now()): void {
    const c = this.client(who, now);
    const boot = this.bootForFile(c, now);
    const ok = e.outcome === 'complete';
    const mibps = e.ms > 0 ? Math.round((e.bytes / 1048576 / (e.ms / 1000)) * 100) / 100 : undefined;
    this.push(c, boot, {
      t: now, kind: 'file', via: e.via, path: clip(e.path), outcome: clip(e.outcome, 32), bytes: e.bytes, ms: e.ms,
      ...(e.size !== undefined ? { size: e.size } : {}), ...(mibps !== undefined ? { mibps } : {}),
      ...(e.status !== undefined ? { status: e.status } : {}), ...(e.detail !== undefined ? { detail: clip(e.detail) } : {}),
    });
    if (ok) {
      boot.files++;
      boot.fileBytes += e.bytes;
      this.advance(c, boot, fileStage(e.path), now);
      if (c.unknown) delete c.unknown;
    } else if (e.outcome === 'timeout' || e.outcome === 'error') {
      this.hint(boot, {
        code: 'transfer-failed',
        text: `${e.via.toUpperCase()} transfer of \`${clip(e.path, 128)}\` ended: ${e.outcome}${e.detail ? ` (${clip(e.detail, 96)})` : ''}${e.outcome === 'timeout' ? ': the client stopped answering (a firewall, or a block size too big for the path?)' : ''}`,
      });
    }
    this.changed(c);
  }

  /**
   * A file the client asked for and did not get. `reason` and `fix` come from the registry for clients it
   * does not serve; `looked` says where a served client's file was looked for.
   */
  notFound(who: Who, e: { via: 'tftp' | 'http'; path: string; reason: string; fix?: string; served: boolean; looked?: string; bootFile?: string }, now = Date.now()): void {
    const c = this.client(who, now);
    const boot = this.bootForFile(c, now);
    this.push(c, boot, { t: now, kind: 'not-found', via: e.via, path: clip(e.path), reason: clip(e.reason), ...(e.looked !== undefined ? { looked: clip(e.looked) } : {}) });
    if (!e.served) {
      c.unknown = { reason: clip(e.reason), ...(e.fix !== undefined ? { fix: e.fix } : {}) };
      const code: HintCode = /serial/i.test(e.reason) ? 'serial-not-configured' : 'host-not-configured';
      this.hint(boot, { code, text: clip(e.reason), ...(e.fix !== undefined ? { fix: e.fix } : {}) });
    } else if (isEssential(e.path, e.bootFile)) {
      for (const h of missingFileHints(e.path, e.looked)) this.hint(boot, h);
    }
    this.changed(c);
  }

  /** An NBD export was opened for the client: its root is attached. */
  attach(who: Who, e: { export: string; readOnly: boolean; mode?: string; overlay?: string }, now = Date.now()): void {
    const c = this.client(who, now);
    let boot = this.current(c);
    if (!boot) boot = this.newBoot(c, now, false);
    this.push(c, boot, { t: now, kind: 'attach', export: clip(e.export, 64), readOnly: e.readOnly, ...(e.mode ? { mode: e.mode } : {}), ...(e.overlay ? { overlay: clip(e.overlay, 96) } : {}) });
    boot.attached++;
    boot.hints = boot.hints.filter((h) => h.code !== 'no-nbd' && h.code !== 'stalled' && h.code !== 'export-refused' && h.code !== 'cmdline-export');
    if (boot.attachedAt === undefined) {
      boot.attachedAt = now;
      boot.durationMs = now - boot.start;
      this.hooks.bootDuration?.(boot.durationMs, c);
    }
    if (ORDER[boot.stage] < ORDER.root || boot.stage === 'down') {
      if (boot.stage === 'down') boot.stage = 'root';
      this.advance(c, boot, 'root', now);
    }
    this.changed(c);
  }

  /** An NBD export was refused (allow-list, held by a writer, unknown name, TLS…). */
  refused(who: Who, e: { export: string; reason: string; message: string; exports?: readonly string[] }, now = Date.now()): void {
    const c = this.client(who, now);
    let boot = this.current(c);
    if (!boot) boot = this.newBoot(c, now, false);
    this.push(c, boot, { t: now, kind: 'refused', export: clip(e.export, 64), reason: clip(e.reason, 32), message: clip(e.message) });
    for (const h of refusalHints(e.export, e.reason, e.message, e.exports, boot.cmdline)) this.hint(boot, h);
    this.changed(c);
  }

  /**
   * What the kernel command line file the client was just served says about its root (read back by the
   * daemon after the transfer). A hint that was written before it was known is rewritten with it.
   */
  cmdline(who: Who, e: CmdlineSeen & { exports?: readonly string[] }): void {
    const c = this.find(who);
    const boot = c ? this.current(c) : undefined;
    if (!c || !boot) return;
    boot.cmdline = { path: clip(e.path, 128), ...(e.nbdroot !== undefined ? { nbdroot: clip(e.nbdroot, 128) } : {}), ...(e.problem !== undefined ? { problem: clip(e.problem) } : {}) };
    let changed = false;
    for (const ev of boot.events) {
      if (ev.kind !== 'refused' || ev.reason !== 'unknown') continue;
      boot.hints = boot.hints.filter((h) => h.code !== 'cmdline-export');
      for (const h of refusalHints(ev.export, ev.reason, ev.message, e.exports, boot.cmdline)) this.hint(boot, h);
      changed = true;
    }
    if (changed) this.changed(c);
  }

  /** Root I/O so far on the client's open exports (the daemon polls the NBD server). */
  io(who: Who, bytesRead: number, bytesWritten: number, now = Date.now()): void {
    const c = this.find(who);
    const boot = c ? this.current(c) : undefined;
    if (!c || !boot || boot.attached === 0) return;
    const moved = bytesRead !== boot.bytesRead || bytesWritten !== boot.bytesWritten;
    boot.bytesRead = bytesRead;
    boot.bytesWritten = bytesWritten;
    if (moved) {
      boot.lastActivity = now;
      c.lastActivity = now;
    }
    if (boot.stage === 'root' && (bytesWritten > 0 || now - (boot.attachedAt ?? now) >= this.opts.upAfterMs)) this.advance(c, boot, 'up', now);
    if (moved) this.changed(c);
  }

  /** An NBD export was closed. */
  detach(who: Who, e: { export: string; bytesRead?: number; bytesWritten?: number }, now = Date.now()): void {
    const c = this.find(who);
    const boot = c ? this.current(c) : undefined;
    if (!c || !boot) return;
    if (e.bytesRead !== undefined) boot.bytesRead = Math.max(boot.bytesRead, e.bytesRead);
    if (e.bytesWritten !== undefined) boot.bytesWritten = Math.max(boot.bytesWritten, e.bytesWritten);
    boot.attached = Math.max(0, boot.attached - 1);
    this.push(c, boot, { t: now, kind: 'detach', export: clip(e.export, 64), bytesRead: boot.bytesRead, bytesWritten: boot.bytesWritten, ms: now - (boot.attachedAt ?? now) });
    if (boot.attached === 0) {
      boot.stage = 'down';
      boot.reached.down ??= now;
      this.hooks.stage?.('down', c);
    }
    this.changed(c);
  }

  /** Notes stalls (a hint and the `stalled` hook, once per boot). Call it every few seconds. */
  tick(now = Date.now()): void {
    for (const c of this.clients.values()) {
      const boot = this.current(c);
      if (!boot || boot.stallNoted) continue;
      if (!shownStage(boot, now, this.opts.stalledAfterMs).startsWith('stalled-at-')) continue;
      boot.stallNoted = true;
      const answered = boot.events.some((e) => e.kind === 'dhcp' && e.answered);
      const quiet = Math.round(this.opts.stalledAfterMs / 1000);
      if (boot.stage === 'dhcp' && answered) {
        this.hint(boot, { code: 'no-tftp', text: `answered by DHCP, then never asked for a boot file (${quiet} s): is TFTP (UDP 69) or HTTP blocked by a firewall on this host, or did another DHCP server's boot offer win?` });
      } else if (boot.stage === 'kernel' && !boot.events.some((e) => e.kind === 'refused')) {
        const cl = boot.cmdline;
        if (cl?.problem !== undefined) this.hint(boot, { code: 'cmdline-export', text: `loaded its kernel, then never connected to NBD (${quiet} s): the ${cmdlineSays(cl)}` });
        else if (cl) this.hint(boot, { code: 'no-nbd', text: `loaded its kernel, then never connected to NBD (${quiet} s), although the ${cmdlineSays(cl)}, which names this server: is the NBD port open, and does its initramfs have nbd-client?` });
        else this.hint(boot, { code: 'no-nbd', text: `loaded its kernel, then never connected to NBD (${quiet} s): check that nbdroot= in its cmdline.txt names this server and port, and that the NBD port is open` });
      } else if (boot.stage !== 'dhcp') {
        this.hint(boot, { code: 'stalled', text: `nothing heard for ${quiet} s at stage ${boot.stage}` });
      }
      this.hooks.stalled?.(boot.stage, c);
      this.changed(c);
    }
  }

  // ------------------------------------------------------------------ views

  /** Every client, most recently active first. */
  summaries(now = Date.now()): ClientSummary[] {
    return [...this.clients.values()].reverse().map((c) => this.summary(c, now));
  }

  summary(c: ClientJourney, now = Date.now()): ClientSummary {
    const boot = this.current(c);
    const last = boot?.events[boot.events.length - 1];
    return {
      id: c.id,
      ...pick(c),
      stage: boot ? shownStage(boot, now, this.opts.stalledAfterMs) : 'dhcp',
      ...(boot ? { lastBoot: new Date(boot.start).toISOString() } : {}),
      lastActivity: new Date(c.lastActivity).toISOString(),
      ...(boot?.durationMs !== undefined ? { bootMs: boot.durationMs } : {}),
      boots: c.boots.length,
      hints: boot?.hints ?? [],
      ...(c.unknown ? { unknown: c.unknown } : {}),
      ...(last ? { last: describe(last) } : {}),
    };
  }

  /** Clients the config does not serve, with the command that would. */
  unknown(now = Date.now()): ClientSummary[] {
    return this.summaries(now).filter((s) => s.unknown);
  }

  /** One client's journey (by serial, MAC, address or id), boots newest first, with shown stages. */
  get(query: string, now = Date.now()): (Omit<ClientJourney, 'boots'> & { stage: string; boots: Array<Boot & { shown: string; lines: string[] }> }) | null {
    const q = query.trim().toLowerCase();
    const c = this.alias.get(`s:${q}`) ?? this.alias.get(`m:${q.replace(/-/g, ':')}`) ?? this.alias.get(`i:${q}`) ?? [...this.clients.values()].find((x) => x.id.toLowerCase() === q || x.name?.toLowerCase() === q);
    if (!c) return null;
    const boots = [...c.boots].reverse().map((b) => ({ ...b, shown: shownStage(b, now, this.opts.stalledAfterMs), lines: b.events.map(describe) }));
    return { ...c, stage: boots[0]?.shown ?? 'dhcp', boots };
  }

  // ------------------------------------------------------------------ persistence

  toJSON(): { version: 1; clients: ClientJourney[] } {
    return { version: 1, clients: [...this.clients.values()] };
  }

  /** Restores saved journeys; anything malformed is skipped. Returns how many clients were restored. */
  load(data: unknown): number {
    const list = (data as { clients?: unknown })?.clients;
    if (!Array.isArray(list)) return 0;
    let n = 0;
    const str = (v: unknown, max = MAX_STR): string | undefined => (typeof v === 'string' ? clip(v, max) : undefined);
    const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
    for (const raw of list.slice(-this.opts.maxClients) as Array<Record<string, unknown>>) {
      if (!raw || typeof raw !== 'object' || !Array.isArray(raw.boots)) continue;
      const who: Who = { ip: str(raw.ip, 64), mac: str(raw.mac, 64), serial: str(raw.serial, 64), model: str(raw.model, 32), name: str(raw.name, 64), firmware: str(raw.firmware, 32) };
      if (!who.ip && !who.mac && !who.serial) continue;
      const now = num(raw.lastActivity) ?? Date.now();
      const c = this.client(who, now);
      const unk = raw.unknown as { reason?: unknown; fix?: unknown } | undefined;
      const hostname = str(raw.hostname, 64);
      if (hostname !== undefined) c.hostname = hostname;
      if (unk && typeof unk.reason === 'string') c.unknown = { reason: clip(unk.reason), ...(typeof unk.fix === 'string' ? { fix: clip(unk.fix) } : {}) };
      c.boots = [];
      for (const b of (raw.boots as Array<Record<string, unknown>>).slice(-this.opts.bootsPerClient)) {
        const start = num(b?.start);
        const stage = b?.stage as Stage;
        if (start === undefined || !STAGES.includes(stage) || !Array.isArray(b.events)) continue;
        const events = (b.events as unknown[]).filter((e): e is JourneyEvent => !!e && typeof e === 'object' && typeof (e as JourneyEvent).t === 'number' && typeof (e as JourneyEvent).kind === 'string').slice(-this.opts.eventsPerBoot);
        const hints = Array.isArray(b.hints) ? (b.hints as Hint[]).filter((h) => h && typeof h.code === 'string' && typeof h.text === 'string').slice(0, 16) : [];
        // An attachment does not survive a restart: what was attached is now down.
        const wasAttached = num(b.attached) ?? 0;
        c.boots.push({
          seq: ++this.seq, start, stage: wasAttached > 0 ? 'down' : stage, reached: (b.reached && typeof b.reached === 'object' ? b.reached : {}) as Boot['reached'],
          lastActivity: num(b.lastActivity) ?? start, fromDhcp: b.fromDhcp === true, attached: 0,
          ...(num(b.durationMs) !== undefined ? { durationMs: num(b.durationMs)! } : {}), ...(num(b.attachedAt) !== undefined ? { attachedAt: num(b.attachedAt)! } : {}),
          bytesRead: num(b.bytesRead) ?? 0, bytesWritten: num(b.bytesWritten) ?? 0, files: num(b.files) ?? 0, fileBytes: num(b.fileBytes) ?? 0,
          events, dropped: num(b.dropped) ?? 0, hints, stallNoted: true,
        });
      }
      n++;
    }
    return n;
  }

  // ------------------------------------------------------------------ internals

  private find(who: Who): ClientJourney | undefined {
    const bySerial = who.serial !== undefined ? this.alias.get(`s:${who.serial.toLowerCase()}`) : undefined;
    const byMac = who.mac !== undefined ? this.alias.get(`m:${who.mac.toLowerCase()}`) : undefined;
    if (bySerial ?? byMac) return bySerial ?? byMac;
    if (who.ip === undefined) return undefined;
    const byIp = this.alias.get(`i:${who.ip}`);
    // An address is weak evidence: not when it now names another identity.
    if (byIp && (who.serial === undefined || byIp.serial === undefined) && (who.mac === undefined || byIp.mac === undefined)) return byIp;
    return undefined;
  }

  /** The client an event is about, created or merged as needed, facts updated, made most recent. */
  private client(who: Who, now: number): ClientJourney {
    const serial = who.serial?.toLowerCase();
    const mac = who.mac?.toLowerCase();
    let c = this.find(who);
    // A Pi seen by MAC in DHCP and by serial in TFTP: one story.
    const other = serial !== undefined && mac !== undefined ? this.alias.get(`m:${mac}`) : undefined;
    if (c && other && other !== c && other.serial === undefined) this.merge(other, c);
    else if (!c) {
      c = { id: serial ?? mac ?? who.ip ?? '?', lastActivity: now, boots: [] };
    }
    if (c.ip !== undefined && who.ip !== undefined && c.ip !== who.ip && this.alias.get(`i:${c.ip}`) === c) this.alias.delete(`i:${c.ip}`);
    if (who.ip !== undefined) c.ip = clip(who.ip, 64);
    if (mac !== undefined) c.mac = clip(mac, 64);
    if (serial !== undefined) c.serial = clip(serial, 64);
    if (who.model !== undefined) c.model = clip(who.model, 32);
    if (who.name !== undefined) c.name = clip(who.name, 64);
    if (who.firmware !== undefined) c.firmware = clip(who.firmware, 32);
    const id = c.serial ?? c.mac ?? c.ip ?? c.id;
    if (id !== c.id) this.clients.delete(c.id);
    this.clients.delete(id);
    c.id = id;
    c.lastActivity = now;
    this.clients.set(id, c);
    if (c.serial !== undefined) this.alias.set(`s:${c.serial}`, c);
    if (c.mac !== undefined) this.alias.set(`m:${c.mac}`, c);
    if (c.ip !== undefined) this.alias.set(`i:${c.ip}`, c);
    this.trim();
    return c;
  }

  /** Moves `from`'s boots into `into` (an open boot of `into` takes the events; others are appended). */
  private merge(from: ClientJourney, into: ClientJourney): void {
    for (const b of from.boots) {
      const cur = this.current(into);
      if (cur && ORDER[cur.stage] < ORDER.root && b.start - cur.lastActivity < this.opts.stalledAfterMs && cur.start <= b.start + this.opts.stalledAfterMs) {
        cur.events = [...cur.events, ...b.events].sort((x, y) => x.t - y.t).slice(-this.opts.eventsPerBoot);
        cur.start = Math.min(cur.start, b.start);
        cur.fromDhcp ||= b.fromDhcp;
        cur.lastActivity = Math.max(cur.lastActivity, b.lastActivity);
        for (const h of b.hints) this.hint(cur, h);
        if (ORDER[b.stage] > ORDER[cur.stage]) cur.stage = b.stage;
        for (const s of STAGES) if (b.reached[s] !== undefined) cur.reached[s] = Math.min(cur.reached[s] ?? Infinity, b.reached[s]!);
      } else {
        into.boots.push(b);
        into.boots.sort((x, y) => x.start - y.start);
      }
    }
    while (into.boots.length > this.opts.bootsPerClient) into.boots.shift();
    if (!into.model && from.model) into.model = from.model;
    if (!into.firmware && from.firmware) into.firmware = from.firmware;
    if (!into.vendorClass && from.vendorClass) into.vendorClass = from.vendorClass;
    if (!into.hostname && from.hostname) into.hostname = from.hostname;
    if (!into.unknown && from.unknown) into.unknown = from.unknown;
    this.drop(from);
  }

  private drop(c: ClientJourney): void {
    this.clients.delete(c.id);
    for (const [k, v] of this.alias) if (v === c) this.alias.delete(k);
  }

  private trim(): void {
    while (this.clients.size > this.opts.maxClients) this.drop(this.clients.values().next().value as ClientJourney);
    for (const c of this.clients.values()) while (c.boots.length > this.opts.bootsPerClient) c.boots.shift();
  }

  private current(c: ClientJourney): Boot | undefined {
    return c.boots[c.boots.length - 1];
  }

  private newBoot(c: ClientJourney, now: number, fromDhcp: boolean): Boot {
    const b: Boot = { seq: ++this.seq, start: now, stage: 'dhcp', reached: {}, lastActivity: now, fromDhcp, attached: 0, bytesRead: 0, bytesWritten: 0, files: 0, fileBytes: 0, events: [], dropped: 0, hints: [] };
    c.boots.push(b);
    while (c.boots.length > this.opts.bootsPerClient) c.boots.shift();
    if (fromDhcp) {
      b.reached.dhcp = now;
      this.hooks.stage?.('dhcp', c);
    }
    return b;
  }

  /** The boot a file belongs to: the open one, else a new one (a client that rebooted without DHCP, or went quiet). */
  private bootForFile(c: ClientJourney, now: number): Boot {
    const b = this.current(c);
    if (b && b.attached === 0 && ORDER[b.stage] < ORDER.root && now - b.lastActivity < this.opts.stalledAfterMs) return b;
    if (b && b.attached > 0) return b; // a running system fetching a file over HTTP/TFTP
    return this.newBoot(c, now, false);
  }

  private advance(c: ClientJourney, boot: Boot, stage: Stage, now: number): void {
    if (ORDER[stage] <= ORDER[boot.stage] && boot.reached[stage] !== undefined) return;
    if (ORDER[stage] > ORDER[boot.stage]) boot.stage = stage;
    if (boot.reached[stage] === undefined) {
      boot.reached[stage] = now;
      this.hooks.stage?.(stage, c);
    }
  }

  private push(c: ClientJourney, boot: Boot, e: JourneyEvent): void {
    boot.lastActivity = e.t;
    c.lastActivity = e.t;
    const prev = boot.events[boot.events.length - 1];
    if (prev && sameEvent(prev, e)) {
      prev.count = (prev.count ?? 1) + 1;
      prev.t = e.t;
      return;
    }
    boot.events.push(e);
    if (boot.events.length > this.opts.eventsPerBoot) {
      boot.events.splice(KEEP_FIRST, 1);
      boot.dropped++;
    }
  }

  private hint(boot: Boot, h: Hint): void {
    if (boot.hints.some((x) => x.code === h.code && x.text === h.text)) return;
    boot.hints.push(h);
    if (boot.hints.length > 16) boot.hints.shift();
  }

  private changed(c: ClientJourney): void {
    this.hooks.changed?.(c);
  }
}

function pick(c: ClientJourney): Partial<ClientSummary> {
  const out: Partial<ClientSummary> = {};
  if (c.ip !== undefined) out.ip = c.ip;
  if (c.mac !== undefined) out.mac = c.mac;
  if (c.serial !== undefined) out.serial = c.serial;
  if (c.model !== undefined) out.model = c.model;
  if (c.name !== undefined) out.name = c.name;
  if (c.firmware !== undefined) out.firmware = c.firmware;
  if (c.hostname !== undefined) out.hostname = c.hostname;
  return out;
}

function sameEvent(a: JourneyEvent, b: JourneyEvent): boolean {
  if (a.kind !== b.kind) return false;
  if (a.kind === 'dhcp' && b.kind === 'dhcp') return a.answered === b.answered && a.message === b.message && a.reason === b.reason;
  if (a.kind === 'not-found' && b.kind === 'not-found') return a.path === b.path;
  if (a.kind === 'refused' && b.kind === 'refused') return a.export === b.export && a.message === b.message;
  return false;
}

const size = (n: number): string => (n >= 1048576 ? `${(n / 1048576).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`);

/** One line for an event (the CLI and the page's timeline). */
export function describe(e: JourneyEvent): string {
  const times = e.count && e.count > 1 ? ` (×${e.count})` : '';
  switch (e.kind) {
    case 'dhcp':
      return `DHCP ${e.message ?? ''} ${e.answered ? 'answered' : 'ignored'}: ${e.reason}${e.bootFile ? `, boot file ${e.bootFile}` : ''}${e.model ? `, ${e.model}` : e.firmware ? `, ${e.firmware}` : ''}${e.arch !== undefined ? ` arch ${e.arch}` : ''}${times}`.replace('DHCP  ', 'DHCP ');
    case 'file':
      return `${e.via.toUpperCase()} ${e.path}: ${e.outcome === 'complete' ? 'sent' : e.outcome}${e.status !== undefined ? ` ${e.status}` : ''}, ${size(e.bytes)} in ${e.ms} ms${e.mibps !== undefined && e.ms >= 50 ? ` (${e.mibps} MiB/s)` : ''}${e.detail ? ` — ${e.detail}` : ''}`;
    case 'not-found':
      return `${e.via.toUpperCase()} ${e.path}: not found — ${e.reason}${e.looked ? ` (looked in ${e.looked})` : ''}${times}`;
    case 'attach':
      return `NBD attached export ${e.export} (${e.readOnly ? 'read-only' : 'read-write'}${e.mode ? `, ${e.mode}` : ''}${e.overlay ? `, overlay ${e.overlay}` : ''})`;
    case 'refused':
      return `NBD refused export ${e.export}: ${e.message}${times}`;
    case 'detach':
      return `NBD detached ${e.export}: read ${size(e.bytesRead)}, wrote ${size(e.bytesWritten)} in ${Math.round(e.ms / 1000)} s`;
  }
}
