/**
 * Which configured Pi a TFTP request is about (pure, from the config). The EEPROM's TFTP_PREFIX decides
 * what its paths carry (bootloader config docs, TFTP_PREFIX / TFTP_PREFIX_STR):
 * - 0 (default): the serial's low 32 bits, `3a4b5c6d/start4.elf` (a Pi 5 adds a slash: `3a4b5c6d//config.txt`,
 *   which the TFTP server's path normalization folds);
 * - 1: a fixed directory, TFTP_PREFIX_STR (`pxe/start4.elf`): it names no Pi, so the Pi is the one whose MAC
 *   holds the asking address (from its DHCP exchange) and whose `prefix` is that directory;
 * - 2: the MAC, `dc-a6-32-01-02-03/start4.elf`.
 * The Pi 3 boot ROM asks `bootcode.bin` at the root, then bootcode.bin asks under the serial (and at the root
 * when the serial directory has no start.elf); a root path is served a Pi's view only when the asking
 * address holds that Pi's MAC. A Pi 1-3's MAC is `b8:27:eb` + the serial's low 24 bits (its firmware
 * derives it; raspberrypi/firmware issue #941 shows serial …8696f5 with MAC b8:27:eb:86:96:f5), so a Pi
 * listed by serial alone is found from its Pi 3 MAC too.
 *
 * Each Pi has one identity whichever form its requests take, so one copy-on-write overlay: its serial when
 * listed by serial (the MAC forms resolve to it), its MAC when listed by MAC only.
 */
import type { Config } from '../config/schema.js';
import type { IdentityKind } from './clients.js';
import { readFile } from 'node:fs';

type PiConfig = Config['pis'][string];

export interface PiEntry {
  /** The `pis` key (serial or MAC). */
  key: string;
  config: PiConfig;
  /** The identity its requests claim (`serial` when listed by serial, else `mac`). */
  kind: IdentityKind;
  id: string;
  /** Its MAC, when known (MAC key, `mac:`, or derived from a serial for a Pi 3). */
  mac?: string;
  /** Its TFTP_PREFIX_STR directory (TFTP_PREFIX=1), without slashes. */
  prefix?: string;
}

/** `dc-a6-32-01-02-03/rest` (TFTP_PREFIX=2; the bootloader prints the MAC with dashes, lowercase). */
const MAC_PREFIX = /^([0-9a-f]{2}(?:-[0-9a-f]{2}){5})\/(.+)$/i;

/** A MAC-prefixed Pi path: `{ mac, file }`, else null. */
export function parseMacPath(path: string): { mac: string; file: string } | null {
  const m = MAC_PREFIX.exec(path);
  return m ? { mac: m[1]!.toLowerCase().replace(/-/g, ':'), file: m[2]! } : null;
}

/** The Pi 1-3 MAC of a serial (`b8:27:eb` + its low 24 bits). */
export function pi3MacOf(serial: string): string {
  const s = serial.toLowerCase();
  return `b8:27:eb:${s.slice(2, 4)}:${s.slice(4, 6)}:${s.slice(6, 8)}`;
}

export class PiDirectory {
  private readonly bySerial = new Map<string, PiEntry>();
  private readonly byMac = new Map<string, PiEntry>();

  constructor(pis: Config['pis']) {
    const derived = new Map<string, PiEntry | null>();
    for (const [key, config] of Object.entries(pis)) {
      const keyIsMac = key.includes(':');
      const mac = keyIsMac ? key : config.mac;
      const entry: PiEntry = {
        key,
        config,
        kind: keyIsMac ? 'mac' : 'serial',
        id: key,
        ...(mac !== undefined ? { mac } : {}),
        ...(config.prefix ? { prefix: config.prefix } : {}),
      };
      if (keyIsMac) this.byMac.set(key, entry);
      else {
        this.bySerial.set(key, entry);
        if (mac !== undefined) this.byMac.set(mac, entry);
        else if (config.model === undefined || config.model === 3) {
          // A Pi 3 listed by serial: its MAC follows from the serial (ambiguous derivations are dropped).
          const d = pi3MacOf(key);
          derived.set(d, derived.has(d) ? null : entry);
        }
      }
    }
    for (const [mac, entry] of derived) if (entry && !this.byMac.has(mac)) this.byMac.set(mac, entry);
  }

  serial(serial: string): PiEntry | undefined {
    return this.bySerial.get(serial);
  }

  mac(mac: string): PiEntry | undefined {
    return this.byMac.get(mac);
  }

  /** Every MAC that names a configured Pi (keys, `mac:`, and those derived from a Pi 3's serial). */
  macEntries(): IterableIterator<[string, PiEntry]> {
    return this.byMac.entries();
  }

  /** The file a Pi known by its address asks for, in its view: under its TFTP_PREFIX_STR directory (taken off), or at the root. */
  static fileOf(entry: PiEntry, path: string): string {
    return entry.prefix && path.startsWith(`${entry.prefix}/`) ? path.slice(entry.prefix.length + 1) : path;
  }
}

// ---------------------------------------------------------------- Pi 3 boot ROM address binding

/**
 * The Pi 3 boot ROM never sends a DHCPREQUEST (raspberrypi/documentation bootmodes/net.md, "DHCP request /
 * reply / ack sequence not correctly implemented"): it takes the router's OFFER and goes straight to TFTP,
 * so no DHCP exchange ever tells which address its MAC got, and its root `bootcode.bin` request cannot be
 * tied to a configured Pi the way an EEPROM Pi's is (by its DHCPREQUEST). What does tie them: before its
 * first RRQ the ROM ARPs for the TFTP server ("ARP to tftpboot server" in net.md; raspberrypi/firmware issue
 * #745 capture: `b8:27:eb:f9:92:f7 > ff:ff:ff:ff:ff:ff ARP who-has 10.23.16.13 tell 10.23.16.10`, then
 * `RRQ "bootcode.bin" octet`), which leaves the sender's address → MAC in the server's neighbour table.
 *
 * That is taken as DHCP-grade evidence only when all of these hold (`pi3NeighbourMac`):
 * - the request is the ROM's first file, `bootcode.bin` at the root (a boot start);
 * - the asking address has no MAC bound yet (an address with one is served by it, as before);
 * - the neighbour table holds a complete entry for the address, and its MAC is a configured Pi's;
 * - that MAC's DHCP DISCOVER (with a Pi form) was seen within the last minute (a boot in progress).
 * The registry then claims the MAC under its usual rules (pins, never while attached to NBD, every move
 * logged): a host that merely asks gets nothing, since its own MAC is what the table shows for it.
 */

/** Reads the kernel's IPv4 neighbour table: address → MAC, complete entries only. */
export type NeighbourLookup = (ip: string) => Promise<string | undefined>;

/** Parses /proc/net/arp text: the MAC of `ip` when its entry is complete (ATF_COM, flag 0x2), else undefined. */
export function macInArpTable(text: string, ip: string): string | undefined {
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 6 || f[0] !== ip) continue;
    const flags = Number.parseInt(f[2]!, 16);
    const mac = f[3]!.toLowerCase();
    if (!(flags & 0x2) || !/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(mac) || mac === '00:00:00:00:00:00') return undefined;
    return mac;
  }
  return undefined;
}

/**
 * One read of /proc/net/arp is shared by the lookups that come while it is fresh: 250 ms for an address it
 * holds, 50 ms for one it lacks (a Pi's ARP may have just arrived), so a flood of RRQs costs at most 20 reads
 * a second.
 */
let arpRead: { at: number; text: Promise<string> } | undefined;

function readArp(now: number): { at: number; text: Promise<string> } {
  arpRead = { at: now, text: new Promise((resolve) => readFile('/proc/net/arp', 'latin1', (err, text) => resolve(err ? '' : text.slice(0, 1 << 20)))) };
  return arpRead;
}

/** The neighbour table of the daemon's network namespace (/proc/net/arp, read with the callback fs API). */
export const procNeighbours: NeighbourLookup = async (ip) => {
  const now = Date.now();
  let read = arpRead && now - arpRead.at <= 250 ? arpRead : readArp(now);
  let mac = macInArpTable(await read.text, ip);
  if (mac === undefined && read.at !== now && Date.now() - read.at > 50) {
    read = arpRead && arpRead.at > read.at ? arpRead : readArp(Date.now());
    mac = macInArpTable(await read.text, ip);
  }
  return mac;
};

/** Whether a request path is the Pi 3 boot ROM's first file (at the TFTP root). */
export function isRomFirstFile(path: string): boolean {
  return path.replace(/^\/+/, '').toLowerCase() === 'bootcode.bin';
}

/**
 * The configured Pi MAC the neighbour table gives for a Pi 3 boot ROM's `bootcode.bin` request (see above),
 * or undefined. Pure apart from the lookup; the caller claims the MAC under its rules.
 */
export async function pi3NeighbourMac(
  o: { ip: string; path: string; boundMac: string | undefined; pis: PiDirectory; discoverAt: (mac: string) => number | undefined; lookup: NeighbourLookup; now?: number; windowMs: number },
): Promise<string | undefined> {
  if (o.boundMac !== undefined || !isRomFirstFile(o.path)) return undefined;
  const mac = await o.lookup(o.ip);
  if (mac === undefined || !o.pis.mac(mac)) return undefined;
  const at = o.discoverAt(mac);
  if (at === undefined || (o.now ?? Date.now()) - at > o.windowMs) return undefined;
  return mac;
}
