/**
 * Who gets an answer, and with which boot file. The registry implements `DhcpPolicy` from the config;
 * `StaticDhcpPolicy` is a small stand-in for tests and for the daemon until then.
 */
import type { Firmware, PxeClientInfo } from './pxe.js';

export interface BootDecision {
  /** Boot file name (TFTP path, or a URL for HTTP boot / iPXE). Ignored for Pis, which ask for their own. */
  bootFile: string;
  /** IPv4 to put in siaddr / option 54 / option 66 instead of the server's own address. */
  serverAddress?: string;
  /** Answer with the Raspberry Pi reply (option 43 "Raspberry Pi Boot"); default: `client.isPi`. */
  piBoot?: boolean;
}

export interface DhcpPolicy {
  /** null: stay silent (the client is not ours). */
  decide(client: PxeClientInfo): BootDecision | null;
}

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
