/**
 * PXE client classification (PXE 2.1 spec, RFC 4578) and the PXE-specific reply pieces.
 * Pure: a parsed request in, a typed description out.
 */
import { Opt, getOption, getOptionString, macOf, type DhcpMessage } from './packet.js';
import { piModelOf, type PiModel } from './pi.js';

export { PI_OUIS, PI_OPTION_43, PI3_OPTION_43 } from './pi.js';

export type Firmware = 'bios' | 'uefi32' | 'uefi64' | 'arm32' | 'arm64' | 'http' | 'unknown';

export interface PxeClientInfo {
  /** aa:bb:cc:dd:ee:ff */
  mac: string;
  /** Option 93's first architecture type (RFC 4578 / IANA), or the `Arch:` field of option 60; -1 if neither. */
  arch: number;
  firmware: Firmware;
  /** Option 60 starts with PXEClient or HTTPClient. */
  isPxe: boolean;
  /** Option 60 starts with HTTPClient (UEFI HTTP boot): the reply echoes `HTTPClient` and carries a URL. */
  isHttpClient: boolean;
  /** Option 77 (user class) is `iPXE`, or iPXE's option 175 is present. */
  isIpxe: boolean;
  /** A Raspberry Pi boot ROM / EEPROM bootloader (vendor class, arch 0, and a Pi MAC OUI or a Pi option 97). */
  isPi: boolean;
  /** Which Pi family and bootloader (src/dhcp/pi.ts), when `isPi`. */
  piModel?: PiModel;
  vendorClass: string;
  userClass: string;
  /** Option 12 (host name), as sent: client-controlled, for display only (clip and escape it). */
  hostname?: string;
  /** Option 97 as sent (any length). */
  uuid?: Buffer;
  /** Option 97 to echo in replies: only when it is 0 or 17 bytes (PXE spec), as dnsmasq does. */
  uuidEcho?: Buffer;
  giaddr: string;
  ciaddr: string;
  xid: number;
}

export const PI_VENDOR_CLASS = 'PXEClient:Arch:00000:UNDI:002001';

/** Architecture type → firmware family. */
export function firmwareOf(arch: number): Firmware {
  switch (arch) {
    case 0:
      return 'bios';
    case 6:
      return 'uefi32';
    case 7:
    case 9:
      return 'uefi64';
    case 10:
      return 'arm32';
    case 11:
      return 'arm64';
    case 15: // x86 UEFI HTTP
    case 16: // x64 UEFI HTTP
    case 18: // ARM32 UEFI HTTP
    case 19: // ARM64 UEFI HTTP
      return 'http';
    default:
      return 'unknown';
  }
}

/** UEFI firmware gets no option 43 on port 67 and is answered again on 4011. */
export function isUefi(fw: Firmware): boolean {
  return fw === 'uefi32' || fw === 'uefi64' || fw === 'arm32' || fw === 'arm64';
}

export function classify(msg: DhcpMessage): PxeClientInfo {
  const vendorClass = getOptionString(msg, Opt.VendorClass) ?? '';
  const userClass = userClassText(getOption(msg, Opt.UserClass));
  const isHttpClient = vendorClass.startsWith('HTTPClient');
  const isPxe = vendorClass.startsWith('PXEClient') || isHttpClient;

  let arch = -1;
  const o93 = getOption(msg, Opt.ClientArch);
  if (o93 && o93.length >= 2) arch = o93.readUInt16BE(0);
  else {
    const m = /:Arch:(\d{5})/.exec(vendorClass);
    if (m) arch = Number(m[1]);
  }
  let firmware: Firmware = arch >= 0 ? firmwareOf(arch) : 'unknown';
  if (isHttpClient) firmware = 'http';

  const mac = macOf(msg);
  const isIpxe = userClass === 'iPXE' || getOption(msg, Opt.Etherboot) !== undefined;
  const piModel = vendorClass === PI_VENDOR_CLASS && arch === 0 ? piModelOf(msg, mac) : null;
  const isPi = piModel !== null;
  const uuid = getOption(msg, Opt.ClientUuid);
  const hostname = getOptionString(msg, Opt.HostName);
  const info: PxeClientInfo = {
    mac,
    arch,
    firmware,
    isPxe,
    isHttpClient,
    isIpxe,
    isPi,
    ...(piModel ? { piModel } : {}),
    vendorClass,
    userClass,
    ...(hostname ? { hostname } : {}),
    giaddr: msg.giaddr,
    ciaddr: msg.ciaddr,
    xid: msg.xid,
  };
  if (uuid) {
    info.uuid = uuid;
    if (uuid.length === 0 || uuid.length === 17) info.uuidEcho = uuid;
  }
  return info;
}

/**
 * Option 77 text. RFC 3004 encodes it as length-prefixed class names, but iPXE (and most PXE stacks) send
 * the bare string `iPXE`; accept both.
 */
function userClassText(v: Buffer | undefined): string {
  if (!v || v.length === 0) return '';
  const n = v[0]!;
  if (n > 0 && n + 1 === v.length && /^[\x20-\x7e]+$/.test(v.subarray(1).toString('latin1'))) {
    return v.subarray(1).toString('latin1');
  }
  return v.toString('latin1');
}

/** Option 43 for BIOS PXE ROMs: PXE_DISCOVERY_CONTROL = 8 (boot the file named in this offer, no menu). */
export const BIOS_OPTION_43: Buffer = Buffer.from([0x06, 0x01, 0x08, 0xff]);
