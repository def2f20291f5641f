/**
 * What the NBD server asks about exports (`ExportProvider`), and the provider over a list of image files
 * (`StaticExportProvider`: modes, allow-lists, the one-writer rule, per-client overlays) that the registry
 * builds from the config. The server knows nothing else about images.
 */
import net from 'node:net';
import type { BlockDevice } from '../disk/blockdev.js';
import { DevicePool } from '../disk/pool.js';
import { NetbootError } from '../util/errors.js';
import { normalizeAddress, parseCidr } from '../util/net.js';

/** The peer of one NBD connection. */
export interface NbdClient {
  /** Source IP as seen on the socket (IPv4-mapped IPv6 already unwrapped). */
  address: string;
  /** Whether TLS is running on this connection (at the time of the question). */
  tls: boolean;
  /**
   * Names from the client certificate, when TLS runs and the certificate was verified against the
   * configured CA: the subject CN first, then the subject alternative names (DNS, email, URI values).
   */
  certNames?: string[];
}

/** One line of NBD_OPT_LIST. */
export interface ExportInfo {
  name: string;
  description: string;
  tlsRequired: boolean;
}

/** An export opened for one connection. `release()` exactly once when the connection ends (or after INFO). */
export interface OpenExport {
  name: string;
  device: BlockDevice;
  readOnly: boolean;
  description: string;
  /** True when FLUSH/FUA on one connection covers writes made on all connections to this export. */
  canMultiConn: boolean;
  tlsRequired: boolean;
  release(): void;
}

/**
 * Why an export was not opened: `unknown` (absent, or hidden from this client), `tls` (TLS first) or
 * `policy` (in use, no valid client certificate, …). The message goes to the client: it never names who
 * holds an export.
 */
export interface NbdRefusal {
  refused: true;
  reason: 'unknown' | 'policy' | 'tls';
  message: string;
}

export interface ExportProvider {
  /** Exports this client may see (allow-lists honoured). */
  list(client: NbdClient): ExportInfo[];
  /** Opens an export for a connection; the empty name is the default export. */
  open(name: string, client: NbdClient): Promise<OpenExport | NbdRefusal>;
}

export function isRefusal(x: OpenExport | NbdRefusal): x is NbdRefusal {
  return (x as NbdRefusal).refused === true;
}

// ---------------------------------------------------------------- allow-lists

export { normalizeAddress } from '../util/net.js';

/** An allow-list of addresses and CIDRs (IPv4 and IPv6). Throws `NetbootError('BAD_CIDR')` on a bad entry. */
export class AllowList {
  private readonly list = new net.BlockList();
  constructor(readonly entries: readonly string[]) {
    for (const raw of entries) {
      const c = parseCidr(raw);
      if ('error' in c) throw new NetbootError('BAD_CIDR', `allow-list entry ${c.error}`);
      if (c.bits === undefined) this.list.addAddress(c.address, c.family);
      else this.list.addSubnet(c.address, c.bits, c.family);
    }
  }
  allows(address: string): boolean {
    const a = normalizeAddress(address);
    const type = net.isIPv4(a) ? 'ipv4' : net.isIPv6(a) ? 'ipv6' : null;
    if (!type) return false;
    return this.list.check(a, type);
  }
}

// ---------------------------------------------------------------- static provider

function needsTls(cfg: { tlsRequired?: boolean; clientCert?: boolean }): boolean {
  return (cfg.tlsRequired ?? false) || (cfg.clientCert ?? false);
}

export interface StaticExport {
  name: string;
  path: string;
  mode: 'readwrite' | 'readonly' | 'cow';
  /** Client addresses/CIDRs allowed; absent = everyone. */
  allow?: string[];
  /** Read-write only: several clients may write at once (otherwise one writing client at a time). */
  shared?: boolean;
  /** Copy-on-write only: where overlays live. */
  stateDir?: string;
  description?: string;
  tlsRequired?: boolean;
  /** A verified client certificate is required (what it must name is the `authorize` option's business). */
  clientCert?: boolean;
}

export interface StaticExportOptions {
  /** The copy-on-write overlay key of a client (default: its address). */
  identify?: (client: NbdClient) => string;
  /** Who holds the one-writer slot of a read-write export (default: the address). */
  writerKey?: (client: NbdClient) => string;
  /** A refusal message when this client may not open this export (client certificates, pins), else null. */
  authorize?: (exp: StaticExport, client: NbdClient) => string | null;
  devices?: DevicePool;
}

interface Entry {
  cfg: StaticExport;
  allow: AllowList | null;
}

/**
 * Exports from a fixed list, over a DevicePool (its own, or one shared with the rest of the daemon). Each
 * image file is opened once and shared by all connections. A read-write export has one writing client at
 * a time (by source address; several connections from that address are fine, e.g. a reconnecting kernel
 * client) unless `shared`. A copy-on-write export gives every client identity its own overlay
 * (identity = `identify(client)`, default the address), shared by that client's connections.
 */
export class StaticExportProvider implements ExportProvider {
  private readonly entries: Entry[];
  private readonly identify: (client: NbdClient) => string;
  private readonly writerKey: (client: NbdClient) => string;
  private readonly authorize: (exp: StaticExport, client: NbdClient) => string | null;
  readonly devices: DevicePool;

  constructor(exports: StaticExport[], opts: StaticExportOptions = {}) {
    const names = new Set<string>();
    this.entries = exports.map((cfg) => {
      if (names.has(cfg.name)) throw new NetbootError('DUPLICATE_EXPORT', `export '${cfg.name}' defined twice`);
      names.add(cfg.name);
      if (cfg.mode === 'cow' && !cfg.stateDir) throw new NetbootError('NO_STATE_DIR', `export '${cfg.name}': copy-on-write needs stateDir`);
      return { cfg, allow: cfg.allow ? new AllowList(cfg.allow) : null };
    });
    this.identify = opts.identify ?? ((c) => normalizeAddress(c.address));
    this.writerKey = opts.writerKey ?? ((c) => normalizeAddress(c.address));
    this.authorize = opts.authorize ?? (() => null);
    this.devices = opts.devices ?? new DevicePool();
  }

  private visible(e: Entry, client: NbdClient): boolean {
    return !e.allow || e.allow.allows(client.address);
  }

  list(client: NbdClient): ExportInfo[] {
    return this.entries
      .filter((e) => this.visible(e, client))
      .map((e) => ({ name: e.cfg.name, description: e.cfg.description ?? '', tlsRequired: needsTls(e.cfg) }));
  }

  private find(name: string, client: NbdClient): Entry | undefined {
    if (name === '') {
      return this.entries.find((e) => e.cfg.name === '' && this.visible(e, client)) ?? this.entries.find((e) => this.visible(e, client));
    }
    const e = this.entries.find((x) => x.cfg.name === name);
    return e && this.visible(e, client) ? e : undefined;
  }

  async open(name: string, client: NbdClient): Promise<OpenExport | NbdRefusal> {
    const e = this.find(name, client);
    if (!e) return { refused: true, reason: 'unknown', message: `no export named '${name}'` };
    const cfg = e.cfg;
    // Before any device is touched (no overlay is created for a client that may not have one).
    if (needsTls(cfg) && !client.tls) return { refused: true, reason: 'tls', message: `export '${cfg.name}' requires TLS` };
    if (cfg.clientCert && !client.certNames?.length) {
      return { refused: true, reason: 'policy', message: `export '${cfg.name}' requires a valid client certificate` };
    }
    const denied = this.authorize(cfg, client);
    if (denied !== null) return { refused: true, reason: 'policy', message: denied };
    const base = { name: cfg.name, description: cfg.description ?? '', tlsRequired: needsTls(cfg) };
    if (cfg.mode === 'readonly') {
      const device = await this.devices.file(cfg.path, true);
      return { ...base, device, readOnly: true, canMultiConn: true, release: () => {} };
    }
    if (cfg.mode === 'readwrite') {
      let release = (): void => {};
      if (!cfg.shared) {
        const lock = this.devices.acquireWriter(cfg.path, this.writerKey(client));
        if ('holder' in lock) {
          // Never say who: the asker learns nothing about other clients.
          return { refused: true, reason: 'policy', message: `export '${cfg.name}' is in use by another client; it allows one writer` };
        }
        release = lock.release;
      }
      try {
        const device = await this.devices.file(cfg.path, false);
        // One fd shared by every connection, no cache of our own: a flush on any connection covers all.
        return { ...base, device, readOnly: false, canMultiConn: true, release };
      } catch (err) {
        release();
        throw err;
      }
    }
    // copy-on-write
    const { device, release } = await this.devices.overlay(cfg.path, cfg.stateDir!, cfg.name, this.identify(client));
    return { ...base, device, readOnly: false, canMultiConn: true, release };
  }

  /** Deletes a client's overlay of a copy-on-write export; refused while that client has it open. */
  async resetOverlay(exportName: string, identity: string): Promise<boolean> {
    const e = this.entries.find((x) => x.cfg.name === exportName);
    if (!e || e.cfg.mode !== 'cow') throw new NetbootError('NOT_COW', `'${exportName}' is not a copy-on-write export`);
    try {
      return await this.devices.resetOverlay(e.cfg.stateDir!, exportName, identity);
    } catch (err) {
      if ((err as { code?: string }).code === 'IN_USE') throw new NetbootError('IN_USE', (err as Error).message);
      throw err;
    }
  }

  /** Flushes and closes every device. */
  close(): Promise<void> {
    return this.devices.close();
  }
}
