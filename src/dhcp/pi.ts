/**
 * Raspberry Pi recognition (pure): which Pi family and which bootloader sent a DHCP request, and the
 * option 43 each boot ROM needs. Sources (each checked against captures quoted in the fixtures of
 * test/dhcp/fixtures):
 * - Pi 3B/3B+/2B v1.2 boot ROM (BCM2837, not updatable): DISCOVER with vendor class
 *   `PXEClient:Arch:00000:UNDI:002001`, option 93 = 0, option 97 = 17 bytes `00 44 44 …` (raspberrypi/
 *   documentation bootmodes/net.md tcpdump decode). It never sends a DHCPREQUEST (net.md, "DHCP request /
 *   reply / ack sequence not correctly implemented", raspberrypi/documentation PR #1067), asks `bootcode.bin`
 *   then `bootsig.bin` at the TFTP root, and takes its TFTP server from the reply's server identifier
 *   (raspberrypi/firmware issue #801: siaddr is not honoured; #871: option 66 is not either).
 * - bootcode.bin (Pi 3 second stage, or on an SD card of older Pis): option 97 = 0 + the serial repeated 4
 *   times (little-endian; raspberrypi/firmware issue #941 capture `0.245.150.134.141 ×4`).
 * - Pi 4/400/CM4 EEPROM (bcm2711) and Pi 5/500/CM5 EEPROM (bcm2712): option 97 = 0, the FourCC `RPi4` /
 *   `RPi5`, board revision (LE), 4 low MAC bytes, serial low 32 bits (LE) (bootloader config docs,
 *   DHCP_OPTION97, default 0x34695052 = "RPi4" little-endian since pieeprom-2020-03-19). `DHCP_OPTION97=0`
 *   brings back the bootcode.bin form (serial ×4).
 * Option 93 is 0 (x86 BIOS) on all of them, so a Pi is told from a PC by the vendor class, arch 0 and either
 * its MAC OUI or its option 97.
 */
import { Opt, getOption, type DhcpMessage } from './packet.js';

/**
 * MAC OUIs registered to Raspberry Pi (IEEE MA-L): b8:27:eb (Raspberry Pi Foundation: Pi 1-3, MAC derived
 * from the serial), and Raspberry Pi (Trading) Ltd: dc:a6:32 (Pi 4), e4:5f:01, 28:cd:c1, d8:3a:dd (Pi 4,
 * CM4, Pi 5), 2c:cf:67 (Pi 5, 500), 88:a2:9e (Pi 5, Pi 4 rev 1.5; rpi-eeprom and user captures).
 */
export const PI_OUIS: readonly string[] = ['b8:27:eb', 'dc:a6:32', 'e4:5f:01', '28:cd:c1', 'd8:3a:dd', '2c:cf:67', '88:a2:9e'];

/** Pi family: 3 (boot ROM network boot: 3B, 3B+, 2B v1.2), 4 (4B, 400, CM4), 5 (5, 500, CM5); 0 unknown. */
export type PiFamily = 0 | 3 | 4 | 5;
/** Which code sent the request. */
export type PiBootloader = 'bootrom' | 'bootcode' | 'eeprom' | 'unknown';

export interface PiModel {
  family: PiFamily;
  bootloader: PiBootloader;
  /** For logs: `pi3-bootrom`, `pi4-eeprom`, `pi5-eeprom`, `pi-bootcode`, `pi`. */
  name: string;
  /** Board revision from an EEPROM option 97 (e.g. 0x00c03111 Pi 4B, 0x00d04170 Pi 5). */
  boardRevision?: number;
  /** Serial (low 32 bits, 8 lowercase hex digits) an option 97 claims. A claim only: never identity. */
  serial?: string;
}

const FOURCC_PI4 = Buffer.from('RPi4', 'latin1');
const FOURCC_PI5 = Buffer.from('RPi5', 'latin1');

/** Board revision (new-style, bit 23 set) → family: type field bits 4-11 (0x11 4B, 0x13 400, 0x14 CM4, 0x17 5, 0x18 CM5, 0x19 500). */
function familyOfRevision(rev: number): PiFamily {
  if (!(rev & 0x800000)) return 0;
  const type = (rev >> 4) & 0xff;
  if (type === 0x11 || type === 0x13 || type === 0x14 || type === 0x15) return 4;
  if (type >= 0x17 && type <= 0x1a) return 5;
  if (type === 0x08 || type === 0x0d || type === 0x0e || type === 0x04) return 3;
  return 0;
}

/** What option 97 says about a Pi (null: not a Pi form). */
export function piOfOption97(o97: Buffer | undefined): PiModel | null {
  if (!o97 || o97.length !== 17 || o97[0] !== 0) return null;
  const body = o97.subarray(1);
  const four = body.subarray(0, 4);
  if (four.equals(FOURCC_PI4) || four.equals(FOURCC_PI5)) {
    const family: PiFamily = four.equals(FOURCC_PI5) ? 5 : 4;
    const boardRevision = body.readUInt32LE(4);
    const serial = body.readUInt32LE(12).toString(16).padStart(8, '0');
    return { family, bootloader: 'eeprom', name: `pi${family}-eeprom`, boardRevision, serial };
  }
  // The Pi 3 boot ROM: 0x44 × 16.
  if (body.every((b) => b === 0x44)) return { family: 3, bootloader: 'bootrom', name: 'pi3-bootrom' };
  // bootcode.bin (or an EEPROM with DHCP_OPTION97=0): the serial four times.
  const s = body.subarray(0, 4);
  if (s.equals(body.subarray(4, 8)) && s.equals(body.subarray(8, 12)) && s.equals(body.subarray(12, 16)) && !s.equals(Buffer.alloc(4))) {
    return { family: 0, bootloader: 'bootcode', name: 'pi-bootcode', serial: s.readUInt32LE(0).toString(16).padStart(8, '0') };
  }
  return null;
}

/**
 * The Pi model of a DHCP request that has the Pi vendor class and arch 0 (null: not a Pi). A Pi OUI alone
 * is enough (an EEPROM with a custom DHCP_OPTION97 sends other bytes); an EEPROM option 97 (`RPi4`/`RPi5`)
 * is enough for a Pi whose MAC was changed (MAC_ADDRESS, MAC_ADDRESS_OTP).
 */
export function piModelOf(msg: DhcpMessage, mac: string): PiModel | null {
  const o97 = piOfOption97(getOption(msg, Opt.ClientUuid));
  const piOui = msg.hlen === 6 && PI_OUIS.includes(mac.slice(0, 8));
  // The ROM / bootcode.bin forms only with a Pi OUI (a Pi 1-3 MAC is always b8:27:eb); the EEPROM's FourCC
  // alone is enough (that is what it is for: DHCP_OPTION97 docs).
  if (o97 && (o97.bootloader === 'eeprom' || piOui)) {
    if (o97.boardRevision !== undefined) {
      const byRev = familyOfRevision(o97.boardRevision);
      if (byRev !== 0 && byRev !== o97.family) o97.family = byRev;
    }
    return o97;
  }
  if (!piOui) return null;
  return { family: 0, bootloader: 'unknown', name: 'pi' };
}

/** A family number from a log/config name (`pi4-eeprom` → 4). */
export function familyOfName(name: string | undefined): PiFamily {
  const m = /^pi([345])/.exec(name ?? '');
  return m ? (Number(m[1]) as PiFamily) : 0;
}

// ---------------------------------------------------------------- option 43

/**
 * Option 43 for a Pi (PXE vendor options, as dnsmasq sends for `pxe-service=0,"<text>"` with its default
 * `pxe-prompt` of timeout 0 "PXE"):
 *   06 01 03          PXE_DISCOVERY_CONTROL = 3
 *   0A 04 00 'PXE'    PXE_MENU_PROMPT: timeout 0, "PXE"
 *   09 len 00 00 n    PXE_BOOT_MENU: type 0, n-byte description
 *   FF
 * What each ROM checks:
 * - EEPROM (Pi 4/5): that the option contains its PXE_OPTION43 string, "Raspberry Pi Boot" by default
 *   (bootloader config docs, PXE_OPTION43; rpi-eeprom issue #103: "the eeprom was check[ing] the
 *   'Raspberry Pi' part only" before it became configurable). Padding does not matter to it.
 * - Pi 3 boot ROM: the published configurations that boot it (raspberrypi/documentation net.md and
 *   net_tutorial.md; the dnsmasq configs in raspberrypi/firmware issues #871, #941, #1265) all send
 *   "Raspberry Pi Boot" followed by three spaces: the ROM compares a fixed-length field of the boot menu,
 *   so the description is padded to 20 bytes. The EEPROM's substring match accepts the padded form too.
 */
function piOption43(description: string): Buffer {
  const text = Buffer.from(description, 'latin1');
  return Buffer.concat([
    Buffer.from([0x06, 0x01, 0x03, 0x0a, 0x04, 0x00]),
    Buffer.from('PXE', 'latin1'),
    Buffer.from([0x09, text.length + 3, 0x00, 0x00, text.length]),
    text,
    Buffer.from([0xff]),
  ]);
}

/** The EEPROM form, byte for byte what dnsmasq sends for `pxe-service=0,"Raspberry Pi Boot"`. */
export const PI_OPTION_43: Buffer = piOption43('Raspberry Pi Boot');
/** The Pi 3 boot ROM form: the description padded with three spaces (20 bytes). */
export const PI3_OPTION_43: Buffer = piOption43('Raspberry Pi Boot   ');

/** Option 43 for a Pi of this model: the padded form unless it is known to be an EEPROM bootloader. */
export function piOption43For(model: PiModel | undefined): Buffer {
  return model?.bootloader === 'eeprom' ? PI_OPTION_43 : PI3_OPTION_43;
}
