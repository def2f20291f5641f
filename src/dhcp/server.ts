/**
 * Proxy DHCP server (the role of dnsmasq's `dhcp-range=…,proxy`): the network's own DHCP server hands out
 * addresses; this one only adds boot information for PXE clients.
 *
 * - Port 67: answers DHCPDISCOVER from PXE clients with a proxy DHCPOFFER (yiaddr 0.0.0.0). Never a lease,
 *   never a DHCPREQUEST, never a non-PXE client, never a client the policy does not claim.
 * - Port 4011: answers the DHCPREQUEST a PXE (typically UEFI) client sends to the boot server with a
 *   DHCPACK carrying the boot file, unicast back to its source address and port.
 * - Replies on 67 go to giaddr:67 when relayed, ciaddr:68 when set, else 255.255.255.255:68.
 *
 * Sockets: 0.0.0.0:67 with SO_REUSEADDR (so a dnsmasq with `bind-interfaces` on the same host can coexist)
 * and 0.0.0.0:4011, broadcast enabled.
 *
 * About `interfaceName`: Node has no SO_BINDTODEVICE and no IP_PKTINFO, so a socket bound to 0.0.0.0
 * receives on every interface and cannot tell which one a broadcast arrived on. What `interfaceName` does:
 * - it picks the address announced as boot server (siaddr, 54, 66) when `serverAddress` is not set;
 * - it picks where limited broadcasts (255.255.255.255) go out: replies are sent from an extra socket bound
 *   to that address, and Linux sends a limited broadcast from a bound socket out of the address's own
 *   interface, whatever the routing table says (without it, they follow the default route, or fail with
 *   ENETUNREACH on a host without one);
 * - it limits the subnet match for relayed/addressed clients to that interface.
 * What it cannot do: stop PXE clients on other interfaces from being answered. Their requests arrive on
 * the 0.0.0.0 socket like any other; the policy (per MAC, Pis on/off) is the filter. Binding `bindAddress`
 * to one address instead receives only unicast/relayed requests (broadcasts reach only 0.0.0.0 sockets).
 */
import { askRecvBuffer } from '../util/net.js';
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { EventEmitter } from 'node:events';
import { networkInterfaces } from 'node:os';
import { NetbootError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import { FloodLog } from '../util/flood.js';
import { addressForPeer, defaultServerAddress, type InterfaceTable } from './address.js';
import { BOOTREQUEST, MessageType, Opt, getOption, messageType, parseDhcp, serializeDhcp } from './packet.js';
import { bootFileOf, type DhcpPolicy } from './policy.js';
import { classify } from './pxe.js';
import { buildProxyReply, replyDestination, type ReplyKind } from './reply.js';

export interface ProxyDhcpPorts {
  /** DHCP server port to listen on (67; 0 = ephemeral, tests). */
  dhcp: number;
  /** PXE boot server port to listen on (4011; 0 = ephemeral; null = off). */
  proxy: number | null;
  /** Where clients listen (68). */
  client: number;
  /** Where relay agents listen (67). */
  relay: number;
}

export interface ProxyDhcpServerOptions {
  policy: DhcpPolicy;
  logger?: Logger;
  /** IPv4 announced as boot/TFTP server. Default: detected (see address.ts). */
  serverAddress?: string;
  /** Chooses the announced address; see the file comment for what it cannot do. */
  interfaceName?: string;
  ports?: Partial<ProxyDhcpPorts>;
  /** Wait this long before answering on 67 (dnsmasq's dhcp-reply-delay), for firmware that dislikes fast replies. */
  replyDelayMs?: number;
  /** Address to bind both sockets to (default 0.0.0.0, needed to receive broadcasts). */
  bindAddress?: string;
  /** Interface table source (tests). Default: os.networkInterfaces. */
  networkInterfaces?: () => InterfaceTable;
  /** Cap on replies waiting out `replyDelayMs` (a flood must not grow memory). */
  maxPendingReplies?: number;
}

export interface ProxyDhcpStats {
  received: number;
  malformed: number;
  ignored: number;
  offers: number;
  acks: number;
  dropped: number;
  sendErrors: number;
}

export class ProxyDhcpServer extends EventEmitter {
  private readonly log: Logger;
  private readonly ports: ProxyDhcpPorts;
  /**
   * Every line a remote host can cause (one per packet otherwise): at most one per key (client) per 10 s
   * and 50 per kind per 10 s in all, each carrying how many were left out (`suppressed`).
   */
  private readonly flood: FloodLog;
  private readonly ifaces: () => InterfaceTable;
  private dhcpSock: Socket | null = null;
  private proxySock: Socket | null = null;
  /** Bound to the server's own address: sends limited broadcasts out of that address's interface. */
  private bcastSock: Socket | null = null;
  private pending = new Set<NodeJS.Timeout>();
  private ifaceCache: { at: number; table: InterfaceTable } | null = null;
  private defaultAddress = '';
  readonly stats: ProxyDhcpStats = { received: 0, malformed: 0, ignored: 0, offers: 0, acks: 0, dropped: 0, sendErrors: 0 };

  constructor(private readonly opts: ProxyDhcpServerOptions) {
    super();
    // The daemon names the component in the logger it passes (a second `component` key would repeat it).
    this.log = opts.logger ?? silentLogger;
    this.flood = new FloodLog(this.log, { maxLinesPerKind: 50 });
    this.ports = { dhcp: 67, proxy: 4011, client: 68, relay: 67, ...opts.ports };
    this.ifaces = opts.networkInterfaces ?? (() => networkInterfaces());
  }

  /** The address announced when nothing ties the client to an interface. */
  get serverAddress(): string {
    return this.defaultAddress;
  }

  /** Bound ports (useful with ephemeral ports). */
  address(): { dhcp: number; proxy: number | null } {
    return {
      dhcp: this.dhcpSock ? this.dhcpSock.address().port : this.ports.dhcp,
      proxy: this.proxySock ? this.proxySock.address().port : null,
    };
  }

  async start(): Promise<void> {
    const choice = defaultServerAddress(
      { serverAddress: this.opts.serverAddress, interfaceName: this.opts.interfaceName },
      this.table(),
    );
    if (!choice.ok) throw new NetbootError('DHCP_NO_SERVER_ADDRESS', `proxy DHCP: ${choice.reason}`);
    this.defaultAddress = choice.address;
    const bind = this.opts.bindAddress ?? '0.0.0.0';
    try {
      this.dhcpSock = await this.openSocket('dhcp', bind, this.ports.dhcp);
      if (this.ports.proxy !== null) this.proxySock = await this.openSocket('proxy', bind, this.ports.proxy);
      const local = this.localAddress();
      if (bind === '0.0.0.0' && local) {
        // Linux routes a datagram to 255.255.255.255 from a socket bound to a local address out of that
        // address's interface, route or no route: the stand-in for dnsmasq's IP_PKTINFO, which Node lacks.
        try {
          this.bcastSock = await this.openSocket('dhcp', local, this.dhcpSock.address().port);
        } catch (e) {
          this.log.warn({ event: 'broadcast-socket', address: local, err: (e as Error).message }, 'broadcast replies will follow the routing table');
        }
      }
    } catch (e) {
      await this.stop();
      throw e;
    }
    const a = this.address();
    this.log.info({ event: 'listening', bind, dhcpPort: a.dhcp, proxyPort: a.proxy, serverAddress: this.defaultAddress, interface: this.opts.interfaceName }, 'proxy DHCP listening');
  }

  async stop(): Promise<void> {
    for (const t of this.pending) clearTimeout(t);
    this.pending.clear();
    this.flood.close();
    const close = (s: Socket | null): Promise<void> =>
      new Promise((res) => {
        if (!s) return res();
        try {
          s.close(() => res());
        } catch {
          res();
        }
      });
    await Promise.all([close(this.dhcpSock), close(this.proxySock), close(this.bcastSock)]);
    this.dhcpSock = null;
    this.proxySock = null;
    this.bcastSock = null;
  }

  private openSocket(kind: 'dhcp' | 'proxy', address: string, port: number): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const s = createSocket({ type: 'udp4', reuseAddr: true });
      const onBindError = (e: Error): void => {
        s.close();
        // Keep the errno (EACCES, EADDRINUSE…) as the code: callers tell the user what to do from it.
        reject(new NetbootError((e as NodeJS.ErrnoException).code ?? 'DHCP_BIND', `proxy DHCP: cannot bind ${address}:${port} (${kind}): ${e.message}`, { cause: e }));
      };
      s.once('error', onBindError);
      s.bind({ address, port }, () => {
        s.off('error', onBindError);
        s.on('error', (e) => this.log.error({ event: 'socket-error', socket: kind, err: e.message }, 'proxy DHCP socket error'));
        try {
          s.setBroadcast(true);
        } catch (e) {
          this.log.warn({ event: 'socket-error', socket: kind, err: (e as Error).message }, 'cannot enable broadcast');
        }
        // A REQUEST dropped by a full buffer in a boot storm is a PC whose address this server never
        // learns (its HTTP or TFTP requests then find no host).
        askRecvBuffer(s);
        s.on('message', (buf, rinfo) => {
          try {
            this.onMessage(kind, s, buf, rinfo);
          } catch (e) {
            // Defence in depth: a bug in handling one packet must not take the daemon down.
            this.flood.event('error', 'handler-error', rinfo.address, { event: 'handler-error', ip: rinfo.address, err: (e as Error).message }, 'proxy DHCP handler error');
          }
        });
        resolve(s);
      });
    });
  }

  private table(): InterfaceTable {
    const now = Date.now();
    if (!this.ifaceCache || now - this.ifaceCache.at > 5000) {
      let table: InterfaceTable = {};
      try {
        table = this.ifaces();
      } catch {
        /* keep empty */
      }
      this.ifaceCache = { at: now, table };
    }
    return this.ifaceCache.table;
  }

  /** The default server address when it is one of this host's own (non-loopback) addresses. */
  private localAddress(): string | null {
    for (const list of Object.values(this.table())) {
      for (const a of list ?? []) {
        if (a.family === 'IPv4' && !a.internal && a.address === this.defaultAddress) return a.address;
      }
    }
    return null;
  }

  private addressFor(hints: string[]): string {
    if (this.opts.serverAddress !== undefined) return this.opts.serverAddress;
    for (const h of hints) {
      if (h === '0.0.0.0') continue;
      const m = addressForPeer(this.table(), h, this.opts.interfaceName);
      if (m) return m.address;
    }
    return this.defaultAddress;
  }

  private onMessage(kind: 'dhcp' | 'proxy', sock: Socket, buf: Buffer, rinfo: RemoteInfo): void {
    this.stats.received++;
    const parsed = parseDhcp(buf);
    if (!parsed.ok) {
      this.stats.malformed++;
      this.flood.event('warn', 'malformed', rinfo.address, { event: 'malformed', ip: rinfo.address, port: rinfo.port, socket: kind, code: parsed.error.code, reason: parsed.error.message, bytes: buf.length }, 'dropped malformed DHCP packet');
      return;
    }
    const req = parsed.value;
    const type = messageType(req);
    const wanted = kind === 'dhcp' ? MessageType.Discover : MessageType.Request;
    if (kind === 'dhcp' && req.op === BOOTREQUEST && type === MessageType.Request) {
      // Never answered, but it says which address the client is taking from the real DHCP server
      // (option 50 while selecting, ciaddr when renewing): how a PC's MAC is tied to its TFTP/NBD address.
      const requested = getOption(req, Opt.RequestedIp);
      const ip = requested?.length === 4 ? `${requested[0]}.${requested[1]}.${requested[2]}.${requested[3]}` : req.ciaddr;
      if (ip !== '0.0.0.0') {
        const c = classify(req);
        this.emit('lease', { mac: c.mac, ip, firmware: c.isPxe ? (c.isPi ? 'pi' : c.firmware) : undefined });
      }
    }
    if (req.op !== BOOTREQUEST || type !== wanted) {
      this.stats.ignored++;
      return;
    }
    const client = classify(req);
    if (!client.isPxe) {
      this.stats.ignored++;
      return;
    }
    let decision;
    try {
      decision = this.opts.policy.decide(client);
    } catch (e) {
      this.stats.ignored++;
      this.flood.event('error', 'policy-error', client.mac, { event: 'policy-error', mac: client.mac, ip: rinfo.address, err: (e as Error).message }, 'DHCP policy failed');
      return;
    }
    if (!decision) {
      this.stats.ignored++;
      this.flood.event('debug', 'not-ours', client.mac, { event: 'not-ours', mac: client.mac, ip: rinfo.address, firmware: client.firmware, vendorClass: client.vendorClass }, 'PXE client not served by policy');
      return;
    }
    const replyKind: ReplyKind = kind === 'dhcp' ? 'offer' : 'ack';
    const server = this.addressFor([req.giaddr, req.ciaddr, rinfo.address]);
    const reply = buildProxyReply(req, client, decision, server, replyKind);
    const bytes = serializeDhcp(reply);
    const dest =
      kind === 'dhcp'
        ? replyDestination(req, { server: this.ports.relay, client: this.ports.client })
        : { address: rinfo.address, port: rinfo.port };
    const clientIp = req.ciaddr !== '0.0.0.0' ? req.ciaddr : kind === 'proxy' ? rinfo.address : undefined;
    const out = dest.address === '255.255.255.255' && this.bcastSock ? this.bcastSock : sock;
    const send = (): void => {
      out.send(bytes, dest.port, dest.address, (e) => {
        if (e) {
          this.stats.sendErrors++;
          this.flood.event('warn', 'send-error', dest.address, { event: 'send-error', mac: client.mac, ip: dest.address, err: e.message }, 'proxy DHCP reply not sent');
        }
      });
      if (replyKind === 'offer') this.stats.offers++;
      else this.stats.acks++;
      // One line per client boot (its xid; a client's retransmissions keep it), at most 50 per 10 s in all.
      this.flood.event(
        'info',
        replyKind,
        `${client.mac}/${client.xid}`,
        {
          event: replyKind,
          mac: client.mac,
          ip: clientIp,
          firmware: client.firmware,
          arch: client.arch,
          ipxe: client.isIpxe || undefined,
          pi: client.isPi || undefined,
          model: client.piModel?.name,
          bootFile: (decision.piBoot ?? client.isPi) ? undefined : bootFileOf(decision, server),
          server,
          to: `${dest.address}:${dest.port}`,
          xid: client.xid,
        },
        replyKind === 'offer' ? 'proxy DHCP offer' : 'PXE boot server ack',
      );
      this.emit('reply', { kind: replyKind, client, to: dest });
    };
    const delay = kind === 'dhcp' ? this.opts.replyDelayMs ?? 0 : 0;
    if (delay <= 0) {
      send();
      return;
    }
    if (this.pending.size >= (this.opts.maxPendingReplies ?? 4096)) {
      this.stats.dropped++;
      return;
    }
    const t = setTimeout(() => {
      this.pending.delete(t);
      send();
    }, delay);
    this.pending.add(t);
  }
}
