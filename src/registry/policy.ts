/**
 * The DHCP side of the registry: which PXE clients get an answer, and which boot file.
 * Listed PCs (`hosts`) by MAC, others by `defaults` (or silence); Pis by the `dhcp.answerPis` switch,
 * since a Pi's serial shows only later, in its TFTP paths.
 */
import type { BootDecision, DhcpPolicy } from '../dhcp/policy.js';
import type { Firmware, PxeClientInfo } from '../dhcp/pxe.js';
import type { BootFileConfig, Config } from '../config/schema.js';

/** Boot files used when a host or the defaults name an image but no boot file (syslinux's names). */
export const DEFAULT_BOOT_FILES: Readonly<Partial<Record<Firmware, string>>> = {
  bios: 'pxelinux.0',
  uefi64: 'syslinux.efi',
};

const configKey: Record<Firmware, keyof Exclude<BootFileConfig, string> | null> = {
  bios: 'bios',
  uefi64: 'uefi',
  uefi32: 'uefi32',
  arm64: 'arm64',
  arm32: 'arm32',
  http: 'http',
  unknown: null,
};

/** The boot file for a client, from a host's (or the defaults') `bootFile`; undefined when none fits. */
export function bootFileFor(bootFile: BootFileConfig | undefined, client: Pick<PxeClientInfo, 'firmware' | 'isIpxe'>): string | undefined {
  if (typeof bootFile === 'string') return bootFile;
  const key = configKey[client.firmware];
  if (bootFile === undefined) return DEFAULT_BOOT_FILES[client.firmware];
  if (client.isIpxe && bootFile.ipxe !== undefined) return bootFile.ipxe;
  return key ? bootFile[key] : undefined;
}

/** TFTP/HTTP names under which netbootd serves the configured iPXE binaries (`http.ipxeBios`, `http.ipxeUefi`). */
export const IPXE_FILES = { bios: 'undionly.kpxe', uefi: 'ipxe.efi' } as const;
/** The path of the per-client iPXE script over HTTP: the boot partition's own, else one netbootd writes. */
export const IPXE_SCRIPT = 'boot.ipxe';

/** File names of iPXE builds: sending one of these to a client that already runs iPXE would loop. */
const IPXE_BINARY = /(^|\/)(undionly\.k?k?pxe|ipxe\.(efi|pxe|kpxe|kkpxe|lkrn)|snponly\.efi|snp\.efi)$/i;

export function isIpxeBinary(file: string): boolean {
  return IPXE_BINARY.test(file);
}

export type PolicyVerdict = { decision: BootDecision; reason: string } | { decision: null; reason: string };

export class RegistryDhcpPolicy implements DhcpPolicy {
  constructor(private readonly config: Pick<Config, 'hosts' | 'defaults' | 'dhcp' | 'server' | 'http'>) {}

  /** The decision with a reason, for logs (`netbootd` says why it stayed silent). */
  explain(client: PxeClientInfo): PolicyVerdict {
    const extra = this.config.server.address ? { serverAddress: this.config.server.address } : {};
    if (client.isPi) {
      return this.config.dhcp.answerPis
        ? { decision: { bootFile: '', piBoot: true, ...extra }, reason: 'raspberry pi' }
        : { decision: null, reason: 'dhcp.answerPis is false' };
    }
    const host = this.config.hosts[client.mac.toLowerCase()];
    const target = host ?? this.config.defaults;
    if (!target) return { decision: null, reason: 'MAC not under hosts and no defaults' };
    const who = host ? 'listed host' : 'defaults';
    const explicit = typeof target.bootFile === 'object' ? target.bootFile : undefined;
    const http = this.config.http;
    const port = http.port;

    // HTTP steering: iPXE gets its script, UEFI HTTP boot gets iPXE (or the configured URL), plain PXE ROMs
    // optionally get iPXE by TFTP. A host with `http: false` and every client when HTTP is off go the TFTP way.
    if (http.enabled && target.http !== false) {
      if (client.isIpxe && explicit?.ipxe === undefined) {
        return { decision: { bootFile: IPXE_SCRIPT, url: { port, path: `/${IPXE_SCRIPT}` }, ...extra }, reason: `${who}, iPXE: HTTP script` };
      }
      if (client.isHttpClient && !client.isIpxe) {
        const configured = explicit?.http;
        if (configured !== undefined && /^https?:\/\//i.test(configured)) return { decision: { bootFile: configured, ...extra }, reason: `${who}, UEFI HTTP boot` };
        // The ipxe.efi netbootd serves is an x86-64 build (Debian's): only x64 UEFI HTTP clients (arch 16) get it.
        if (configured === undefined && client.arch !== 16) return { decision: null, reason: `UEFI HTTP boot arch ${client.arch}: no bootFile.http and ipxe.efi is for x64 (arch 16)` };
        const path = configured !== undefined ? `/${configured.replace(/^\/+/, '')}` : `/${IPXE_FILES.uefi}`;
        return { decision: { bootFile: path.slice(1), url: { port, path }, ...extra }, reason: `${who}, UEFI HTTP boot` };
      }
      if (http.chainIpxe && !client.isIpxe && !client.isHttpClient && (client.firmware === 'bios' || client.firmware === 'uefi64')) {
        const file = client.firmware === 'bios' ? IPXE_FILES.bios : IPXE_FILES.uefi;
        return { decision: { bootFile: file, ...extra }, reason: `${who}, iPXE chain-load by TFTP` };
      }
    }

    const file = bootFileFor(target.bootFile, client);
    if (file === undefined || file === '') {
      return { decision: null, reason: `no boot file for firmware ${client.firmware}${client.isIpxe ? ' (iPXE)' : ''}` };
    }
    // Never loop: iPXE that is told to load iPXE comes back asking again, forever.
    if (client.isIpxe && isIpxeBinary(file)) {
      return { decision: null, reason: `client already runs iPXE and its boot file ${file} is iPXE (set bootFile.ipxe, or enable http)` };
    }
    return { decision: { bootFile: file, ...extra }, reason: who };
  }

  decide(client: PxeClientInfo): BootDecision | null {
    return this.explain(client).decision;
  }
}
