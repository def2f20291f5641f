/**
 * The registry: one immutable snapshot of the config, answering the three questions the servers ask:
 * DHCP "answer this PXE client, with which boot file?", TFTP "which bytes are `path` for the client at
 * this address?", NBD "which exports may this client see and open?". A reload builds a new snapshot over
 * the same ImagePool and ClientTable and swaps one reference; running sessions keep what they opened.
 *
 * Identity is a security boundary (a client's overlay is its disk). An identity — a Pi serial or a PC
 * MAC — is bound to an address the first time it is seen; it moves to another address only on evidence
 * of a real boot there, never while it is attached to NBD, never outside its pin (`address:`), and every
 * move is a warning naming both addresses:
 * - a MAC: the DHCP exchange of that MAC (DHCPREQUEST option 50 / ciaddr, PXE requests with a ciaddr);
 * - a Pi serial: the first file of a Pi boot (start4.elf, config.txt, …) asked from an address whose
 *   DHCP exchange looked like a Pi within the last minute, or — without DHCP — when its current
 *   address has been quiet for a minute;
 * - a PXELINUX `pxelinux.cfg/01-<mac>` lookup is no evidence: it binds a MAC that no address holds to an
 *   address that has none, and never moves one.
 * A request that may not claim an identity is answered "file not found" and logged (rate-limited); it is
 * never served that identity's view. A verified NBD client certificate names its client outright.
 */
import type { BlockDevice } from '../disk/blockdev.js';
import type { Config, ImageConfig } from '../config/schema.js';
import { NotFoundError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import { BufferSource, fileSource, readAll, type FileSource } from '../util/source.js';
import { stat } from 'node:fs/promises';
import {
  AllowList, normalizeAddress, StaticExportProvider, type ExportInfo, type ExportProvider, type NbdClient, type NbdRefusal, type OpenExport,
  type StaticExport,
} from '../nbd/exports.js';
import { DirectoryResolver, type ResolveRequest } from '../tftp/resolver.js';
import { PI_OUIS } from '../dhcp/pxe.js';
import { normalizeMac } from '../config/schema.js';
import { FloodLog } from '../util/flood.js';
import { addressKey, clientFields, identityKey, type ClientTable, type IdentityKind } from './clients.js';
import type { ImagePool } from './pool.js';
import { PiDirectory, parseMacPath, pi3NeighbourMac, procNeighbours, type NeighbourLookup, type PiEntry } from './pi.js';
import { IPXE_FILES, IPXE_SCRIPT, RegistryDhcpPolicy } from './policy.js';
import { ipxeScript, kernelFromPxelinux, type KernelSpec } from './ipxe.js';

const SERIAL_PREFIX = /^([0-9a-fA-F]{8})\/(.+)$/;
const PXELINUX_MAC = /^pxelinux\.cfg\/01-([0-9a-f]{2}(?:-[0-9a-f]{2}){5})$/i;
/** A client quiet this long and then asking again is starting a new boot. */
export const NEW_BOOT_GAP_MS = 60_000;
/** The first files a Pi bootloader asks for under its serial (Pi 4: start4.elf; Pi 5: config.txt; …). */
const PI_BOOT_START = new Set([
  'start.elf', 'start4.elf', 'start_cd.elf', 'start4cd.elf', 'start_x.elf', 'start4x.elf', 'start_db.elf', 'start4db.elf',
  'config.txt', 'autoboot.txt', 'bootcode.bin', 'boot.img', 'boot.sig', 'recovery.elf',
]);

/** An identity a verified client certificate names. */
interface CertIdentity {
  kind: IdentityKind;
  id: string;
  key: string;
}

/** What a TFTP path says about who asks: a Pi (serial prefix), a PXELINUX MAC lookup, or any other path. */
export type TftpAsk =
  | { kind: 'pi'; serial: string; file: string; path: string }
  /** A Pi with TFTP_PREFIX=2: `dc-a6-32-01-02-03/file`. */
  | { kind: 'pi-mac'; mac: string; file: string; path: string }
  | { kind: 'pxelinux-mac'; mac: string; path: string }
  | { kind: 'path'; path: string };

/** Parses a (normalized) TFTP path (pure). */
export function parseTftpPath(path: string): TftpAsk {
  const pi = SERIAL_PREFIX.exec(path);
  if (pi) return { kind: 'pi', serial: pi[1]!.toLowerCase(), file: pi[2]!, path };
  const piMac = parseMacPath(path);
  if (piMac) return { kind: 'pi-mac', mac: piMac.mac, file: piMac.file, path };
  const mac = PXELINUX_MAC.exec(path);
  if (mac) return { kind: 'pxelinux-mac', mac: mac[1]!.toLowerCase().replace(/-/g, ':'), path };
  return { kind: 'path', path };
}

/** Where a TFTP path was found, for logs and status. */
export interface TftpTarget {
  kind: 'pi' | 'host' | 'defaults';
  image?: string;
  tftpRoot?: string;
  /** The path inside the image's boot partition or the directory. */
  path: string;
  /** The boot partition when the client's entry names its own (a Pi's `partition:`). */
  partition?: number;
}

export class Registry implements ExportProvider {
  readonly policy: RegistryDhcpPolicy;
  /** NBD: the config's images as exports over the shared pool; copy-on-write overlays named by client identity. */
  readonly exports: StaticExportProvider;
  private readonly dirs = new Map<string, DirectoryResolver>();
  /** `address:` pins of Pis and hosts. */
  private readonly pins = new Map<string, AllowList>();
  private readonly hostByName = new Map<string, string>();
  /** Configured Pis by serial and by MAC (src/registry/pi.ts). */
  readonly pis: PiDirectory;
  /** The kernel neighbour table (Pi 3 boot ROM binding, src/registry/pi.ts); replaceable by tests. */
  neighbours: NeighbourLookup = procNeighbours;
  /** Lines remote hosts can trigger: one per client and kind per 10 s, at most 20 of a kind per 10 s. */
  private readonly flood: FloodLog;

  constructor(
    readonly config: Config,
    private readonly pool: ImagePool,
    readonly clients: ClientTable,
    private readonly log: Logger = silentLogger,
  ) {
    this.policy = new RegistryDhcpPolicy(config);
    this.flood = new FloodLog(log, { maxLinesPerKind: 20 });
    this.pis = new PiDirectory(config.pis);
    for (const [key, pi] of Object.entries(config.pis)) {
      if (!pi.address) continue;
      const mac = key.includes(':') ? key : pi.mac;
      if (!key.includes(':')) this.pins.set(`serial:${key}`, new AllowList([pi.address]));
      if (mac !== undefined) this.pins.set(`mac:${mac}`, new AllowList([pi.address]));
    }
    // A Pi 3 listed by serial alone is pinned by the MAC derived from it too (its boot ROM asks by MAC).
    for (const [mac, e] of this.pis.macEntries()) if (e.config.address && !this.pins.has(`mac:${mac}`)) this.pins.set(`mac:${mac}`, new AllowList([e.config.address]));
    for (const [mac, host] of Object.entries(config.hosts)) {
      if (host.address) this.pins.set(`mac:${mac}`, new AllowList([host.address]));
      if (host.name !== undefined && !this.hostByName.has(host.name)) this.hostByName.set(host.name, mac);
    }
    this.exports = new StaticExportProvider(
      Object.entries(config.images).map(([name, img]) => ({
        name: img.export ?? name,
        path: img.path!,
        mode: img.mode,
        ...(img.allow ? { allow: img.allow } : {}),
        shared: img.shared,
        stateDir: config.server.stateDir,
        ...(img.description !== undefined ? { description: img.description } : {}),
        tlsRequired: img.tls,
        clientCert: img.clientCert,
      })),
      {
        devices: pool,
        identify: (c) => this.nbdKey(c),
        writerKey: (c) => this.certIdentity(c)?.key ?? normalizeAddress(c.address),
        authorize: (exp, c) => this.authorize(exp, c),
      },
    );
  }

  // ------------------------------------------------------------------ identity

  /** Whether the pin of an identity (if any) allows `ip`. */
  pinAllows(kind: IdentityKind, id: string, ip: string): boolean {
    const pin = this.pins.get(`${kind}:${id}`);
    return !pin || pin.allows(ip);
  }

  /** A line a remote host can trigger (kind:key): bounded per key and per kind, with counts (util/flood.ts). */
  private limited(level: 'warn' | 'info', key: string, fields: Record<string, unknown>, msg: string): void {
    const colon = key.indexOf(':');
    this.flood.event(level, key.slice(0, colon), key.slice(colon + 1), fields, msg);
  }

  /**
   * May `ip` take identity `id`? True when it already holds it, or it is unbound, or the evidence allows a
   * move (see the module comment); logs every move (warn) and every refusal (warn, rate-limited).
   */
  private claim(ip: string, kind: IdentityKind, id: string, evidence: { dhcp?: boolean; bootStart?: boolean }, now = Date.now()): boolean {
    const field = kind === 'serial' ? 'serial' : 'mac';
    const refuse = (why: string, holder?: string): false => {
      this.limited('warn', `claim:${ip}:${id}`, { ip, [field]: id, ...(holder ? { holder } : {}), why }, 'client identity not given to this address');
      return false;
    };
    if (!this.pinAllows(kind, id, ip)) return refuse('pinned to another address');
    const here = this.clients.get(ip);
    const holder = this.clients.holder(kind, id);
    if (holder === ip) return true;
    // An address attached to NBD as another client keeps that identity.
    const current = here?.[field];
    if (current !== undefined && current !== id && this.clients.attachedFrom(ip)) return refuse(`this address is attached to NBD as ${current}`);
    if (holder === undefined) return true;
    if (this.clients.attachedFrom(holder) || this.clients.attachedAs(identityKey(kind, id))) return refuse('attached to NBD from its address', holder);
    let how: string;
    if (kind === 'mac' && !evidence.bootStart) {
      if (!evidence.dhcp) return refuse('no DHCP exchange of this MAC from this address', holder);
      how = 'dhcp';
    } else {
      if (!evidence.bootStart) return refuse('not the start of a boot', holder);
      const piDhcp = here?.dhcpAt !== undefined && now - here.dhcpAt < NEW_BOOT_GAP_MS && (here.firmware === 'pi' || (here.mac !== undefined && PI_OUIS.includes(here.mac.slice(0, 8))));
      const last = this.clients.get(holder)?.lastSeen ?? 0;
      if (piDhcp) how = 'pi-dhcp-and-boot';
      else if (now - last >= NEW_BOOT_GAP_MS) how = 'boot-after-quiet';
      else return refuse('its address was active in the last minute and this one made no Pi DHCP exchange', holder);
    }
    this.log.warn({ [field]: id, from: holder, to: ip, evidence: how }, 'client identity moved to a new address');
    return true;
  }

  /**
   * DHCP evidence: the client with `mac` is at `ip` (a DHCPREQUEST's option 50 or ciaddr, or a PXE request's
   * ciaddr). The daemon feeds the proxy DHCP server's `lease` and `reply` events here.
   */
  dhcpSeen(ip: string, mac: string, facts: { firmware?: string; boot?: boolean } = {}): boolean {
    if (!this.claim(ip, 'mac', mac, { dhcp: true })) return false;
    const name = this.config.hosts[mac]?.name;
    this.clients.learn(ip, { mac, dhcp: true, ...(facts.firmware ? { firmware: facts.firmware } : {}), ...(name ? { name } : {}), ...(facts.boot ? { boot: true } : {}) });
    return true;
  }

  /** The client a verified certificate names: a configured Pi serial, a configured (or, with defaults, any) MAC, or a host name. */
  certIdentity(c: NbdClient): CertIdentity | null {
    if (!c.tls || !c.certNames) return null;
    for (const raw of c.certNames) {
      const n = raw.trim().toLowerCase();
      if (/^[0-9a-f]{8}$/.test(n) && this.config.pis[n]) return { kind: 'serial', id: n, key: identityKey('serial', n) };
      const mac = normalizeMac(n);
      if ('key' in mac && (this.config.hosts[mac.key] || this.config.pis[mac.key] || this.config.defaults)) return { kind: 'mac', id: mac.key, key: identityKey('mac', mac.key) };
      const byName = this.hostByName.get(raw.trim());
      if (byName !== undefined) return { kind: 'mac', id: byName, key: identityKey('mac', byName) };
    }
    return null;
  }

  /** The overlay key of an NBD connection: its certificate's client, else the identity bound to its address (within its pin). */
  private nbdKey(c: NbdClient): string {
    const cert = this.certIdentity(c);
    if (cert) return cert.key;
    const ip = normalizeAddress(c.address);
    const rec = this.clients.get(ip);
    if (rec?.serial !== undefined && this.pinAllows('serial', rec.serial, ip)) return identityKey('serial', rec.serial);
    if (rec?.serial === undefined && rec?.mac !== undefined && this.pinAllows('mac', rec.mac, ip)) return identityKey('mac', rec.mac);
    return addressKey(ip);
  }

  /** Client-certificate exports admit only their own clients; a certificate never works outside its client's pin. */
  private authorize(exp: StaticExport, c: NbdClient): string | null {
    const cert = this.certIdentity(c);
    const ip = normalizeAddress(c.address);
    if (cert && !this.pinAllows(cert.kind, cert.id, ip)) {
      this.limited('warn', `certpin:${ip}:${cert.id}`, { ip, [cert.kind]: cert.id, export: exp.name }, 'NBD client certificate used outside its pin: refused');
      return `export '${exp.name}' is not available to this client here`;
    }
    if (!exp.clientCert) return null;
    if (!cert) return `export '${exp.name}' requires a client certificate naming one of its clients`;
    const imageName = Object.entries(this.config.images).find(([n, i]) => (i.export ?? n) === exp.name)?.[0];
    const ok =
      cert.kind === 'serial'
        ? this.config.pis[cert.id]?.image === imageName
        : this.config.pis[cert.id]
          ? this.config.pis[cert.id]!.image === imageName
          : this.config.hosts[cert.id]
          ? this.config.hosts[cert.id]!.image === imageName
          : this.config.defaults?.image === imageName;
    if (!ok) {
      this.limited('warn', `certimg:${ip}:${cert.id}`, { ip, [cert.kind]: cert.id, export: exp.name }, 'NBD client certificate names a client of another image: refused');
      return `export '${exp.name}' requires a client certificate naming one of its clients`;
    }
    return null;
  }

  // ------------------------------------------------------------------ images

  /** The device a client sees for an image: its own overlay for copy-on-write (when it has one), else the file. */
  async deviceFor(imageName: string, address: string): Promise<BlockDevice> {
    const img = this.image(imageName);
    if (img.mode !== 'cow') return this.pool.file(img.path!, img.mode === 'readonly');
    const identity = this.nbdKey({ address, tls: false });
    const overlay = await this.pool.existingOverlay(img.path!, this.config.server.stateDir, img.export!, identity);
    return overlay ?? this.pool.file(img.path!, true);
  }

  private image(name: string): ImageConfig {
    const img = this.config.images[name];
    if (!img) throw new NotFoundError('ENOENT', `image \`${name}\` is not in the config`);
    return img;
  }

  // ------------------------------------------------------------------ TFTP

  /**
   * Which image or directory serves `path` to the client at `address` (null: nobody). The request is first
   * taken as identity evidence (`observe`: a claim that may be refused), then looked up (`lookup`: pure).
   */
  target(address: string, path: string): TftpTarget | null {
    const ask = parseTftpPath(path);
    const pi = this.piAsk(address, ask);
    if (pi) {
      // A configured Pi, however its path names it: its one identity is claimed (moved here only on the
      // evidence of a boot start, see `claim`); refused: "file not found", never its view.
      const { entry, file } = pi;
      if (!this.claim(address, entry.kind, entry.id, { bootStart: PI_BOOT_START.has(file.replace(/^\/+/, '').toLowerCase()) })) return null;
      const known = this.clients.get(address);
      const field = entry.kind === 'serial' ? 'serial' : 'mac';
      const boot = !known || known[field] !== entry.id || Date.now() - known.lastSeen > NEW_BOOT_GAP_MS;
      this.clients.learn(address, { [field]: entry.id, firmware: 'pi', boot, file });
      return { kind: 'pi', image: entry.config.image, path: file, ...(entry.config.partition !== undefined ? { partition: entry.config.partition } : {}) };
    }
    if (!this.observe(address, ask)) return null;
    const t = this.lookup(address, ask);
    if (!t) return null;
    if (t.kind === 'pi' && ask.kind === 'pi') {
      const known = this.clients.get(address);
      const boot = !known || known.serial !== ask.serial || Date.now() - known.lastSeen > NEW_BOOT_GAP_MS;
      this.clients.learn(address, { serial: ask.serial, firmware: 'pi', boot, file: ask.file });
    } else {
      const name = t.kind === 'host' ? this.config.hosts[this.clients.get(address)!.mac!]?.name : undefined;
      this.clients.learn(address, { file: path, ...(name ? { name } : {}) });
    }
    return t;
  }

  /**
   * What a TFTP request tells about who asks: a configured Pi's serial is claimed (moved here only on the
   * evidence of a boot start, see `claim`); a PXELINUX `01-<mac>` lookup binds a MAC nobody holds to an
   * address that has none, and is refused for another client's MAC. False: refused (answer "not found").
   */
  private observe(address: string, ask: TftpAsk): boolean {
    // Configured Pis are claimed in `target`; another serial or MAC directory is looked up as any other path.
    if (ask.kind === 'pi' || ask.kind === 'pi-mac') return true;
    if (ask.kind === 'pxelinux-mac') {
      const m = ask.mac;
      const here = this.clients.get(address)?.mac;
      if (here === m) return true;
      const holder = this.clients.holder('mac', m);
      if ((holder !== undefined && holder !== address) || !this.pinAllows('mac', m, address)) {
        // A lookup is no evidence: it never moves a MAC, and the asker does not get that client's view.
        this.limited('warn', `lookup:${address}:${m}`, { ip: address, mac: m, ...(holder ? { holder } : {}), path: ask.path }, 'PXELINUX lookup of another client\'s MAC refused');
        return false;
      }
      // Binds only an unbound MAC to an address that has none; otherwise the address keeps its own.
      if (here === undefined) this.clients.learn(address, { mac: m });
    }
    return true;
  }

  /**
   * The configured Pi a request is about and the file in its view (pure): by the serial (TFTP_PREFIX=0) or MAC
   * (TFTP_PREFIX=2) its path starts with, else — a path under its TFTP_PREFIX_STR (TFTP_PREFIX=1) or at the
   * root (the Pi 3 boot ROM's bootcode.bin) — by the Pi identity the asking address holds.
   */
  private piAsk(address: string, ask: TftpAsk): { entry: PiEntry; file: string } | undefined {
    if (ask.kind === 'pi') {
      const entry = this.pis.serial(ask.serial);
      return entry ? { entry, file: ask.file } : undefined;
    }
    if (ask.kind === 'pi-mac') {
      const entry = this.pis.mac(ask.mac);
      return entry && entry.mac === ask.mac ? { entry, file: ask.file } : undefined;
    }
    if (ask.kind !== 'path') return undefined;
    const entry = this.piOfAddress(address);
    return entry ? { entry, file: PiDirectory.fileOf(entry, ask.path) } : undefined;
  }

  /**
   * The configured Pi whose MAC this address holds (bound by its DHCP exchange, within its pin). Not by a
   * serial it holds: a Pi with TFTP_PREFIX=0 asks everything under its serial, and root paths stay the
   * hosts'/defaults' (bootloaders fall back to the root only when the serial directory lacks start*.elf).
   */
  private piOfAddress(address: string): PiEntry | undefined {
    const mac = this.clients.get(address)?.mac;
    if (mac === undefined || !this.pinAllows('mac', mac, address)) return undefined;
    return this.pis.mac(mac);
  }

  /** The image or directory that serves this request, from the config and what is known of the address (pure). */
  private lookup(address: string, ask: TftpAsk): TftpTarget | null {
    const rec = this.clients.get(address);
    const hostMac = rec?.mac !== undefined && this.pinAllows('mac', rec.mac, address) ? rec.mac : undefined;
    const host = hostMac ? this.config.hosts[hostMac] : undefined;
    const t = host ?? this.config.defaults;
    if (!t) return null;
    const kind = host ? 'host' : 'defaults';
    if (t.tftpRoot !== undefined) return { kind, tftpRoot: t.tftpRoot, path: ask.path };
    if (t.image !== undefined) return { kind, image: t.image, path: ask.path };
    return null;
  }

  /** Why `target` found nothing for this request, and the command that would serve it. */
  private whyUnserved(address: string, path: string): { reason: string; fix?: string; serial?: string; mac?: string } {
    const images = Object.keys(this.config.images);
    const image = images.length === 1 ? images[0]! : 'IMAGE';
    const ask = parseTftpPath(path);
    if (ask.kind === 'pi') {
      const serial = ask.serial;
      if (!this.config.pis[serial]) {
        return { serial, reason: `Pi serial ${serial} is not under \`pis\``, fix: `netbootd add-pi ${serial} --image ${image}` };
      }
      return { serial, reason: `Pi serial ${serial} belongs to another address (see the identity warning)` };
    }
    if (ask.kind === 'pi-mac') {
      const m = ask.mac;
      if (!this.pis.mac(m)) return { mac: m, reason: `Pi MAC ${m} (EEPROM TFTP_PREFIX=2) is not under \`pis\` (as a key, or as a Pi's \`mac\`)` };
      return { mac: m, reason: `Pi MAC ${m} belongs to another address (see the identity warning)` };
    }
    const mac = this.clients.get(address)?.mac;
    if (mac !== undefined) {
      if (this.config.hosts[mac]) return { mac, reason: `MAC ${mac} is pinned to another address` };
      return { mac, reason: `MAC ${mac} is not under \`hosts\` and there are no \`defaults\``, fix: `netbootd add-host ${mac} --image ${image}` };
    }
    return { reason: 'no PXE DHCP exchange seen from this address (its MAC is unknown) and there are no `defaults`' };
  }

  /** A Pi 3 boot ROM sends no DHCPREQUEST: its `bootcode.bin` binds its MAC from the neighbour table, as DHCP evidence (src/registry/pi.ts). */
  private async pi3Bind(address: string, path: string): Promise<void> {
    const mac = await pi3NeighbourMac({
      ip: address, path, boundMac: this.clients.get(address)?.mac, pis: this.pis, discoverAt: (m) => this.clients.modelSeenAt(m),
      lookup: this.neighbours, windowMs: NEW_BOOT_GAP_MS,
    });
    if (mac !== undefined && this.dhcpSeen(address, mac, { firmware: 'pi', boot: true })) this.log.info({ ip: address, mac, model: this.clients.modelOf(mac) }, 'Pi boot ROM address bound from the neighbour table (it sends no DHCPREQUEST)');
  }

  /** TFTP resolution: the file, or null for "file not found". */
  async resolve(req: ResolveRequest): Promise<FileSource | null> {
    await this.pi3Bind(req.address, req.path);
    const t = this.target(req.address, req.path);
    if (!t) {
      // Why, in words a user can act on; named by what was asked (not by what this address was before).
      const why = this.whyUnserved(req.address, req.path);
      this.clients.noteUnserved({ ip: req.address, path: req.path, ...why });
      // A remote flood must not write one line per packet: one line per client per 10 s, at most 20 a window (FloodLog).
      this.limited('info', `unserved:${req.address}:${why.serial ?? why.mac ?? ''}`, { ip: req.address, ...why, path: req.path }, 'TFTP request from a client this config does not serve');
      return null;
    }
    if (t.kind !== 'pi' && this.config.http.enabled) {
      // iPXE for clients the config serves, from the configured files (Debian's by default), whatever the view holds.
      const ipxe = t.path === IPXE_FILES.bios ? this.config.http.ipxeBios : t.path === IPXE_FILES.uefi ? this.config.http.ipxeUefi : undefined;
      if (ipxe !== undefined) return this.openConfigured(ipxe, req);
    }
    const source = await this.openInView(t, req);
    if (source || t.kind === 'pi' || !this.config.http.enabled || t.path !== IPXE_SCRIPT) return source;
    return this.generatedScript(t, req);
  }

  /** A file the config names outside any image (iPXE builds): regular files only; symlinks followed (Debian's ipxe.efi is one). */
  private async openConfigured(path: string, req: ResolveRequest): Promise<FileSource | null> {
    try {
      const st = await stat(path);
      if (!st.isFile()) throw new Error('not a regular file');
      return await fileSource(path);
    } catch (e) {
      this.limited('warn', `ipxe:${path}`, { ...clientFields(this.clients.identity(req.address)), ip: req.address, path: req.path, file: path, err: (e as Error).message }, 'iPXE file from the config cannot be served (install Debian\'s ipxe package or set http.ipxeBios / http.ipxeUefi)');
      return null;
    }
  }

  /**
   * The iPXE script for a PC whose view has no boot.ipxe: from its `kernel`/`initrd`/`cmdline` keys, else from
   * the view's PXELINUX config (its MAC's, else the default). Null (404) with a line saying why otherwise.
   */
  private async generatedScript(t: TftpTarget, req: ResolveRequest): Promise<FileSource | null> {
    const mac = this.clients.get(req.address)?.mac;
    const entry = t.kind === 'host' && mac !== undefined ? this.config.hosts[mac] : this.config.defaults;
    const who = { ...clientFields(this.clients.identity(req.address)), ip: req.address };
    let spec: KernelSpec | null = null;
    let from: string;
    if (entry?.kernel !== undefined) {
      spec = { kernel: entry.kernel, initrds: entry.initrd ?? [], cmdline: entry.cmdline ?? '' };
      from = 'config';
    } else {
      const configs = [...(mac !== undefined ? [`pxelinux.cfg/01-${mac.replace(/:/g, '-')}`] : []), 'pxelinux.cfg/default'];
      from = 'none';
      for (const path of configs) {
        const src = await this.openInView({ ...t, path }, { ...req, path });
        if (!src) continue;
        try {
          spec = kernelFromPxelinux((await readAll(src, 64 * 1024)).toString('latin1'));
        } finally {
          src.close();
        }
        from = path;
        break;
      }
    }
    if (!spec) {
      this.limited('warn', `noscript:${req.address}`, { ...who, path: req.path, looked: from === 'none' ? 'boot.ipxe, kernel key, pxelinux.cfg' : from }, 'no iPXE script for this client: no boot.ipxe in its boot partition, no `kernel` key, no PXELINUX entry with a kernel');
      return null;
    }
    const name = (t.kind === 'host' && mac !== undefined ? this.config.hosts[mac]?.name : undefined) ?? mac ?? req.address;
    this.log.debug({ ...who, from }, 'iPXE script generated');
    return new BufferSource(Buffer.from(ipxeScript(spec, `netbootd: ${name}, from ${from}`), 'utf8'));
  }

  /** Opens a target's path in its directory or in its image's boot partition (its own view); null: not there. */
  private async openInView(t: TftpTarget, req: ResolveRequest): Promise<FileSource | null> {
    if (t.tftpRoot !== undefined) {
      let dir = this.dirs.get(t.tftpRoot);
      if (!dir) {
        dir = new DirectoryResolver(t.tftpRoot);
        this.dirs.set(t.tftpRoot, dir);
      }
      return dir.resolve({ ...req, path: t.path });
    }
    const img = this.image(t.image!);
    const partition = t.partition ?? img.bootPartition;
    const dev = await this.deviceFor(t.image!, req.address);
    const volume = await this.pool.bootVolume(dev, partition);
    try {
      return await volume.open(t.path);
    } catch (e) {
      if (e instanceof NotFoundError) return null;
      throw e;
    }
  }

  // ------------------------------------------------------------------ NBD

  list(client: NbdClient): ExportInfo[] {
    return this.exports.list(client);
  }

  async open(exportName: string, client: NbdClient): Promise<OpenExport | NbdRefusal> {
    const r = await this.exports.open(exportName, client);
    if ('refused' in r) return r;
    const ip = normalizeAddress(client.address);
    const key = this.nbdKey(client);
    // While attached, the identity does not move to another address.
    const detach = this.clients.attach(ip, key);
    this.log.debug({ ...clientFields(this.clients.identity(ip)), export: r.name, identity: key, ...(client.certNames ? { cert: true } : {}) }, 'NBD export opened');
    const release = r.release;
    return {
      ...r,
      release: () => {
        detach();
        release();
      },
    };
  }

  /**
   * TFTP slot priority (read-only, learns nothing): 'known' for a path under a configured Pi serial that
   * this address may claim (within its pin; not held by another address), or an address whose MAC is a
   * configured host (within its pin); else 'unknown'.
   */
  priority(address: string, path: string): 'known' | 'unknown' {
    const ask = parseTftpPath(path);
    const pi = this.piAsk(address, ask);
    if (pi && this.pinAllows(pi.entry.kind, pi.entry.id, address)) {
      const holder = this.clients.holder(pi.entry.kind, pi.entry.id);
      if (holder === undefined || holder === address) return 'known';
    }
    const mac = this.clients.get(address)?.mac;
    return mac !== undefined && this.config.hosts[mac] && this.pinAllows('mac', mac, address) ? 'known' : 'unknown';
  }
}
