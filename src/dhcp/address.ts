/**
 * Which IPv4 address netbootd names as the boot server in its replies (siaddr, options 54 and 66).
 *
 * Order: the configured `serverAddress`; else the address of the interface whose subnet holds the client
 * (its giaddr, ciaddr or source address; restricted to `interfaceName` when set); else the first IPv4
 * address of `interfaceName`; else the host's only non-loopback IPv4 address. When none of these decides
 * it (several candidate addresses and no configuration), the server refuses to start and says why.
 */
import type { NetworkInterfaceInfo } from 'node:os';
import { ipToBytes } from './packet.js';

export type InterfaceTable = NodeJS.Dict<NetworkInterfaceInfo[]>;

export interface AddressConfig {
  serverAddress?: string;
  interfaceName?: string;
}

export type AddressChoice = { ok: true; address: string; interface?: string } | { ok: false; reason: string };

function ipNum(ip: string): number | null {
  const b = ipToBytes(ip);
  return b ? b.readUInt32BE(0) : null;
}

function candidates(table: InterfaceTable, only?: string): { name: string; address: string; netmask: string }[] {
  const out: { name: string; address: string; netmask: string }[] = [];
  for (const [name, list] of Object.entries(table)) {
    if (only !== undefined && name !== only) continue;
    for (const a of list ?? []) {
      if (a.family !== 'IPv4' || a.internal) continue;
      out.push({ name, address: a.address, netmask: a.netmask });
    }
  }
  return out;
}

/** The interface address whose subnet contains `ip`, if any. */
export function addressForPeer(table: InterfaceTable, ip: string, only?: string): { name: string; address: string } | null {
  const peer = ipNum(ip);
  if (peer === null || peer === 0) return null;
  for (const c of candidates(table, only)) {
    const a = ipNum(c.address);
    const m = ipNum(c.netmask);
    if (a === null || m === null) continue;
    if (((a & m) >>> 0) === ((peer & m) >>> 0)) return { name: c.name, address: c.address };
  }
  return null;
}

/** The server address when nothing is known about the client (also the start-up check). */
export function defaultServerAddress(cfg: AddressConfig, table: InterfaceTable): AddressChoice {
  if (cfg.serverAddress !== undefined) {
    if (!ipToBytes(cfg.serverAddress) || cfg.serverAddress === '0.0.0.0') {
      return { ok: false, reason: `serverAddress ${JSON.stringify(cfg.serverAddress)} is not an IPv4 address` };
    }
    return { ok: true, address: cfg.serverAddress };
  }
  if (cfg.interfaceName !== undefined) {
    if (!(cfg.interfaceName in table)) {
      const names = Object.keys(table).join(', ');
      return { ok: false, reason: `interface ${cfg.interfaceName} does not exist (interfaces: ${names})` };
    }
    const c = candidates(table, cfg.interfaceName);
    if (c.length === 0) return { ok: false, reason: `interface ${cfg.interfaceName} has no IPv4 address` };
    return { ok: true, address: c[0]!.address, interface: cfg.interfaceName };
  }
  const all = candidates(table);
  if (all.length === 1) return { ok: true, address: all[0]!.address, interface: all[0]!.name };
  if (all.length === 0) {
    return { ok: false, reason: 'no non-loopback IPv4 address on this host: set the DHCP server address or interface' };
  }
  const list = all.map((c) => `${c.name} ${c.address}`).join(', ');
  return {
    ok: false,
    reason: `cannot decide which address to announce to boot clients (${list}): set the DHCP server address or interface`,
  };
}
