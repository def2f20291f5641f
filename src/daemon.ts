/**
 * The daemon: config → registry → servers. Reload (SIGHUP or a change of the config file) builds a new
 * registry snapshot and swaps it in; the servers hold delegates that always ask the current snapshot,
 * so running transfers and NBD connections keep going. Stop drains: no new requests, transfers aborted
 * or finished, NBD writes flushed, images closed.
 */
import fs from 'node:fs';
import path from 'node:path';
import { formatIssue, loadConfig } from './config/load.js';
import type { Config } from './config/schema.js';
import { ProxyDhcpServer } from './dhcp/server.js';
import type { PxeClientInfo } from './dhcp/pxe.js';
import { NbdServer } from './nbd/server.js';
import type { ExportProvider, NbdClient } from './nbd/exports.js';
import { ClientTable, clientFields, identityKey } from './registry/clients.js';
import { ImagePool } from './registry/pool.js';
import { Registry } from './registry/registry.js';
import { StatusServer } from './status/server.js';
import { HttpBootServer } from './http/server.js';
import { StateFile } from './util/state-file.js';
import { TftpServer, type TransferStats } from './tftp/server.js';
import type { ResolveRequest, TftpResolver } from './tftp/resolver.js';
import { NetbootError } from './util/errors.js';
import { normalizeMac, normalizeSerial } from './config/schema.js';
import { isIP } from 'node:net';
import { createLogger, type Logger } from './util/log.js';
import { MetricsRegistry } from './util/metrics.js';
import { Journey } from './registry/journey.js';
import { JourneyFeed } from './status/feed.js';

export class ConfigInvalidError extends NetbootError {}

export interface DaemonOptions {
  configPath: string;
  logger?: Logger;
  /** Watch the config file and reload on change (default true). */
  watch?: boolean;
  /** How often open image files are checked for deletion, replacement or truncation (ms; default 10 s; 0: never). */
  imageCheckMs?: number;
}

export class Daemon {
  readonly clients = new ClientTable();
  readonly metrics = new MetricsRegistry();
  readonly startedAt = Date.now();
  /** Each client's boots, kept across reloads (and restarts, in stateDir/journeys.json). */
  readonly journey = new Journey();
  readonly feed = new JourneyFeed(this.journey, this.clients, () => this.registry.config, this.metrics, () => this.nbd?.connectionInfo() ?? [], (req) => this.registry.resolve(req));
  private journeyTimer: NodeJS.Timeout | null = null;
  private saveJourneysNow: () => Promise<void> = () => Promise.resolve();
  private registry!: Registry;
  private pool!: ImagePool;
  private log!: Logger;
  private tftp: TftpServer | null = null;
  private http: HttpBootServer | null = null;
  private nbd: NbdServer | null = null;
  private dhcp: ProxyDhcpServer | null = null;
  private status: StatusServer | null = null;
  private watcher: fs.FSWatcher | null = null;
  private reloadTimer: NodeJS.Timeout | null = null;
  private imageTimer: NodeJS.Timeout | null = null;
  private imageCheck: Promise<unknown> | null = null;
  private reloading: Promise<boolean> | null = null;
  private stopping: Promise<void> | null = null;
  private readonly recentTransfers: TransferStats[] = [];
  private readonly recentHttp: Array<Record<string, unknown>> = [];
  private readonly counters = {
    tftpFiles: this.metrics.counter('netbootd_tftp_transfers_total', 'TFTP transfers by outcome'),
    tftpBytes: this.metrics.counter('netbootd_tftp_bytes_total', 'Bytes sent by TFTP'),
    httpFiles: this.metrics.counter('netbootd_http_requests_total', 'HTTP boot file requests by status'),
    httpBytes: this.metrics.counter('netbootd_http_bytes_total', 'Bytes sent by HTTP'),
    dhcpReplies: this.metrics.counter('netbootd_dhcp_replies_total', 'Proxy DHCP offers and acks by firmware'),
    reloads: this.metrics.counter('netbootd_config_reloads_total', 'Config reloads by result'),
  };
  /** Addresses the servers listen on (after start), for tests and the demo. */
  readonly bound: { tftp?: number; nbd?: number; dhcp?: number; proxy?: number | null; status?: number; http?: number } = {};

  constructor(private readonly opts: DaemonOptions) {}

  get config(): Config {
    return this.registry.config;
  }

  /** Loads the config and starts every enabled server. Throws ConfigInvalidError listing every problem. */
  async start(): Promise<void> {
    const loaded = await loadConfig(this.opts.configPath);
    if (!loaded.ok) {
      throw new ConfigInvalidError('CONFIG_INVALID', `${this.opts.configPath} is not valid:\n${loaded.errors.map(formatIssue).join('\n')}`);
    }
    const config = loaded.config;
    this.log = this.opts.logger ?? createLogger({ level: config.logging.level, pretty: config.logging.pretty ?? process.stdout.isTTY });
    for (const w of loaded.warnings) this.log.warn({ config: this.opts.configPath }, formatIssue(w));
    this.pool = new ImagePool(this.log.child({ component: 'images' }));
    this.registry = new Registry(config, this.pool, this.clients, this.log.child({ component: 'registry' }));
    await this.checkImages(config);
    fs.mkdirSync(config.server.stateDir, { recursive: true });
    await this.restoreClients(config.server.stateDir);
    await this.restoreJourneys(config);

    this.metrics.computed('netbootd_clients', 'Clients seen since start', () => this.clients.all().length);
    this.metrics.computed('netbootd_tftp_active_transfers', 'TFTP transfers running', () => this.tftp?.stats().active ?? 0);
    this.metrics.computed('netbootd_nbd_connections', 'Open NBD connections', () => this.nbd?.connections ?? 0);

    try {
      if (config.tftp.enabled) await listening(this.startTftp(config), 'TFTP', 'udp', config.tftp.port, 'tftp.port');
      if (config.nbd.enabled) await listening(this.startNbd(config), 'NBD', 'tcp', config.nbd.port, 'nbd.port');
      if (config.dhcp.enabled) await listening(this.startDhcp(config), 'proxy DHCP', 'udp', config.dhcp.port, 'dhcp.port (and dhcp.proxyPort)');
      if (config.http.enabled) await listening(this.startHttp(config), 'HTTP', 'tcp', config.http.port, 'http.port');
      if (config.status.enabled) {
        this.status = new StatusServer(
          {
            status: () => this.statusJson(),
            metrics: this.metrics,
            journey: (client: string) => this.journey.get(client),
            subscribe: (fn: () => void) => this.feed.subscribe(fn),
            live: () => (this.tftp?.stats().active ?? 0) > 0 || (this.nbd?.connections ?? 0) > 0,
            action: async (name, body) => {
              const b = (body ?? {}) as { image?: unknown; client?: unknown };
              if (name !== 'reset-overlay' || typeof b.image !== 'string' || typeof b.client !== 'string') {
                return { status: 400, body: { error: 'POST /reset-overlay takes {"image": NAME, "client": SERIAL|MAC|IP}' } };
              }
              try {
                return { status: 200, body: await this.resetOverlay(b.image, b.client) };
              } catch (e) {
                return { status: 409, body: { error: (e as Error).message } };
              }
            },
          },
          this.log.child({ component: 'status' }),
          { token: config.status.token },
        );
        this.bound.status = (await listening(this.status.listen(config.status.port, config.status.address), 'status', 'tcp', config.status.port, 'status.port')).port;
      }
    } catch (e) {
      await this.stop();
      throw e;
    }
    if (this.opts.watch ?? true) this.watchConfig();
    const every = this.opts.imageCheckMs ?? 10_000;
    if (every > 0) {
      this.imageTimer = setInterval(() => void this.checkImageFiles(), every);
      this.imageTimer.unref();
    }
    this.journeyTimer = setInterval(() => this.feed.tick(), 2000);
    this.journeyTimer.unref();
    this.log.info(
      {
        config: this.opts.configPath,
        images: Object.keys(config.images).length,
        pis: Object.keys(config.pis).length,
        hosts: Object.keys(config.hosts).length,
        ...this.bound,
      },
      'netbootd started',
    );
  }

  /**
   * Client identities (IP ↔ MAC/serial) survive restarts in stateDir/clients.json (saved at most once a
   * second): a client that booted before a restart keeps its copy-on-write overlay when its NBD connection
   * comes back.
   */
  private async restoreClients(stateDir: string): Promise<void> {
    const state = new StateFile(`${stateDir}/clients.json`, 'client identities', () => this.clients.toJSON(), 1000, this.log);
    await state.load((json) => this.clients.load(json));
    this.clients.onIdentityChange = () => state.changed();
    this.saveClientsNow = () => state.flush();
  }

  private saveClientsNow: () => Promise<void> = () => Promise.resolve();

  /** Boot journeys: limits from the config; restored from stateDir/journeys.json and saved there (at most every 5 s) when persistJourneys. */
  private async restoreJourneys(config: Config): Promise<void> {
    this.journey.configure(journeyOptions(config));
    if (!config.status.persistJourneys) return;
    const state = new StateFile(`${config.server.stateDir}/journeys.json`, 'boot journeys', () => this.journey.toJSON(), 5000, this.log);
    await state.load((json) => this.journey.load(json));
    this.feed.subscribe(() => state.changed());
    this.saveJourneysNow = () => state.flush();
  }

  /**
   * Checks every open image file and overlay (an fstat and a stat each): one deleted, replaced by a rename
   * or truncated under the daemon is retired (logged once by the pool, its users get errors, new users
   * get the file the name now holds). Runs periodically, on reload, and overlapping calls share one run.
   */
  checkImageFiles(): Promise<unknown> {
    if (!this.imageCheck) {
      this.imageCheck = this.pool.checkFiles()
        .catch((e: unknown) => this.log.warn({ err: (e as Error).message }, 'image check failed'))
        .finally(() => (this.imageCheck = null));
    }
    return this.imageCheck;
  }

  /** Opens every image once so that a missing or unreadable file is reported now, not at boot time. */
  private async checkImages(config: Config): Promise<void> {
    await this.checkImageFiles();
    for (const [name, img] of Object.entries(config.images)) {
      try {
        await this.pool.file(img.path!, img.mode !== 'readwrite');
      } catch (e) {
        this.log.error({ image: name, path: img.path, err: (e as Error).message }, 'image cannot be opened: its clients will not boot');
      }
    }
  }

  private async startTftp(config: Config): Promise<void> {
    const resolver: TftpResolver = {
      resolve: (req: ResolveRequest) => this.registry.resolve(req).then((src) => (src || this.feed.notFound('tftp', req), src)),
      // Configured Pis and PCs are served first when transfer slots are short.
      priority: (address: string, path: string) => this.registry.priority(address, path),
    };
    const t = config.tftp;
    this.tftp = new TftpServer({
      resolver,
      logger: this.log.child({ component: 'tftp' }),
      describeClient: (ip) => clientFields(this.clients.identity(ip)),
      address: t.address,
      port: t.port,
      ...(config.server.address && t.address === '0.0.0.0' ? { replyAddress: config.server.address } : {}),
      limits: {
        maxBlksize: t.maxBlksize,
        maxWindowsize: t.maxWindowsize,
        maxTransfers: t.maxTransfers,
        maxPerClient: t.maxPerClient,
        defaultTimeoutMs: t.timeoutMs,
        retries: t.retries,
        firstAckTimeoutMs: t.firstAckTimeoutMs,
        maxPerSubnet: t.maxPerSubnet,
        unknownSharePercent: t.unknownShare,
        notFoundPerSecond: t.notFoundPerSecond,
      },
    });
    this.tftp.on('transfer', (s: TransferStats) => {
      this.counters.tftpFiles.inc({ outcome: s.outcome });
      this.counters.tftpBytes.inc({}, s.bytes);
      this.recentTransfers.push(s);
      if (this.recentTransfers.length > 50) this.recentTransfers.shift();
      this.feed.transfer(s);
    });
    this.bound.tftp = (await this.tftp.listen()).port;
  }

  /** HTTP boot files: the registry's TFTP resolution, over HTTP. */
  private async startHttp(config: Config): Promise<void> {
    this.http = new HttpBootServer({
      resolver: { resolve: (req: ResolveRequest) => this.registry.resolve(req).then((src) => (src || this.feed.notFound('http', req), src)) },
      logger: this.log.child({ component: 'http' }),
      describeClient: (ip) => clientFields(this.clients.identity(ip)),
      limits: { maxConnections: config.http.maxConnections, idleTimeoutMs: config.http.idleTimeoutMs },
    });
    this.http.onTransfer = (t) => {
      this.counters.httpFiles.inc({ status: String(t.status) });
      this.counters.httpBytes.inc({}, t.bytes);
      // Like TFTP's: who, what, how much, how long, how it ended (the status), the last 50.
      this.recentHttp.push({ ...clientFields(this.clients.identity(t.address)), ip: t.address, path: t.path.slice(0, 256), status: t.status, bytes: t.bytes, ms: t.ms, at: new Date().toISOString() });
      if (this.recentHttp.length > 50) this.recentHttp.shift();
      this.feed.http(t);
    };
    this.bound.http = (await this.http.listen(config.http.port, config.http.address)).port;
  }

  private async startNbd(config: Config): Promise<void> {
    const exports: ExportProvider = {
      list: (c: NbdClient) => this.registry.list(c),
      open: async (name: string, c: NbdClient) => this.feed.nbdOpen(name, c, await this.registry.open(name, c)),
    };
    const tls = config.nbd.tls
      ? {
          cert: await fs.promises.readFile(config.nbd.tls.cert),
          key: await fs.promises.readFile(config.nbd.tls.key),
          ...(config.nbd.tls.ca !== undefined ? { ca: await fs.promises.readFile(config.nbd.tls.ca) } : {}),
        }
      : undefined;
    this.nbd = new NbdServer({
      exports,
      logger: this.log.child({ component: 'nbd' }),
      describeClient: (ip) => clientFields(this.clients.identity(ip)),
      ...(tls ? { tls } : {}),
      limits: {
        maxConnections: config.nbd.maxConnections,
        maxConnectionsPerClient: config.nbd.maxConnectionsPerClient,
        maxInflightBytes: config.nbd.maxInflightBytes,
        maxInflightBytesTotal: config.nbd.maxInflightBytesTotal,
        stallTimeoutMs: config.nbd.stallTimeoutMs,
        handshakeTimeoutMs: config.nbd.handshakeTimeoutMs,
      },
    });
    this.bound.nbd = (await this.nbd.listen(config.nbd.port, config.nbd.address)).port;
  }

  private async startDhcp(config: Config): Promise<void> {
    this.dhcp = new ProxyDhcpServer({
      policy: {
        decide: (c: PxeClientInfo) => {
          const verdict = this.registry.policy.explain(c);
          this.feed.dhcp(c, verdict);
          return verdict.decision;
        },
      },
      logger: this.log.child({ component: 'dhcp' }),
      ...(config.server.address ? { serverAddress: config.server.address } : {}),
      ...(config.dhcp.interface ? { interfaceName: config.dhcp.interface } : {}),
      ports: { dhcp: config.dhcp.port, proxy: config.dhcp.proxyPort },
      replyDelayMs: config.dhcp.replyDelayMs,
    });
    // DHCP exchanges are the evidence that moves a MAC to an address (the registry decides, and logs moves).
    this.dhcp.on('lease', (l: { mac: string; ip: string; firmware?: string }) => {
      this.registry.dhcpSeen(l.ip, l.mac, l.firmware ? { firmware: l.firmware } : {});
    });
    this.dhcp.on('reply', (r: { kind: string; client: PxeClientInfo }) => {
      this.counters.dhcpReplies.inc({ kind: r.kind, firmware: r.client.isPi ? 'pi' : r.client.firmware });
      if (r.client.piModel) this.clients.noteModel(r.client.mac, r.client.piModel.name);
      const ip = r.client.ciaddr !== '0.0.0.0' ? r.client.ciaddr : undefined;
      if (ip) this.registry.dhcpSeen(ip, r.client.mac, { firmware: r.client.isPi ? 'pi' : r.client.firmware, boot: true });
    });
    await this.dhcp.start();
    const a = this.dhcp.address();
    this.bound.dhcp = a.dhcp;
    this.bound.proxy = a.proxy;
  }

  /**
   * Reloads when the config file changes, however it is saved. The folder is watched, not the file: a save by
   * rename (sed -i, most editors, add-pi) or by delete-then-create gives the name a new inode, which a watch
   * on the file itself would lose after the first save.
   */
  private watchConfig(): void {
    const file = path.resolve(this.opts.configPath);
    const dir = path.dirname(file);
    const name = path.basename(file);
    try {
      this.watcher = fs.watch(dir, (_event, changed) => {
        if (changed !== null && changed !== name) return; // another file of the folder (an editor's swap file)
        // Editors write in several steps (truncate, write, rename): wait for the dust to settle.
        if (this.reloadTimer) clearTimeout(this.reloadTimer);
        this.reloadTimer = setTimeout(() => {
          this.reloadTimer = null;
          // Deleted and not (yet) back: nothing to load; the create that follows fires again.
          fs.access(file, (missing) => {
            if (!missing) void this.reload('file changed');
          });
        }, 300);
      });
      this.watcher.on('error', (e) => this.log.warn({ err: e.message, dir }, 'config watch failed; reload with SIGHUP'));
    } catch (e) {
      this.log.warn({ err: (e as Error).message, dir }, 'cannot watch the config folder; reload with SIGHUP');
    }
  }

  /** Reloads the config. An invalid one is rejected with its errors and the old one stays. */
  reload(why = 'SIGHUP'): Promise<boolean> {
    if (this.stopping) return Promise.resolve(false);
    // Serialize reloads; a reload requested during one runs after it.
    const run = async (): Promise<boolean> => {
      const loaded = await loadConfig(this.opts.configPath);
      if (!loaded.ok) {
        for (const e of loaded.errors) this.log.error({ config: this.opts.configPath }, formatIssue(e));
        this.log.error({ why, errors: loaded.errors.length }, 'config rejected: still running the previous one');
        this.counters.reloads.inc({ result: 'rejected' });
        return false;
      }
      for (const w of loaded.warnings) this.log.warn({ config: this.opts.configPath }, formatIssue(w));
      const old = this.registry.config;
      const next = loaded.config;
      const restartNeeded = (['tftp', 'nbd', 'dhcp', 'http', 'status'] as const).filter(
        (k) => JSON.stringify(old[k]) !== JSON.stringify(next[k]),
      );
      this.registry = new Registry(next, this.pool, this.clients, this.log.child({ component: 'registry' }));
      this.pool.dropVolumes();
      await this.checkImages(next);
      if (next.logging.level !== old.logging.level) this.log.level = next.logging.level;
      this.journey.configure(journeyOptions(next));
      this.counters.reloads.inc({ result: 'applied' });
      this.log.info(
        {
          why,
          images: Object.keys(next.images).length,
          pis: Object.keys(next.pis).length,
          hosts: Object.keys(next.hosts).length,
          ...(restartNeeded.length ? { needsRestart: restartNeeded } : {}),
        },
        restartNeeded.length
          ? `config reloaded; changes to ${restartNeeded.join(', ')} settings apply after a restart`
          : 'config reloaded',
      );
      return true;
    };
    const prev = this.reloading ?? Promise.resolve(true);
    const p = prev.then(run, run).catch((e: unknown) => {
      this.log.error({ err: (e as Error).message }, 'reload failed: still running the previous config');
      return false;
    });
    this.reloading = p;
    return p;
  }

  /** Graceful stop: no new work, transfers aborted, NBD writes flushed, images closed. */
  stop(): Promise<void> {
    if (!this.stopping) {
      this.stopping = (async () => {
        this.watcher?.close();
        if (this.reloadTimer) clearTimeout(this.reloadTimer);
        if (this.imageTimer) clearInterval(this.imageTimer);
        if (this.journeyTimer) clearInterval(this.journeyTimer);
        const closing: Promise<unknown>[] = [];
        if (this.dhcp) closing.push(this.dhcp.stop());
        if (this.tftp) closing.push(this.tftp.close());
        if (this.nbd) closing.push(this.nbd.close());
        if (this.status) closing.push(this.status.close());
        if (this.http) closing.push(this.http.close());
        await Promise.allSettled(closing);
        await this.saveClientsNow();
        await this.saveJourneysNow();
        await this.pool?.close();
        this.log?.info({ uptimeS: Math.round((Date.now() - this.startedAt) / 1000) }, 'netbootd stopped');
      })();
    }
    return this.stopping;
  }

  /**
   * Deletes a client's copy-on-write overlay of an image: its next boot sees the pristine base. The client
   * is named by serial, MAC or IP; refused while its NBD connection is open.
   */
  async resetOverlay(imageName: string, client: string): Promise<{ image: string; identity: string; existed: boolean }> {
    const img = this.registry.config.images[imageName];
    if (!img) throw new NetbootError('ENOENT', `image \`${imageName}\` is not in the config`);
    if (img.mode !== 'cow') throw new NetbootError('NOT_COW', `image \`${imageName}\` is ${img.mode}, not copy-on-write: it has no overlays`);
    const identity = overlayIdentity(client, this.clients);
    const existed = await this.pool.resetOverlay(this.registry.config.server.stateDir, img.export!, identity);
    this.log.info({ image: imageName, identity, existed }, 'copy-on-write overlay reset');
    void this.feed.measure();
    return { image: imageName, identity, existed };
  }

  statusJson(): unknown {
    const c = this.registry.config;
    return {
      version: '0.1.0',
      uptimeS: Math.round((Date.now() - this.startedAt) / 1000),
      config: this.opts.configPath,
      listening: this.bound,
      images: Object.entries(c.images).map(([name, img]) => {
        const sizes = this.feed.imageSizes().find((x) => x.name === name);
        return { name, path: img.path, mode: img.mode, export: img.export, ...(sizes?.bytes !== undefined ? { bytes: sizes.bytes } : {}), ...(sizes?.overlays.length ? { overlays: sizes.overlays } : {}) };
      }),
      boots: this.journey.summaries(),
      clients: this.clients.all().map((r) => ({
        ...clientFields(r),
        ...(r.firmware ? { firmware: r.firmware } : {}),
        firstSeen: new Date(r.firstSeen).toISOString(),
        lastSeen: new Date(r.lastSeen).toISOString(),
        ...(r.lastBoot ? { lastBoot: new Date(r.lastBoot).toISOString() } : {}),
        ...(r.lastFile ? { lastFile: r.lastFile } : {}),
      })),
      tftp: this.tftp
        ? {
            ...this.tftp.stats(),
            transfers: this.tftp.activeTransfers().map((x) => ({
              ...clientFields(this.clients.identity(x.ip)),
              ...x,
              percent: x.size > 0 ? Math.round((100 * x.bytes) / x.size) : 100,
              since: new Date(x.since).toISOString(),
            })),
            recent: this.recentTransfers.slice(-20),
          }
        : null,
      http: this.http ? { ...this.http.counters, recent: this.recentHttp.slice(-20) } : null,
      unserved: this.clients.unserved().map((u) => ({ ...u, first: new Date(u.first).toISOString(), last: new Date(u.last).toISOString() })),
      nbd: this.nbd
        ? {
            connections: this.nbd.connections,
            clients: this.nbd.connectionInfo().map((c) => ({ ...clientFields(this.clients.identity(c.ip)), ...c, since: new Date(c.since).toISOString() })),
          }
        : null,
    };
  }
}

/** Journey limits from the config. */
function journeyOptions(c: Config): { maxClients: number; bootsPerClient: number; stalledAfterMs: number } {
  return { maxClients: c.status.journeyClients, bootsPerClient: c.status.journeyBoots, stalledAfterMs: c.status.stalledAfterS * 1000 };
}

/** The overlay identity of a client named by serial, MAC or IP (as ClientTable.stateKey names them). */
export function overlayIdentity(client: string, clients: ClientTable): string {
  const serial = normalizeSerial(client);
  if ('key' in serial) return identityKey('serial', serial.key);
  const mac = normalizeMac(client);
  if ('key' in mac) return identityKey('mac', mac.key);
  if (isIP(client)) return clients.stateKey(client);
  throw new NetbootError('EINVAL', `\`${client}\` is not a Pi serial, a MAC or an IP address`);
}

/** Turns a failed bind into a sentence that says what to do. */
async function listening<T>(p: Promise<T>, what: string, proto: 'udp' | 'tcp', port: number, key: string): Promise<T> {
  try {
    return await p;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EACCES') {
      throw new NetbootError('EACCES', `${what}: no permission to listen on ${proto} port ${port}: run netbootd through its systemd unit (CAP_NET_BIND_SERVICE) or as root, or set ${key} above 1023`);
    }
    if (code === 'EADDRINUSE') {
      throw new NetbootError('EADDRINUSE', `${what}: ${proto} port ${port} is already in use by another program (another netbootd, dnsmasq, a TFTP or NBD server?); see: ss -lnp${proto === 'udp' ? 'u' : 't'} 'sport = :${port}'`);
    }
    if (code === 'EADDRNOTAVAIL') {
      throw new NetbootError('EADDRNOTAVAIL', `${what}: the listen address is not one of this host's addresses (${key} / address settings)`);
    }
    throw e;
  }
}
