/**
 * The load side of the boot storm (bench/storm.ts, test/storm/storm.test.ts): one process, run inside the
 * load namespace of test/helpers/storm-lab.ts, that plays N network-boot clients at once, each from its own
 * IPv4 address (all configured on the load namespace's eth0), each doing what the real client does:
 *
 *   DHCP   DISCOVER (broadcast; the persona's options) → the router's OFFER and the boot server's proxy
 *          reply; REQUEST (option 50) → the router's ACK (this is how a proxy learns a PC's address);
 *          PXELINUX clients then ask the proxy on port 4011 (ciaddr set), as a PXE ROM does after a menu.
 *   boot   pi4      `<serial>/start4.elf` size probe (tsize, aborted after the OACK with "Early terminate"),
 *                   start4.elf, config.txt, fixup4.dat, cmdline.txt, the dtb, kernel8.img, initrd.img;
 *                   blksize 1024, lock-step (the bootloader's TFTP)
 *          pi5      `<serial>//config.txt` … kernel_2712.img, initrd.img, blksize 1468, lock-step
 *          pxelinux pxelinux.0 size probe (aborted) and read, ldlinux.c32, the pxelinux.cfg/ search (UUID,
 *                   01-MAC, the hex address shortened digit by digit: all "file not found"), default,
 *                   vmlinuz, initrd.img (blksize 1408 as PXELINUX asks)
 *          ipxe     with HTTP on the stack: the script URL of the proxy reply, then the kernel and initrd
 *                   it names (keep-alive); without (the reference stack): vmlinuz and initrd.img by TFTP
 *                   (blksize 1432, as iPXE asks)
 *          pxe      a PC's PXE ROM that loads whatever the proxy names: from netbootd with `http.chainIpxe`,
 *                   undionly.kpxe by TFTP (size probe, then blksize 1432), then as iPXE (DHCP again with
 *                   user class iPXE, the script and what it loads over HTTP); from the reference stack,
 *                   pxelinux.0 and the PXELINUX sequence above
 *   root   NBD attach to the export, replay of a recorded root-file-system boot (bench/fixtures/boot-trace.txt:
 *          reads, writes, flushes at the recorded queue depth), disconnect.
 *
 * Every byte received is checked: boot files by SHA-256 against the image's, NBD reads against the base
 * image with the client's own earlier writes laid over it (copy-on-write on both stacks). Retransmissions
 * are counted (UDP: every resend after a timeout; duplicates received). Prints one JSON LoadReport line.
 *
 *   node [--import tsx] storm-load.(ts|js) '<LoadJob JSON>'
 */
import dgram from 'node:dgram';
import http from 'node:http';
import { createHash } from 'node:crypto';
import { openSync, readSync, closeSync, readFileSync } from 'node:fs';
import { RawNbd } from '../nbd/client.js';
import * as NBD from '../../src/nbd/packet.js';
import { piDhcpPacket, parseReply, pxeSubOptions, type DhcpReply } from '../e2e/pi-client.js';
import { buildRequest } from '../dhcp/client.js';

export type Kind = 'pi4' | 'pi5' | 'pxelinux' | 'ipxe' | 'pxe';
export const KINDS: Kind[] = ['pi4', 'pi5', 'pxelinux', 'ipxe', 'pxe'];
/** Kinds that boot over HTTP from a stack that serves it (`pxe` after its chain-load of iPXE). */
export const usesHttp = (k: Kind): boolean => k === 'ipxe' || k === 'pxe';

export interface ClientSpec {
  i: number;
  kind: Kind;
  ip: string;
  mac: string;
  /** Pis: 8 hex digits. */
  serial?: string;
  /** Fault: stops answering mid-transfer ('tftp': in its kernel; 'nbd': half-way through the replay). */
  vanish?: 'tftp' | 'nbd';
}

export interface TraceOp {
  op: 'R' | 'W' | 'F' | 'T' | 'Z';
  offset: number;
  length: number;
  depth: number;
}

export interface LoadJob {
  server: string;
  router: string;
  clients: ClientSpec[];
  /** FAT path (as the PC asks it; Pis the same under their serial) → SHA-256 hex. */
  files: Record<string, string>;
  /** Base image (read here to check NBD reads), export name, trace file. */
  image: string;
  exportName: string;
  trace: string;
  /** The stack serves HTTP (iPXE clients use it). */
  http: boolean;
  httpPort: number;
  /** First UDP retransmission timeout (doubles per try, capped at 4 s) and tries per packet. */
  timeoutMs: number;
  tries: number;
  /** All clients start within this window (power-on jitter), ms. */
  spreadMs: number;
  /**
   * Packet loss (0..1) applied to every UDP datagram the clients send and every one they receive (DHCP,
   * TFTP), each direction independently: this kernel has no netem (see storm-lab.ts). TCP is loss-free.
   */
  loss: number;
}

let LOSS = 0;
let lostCount = 0;
/** TFTP transfers open now, and the most at once (a diagnostic for the server's slot accounting). */
let tftpOpen = 0;
let tftpOpenMax = 0;
/** Whether this datagram is lost (counted). */
function lost(): boolean {
  if (LOSS > 0 && Math.random() < LOSS) {
    lostCount++;
    return true;
  }
  return false;
}
function sendLossy(sock: dgram.Socket, b: Buffer, port: number, address: string): void {
  if (!lost()) sock.send(b, port, address);
}

export interface ClientResult {
  i: number;
  kind: Kind;
  ok: boolean;
  vanished?: boolean;
  /** From its power-on to its NBD disconnect. */
  ms: number;
  phases: { dhcp: number; boot: number; nbd: number };
  retrans: number;
  dupes: number;
  bytes: number;
  notFound: number;
  /** How its boot files came: all by TFTP, over HTTP (iPXE), or iPXE by TFTP then HTTP (`pxe` chain-loaded). */
  via?: BootPath;
  error?: string;
}

export type BootPath = 'tftp' | 'http' | 'chain';

export interface LoadReport {
  results: ClientResult[];
  /** UDP datagrams dropped by the loss emulation. */
  lost: number;
  /** Most TFTP transfers the clients had open at once. */
  tftpOpenMax: number;
  /** From the first power-on to the last client's end. */
  wallMs: number;
  /** This load process's own CPU seconds (user + system): near wallMs/1000, the load is the bottleneck. */
  cpuS: number;
}

// ---------------------------------------------------------------- trace

export function parseTrace(text: string): TraceOp[] {
  const out: TraceOp[] = [];
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (!t || t.startsWith('#')) continue;
    const [op, off, len, depth] = t.split(/\s+/);
    if (!op || !/^[RWFTZ]$/.test(op)) throw new Error(`trace: bad line ${t}`);
    out.push({ op: op as TraceOp['op'], offset: Number.parseInt(off ?? '0', 16), length: Number.parseInt(len ?? '0', 16), depth: Math.max(1, Number(depth ?? 1)) });
  }
  return out;
}

// ---------------------------------------------------------------- DHCP

interface Counters { retrans: number; dupes: number; bytes: number; notFound: number }

/** One socket on 0.0.0.0:68 receives every broadcast reply; clients wait on it by xid. */
class DhcpHub {
  private readonly waiters = new Map<number, (r: DhcpReply) => void>();
  constructor(readonly sock: dgram.Socket) {
    sock.on('message', (msg, rinfo) => {
      if (msg.length < 240 || lost()) return;
      const w = this.waiters.get(msg.readUInt32BE(4));
      if (!w) return;
      const r = parseReply(msg, rinfo.address);
      if (r) w(r);
    });
  }

  /** Sends `pkt` (re-sent on timeout) until `done(replies)`; resolves with the replies. */
  exchange(xid: number, send: () => void, done: (rs: DhcpReply[]) => boolean, job: LoadJob, c: Counters): Promise<DhcpReply[]> {
    return new Promise((resolve, reject) => {
      const got: DhcpReply[] = [];
      let tries = 0;
      let timer: NodeJS.Timeout;
      const fire = (): void => {
        if (tries >= job.tries) {
          this.waiters.delete(xid);
          reject(new Error(`DHCP: no complete answer after ${tries} tries (got ${got.map((r) => `${r.type}@${r.from}`).join(',') || 'nothing'})`));
          return;
        }
        if (tries > 0) c.retrans++;
        tries++;
        send();
        timer = setTimeout(fire, Math.min(4000, job.timeoutMs * 2 ** (tries - 1)));
      };
      this.waiters.set(xid, (r) => {
        got.push(r);
        if (done(got)) {
          clearTimeout(timer);
          this.waiters.delete(xid);
          resolve(got);
        }
      });
      fire();
    });
  }
}

const ipBytes = (s: string): Buffer => Buffer.from(s.split('.').map(Number));
const isProxy = (r: DhcpReply): boolean => r.options.get(60)?.toString('latin1').startsWith('PXEClient') ?? false;

function uuidOf(c: ClientSpec): Buffer {
  const u = Buffer.alloc(17);
  u.writeUInt32BE(0x53544f52, 1); // "STOR"
  u.writeUInt32BE(c.i, 13);
  return u;
}

function discover(c: ClientSpec, xid: number, type: 1 | 3, extra: { requested?: string; serverId?: string; ipxe?: boolean } = {}): Buffer {
  if (c.kind === 'pi4' || c.kind === 'pi5') {
    return piDhcpPacket({ mac: c.mac, serial: c.serial!, fourcc: c.kind === 'pi5' ? 'RPi5' : 'RPi4' }, xid, type, extra);
  }
  const b = buildRequest({
    mac: c.mac, vendorClass: 'PXEClient:Arch:00000:UNDI:002001', arch: 0, uuid: uuidOf(c),
    ...(c.kind === 'ipxe' || extra.ipxe ? { userClass: 'iPXE' } : {}),
  }, xid, { type, flags: 0x8000 });
  if (!extra.requested) return b;
  // Option 50 and 54 before the end option.
  const end = b.lastIndexOf(255);
  return Buffer.concat([b.subarray(0, end), Buffer.from([50, 4]), ipBytes(extra.requested), Buffer.from([54, 4]), ipBytes(extra.serverId!), Buffer.from([255])]);
}

/** The PXE ROM's request to the proxy on port 4011 (unicast, ciaddr set); the ACK comes back to ciaddr:68. */
function proxyRequest(c: ClientSpec, job: LoadJob, ctr: Counters, offer: DhcpReply): Promise<DhcpReply> {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket({ type: 'udp4', reuseAddr: true });
    const xid = (0x50000000 + c.i) >>> 0;
    let pkt = buildRequest({ mac: c.mac, vendorClass: 'PXEClient:Arch:00000:UNDI:002001', arch: 0, uuid: uuidOf(c) }, xid, { type: 3, ciaddr: c.ip });
    // The menu's first item (PXE option 43 sub-option 9: type, length, text), asked as the boot item (sub-option 71).
    const menu = pxeSubOptions(offer.options.get(43)).get(9);
    if (menu && menu.length >= 2) {
      const o43 = Buffer.from([71, 4, menu[0]!, menu[1]!, 0, 0, 255]);
      const end = pkt.lastIndexOf(255);
      pkt = Buffer.concat([pkt.subarray(0, end), Buffer.from([43, o43.length]), o43, Buffer.from([255])]);
    }
    let tries = 0;
    let timer: NodeJS.Timeout | undefined;
    const finish = (e: Error | null, r?: DhcpReply): void => {
      clearTimeout(timer);
      sock.close();
      if (e) reject(e);
      else resolve(r!);
    };
    sock.on('error', (e) => finish(e));
    sock.on('message', (msg, rinfo) => {
      if (lost()) return;
      const r = parseReply(msg, rinfo.address);
      if (r && r.xid === xid) finish(null, r);
    });
    const fire = (): void => {
      if (tries >= job.tries) return finish(new Error('PXE 4011: no ACK'));
      if (tries > 0) ctr.retrans++;
      tries++;
      sendLossy(sock, pkt, 4011, job.server);
      timer = setTimeout(fire, Math.min(4000, job.timeoutMs * 2 ** (tries - 1)));
    };
    sock.bind(68, c.ip, fire);
  });
}

/** DISCOVER → OFFER + proxy reply, REQUEST → ACK. `ipxe`: as iPXE does it after a chain-load (user class iPXE). */
async function dhcp(hub: DhcpHub, c: ClientSpec, job: LoadJob, ctr: Counters, ipxe = false): Promise<DhcpReply> {
  const xid = ((ipxe ? 0x20000000 : 0x10000000) + c.i * 16 + Math.floor(Math.random() * 16)) >>> 0;
  const send = (b: Buffer): void => sendLossy(hub.sock, b, 67, '255.255.255.255');
  const offers = await hub.exchange(xid, () => send(discover(c, xid, 1, { ipxe })), (rs) => rs.some((r) => r.type === 2 && r.from === job.router) && rs.some(isProxy), job, ctr);
  const offer = offers.find((r) => r.type === 2 && r.from === job.router)!;
  const proxy = offers.find(isProxy)!;
  if (offer.yiaddr !== c.ip) throw new Error(`DHCP: offered ${offer.yiaddr}, expected ${c.ip}`);
  await hub.exchange(xid, () => send(discover(c, xid, 3, { requested: c.ip, serverId: job.router, ipxe })), (rs) => rs.some((r) => r.type === 5 && r.from === job.router), job, ctr);
  return proxy;
}

// ---------------------------------------------------------------- TFTP

const RRQ = 1, DATA = 3, ACK = 4, ERROR = 5, OACK = 6;

function rrq(file: string, options: Record<string, string>): Buffer {
  let s = `${file}\0octet\0`;
  for (const [k, v] of Object.entries(options)) s += `${k}\0${v}\0`;
  return Buffer.concat([Buffer.from([0, RRQ]), Buffer.from(s, 'latin1')]);
}
const ackPkt = (block: number): Buffer => Buffer.from([0, ACK, (block >> 8) & 0xff, block & 0xff]);
function errPkt(code: number, msg: string): Buffer {
  const b = Buffer.alloc(5 + msg.length);
  b.writeUInt16BE(ERROR, 0);
  b.writeUInt16BE(code, 2);
  b.write(msg, 4, 'latin1');
  return b;
}

class Vanished extends Error {}

interface TftpOut { notFound?: boolean; sha256?: string; size: number }

/**
 * Lock-step TFTP read (RFC 1350 + options) from `c.ip`. `probe`: abort after the OACK (size probe).
 * `vanish`: stop dead (no error packet) half-way through the file (its size from the OACK's tsize).
 */
function tftp(c: ClientSpec, job: LoadJob, ctr: Counters, file: string, options: Record<string, string>, o: { probe?: boolean; vanish?: boolean } = {}): Promise<TftpOut> {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket('udp4');
    const hash = createHash('sha256');
    let tid = -1;
    let expected = 1;
    let blksize = 512;
    let size = 0;
    let last = rrq(file, options);
    let lastPort = 69;
    let tries = 0;
    let done = false;
    let vanishAt = Infinity;
    let timer: NodeJS.Timeout | undefined;
    let timerMs = 0;
    // Connected to the server's transfer port once it is known (as a firmware's stack filters by TID): a
    // connected socket sends without node's per-packet address lookup and with the kernel's cached route,
    // so the load costs less per block and the machine's cores go to the server under test.
    let connected = false;
    let connecting = false;
    const put = (b: Buffer, port: number, cb?: () => void): void => {
      if (connected && port === tid) sock.send(b, cb);
      else sock.send(b, port, job.server, cb);
    };
    // Called right after a send to the TID: both go through node's address lookup in order, so that send
    // leaves unconnected (a send with an address that reaches the socket once it is connected fails EISCONN).
    const connectTid = (): void => {
      if (connecting) return;
      connecting = true;
      sock.connect(tid, job.server, () => {
        connected = true;
      });
    };
    tftpOpenMax = Math.max(tftpOpenMax, ++tftpOpen);
    const finish = (e: Error | null, r?: TftpOut): void => {
      if (done) return;
      done = true;
      tftpOpen--;
      clearTimeout(timer);
      sock.close();
      if (e) reject(e);
      else resolve(r!);
    };
    const onTimer = (): void => {
      if (tries >= job.tries) return finish(new Error(`TFTP ${file}: timeout at block ${expected}`));
      ctr.retrans++;
      tries++;
      if (!lost()) put(last, lastPort);
      arm();
    };
    // One timer per transfer, refreshed per block; a new one only when the backoff changes its delay.
    const arm = (): void => {
      const ms = Math.min(4000, job.timeoutMs * 2 ** tries);
      if (timer && ms === timerMs) {
        timer.refresh();
        return;
      }
      clearTimeout(timer);
      timerMs = ms;
      timer = setTimeout(onTimer, ms);
    };
    const send = (b: Buffer, port: number): void => {
      last = b;
      lastPort = port;
      tries = 0;
      if (!lost()) put(b, port);
      arm();
    };
    sock.on('error', (e) => finish(e));
    sock.on('message', (msg, rinfo) => {
      if (done || rinfo.address !== job.server || msg.length < 4 || lost()) return;
      if (tid >= 0 && rinfo.port !== tid) {
        sock.send(errPkt(5, 'Unknown transfer ID'), rinfo.port, job.server);
        return;
      }
      const op = msg.readUInt16BE(0);
      if (op === ERROR) {
        const code = msg.readUInt16BE(2);
        if (code === 1) {
          ctr.notFound++;
          return finish(null, { notFound: true, size: 0 });
        }
        return finish(new Error(`TFTP ${file}: error ${code} ${msg.toString('latin1', 4).replace(/\0.*$/s, '')}`));
      }
      if (op === OACK) {
        if (tid >= 0) {
          ctr.dupes++;
          return; // a duplicate OACK: our ACK 0 was lost or is late; the timer resends it
        }
        tid = rinfo.port;
        const f = msg.toString('latin1', 2).split('\0');
        let tsize = 0;
        for (let k = 0; k + 1 < f.length; k += 2) {
          const key = f[k]!.toLowerCase();
          if (key === 'blksize') blksize = Number(f[k + 1]);
          if (key === 'tsize') tsize = Number(f[k + 1]);
        }
        if (o.vanish) vanishAt = Math.max(1, Math.floor(tsize / blksize / 2));
        if (o.probe) {
          // Closed only once the ERROR is out (a send is queued behind the address lookup: closing right
          // after it would drop it, and the server would hold the transfer until its first-ACK timeout).
          const e = errPkt(0, 'Early terminate');
          if (lost()) return finish(null, { size: 0 });
          done = true;
          tftpOpen--;
          clearTimeout(timer);
          put(e, tid, () => {
            sock.close();
            resolve({ size: 0 });
          });
          return;
        }
        send(ackPkt(0), tid);
        connectTid();
        return;
      }
      if (op !== DATA) return;
      if (tid < 0) tid = rinfo.port;
      const block = msg.readUInt16BE(2);
      if (block !== (expected & 0xffff)) {
        ctr.dupes++; // a late or duplicated block: never re-ACK it (Sorcerer's Apprentice)
        return;
      }
      if (expected > vanishAt) {
        clearTimeout(timer);
        sock.close();
        done = true;
        tftpOpen--;
        reject(new Vanished('vanished mid-TFTP'));
        return;
      }
      const payload = msg.subarray(4);
      hash.update(payload);
      size += payload.length;
      ctr.bytes += payload.length;
      expected++;
      if (payload.length < blksize) {
        // The last ACK, then close once it is out (closing right after a send drops it: the server would
        // then hold the transfer until an ICMP port-unreachable, rate-limited, or its idle timeout).
        done = true;
        tftpOpen--;
        clearTimeout(timer);
        const out: TftpOut = { sha256: hash.digest('hex'), size };
        const end = (): void => {
          sock.close();
          resolve(out);
        };
        if (lost()) end();
        else put(ackPkt(block), tid, end);
        return;
      }
      send(ackPkt(block), tid);
      connectTid();
    });
    sock.bind(0, c.ip, () => send(last, 69));
  });
}

// ---------------------------------------------------------------- HTTP

function httpGet(agent: http.Agent, c: ClientSpec, url: string, ctr: Counters): Promise<{ status: number; sha256: string; text?: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent, localAddress: c.ip, headers: { 'user-agent': 'iPXE/1.21.1 (storm)' } }, (res) => {
      const h = createHash('sha256');
      const keep: Buffer[] = [];
      let n = 0;
      res.on('data', (d: Buffer) => {
        h.update(d);
        n += d.length;
        ctr.bytes += d.length;
        if (n <= 65536) keep.push(d);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, sha256: h.digest('hex'), ...(n <= 65536 ? { text: Buffer.concat(keep).toString('utf8') } : {}) }));
      res.on('error', reject);
    });
    req.setTimeout(60_000, () => req.destroy(new Error(`HTTP ${url}: timeout`)));
    req.on('error', reject);
  });
}

// ---------------------------------------------------------------- one client

function check(ctr: Counters, files: Record<string, string>, name: string, got: TftpOut | { sha256: string }): void {
  if ('notFound' in got && got.notFound) throw new Error(`${name}: file not found`);
  const want = files[name];
  if (want === undefined) throw new Error(`${name}: no expected hash`);
  if (got.sha256 !== want) throw new Error(`${name}: wrong bytes (sha256 ${got.sha256?.slice(0, 12)} != ${want.slice(0, 12)})`);
  void ctr;
}

async function bootFiles(c: ClientSpec, job: LoadJob, ctr: Counters, proxy: DhcpReply, hub: DhcpHub): Promise<BootPath> {
  const files = job.files;
  const get = async (name: string, path: string, opts: Record<string, string>, vanishable = false): Promise<void> => {
    check(ctr, files, name, await tftp(c, job, ctr, path, opts, { vanish: vanishable && c.vanish === 'tftp' }));
  };
  if (c.kind === 'pi4') {
    const pre = `${c.serial}/`;
    await tftp(c, job, ctr, `${pre}start4.elf`, { tsize: '0', blksize: '1024' }, { probe: true });
    const o = { tsize: '0', blksize: '1024' };
    for (const f of ['start4.elf', 'config.txt', 'fixup4.dat', 'cmdline.txt', 'bcm2711-rpi-4-b.dtb']) await get(f, pre + f, o);
    await get('kernel8.img', `${pre}kernel8.img`, o, true);
    await get('initrd.img', `${pre}initrd.img`, o);
  } else if (c.kind === 'pi5') {
    const pre = `${c.serial}//`;
    const o = { tsize: '0', blksize: '1468' };
    for (const f of ['config.txt', 'cmdline.txt', 'bcm2712-rpi-5-b.dtb']) await get(f, pre + f, o);
    await get('kernel_2712.img', `${pre}kernel_2712.img`, o, true);
    await get('initrd.img', `${pre}initrd.img`, o);
  } else if (c.kind === 'pxe' && /undionly\.kpxe$/.test(proxy.file)) {
    // Chain-loaded iPXE: it asks DHCP again (as iPXE) and boots over HTTP.
    await tftp(c, job, ctr, proxy.file, { tsize: '0' }, { probe: true });
    await get('undionly.kpxe', proxy.file, { tsize: '0', blksize: '1432' });
    await ipxeHttp(c, job, ctr, await dhcp(hub, c, job, ctr, true));
    return 'chain';
  } else if (c.kind === 'pxelinux' || c.kind === 'pxe' || (c.kind === 'ipxe' && !job.http)) {
    if (c.kind !== 'ipxe') {
      const boot = proxy.file || 'pxelinux.0';
      await tftp(c, job, ctr, boot, { tsize: '0' }, { probe: true });
      await get('pxelinux.0', boot, { tsize: '0', blksize: '1456' });
      const o = { tsize: '0', blksize: '1408' };
      await get('ldlinux.c32', 'ldlinux.c32', o);
      const u = uuidOf(c).subarray(1).toString('hex');
      const uuid = `${u.slice(0, 8)}-${u.slice(8, 12)}-${u.slice(12, 16)}-${u.slice(16, 20)}-${u.slice(20)}`;
      const hex = Buffer.from(c.ip.split('.').map(Number)).toString('hex').toUpperCase();
      const search = [uuid, `01-${c.mac.replace(/:/g, '-')}`];
      for (let k = 8; k >= 1; k--) search.push(hex.slice(0, k));
      for (const s of search) {
        const r = await tftp(c, job, ctr, `pxelinux.cfg/${s}`, o);
        if (!r.notFound) throw new Error(`pxelinux.cfg/${s}: expected "file not found"`);
      }
      await get('pxelinux.cfg/default', 'pxelinux.cfg/default', o);
      await get('vmlinuz', 'vmlinuz', o, true);
      await get('initrd.img', 'initrd.img', o);
    } else {
      const o = { tsize: '0', blksize: '1432' };
      await get('vmlinuz', 'vmlinuz', o, true);
      await get('initrd.img', 'initrd.img', o);
    }
  } else {
    await ipxeHttp(c, job, ctr, proxy);
    return 'http';
  }
  return 'tftp';
}

/** iPXE over HTTP: the script the proxy reply names, then what it loads. */
async function ipxeHttp(c: ClientSpec, job: LoadJob, ctr: Counters, proxy: DhcpReply): Promise<void> {
  const url = proxy.file;
  if (!/^https?:\/\//.test(url)) throw new Error(`iPXE: the proxy reply names ${JSON.stringify(url)}, not an HTTP URL`);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const script = await httpGet(agent, c, url, ctr);
    if (script.status !== 200 || !script.text?.startsWith('#!ipxe')) throw new Error(`iPXE script ${url}: HTTP ${script.status}`);
    const loads = script.text.split('\n').flatMap((l) => {
      const m = /^(kernel|initrd)\s+(?:--name\s+\S+\s+)?(\S+)/.exec(l.trim());
      return m ? [m[2]!] : [];
    });
    if (loads.length === 0) throw new Error('iPXE script loads nothing');
    for (const rel of loads) {
      const abs = new URL(rel, url);
      const name = decodeURIComponent(abs.pathname.split('/').pop()!);
      const r = await httpGet(agent, c, abs.href, ctr);
      if (r.status !== 200) throw new Error(`HTTP ${abs.pathname}: ${r.status}`);
      check(ctr, job.files, name, r);
    }
  } finally {
    agent.destroy();
  }
}

function pattern(c: ClientSpec, k: number, length: number): Buffer {
  const b = Buffer.alloc(length);
  for (let j = 0; j < length; j += 4) b.writeUInt32LE(((c.i + 1) * 0x9e3779b1 + k * 0x85ebca6b + j) >>> 0, j);
  return b;
}

async function nbdReplay(c: ClientSpec, job: LoadJob, trace: TraceOp[], base: (off: number, len: number) => Buffer): Promise<void> {
  const nbd = await RawNbd.connect(10809, { host: job.server, localAddress: c.ip });
  try {
    await nbd.handshake();
    const { size } = await nbd.go(job.exportName);
    if (size <= 0) throw new Error('NBD: export of size 0');
    const writes: { offset: number; data: Buffer }[] = [];
    const expect = (off: number, len: number): Buffer => {
      const b = Buffer.from(base(off, len));
      for (const w of writes) {
        const s = Math.max(off, w.offset), e = Math.min(off + len, w.offset + w.data.length);
        if (s < e) w.data.copy(b, s - off, s - w.offset, e - w.offset);
      }
      return b;
    };
    // The recorded queue depth: requests are issued while fewer than `depth` are outstanding; replies are
    // simple replies in any order (matched by handle).
    let handle = 0n;
    const half = Math.floor(trace.length / 2);
    let k = 0;
    for (const op of trace) {
      if (c.vanish === 'nbd' && k === half) {
        nbd.destroy();
        throw new Vanished('vanished mid-NBD');
      }
      k++;
      handle++;
      if (op.op === 'R') {
        nbd.request(NBD.CMD_READ, 0, handle, op.offset, op.length);
        const r = await nbd.simpleReply(op.length);
        if (r.error) throw new Error(`NBD read ${op.offset}+${op.length}: error ${r.error}`);
        if (!r.data.equals(expect(op.offset, op.length))) throw new Error(`NBD read ${op.offset}+${op.length}: wrong bytes`);
      } else if (op.op === 'W') {
        const data = pattern(c, k, op.length);
        nbd.request(NBD.CMD_WRITE, 0, handle, op.offset, op.length, data);
        const r = await nbd.simpleReply(0);
        if (r.error) throw new Error(`NBD write ${op.offset}+${op.length}: error ${r.error}`);
        writes.push({ offset: op.offset, data });
      } else if (op.op === 'F') {
        nbd.request(NBD.CMD_FLUSH, 0, handle, 0, 0);
        const r = await nbd.simpleReply(0);
        if (r.error) throw new Error(`NBD flush: error ${r.error}`);
      }
    }
    nbd.request(NBD.CMD_DISC, 0, ++handle, 0, 0);
  } finally {
    nbd.destroy();
  }
}

export async function runLoad(job: LoadJob): Promise<LoadReport> {
  LOSS = job.loss;
  const trace = parseTrace(readFileSync(job.trace, 'utf8'));
  // The base bytes the trace reads, read once.
  const fd = openSync(job.image, 'r');
  const cache = new Map<string, Buffer>();
  const base = (off: number, len: number): Buffer => {
    const key = `${off}:${len}`;
    let b = cache.get(key);
    if (!b) {
      b = Buffer.alloc(len);
      readSync(fd, b, 0, len, off);
      cache.set(key, b);
    }
    return b;
  };
  for (const op of trace) if (op.op === 'R') base(op.offset, op.length);
  closeSync(fd);

  const sock = dgram.createSocket({ type: 'udp4', reuseAddr: true });
  await new Promise<void>((r) => sock.bind(68, '0.0.0.0', () => r()));
  sock.setBroadcast(true);
  sock.setRecvBufferSize(4 << 20);
  const hub = new DhcpHub(sock);
  const t0 = performance.now();
  const one = async (c: ClientSpec): Promise<ClientResult> => {
    await new Promise((r) => setTimeout(r, Math.random() * job.spreadMs));
    const start = performance.now();
    const ctr: Counters = { retrans: 0, dupes: 0, bytes: 0, notFound: 0 };
    const phases = { dhcp: 0, boot: 0, nbd: 0 };
    let mark = start;
    const lap = (k: keyof typeof phases): void => {
      const now = performance.now();
      phases[k] = Math.round(now - mark);
      mark = now;
    };
    const res = (ok: boolean, extra: Partial<ClientResult> = {}): ClientResult => ({
      i: c.i, kind: c.kind, ok, ms: Math.round(performance.now() - start), phases, ...ctr, ...extra,
    });
    try {
      let proxy = await dhcp(hub, c, job, ctr);
      if (c.kind === 'pxelinux' || c.kind === 'pxe') {
        const ack = await proxyRequest(c, job, ctr, proxy);
        if (ack.file) proxy = ack;
      }
      lap('dhcp');
      const via = await bootFiles(c, job, ctr, proxy, hub);
      lap('boot');
      await nbdReplay(c, job, trace, base);
      lap('nbd');
      return res(true, { via });
    } catch (e) {
      if (e instanceof Vanished) return res(false, { vanished: true, error: e.message });
      return res(false, { error: (e as Error).message.slice(0, 300) });
    }
  };
  const results = await Promise.all(job.clients.map(one));
  const wallMs = Math.round(performance.now() - t0);
  sock.close();
  const cu = process.cpuUsage();
  return { results, wallMs, lost: lostCount, tftpOpenMax, cpuS: (cu.user + cu.system) / 1e6 };
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) {
  const job = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as LoadJob;
  runLoad(job).then(
    (r) => {
      process.stdout.write(`${JSON.stringify(r)}\n`);
      process.exit(0);
    },
    (e: unknown) => {
      process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
      process.exit(1);
    },
  );
}
