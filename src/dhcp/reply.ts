/**
 * Builds proxyDHCP replies (pure). What goes in, per client kind, follows dnsmasq's proxy mode and
 * pixiecore:
 * - always: op BOOTREPLY, the request's xid/chaddr/giaddr/ciaddr, yiaddr 0.0.0.0 (never a lease),
 *   siaddr = server, option 53 (OFFER on 67, ACK on 4011), 54 = server (4-byte address), 60 `PXEClient`
 *   (`HTTPClient` for HTTP boot), 97 echoed when the client sent 0 or 17 bytes.
 * - Raspberry Pi: option 43 as dnsmasq's `pxe-service=0,"Raspberry Pi Boot"` for EEPROM bootloaders, padded
 *   with three spaces for the Pi 3 boot ROM (src/dhcp/pi.ts), and 66 = server as text (the Pi 4 bootloader
 *   takes its TFTP server from 66 when present, else siaddr). No file.
 * - BIOS (and anything not UEFI): option 43 with discovery control 8 (boot the named file, no menu, no
 *   boot-server discovery) and the boot file in `file`.
 * - UEFI: no option 43 (firmwares that see a discovery-control 43 in a proxy offer often drop it); the
 *   boot file in `file`, then the same (as DHCPACK) again for the DHCPREQUEST the firmware sends to 4011.
 */
import {
  BOOTREPLY,
  MessageType,
  Opt,
  emptyMessage,
  fixedField,
  ipToBytes,
  type DhcpMessage,
  type DhcpOption,
} from './packet.js';
import { BIOS_OPTION_43, isUefi, type PxeClientInfo } from './pxe.js';
import { piOption43For } from './pi.js';
import { bootFileOf, type BootDecision } from './policy.js';

export type ReplyKind = 'offer' | 'ack';

export function buildProxyReply(
  req: DhcpMessage,
  client: PxeClientInfo,
  decision: BootDecision,
  serverAddress: string,
  kind: ReplyKind,
): DhcpMessage {
  const server = decision.serverAddress ?? serverAddress;
  const serverBytes = ipToBytes(server) ?? Buffer.alloc(4);
  const msg = emptyMessage();
  msg.op = BOOTREPLY;
  msg.htype = req.htype;
  msg.hlen = req.hlen;
  msg.xid = req.xid;
  msg.chaddr = Buffer.from(req.chaddr);
  msg.ciaddr = req.ciaddr;
  msg.giaddr = req.giaddr;
  msg.yiaddr = '0.0.0.0';
  msg.siaddr = server;
  // On 67 the client has no address yet: ask relays (and say we) broadcast. On 4011 keep what it sent.
  msg.flags = kind === 'offer' && req.ciaddr === '0.0.0.0' ? 0x8000 : req.flags & 0x8000;

  const piBoot = decision.piBoot ?? client.isPi;
  const options: DhcpOption[] = [
    { code: Opt.MessageType, data: Buffer.from([kind === 'offer' ? MessageType.Offer : MessageType.Ack]) },
    { code: Opt.ServerId, data: serverBytes },
    { code: Opt.VendorClass, data: Buffer.from(client.isHttpClient ? 'HTTPClient' : 'PXEClient', 'latin1') },
  ];
  if (client.uuidEcho) options.push({ code: Opt.ClientUuid, data: Buffer.from(client.uuidEcho) });

  if (piBoot) {
    // The boot menu each ROM accepts (src/dhcp/pi.ts); the server is in siaddr, 54 and 66 alike (the Pi 3
    // ROM reads 54, the EEPROM 66 when present, else siaddr).
    options.push({ code: Opt.VendorSpecific, data: Buffer.from(piOption43For(client.piModel)) });
    options.push({ code: Opt.TftpServerName, data: Buffer.from(server, 'latin1') });
  } else {
    if (!isUefi(client.firmware) && !client.isHttpClient) {
      options.push({ code: Opt.VendorSpecific, data: Buffer.from(BIOS_OPTION_43) });
    }
    const bootFile = bootFileOf(decision, server);
    const file = fixedField(bootFile, 128);
    if (file) msg.file = file;
    else options.push({ code: Opt.BootFileName, data: Buffer.from(bootFile, 'latin1') });
  }
  msg.options = options;
  return msg;
}

/** Where a reply goes (RFC 2131 §4.1): relay agent, client's own address, else limited broadcast. */
export function replyDestination(
  req: DhcpMessage,
  ports: { server: number; client: number },
): { address: string; port: number } {
  if (req.giaddr !== '0.0.0.0') return { address: req.giaddr, port: ports.server };
  if (req.ciaddr !== '0.0.0.0') return { address: req.ciaddr, port: ports.client };
  return { address: '255.255.255.255', port: ports.client };
}
