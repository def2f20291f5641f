/**
 * A DHCP policy from a fixed table, for the DHCP server's tests, fixtures and benchmark (the daemon uses the
 * registry's policy).
 */
import type { Firmware, PxeClientInfo } from '../../src/dhcp/pxe.js';
import type { BootDecision, DhcpPolicy } from '../../src/dhcp/policy.js';

export interface StaticDhcpPolicyOptions {
  /** Per MAC (lower-case aa:bb:cc:dd:ee:ff): boot file per firmware, or one file for all. */
  clients?: Record<string, Partial<Record<Firmware | 'ipxe', string>> | string>;
  /** For clients not listed, when `answerUnknown`: boot file per firmware (`ipxe` for iPXE clients). */
  defaults?: Partial<Record<Firmware | 'ipxe', string>>;
  /** Pis cannot be told apart at DHCP time: answer every Pi, or none. */
  answerPis?: boolean;
  /** Answer PXE clients whose MAC is not listed. */
  answerUnknown?: boolean;
  serverAddress?: string;
}

export class StaticDhcpPolicy implements DhcpPolicy {
  constructor(private readonly opts: StaticDhcpPolicyOptions) {}

  decide(client: PxeClientInfo): BootDecision | null {
    const extra = this.opts.serverAddress ? { serverAddress: this.opts.serverAddress } : {};
    if (client.isPi) {
      return this.opts.answerPis ? { bootFile: '', piBoot: true, ...extra } : null;
    }
    const listed = this.opts.clients?.[client.mac.toLowerCase()];
    let table: Partial<Record<Firmware | 'ipxe', string>> | undefined;
    if (typeof listed === 'string') return { bootFile: listed, ...extra };
    if (listed) table = listed;
    else if (this.opts.answerUnknown) table = this.opts.defaults;
    if (!table) return null;
    const file = (client.isIpxe ? table.ipxe : undefined) ?? table[client.firmware];
    if (file === undefined || file === '') return null;
    return { bootFile: file, ...extra };
  }
}
