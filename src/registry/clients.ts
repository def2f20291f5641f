/**
 * Client identity. A Pi is its serial (from the TFTP path prefix), a PC its MAC (from its PXE DHCP
 * exchange); both are tied to the IPv4 the client uses for TFTP, the 4011 exchange and NBD. NBD
 * connections carry no identity, so they are matched by source address to what was learned at boot
 * (falling back to the address itself). The table is bounded: the least recently seen entry goes first.
 * This table records facts and NBD attachments; whether an identity may be bound to or moved to an
 * address is the registry's decision (Registry.claim: evidence, pins, never while attached).
 */

export interface ClientIdentity {
  ip: string;
  mac?: string;
  serial?: string;
  /** Firmware seen at DHCP time: bios, uefi64, pi, … */
  firmware?: string;
  /** Name from the config (`hosts.<mac>.name`), for logs. */
  name?: string;
  /** Raspberry Pi model and bootloader seen at DHCP time (`pi4-eeprom`, `pi3-bootrom`, …; src/dhcp/pi.ts). */
  model?: string;
}

export interface ClientRecord extends ClientIdentity {
  firstSeen: number;
  lastSeen: number;
  /** When this client last started a boot (DHCP offer, or its first TFTP file). */
  lastBoot?: number;
  /** What it last fetched by TFTP, and when. */
  lastFile?: string;
  /** When a DHCP exchange last tied a MAC to this address (evidence of a real boot). */
  dhcpAt?: number;
}

export type IdentityKind = 'mac' | 'serial';

export class ClientTable {
  private readonly byIp = new Map<string, ClientRecord>();
  /** Called when an identity fact (MAC, serial) changes: the daemon persists the table then. */
  onIdentityChange: (() => void) | null = null;
  private readonly ipByMac = new Map<string, string>();
  private readonly ipBySerial = new Map<string, string>();
  /** Open NBD exports per source address and per identity key (survive reloads: the table is shared). */
  private readonly attachedIps = new Map<string, number>();
  private readonly attachedKeys = new Map<string, number>();

  constructor(private readonly max = 4096) {}

  /** Pi model by MAC, from DHCP DISCOVERs (whose sender has no address yet); bounded like the table. */
  private readonly modelByMac = new Map<string, string>();

  /** Notes the Pi model a DHCP DISCOVER of `mac` showed; the address that MAC is bound to (now or later) logs it. */
  noteModel(mac: string, model: string, now = Date.now()): void {
    this.modelByMac.delete(mac);
    this.modelByMac.set(mac, model);
    this.modelAt.set(mac, now);
    while (this.modelByMac.size > this.max) {
      const first = this.modelByMac.keys().next().value as string;
      this.modelByMac.delete(first);
      this.modelAt.delete(first);
    }
    const ip = this.ipByMac.get(mac);
    const rec = ip !== undefined ? this.byIp.get(ip) : undefined;
    if (rec) rec.model = model;
  }

  /** When a DHCP DISCOVER of this MAC last showed a Pi model (ms). */
  private readonly modelAt = new Map<string, number>();

  /** When a DHCP DISCOVER of this MAC last showed a Pi model, if ever (evidence of a Pi boot in progress). */
  modelSeenAt(mac: string): number | undefined {
    return this.modelAt.get(mac);
  }

  /** The model a DHCP DISCOVER of this MAC showed, if any. */
  modelOf(mac: string): string | undefined {
    return this.modelByMac.get(mac);
  }

  /** Records what was learned about the client at `ip` (merging with what is known). */
  learn(ip: string, facts: Omit<ClientIdentity, 'ip'> & { boot?: boolean; file?: string; dhcp?: boolean }, now = Date.now()): ClientRecord {
    let rec = this.byIp.get(ip);
    if (rec) this.byIp.delete(ip);
    else rec = { ip, firstSeen: now, lastSeen: now };
    rec.lastSeen = now;
    const changed = (facts.mac !== undefined && rec.mac !== facts.mac) || (facts.serial !== undefined && rec.serial !== facts.serial);
    if (facts.mac !== undefined && facts.model === undefined) {
      // The model a DISCOVER of this MAC showed (a Pi's DHCPREQUEST carries no vendor class).
      const model = this.modelByMac.get(facts.mac);
      if (model !== undefined) rec.model = model;
      else if (rec.mac !== facts.mac) delete rec.model;
    }
    if (facts.mac !== undefined) {
      const prevIp = this.ipByMac.get(facts.mac);
      if (prevIp !== undefined && prevIp !== ip) this.forgetField(prevIp, 'mac');
      rec.mac = facts.mac;
      this.ipByMac.set(facts.mac, ip);
    }
    if (facts.serial !== undefined) {
      const prevIp = this.ipBySerial.get(facts.serial);
      if (prevIp !== undefined && prevIp !== ip) this.forgetField(prevIp, 'serial');
      rec.serial = facts.serial;
      this.ipBySerial.set(facts.serial, ip);
    }
    if (facts.firmware !== undefined) rec.firmware = facts.firmware;
    if (facts.name !== undefined) rec.name = facts.name;
    if (facts.model !== undefined) rec.model = facts.model;
    if (facts.boot) rec.lastBoot = now;
    if (facts.dhcp) rec.dhcpAt = now;
    if (facts.file !== undefined) rec.lastFile = facts.file;
    this.byIp.set(ip, rec);
    while (this.byIp.size > this.max) {
      const oldest = this.byIp.keys().next().value as string;
      this.remove(oldest);
    }
    if (changed) this.onIdentityChange?.();
    return rec;
  }

  /** Records for saving (oldest first, so a reload keeps the order). */
  toJSON(): ClientRecord[] {
    return [...this.byIp.values()];
  }

  /** Restores saved records; anything malformed is skipped. */
  load(records: unknown): number {
    if (!Array.isArray(records)) return 0;
    let n = 0;
    const str = (v: unknown): string | undefined => (typeof v === 'string' && v.length < 64 ? v : undefined);
    for (const r of records as Array<Record<string, unknown>>) {
      const ip = str(r?.ip);
      if (!ip) continue;
      const mac = str(r.mac);
      const serial = str(r.serial);
      const firmware = str(r.firmware);
      const name = str(r.name);
      const model = str(r.model);
      const seen = typeof r.lastSeen === 'number' ? r.lastSeen : Date.now();
      const rec = this.learn(ip, { ...(mac ? { mac } : {}), ...(serial ? { serial } : {}), ...(firmware ? { firmware } : {}), ...(name ? { name } : {}), ...(model ? { model } : {}) }, seen);
      if (typeof r.firstSeen === 'number') rec.firstSeen = r.firstSeen;
      if (typeof r.lastBoot === 'number') rec.lastBoot = r.lastBoot;
      n++;
    }
    return n;
  }

  private forgetField(ip: string, field: 'mac' | 'serial'): void {
    const rec = this.byIp.get(ip);
    if (rec) delete rec[field];
  }

  private remove(ip: string): void {
    const rec = this.byIp.get(ip);
    if (!rec) return;
    this.byIp.delete(ip);
    if (rec.mac !== undefined && this.ipByMac.get(rec.mac) === ip) this.ipByMac.delete(rec.mac);
    if (rec.serial !== undefined && this.ipBySerial.get(rec.serial) === ip) this.ipBySerial.delete(rec.serial);
  }

  get(ip: string): ClientRecord | undefined {
    return this.byIp.get(ip);
  }

  /** The address an identity (MAC or Pi serial) is bound to, if any. */
  holder(kind: IdentityKind, id: string): string | undefined {
    return (kind === 'mac' ? this.ipByMac : this.ipBySerial).get(id);
  }

  /**
   * Notes an open NBD export from `ip` under the state key `key` (see stateKey); the returned function
   * (idempotent) ends it. An identity is not moved to another address while its holder is attached.
   */
  attach(ip: string, key: string): () => void {
    const inc = (m: Map<string, number>, k: string, d: number): void => {
      const n = (m.get(k) ?? 0) + d;
      if (n > 0) m.set(k, n);
      else m.delete(k);
    };
    inc(this.attachedIps, ip, 1);
    inc(this.attachedKeys, key, 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      inc(this.attachedIps, ip, -1);
      inc(this.attachedKeys, key, -1);
    };
  }

  /** Whether an NBD export is open from this address. */
  attachedFrom(ip: string): boolean {
    return this.attachedIps.has(ip);
  }

  /** Whether an NBD export is open under this state key (from any address, e.g. by client certificate). */
  attachedAs(key: string): boolean {
    return this.attachedKeys.has(key);
  }

  /** The identity to log and to name overlays by: serial, else MAC, else the address. */
  identity(ip: string): ClientIdentity {
    const rec = this.byIp.get(ip);
    if (!rec) return { ip };
    const { mac, serial, firmware, name, model } = rec;
    return { ip, ...(mac ? { mac } : {}), ...(serial ? { serial } : {}), ...(firmware ? { firmware } : {}), ...(name ? { name } : {}), ...(model ? { model } : {}) };
  }

  /** A stable file-name-safe key for per-client state (copy-on-write overlays). */
  stateKey(ip: string): string {
    const rec = this.byIp.get(ip);
    if (rec?.serial) return identityKey('serial', rec.serial);
    if (rec?.mac) return identityKey('mac', rec.mac);
    return addressKey(ip);
  }

  all(): ClientRecord[] {
    return [...this.byIp.values()].reverse();
  }

  /** Clients that asked and were not served (bounded, newest last), with why and the command that would serve them. */
  private readonly unservedByKey = new Map<string, UnservedRecord>();

  noteUnserved(r: Omit<UnservedRecord, 'count' | 'first' | 'last'>, now = Date.now()): void {
    const key = `${r.ip}\0${r.serial ?? r.mac ?? ''}`;
    const prev = this.unservedByKey.get(key);
    this.unservedByKey.delete(key);
    this.unservedByKey.set(key, { ...r, count: (prev?.count ?? 0) + 1, first: prev?.first ?? now, last: now });
    while (this.unservedByKey.size > MAX_UNSERVED) this.unservedByKey.delete(this.unservedByKey.keys().next().value as string);
  }

  /** Newest first. */
  unserved(): UnservedRecord[] {
    return [...this.unservedByKey.values()].reverse();
  }
}

const MAX_UNSERVED = 64;

/** A client that asked for a boot file and got nothing: who, what, why, and how to serve it. */
export interface UnservedRecord {
  ip: string;
  serial?: string;
  mac?: string;
  path: string;
  reason: string;
  fix?: string;
  count: number;
  first: number;
  last: number;
}

/** The state key of an identity: `pi-<serial>` or `mac-aa-bb-cc-dd-ee-ff`. */
export function identityKey(kind: IdentityKind, id: string): string {
  return kind === 'serial' ? `pi-${id}` : `mac-${id.replace(/:/g, '-')}`;
}

/** The state key of a client known only by its address. */
export function addressKey(ip: string): string {
  return `ip-${ip.replace(/[^0-9a-fA-F.]/g, '_')}`;
}

/** Log fields for a client: `{ ip, mac?, serial?, model?, name? }` (pino child bindings). */
export function clientFields(id: ClientIdentity): Record<string, string> {
  const out: Record<string, string> = { ip: id.ip };
  if (id.mac) out.mac = id.mac;
  if (id.serial) out.serial = id.serial;
  if (id.model) out.model = id.model;
  if (id.name) out.client = id.name;
  return out;
}
