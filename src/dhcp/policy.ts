/**
 * Who gets an answer, and with which boot file: the interface the proxy DHCP server asks. The registry
 * implements it from the config (src/registry/policy.ts).
 */
import type { PxeClientInfo } from './pxe.js';

export interface BootDecision {
  /** Boot file name (TFTP path, or a URL for HTTP boot / iPXE). Ignored for Pis, which ask for their own. */
  bootFile: string;
  /** IPv4 to put in siaddr / option 54 / option 66 instead of the server's own address. */
  serverAddress?: string;
  /** Answer with the Raspberry Pi reply (option 43 "Raspberry Pi Boot"); default: `client.isPi`. */
  piBoot?: boolean;
  /**
   * HTTP boot: the boot file is `http://<server>:<port><path>`, the server being the address put in the reply
   * (known only to the DHCP server, which picks the address the client can reach). Replaces `bootFile`.
   */
  url?: { port: number; path: string };
}

/** The boot file a decision sends, given the server address in the reply. */
export function bootFileOf(decision: BootDecision, server: string): string {
  return decision.url ? `http://${server}:${decision.url.port}${decision.url.path}` : decision.bootFile;
}

export interface DhcpPolicy {
  /** null: stay silent (the client is not ours). */
  decide(client: PxeClientInfo): BootDecision | null;
}
