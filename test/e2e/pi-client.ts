/**
 * A scripted Raspberry Pi network-boot client (no emulator runs the Pi bootloader), faithful to the
 * documented behaviour of the Pi 4 EEPROM bootloader and the Pi 5 one. Run inside the Pi's network
 * namespace as its own process:
 *
 *   node --import tsx test/e2e/pi-client.ts '<PiJob JSON>'     → prints one PiReport JSON line
 *
 * 1. DHCP (raw packets, built here independently of netbootd's codec): DISCOVER with vendor class
 *    `PXEClient:Arch:00000:UNDI:002001`, option 93 = 0, option 94 = 1.2.1, option 97 = 0 + "RPi4" + board
 *    revision + MAC low bytes + serial (little-endian), chaddr = the Pi's MAC. Collects the router's OFFER
 *    (address) and the proxy's reply (boot server: option 43 "Raspberry Pi Boot" menu, siaddr / option 66),
 *    then REQUEST/ACK with the router and configures the address.
 *    (One deviation: the broadcast flag is set, so that replies reach a socket of an unconfigured
 *    interface; the real bootloader receives unicast frames on its raw NIC.)
 * 2. TFTP (a small client with RFC 2347/2348/2349 options): `<serial>/start4.elf` with `tsize 0 blksize
 *    1024`, aborted after the OACK with ERROR 0 "Early terminate" (the size probe), re-requested and read
 *    whole; then the other files. A Pi 5 asks `<serial>//config.txt` with blksize 1468.
 * 3. NBD: `nbdcopy` the export named in cmdline.txt to a file (the test reads the root superblock from it).
 */
import dgram from 'node:dgram';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { RawNbd } from '../nbd/client.js';
import * as NBD from '../../src/nbd/packet.js';
import { mkdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

// ---------------------------------------------------------------- DHCP (raw)

export const PI_VENDOR_CLASS = 'PXEClient:Arch:00000:UNDI:002001';
const MAGIC = 0x63825363;

export interface PiIdentity {
  mac: string;
  /** 8 hex digits, as the Pi prints it in TFTP paths. */
  serial: string;
  /** FourCC in option 97: RPi4 (Pi 4) or RPi5. */
  fourcc?: string;
  boardRevision?: number;
}

function macBytes(mac: string): Buffer {
  const b = Buffer.from(mac.replace(/[:-]/g, ''), 'hex');
  if (b.length !== 6) throw new Error(`bad MAC ${mac}`);
  return b;
}

/**
 * Option 97 as the bcm2711 bootloader sends it: type 0, FourCC, board revision LE, MAC[2..5], serial LE.
 * `fourcc: 'ROM3'` gives the Pi 3 boot ROM's form instead: type 0 then 16 bytes 0x44 (raspberrypi/documentation
 * bootmodes/net.md, tcpdump decode of the ROM's DISCOVER: "Client-ID Option 97 … 0x44 0x44 …").
 */
export function option97(id: PiIdentity): Buffer {
  if (id.fourcc === 'ROM3') return Buffer.concat([Buffer.from([0]), Buffer.alloc(16, 0x44)]);
  const b = Buffer.alloc(17);
  b[0] = 0;
  b.write((id.fourcc ?? 'RPi4').slice(0, 4), 1, 'latin1');
  b.writeUInt32LE(id.boardRevision ?? 0x00c03111, 5);
  macBytes(id.mac).copy(b, 9, 2, 6);
  b.writeUInt32LE(Number.parseInt(id.serial, 16) >>> 0, 13);
  return b;
}

/** A Pi DHCPDISCOVER (type 1) or DHCPREQUEST (type 3, with requested address and server id). */
export function piDhcpPacket(id: PiIdentity, xid: number, type: 1 | 3, extra: { requested?: string; serverId?: string } = {}): Buffer {
  const opts: Buffer[] = [];
  const opt = (code: number, data: Buffer): void => {
    opts.push(Buffer.from([code, data.length]), data);
  };
  const ip = (s: string): Buffer => Buffer.from(s.split('.').map(Number));
  opt(53, Buffer.from([type]));
  if (extra.requested) opt(50, ip(extra.requested));
  if (extra.serverId) opt(54, ip(extra.serverId));
  opt(55, Buffer.from([1, 3, 43, 60, 66, 67, 128, 129, 130, 131, 132, 133, 134, 135]));
  opt(93, Buffer.from([0, 0]));
  opt(94, Buffer.from([1, 2, 1]));
  opt(97, option97(id));
  opt(60, Buffer.from(PI_VENDOR_CLASS, 'latin1'));
  opts.push(Buffer.from([255]));
  const head = Buffer.alloc(240);
  head[0] = 1; // BOOTREQUEST
  head[1] = 1; // Ethernet
  head[2] = 6;
  head.writeUInt32BE(xid >>> 0, 4);
  head.writeUInt16BE(0x8000, 10); // broadcast flag (see the header comment)
  macBytes(id.mac).copy(head, 28);
  head.writeUInt32BE(MAGIC, 236);
  return Buffer.concat([head, ...opts]);
}

export interface DhcpReply {
  from: string;
  type: number;
  xid: number;
  yiaddr: string;
  siaddr: string;
  chaddr: string;
  file: string;
  options: Map<number, Buffer>;
}

/** Parses a BOOTREPLY (options field only; no overload needed for these servers). Null when malformed. */
export function parseReply(buf: Buffer, from: string): DhcpReply | null {
  if (buf.length < 240 || buf[0] !== 2 || buf.readUInt32BE(236) !== MAGIC) return null;
  const options = new Map<number, Buffer>();
  let i = 240;
  while (i < buf.length) {
    const code = buf[i]!;
    if (code === 255) break;
    if (code === 0) { i++; continue; }
    if (i + 1 >= buf.length) return null;
    const len = buf[i + 1]!;
    if (i + 2 + len > buf.length) return null;
    const prev = options.get(code);
    const data = buf.subarray(i + 2, i + 2 + len);
    options.set(code, prev ? Buffer.concat([prev, data]) : Buffer.from(data));
    i += 2 + len;
  }
  const ipAt = (o: number): string => [...buf.subarray(o, o + 4)].join('.');
  const fileEnd = buf.indexOf(0, 108);
  return {
    from,
    type: options.get(53)?.[0] ?? 0,
    xid: buf.readUInt32BE(4),
    yiaddr: ipAt(16),
    siaddr: ipAt(20),
    chaddr: buf.subarray(28, 34).toString('hex').replace(/(..)(?!$)/g, '$1:'),
    file: buf.toString('latin1', 108, fileEnd > 108 && fileEnd < 236 ? fileEnd : 108),
    options,
  };
}

/** PXE vendor options (option 43) as a map of sub-option → bytes. */
export function pxeSubOptions(o43: Buffer | undefined): Map<number, Buffer> {
  const m = new Map<number, Buffer>();
  if (!o43) return m;
  let i = 0;
  while (i + 1 < o43.length) {
    const code = o43[i]!;
    if (code === 255) break;
    if (code === 0) { i++; continue; }
    const len = o43[i + 1]!;
    m.set(code, o43.subarray(i + 2, i + 2 + len));
    i += 2 + len;
  }
  return m;
}

export interface DhcpOutcome {
  address: string;
  router: string;
  /** Where the proxy says to fetch boot files. */
  tftpServer: string;
  proxyFrom: string;
  /** Menu text of PXE sub-option 9 (the Pi wants "Raspberry Pi Boot"). */
  menu: string;
  replies: { from: string; type: number; yiaddr: string; siaddr: string; vendorClass: string }[];
}

function waitReplies(sock: dgram.Socket, xid: number, ms: number, stop: (r: DhcpReply[]) => boolean): Promise<DhcpReply[]> {
  return new Promise((resolve) => {
    const got: DhcpReply[] = [];
    const done = (): void => {
      clearTimeout(timer);
      sock.off('message', on);
      resolve(got);
    };
    const on = (msg: Buffer, rinfo: dgram.RemoteInfo): void => {
      const r = parseReply(msg, rinfo.address);
      if (!r || r.xid !== xid) return;
      got.push(r);
      if (stop(got)) done();
    };
    const timer = setTimeout(done, ms);
    sock.on('message', on);
  });
}

/**
 * DISCOVER → OFFER (router) + proxy reply; REQUEST → ACK (router). Retries DISCOVER like the bootloader.
 * `rom`: the Pi 3 boot ROM, which never sends a DHCPREQUEST (net.md: "DHCP request / reply / ack sequence
 * not correctly implemented"): it takes the OFFER's address and the proxy reply's server identifier
 * (option 54; raspberrypi/firmware issue #801: siaddr is not honoured) and goes straight to TFTP.
 */
export async function piDhcp(id: PiIdentity, ifname: string, rom = false): Promise<DhcpOutcome> {
  const sock = dgram.createSocket({ type: 'udp4', reuseAddr: true });
  sock.on('error', () => {});
  await new Promise<void>((r) => sock.bind(68, '0.0.0.0', () => r()));
  sock.setBroadcast(true);
  try {
    const xid = (Math.random() * 0xffffffff) >>> 0;
    let replies: DhcpReply[] = [];
    const complete = (rs: DhcpReply[]): boolean =>
      rs.some((r) => r.type === 2 && r.yiaddr !== '0.0.0.0') && rs.some((r) => r.options.get(60)?.toString('latin1').startsWith('PXEClient') ?? false);
    for (let attempt = 0; attempt < 4 && !complete(replies); attempt++) {
      const wait = waitReplies(sock, xid, 2000 + attempt * 1000, (rs) => complete(replies.concat(rs)) && rs.length >= 2);
      sock.send(piDhcpPacket(id, xid, 1), 67, '255.255.255.255');
      replies = replies.concat(await wait);
    }
    const offer = replies.find((r) => r.type === 2 && r.yiaddr !== '0.0.0.0');
    const proxy = replies.find((r) => r.options.get(60)?.toString('latin1').startsWith('PXEClient'));
    if (!offer) throw new Error(`no address OFFER (replies: ${replies.length})`);
    if (!proxy) throw new Error('no proxy DHCP reply with vendor class PXEClient');
    const serverId = [...(offer.options.get(54) ?? Buffer.alloc(4))].join('.');
    if (rom) {
      execFileSync('ip', ['addr', 'add', `${offer.yiaddr}/24`, 'dev', ifname]);
      const sub = pxeSubOptions(proxy.options.get(43));
      const menuRaw = sub.get(9);
      return {
        address: offer.yiaddr, router: serverId, tftpServer: [...(proxy.options.get(54) ?? Buffer.alloc(4))].join('.'), proxyFrom: proxy.from,
        menu: menuRaw && menuRaw.length > 3 ? menuRaw.subarray(3, 3 + menuRaw[2]!).toString('latin1') : '',
        replies: replies.map((r) => ({ from: r.from, type: r.type, yiaddr: r.yiaddr, siaddr: r.siaddr, vendorClass: r.options.get(60)?.toString('latin1') ?? '' })),
      };
    }
    const ackWait = waitReplies(sock, xid, 4000, (rs) => rs.some((r) => r.type === 5 || r.type === 6));
    sock.send(piDhcpPacket(id, xid, 3, { requested: offer.yiaddr, serverId }), 67, '255.255.255.255');
    const acks = await ackWait;
    const ack = acks.find((r) => r.type === 5 && r.from === serverId) ?? acks.find((r) => r.type === 5 && r.yiaddr === offer.yiaddr);
    if (!ack) throw new Error(`no ACK from ${serverId} (got types ${acks.map((r) => r.type).join(',')})`);
    const mask = ack.options.get(1);
    const prefix = mask ? [...mask].reduce((n, b) => n + (b.toString(2).match(/1/g)?.length ?? 0), 0) : 24;
    execFileSync('ip', ['addr', 'add', `${ack.yiaddr}/${prefix}`, 'dev', ifname]);
    const o66 = proxy.options.get(66)?.toString('latin1').replace(/\0+$/, '');
    const tftpServer = o66 && /^\d+\.\d+\.\d+\.\d+$/.test(o66) ? o66
      : proxy.siaddr !== '0.0.0.0' ? proxy.siaddr
        : [...(proxy.options.get(54) ?? Buffer.alloc(4))].join('.');
    const sub = pxeSubOptions(proxy.options.get(43));
    const menuRaw = sub.get(9);
    const menu = menuRaw && menuRaw.length > 3 ? menuRaw.subarray(3, 3 + menuRaw[2]!).toString('latin1') : '';
    return {
      address: ack.yiaddr, router: serverId, tftpServer, proxyFrom: proxy.from, menu,
      replies: replies.map((r) => ({ from: r.from, type: r.type, yiaddr: r.yiaddr, siaddr: r.siaddr, vendorClass: r.options.get(60)?.toString('latin1') ?? '' })),
    };
  } finally {
    sock.close();
  }
}

// ---------------------------------------------------------------- TFTP

const RRQ = 1, DATA = 3, ACK = 4, ERROR = 5, OACK = 6;

export interface TftpResult {
  data?: Buffer;
  /** With `hash`: the SHA-256 of the data (hex) and its size, the data itself not kept. */
  sha256?: string;
  size?: number;
  oack?: Record<string, string>;
  error?: { code: number; message: string };
  blocks: number;
}

function rrq(file: string, options: Record<string, string>): Buffer {
  const parts = [Buffer.from([0, RRQ]), Buffer.from(`${file}\0octet\0`, 'latin1')];
  for (const [k, v] of Object.entries(options)) parts.push(Buffer.from(`${k}\0${v}\0`, 'latin1'));
  return Buffer.concat(parts);
}
const ack = (block: number): Buffer => Buffer.from([0, ACK, (block >> 8) & 0xff, block & 0xff]);
function errorPacket(code: number, message: string): Buffer {
  const b = Buffer.alloc(5 + Buffer.byteLength(message));
  b.writeUInt16BE(ERROR, 0);
  b.writeUInt16BE(code, 2);
  b.write(message, 4, 'latin1');
  return b;
}

/**
 * Reads `file` from `server`:69 (lockstep, with options). `abortAfterOack`: send ERROR 0 "Early terminate"
 * to the OACK, as the Pi does after its tsize probe, and return the OACK only.
 */
export function tftpGet(server: string, file: string, options: Record<string, string>, o: { abortAfterOack?: boolean; timeoutMs?: number; hash?: boolean } = {}): Promise<TftpResult> {
  const sock = dgram.createSocket('udp4');
  sock.on('error', () => {});
  const chunks: Buffer[] = [];
  const hash = o.hash ? createHash('sha256') : undefined;
  let size = 0;
  let windowsize = 1;
  const first = rrq(file, options);
  let tid = -1;
  let expected = 1;
  let blksize = 512;
  let blocks = 0;
  let last: Buffer = first;
  let lastTo = 69;
  let tries = 0;
  let gotOack: Record<string, string> | undefined;
  return new Promise<TftpResult>((resolve, reject) => {
    let finished = false;
    /**
     * Ends the transfer, after sending `final` (the last ACK, or the ERROR that ends a size probe): the socket is
     * closed once that packet has left, as a Pi's bootloader sends it (closing at once drops it, and the server
     * then retransmits into a closed port and ends the transfer as a client error).
     */
    const finish = (r: TftpResult | Error, final?: { packet: Buffer; port: number }): void => {
      if (finished) return;
      finished = true;
      clearInterval(timer);
      const end = (): void => {
        sock.close();
        if (r instanceof Error) reject(r);
        else resolve(r);
      };
      if (final) sock.send(final.packet, final.port, server, end);
      else end();
    };
    const send = (b: Buffer, port: number): void => {
      last = b;
      lastTo = port;
      tries = 0;
      sock.send(b, port, server);
    };
    const timer = setInterval(() => {
      if (++tries > (o.timeoutMs ?? 8000) / 500) return finish(new Error(`TFTP ${file}: timeout at block ${expected}`));
      sock.send(last, lastTo, server);
    }, 500);
    sock.on('message', (msg, rinfo) => {
      if (finished || rinfo.address !== server || msg.length < 4) return;
      if (tid >= 0 && rinfo.port !== tid) {
        sock.send(errorPacket(5, 'Unknown transfer ID'), rinfo.port, server);
        return;
      }
      const op = msg.readUInt16BE(0);
      if (op === ERROR) return finish({ error: { code: msg.readUInt16BE(2), message: msg.toString('latin1', 4).replace(/\0.*$/s, '') }, blocks });
      if (op === OACK && tid < 0) {
        tid = rinfo.port;
        const fields = msg.toString('latin1', 2).split('\0');
        const oack: Record<string, string> = {};
        for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i]) oack[fields[i]!.toLowerCase()] = fields[i + 1]!;
        if (oack['blksize']) blksize = Number(oack['blksize']);
        if (oack['windowsize']) windowsize = Number(oack['windowsize']);
        if (o.abortAfterOack) return finish({ oack, blocks: 0 }, { packet: errorPacket(0, 'Early terminate'), port: tid });
        gotOack = oack;
        send(ack(0), tid);
        return;
      }
      if (op !== DATA) return;
      if (tid < 0) tid = rinfo.port;
      const block = msg.readUInt16BE(2);
      if (block !== (expected & 0xffff)) {
        sock.send(ack((expected - 1) & 0xffff), tid, server);
        return;
      }
      const payload = msg.subarray(4);
      if (hash) hash.update(payload);
      else chunks.push(Buffer.from(payload));
      size += payload.length;
      blocks++;
      expected++;
      // RFC 7440: one ACK per window (and for the last block); block numbers roll over 65535 → 0.
      if (payload.length < blksize) {
        finish({ ...(hash ? { sha256: hash.digest('hex'), size } : { data: Buffer.concat(chunks) }), blocks, ...(gotOack ? { oack: gotOack } : {}) }, { packet: ack(block), port: tid });
      } else if (blocks % windowsize === 0) send(ack(block), tid);
    });
    sock.bind(0, '0.0.0.0', () => sock.send(first, 69, server));
  });
}

// ---------------------------------------------------------------- the scripted boot

export interface PiJob {
  ifname: string;
  identity: PiIdentity;
  /**
   * 3: the Pi 3 boot ROM (DISCOVER with the 0x44 option 97, no DHCPREQUEST; RRQs without options: `bootcode.bin`
   *    and `bootsig.bin` at the root, then bootcode.bin asks `<prefix>/start.elf` and the rest);
   * 4: start4.elf size probe + files; 5: `<prefix>//config.txt` with blksize 1468 + files (never start4.elf).
   */
  model: 3 | 4 | 5;
  /**
   * The EEPROM's TFTP path prefix (TFTP_PREFIX): the serial (0, default), a fixed TFTP_PREFIX_STR such as `pxe`
   * (1), or the MAC with dashes (2); `''` asks at the root.
   */
  prefix?: string;
  /** Files fetched after the first one, relative to the prefix folder. */
  files: string[];
  /** Large files fetched with windowsize (RFC 7440) and checked by SHA-256 only (not saved). */
  hashFiles?: string[];
  /** Where downloaded files are written (same relative paths), and the NBD copy (nbd.img). */
  outDir: string;
  /** Skip DHCP (a second boot with its address kept): use this TFTP server. */
  tftpServer?: string;
  /**
   * NBD: without `reads`, `nbdcopy nbd://SERVER/EXPORT` to outDir/nbd.img; with `reads`, a fixed-newstyle
   * attach (test/nbd/client.ts) reading those ranges (SHA-256 + first 64 bytes hex), after `write` (offset,
   * hex bytes; flushed) when given.
   */
  nbd?: { server: string; export: string; reads?: { offset: number; length: number }[]; write?: { offset: number; hex: string } };
  /** A serial the server does not know: expect "file not found" for its start4.elf. */
  unknownSerial?: string;
}

export interface PiReport {
  dhcp?: DhcpOutcome;
  probe?: Record<string, string>;
  files: Record<string, { size: number; blocks: number; oack?: Record<string, string>; sha256?: string; ms?: number } | { error: { code: number; message: string } }>;
  unknown?: { code: number; message: string } | { size: number };
  nbd?: { bytes: number } | { size: number; reads: { sha256: string; head: string }[] } | { error: string };
  error?: string;
}

/** Attaches to an export from this namespace and reads (after writing) ranges of the client's view. */
async function nbdView(job: NonNullable<PiJob['nbd']>): Promise<{ size: number; reads: { sha256: string; head: string }[] }> {
  const c = await RawNbd.connect(10809, { host: job.server });
  try {
    await c.handshake();
    const { size } = await c.go(job.export);
    let handle = 1n;
    if (job.write) {
      c.request(NBD.CMD_WRITE, 0, handle++, job.write.offset, job.write.hex.length / 2, Buffer.from(job.write.hex, 'hex'));
      const w = await c.simpleReply(0);
      if (w.error) throw new Error(`NBD write: error ${w.error}`);
      c.request(NBD.CMD_FLUSH, 0, handle++, 0, 0);
      const f = await c.simpleReply(0);
      if (f.error) throw new Error(`NBD flush: error ${f.error}`);
    }
    const reads: { sha256: string; head: string }[] = [];
    for (const r of job.reads ?? []) {
      c.request(NBD.CMD_READ, 0, handle++, r.offset, r.length);
      const got = await c.simpleReply(r.length);
      if (got.error) throw new Error(`NBD read ${r.offset}+${r.length}: error ${got.error}`);
      reads.push({ sha256: createHash('sha256').update(got.data).digest('hex'), head: got.data.subarray(0, 64).toString('hex') });
    }
    c.request(NBD.CMD_DISC, 0, handle++, 0, 0);
    return { size, reads };
  } finally {
    c.destroy();
  }
}

export async function runPi(job: PiJob): Promise<PiReport> {
  const report: PiReport = { files: {} };
  try {
    let server = job.tftpServer;
    if (!server) {
      report.dhcp = await piDhcp(job.identity, job.ifname, job.model === 3);
      server = report.dhcp.tftpServer;
    }
    const pre = job.prefix ?? job.identity.serial;
    const under = (f: string, sep = '/'): string => (pre === '' ? f : `${pre}${sep}${f}`);
    const save = (rel: string, data: Buffer): void => {
      const p = join(job.outDir, rel);
      mkdirSync(dirname(p), { recursive: true });
      writeFileSync(p, data);
    };
    const get = async (rel: string, path: string, options: Record<string, string>, hash = false): Promise<void> => {
      const t0 = performance.now();
      const r = await tftpGet(server!, path, options, hash ? { hash: true, timeoutMs: 60_000 } : {});
      const ms = Math.round(performance.now() - t0);
      if (r.error) report.files[rel] = { error: r.error };
      else if (hash) report.files[rel] = { size: r.size!, blocks: r.blocks, sha256: r.sha256!, ms, ...(r.oack ? { oack: r.oack } : {}) };
      else {
        save(rel, r.data!);
        report.files[rel] = { size: r.data!.length, blocks: r.blocks, ms, ...(r.oack ? { oack: r.oack } : {}) };
      }
    };
    if (job.model === 3) {
      // The ROM: plain RRQs (no options, 512-byte blocks; firmware issue #745 capture `RRQ "bootcode.bin" octet`).
      await get('bootcode.bin', 'bootcode.bin', {});
      await get('bootsig.bin', 'bootsig.bin', {});
      // bootcode.bin: under the serial (net.md: "[serial_number]/start.elf").
      await get('start.elf', under('start.elf'), {});
      for (const f of job.files) await get(f, under(f), {});
    } else if (job.model === 4) {
      // Size probe, aborted by the client, then the real read.
      const probe = await tftpGet(server, under('start4.elf'), { tsize: '0', blksize: '1024' }, { abortAfterOack: true });
      if (probe.error) throw new Error(`start4.elf probe: TFTP error ${probe.error.code} ${probe.error.message}`);
      report.probe = probe.oack ?? {};
      await get('start4.elf', under('start4.elf'), { tsize: '0', blksize: '1024' });
      for (const f of job.files) await get(f, under(f), { blksize: '1024' });
    } else {
      await get('config.txt', under('config.txt', '//'), { tsize: '0', blksize: '1468' });
      for (const f of job.files) await get(f, under(f, '//'), { blksize: '1468' });
    }
    for (const f of job.hashFiles ?? []) {
      await get(f, job.model === 5 ? under(f, '//') : under(f), { tsize: '0', blksize: '1468', windowsize: '64' }, true);
    }
    if (job.unknownSerial) {
      const u = await tftpGet(server, `${job.unknownSerial}/start4.elf`, { tsize: '0', blksize: '1024' });
      report.unknown = u.error ?? { size: u.data?.length ?? 0 };
    }
    if (job.nbd) {
      try {
        if (job.nbd.reads) report.nbd = await nbdView(job.nbd);
        else {
          execFileSync('nbdcopy', [`nbd://${job.nbd.server}/${job.nbd.export}`, join(job.outDir, 'nbd.img')], { timeout: 60_000, stdio: ['ignore', 'ignore', 'pipe'] });
          report.nbd = { bytes: statSync(join(job.outDir, 'nbd.img')).size };
        }
      } catch (e) {
        report.nbd = { error: (e as Error).message.slice(0, 500) };
      }
    }
  } catch (e) {
    report.error = (e as Error).message;
  }
  return report;
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) {
  const job = JSON.parse(process.argv[2] ?? '{}') as PiJob;
  runPi(job).then(
    (r) => {
      process.stdout.write(`${JSON.stringify(r)}\n`);
      process.exit(0);
    },
    (e: unknown) => {
      process.stdout.write(`${JSON.stringify({ files: {}, error: String(e) })}\n`);
      process.exit(1);
    },
  );
}
