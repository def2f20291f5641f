/**
 * The registry: one immutable snapshot of the config, answering the three questions the servers ask:
 * DHCP "answer this PXE client, with which boot file?", TFTP "which bytes are `path` for the client at
 * this address?", NBD "which exports may this client see and open?". A reload builds a new snapshot over
 * the same ImagePool and ClientTable and swaps one reference; running sessions keep what they opened.
 */
import type { BlockDevice } from '../disk/blockdev.js';
import type { Config, ImageConfig } from '../config/schema.js';
import { NotFoundError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import type { FileSource } from '../util/source.js';
import {
  normalizeAddress, StaticExportProvider, type ExportInfo, type ExportProvider, type NbdClient, type NbdRefusal, type OpenExport,
} from '../nbd/exports.js';
import { DirectoryResolver, type ResolveRequest } from '../tftp/resolver.js';
import { clientFields, type ClientTable } from './clients.js';
import type { ImagePool } from './pool.js';
import { RegistryDhcpPolicy } from './policy.js';

const SERIAL_PREFIX = /^([0-9a-fA-F]{8})\/(.+)$/;
const PXELINUX_MAC = /^pxelinux\.cfg\/01-([0-9a-f]{2}(?:-[0-9a-f]{2}){5})$/i;
/** A client quiet this long and then asking again is starting a new boot. */
const NEW_BOOT_GAP_MS = 60_000;

/** Where a TFTP path was found, for logs and status. */
export interface TftpTarget {
  kind: 'pi' | 'host' | 'defaults';
  image?: string;
  tftpRoot?: string;
  /** The path inside the image's boot partition or the directory. */
  path: string;
}

export class Registry implements ExportProvider {
  readonly policy: RegistryDhcpPolicy;
  /** NBD: the config's images as exports over the shared pool; copy-on-write overlays named by client identity. */
  readonly exports: StaticExportProvider;
  private readonly dirs = new Map<string, DirectoryResolver>();

  constructor(
    readonly config: Config,
    private readonly pool: ImagePool,
    readonly clients: ClientTable,
    private readonly log: Logger = silentLogger,
  ) {
    this.policy = new RegistryDhcpPolicy(config);
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
      })),
      { devices: pool, identify: (c) => clients.stateKey(normalizeAddress(c.address)) },
    );
  }

  // ------------------------------------------------------------------ images

  /** The device a client sees for an image: its own overlay for copy-on-write (when it has one), else the file. */
  async deviceFor(imageName: string, address: string): Promise<BlockDevice> {
    const img = this.image(imageName);
    if (img.mode !== 'cow') return this.pool.file(img.path!, img.mode === 'readonly');
    const identity = this.clients.stateKey(address);
    const overlay = await this.pool.existingOverlay(img.path!, this.config.server.stateDir, img.export!, identity);
    return overlay ?? this.pool.file(img.path!, true);
  }

  private image(name: string): ImageConfig {
    const img = this.config.images[name];
    if (!img) throw new NotFoundError('ENOENT', `image \`${name}\` is not in the config`);
    return img;
  }

  // ------------------------------------------------------------------ TFTP

  /** Which image or directory serves `path` to the client at `address` (null: nobody). Learns identities. */
  target(address: string, path: string): TftpTarget | null {
    const pi = SERIAL_PREFIX.exec(path);
    if (pi) {
      const serial = pi[1]!.toLowerCase();
      const entry = this.config.pis[serial];
      if (entry) {
        const known = this.clients.get(address);
        const boot = !known || known.serial !== serial || Date.now() - known.lastSeen > NEW_BOOT_GAP_MS;
        this.clients.learn(address, { serial, firmware: 'pi', boot, file: pi[2]! });
        return { kind: 'pi', image: entry.image, path: pi[2]! };
      }
    }
    const mac = PXELINUX_MAC.exec(path);
    if (mac) this.clients.learn(address, { mac: mac[1]!.toLowerCase().replace(/-/g, ':') });
    const rec = this.clients.get(address);
    const host = rec?.mac ? this.config.hosts[rec.mac] : undefined;
    const t = host ?? this.config.defaults;
    if (!t) return null;
    this.clients.learn(address, { file: path, ...(host?.name ? { name: host.name } : {}) });
    const kind = host ? 'host' : 'defaults';
    if (t.tftpRoot !== undefined) return { kind, tftpRoot: t.tftpRoot, path };
    if (t.image !== undefined) return { kind, image: t.image, path };
    return null;
  }

  /** TFTP resolution: the file, or null for "file not found". */
  async resolve(req: ResolveRequest): Promise<FileSource | null> {
    const t = this.target(req.address, req.path);
    if (!t) {
      this.log.info({ ...clientFields(this.clients.identity(req.address)), path: req.path }, 'TFTP request from a client this config does not serve');
      return null;
    }
    if (t.tftpRoot !== undefined) {
      let dir = this.dirs.get(t.tftpRoot);
      if (!dir) {
        dir = new DirectoryResolver(t.tftpRoot);
        this.dirs.set(t.tftpRoot, dir);
      }
      return dir.resolve({ ...req, path: t.path });
    }
    const img = this.image(t.image!);
    const partition = t.kind === 'pi' ? (this.config.pis[req.path.slice(0, 8).toLowerCase()]?.partition ?? img.bootPartition) : img.bootPartition;
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
    if (!('refused' in r)) this.log.debug({ ...clientFields(this.clients.identity(normalizeAddress(client.address))), export: r.name }, 'NBD export opened');
    return r;
  }
}
