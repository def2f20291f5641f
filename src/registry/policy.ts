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

export type PolicyVerdict = { decision: BootDecision; reason: string } | { decision: null; reason: string };

export class RegistryDhcpPolicy implements DhcpPolicy {
  constructor(private readonly config: Pick<Config, 'hosts' | 'defaults' | 'dhcp' | 'server'>) {}

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
    const file = bootFileFor(target.bootFile, client);
    if (file === undefined || file === '') {
      return { decision: null, reason: `no boot file for firmware ${client.firmware}${client.isIpxe ? ' (iPXE)' : ''}` };
    }
    return { decision: { bootFile: file, ...extra }, reason: host ? 'listed host' : 'defaults' };
  }

  decide(client: PxeClientInfo): BootDecision | null {
    return this.explain(client).decision;
  }
}
