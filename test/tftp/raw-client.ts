/**
 * A scripted TFTP client for tests: raw datagrams in and out (`RawClient`), and a complete downloader
 * (`download`) with lockstep and RFC 7440 windowed receive, used where Debian's clients cannot go
 * (through the lossy relay, scripted edge cases).
 */
import dgram from 'node:dgram';
import { buildAck, buildRequest, parsePacket, OP_RRQ, OP_DATA, OP_OACK, OP_ERROR, type Packet } from '../../src/tftp/packet.js';

export interface Received {
  msg: Buffer;
  port: number;
  address: string;
}

export class RawClient {
  private queue: Received[] = [];
  private waiters: ((r: Received) => void)[] = [];
  private constructor(readonly sock: dgram.Socket) {
    sock.on('message', (msg, rinfo) => {
      const r = { msg, port: rinfo.port, address: rinfo.address };
      const w = this.waiters.shift();
      if (w) w(r);
      else this.queue.push(r);
    });
    sock.on('error', () => {});
  }

  static open(): Promise<RawClient> {
    return new Promise((resolve) => {
      const s = dgram.createSocket('udp4');
      s.bind({ address: '127.0.0.1', port: 0 }, () => resolve(new RawClient(s)));
    });
  }

  get port(): number {
    return this.sock.address().port;
  }

  send(buf: Buffer, port: number, address = '127.0.0.1'): void {
    this.sock.send(buf, port, address);
  }

  /** Sends and resolves once the datagram has left (before closing the socket). */
  sendFlush(buf: Buffer, port: number, address = '127.0.0.1'): Promise<void> {
    return new Promise((resolve) => this.sock.send(buf, port, address, () => resolve()));
  }

  /** The next datagram, or rejects after `timeoutMs`. */
  recv(timeoutMs = 3000): Promise<Received> {
    const q = this.queue.shift();
    if (q) return Promise.resolve(q);
    return new Promise((resolve, reject) => {
      const w = (r: Received): void => {
        clearTimeout(t);
        resolve(r);
      };
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new Error(`no datagram within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  /** The next datagram parsed (asserting it parses). */
  async recvPacket(timeoutMs = 3000): Promise<{ p: Packet; port: number; address: string }> {
    const r = await this.recv(timeoutMs);
    const p = parsePacket(r.msg);
    if (!p.ok) throw new Error(`unparseable reply: ${p.error.message}`);
    return { p: p.value, port: r.port, address: r.address };
  }

  /** Resolves with what arrived within `ms` (expected to be nothing in most uses). */
  async drain(ms: number): Promise<Received[]> {
    await new Promise((r) => setTimeout(r, ms));
    const got = this.queue;
    this.queue = [];
    return got;
  }

  close(): void {
    try {
      this.sock.close();
    } catch {
      /* closed */
    }
  }
}

export interface DownloadOptions {
  mode?: 'octet' | 'netascii';
  blksize?: number;
  windowsize?: number;
  tsize?: boolean;
  timeout?: number;
  /** Client-side wait before re-acknowledging, ms. */
  retryMs?: number;
  /** Give up after this long, ms. */
  deadlineMs?: number;
  address?: string;
}

export interface DownloadResult {
  data: Buffer;
  oack: Record<string, string> | null;
  blocks: number;
  /** Highest wire block numbers seen in order (for rollover checks): count of wraps past 65535. */
  wraps: number;
}

/**
 * Downloads `file` from a TFTP server at `port`. Windowed receive per RFC 7440: ACK at the end of each
 * window, and on a gap ACK the last block received in order; on silence re-ACK the last in-order block.
 */
export async function download(port: number, file: string, opts: DownloadOptions = {}): Promise<DownloadResult> {
  const c = await RawClient.open();
  const address = opts.address ?? '127.0.0.1';
  try {
    const options: { name: string; value: string }[] = [];
    if (opts.blksize !== undefined) options.push({ name: 'blksize', value: String(opts.blksize) });
    if (opts.windowsize !== undefined) options.push({ name: 'windowsize', value: String(opts.windowsize) });
    if (opts.tsize) options.push({ name: 'tsize', value: '0' });
    if (opts.timeout !== undefined) options.push({ name: 'timeout', value: String(opts.timeout) });
    const rrq = buildRequest(OP_RRQ, file, opts.mode ?? 'octet', options);
    const retryMs = opts.retryMs ?? 200;
    const deadline = Date.now() + (opts.deadlineMs ?? 30_000);
    let serverPort = -1;
    let blksize = 512;
    let windowsize = 1;
    let oack: Record<string, string> | null = null;
    const chunks: Buffer[] = [];
    let expected = 1; // absolute next block number
    let inWindow = 0;
    let blocks = 0;
    let gapAcked = false;
    c.send(rrq, port, address);
    for (;;) {
      if (Date.now() > deadline) throw new Error(`download ${file}: deadline passed at block ${expected}`);
      let r: Received;
      try {
        r = await c.recv(retryMs);
      } catch {
        if (serverPort < 0) c.send(rrq, port, address);
        else c.send(buildAck((expected - 1) & 0xffff), serverPort, address);
        inWindow = 0;
        continue;
      }
      if (serverPort >= 0 && r.port !== serverPort) continue;
      const parsed = parsePacket(r.msg);
      if (!parsed.ok) throw new Error(`bad packet from server: ${parsed.error.message}`);
      const p = parsed.value;
      if (p.op === OP_ERROR) throw new Error(`server error ${p.code}: ${p.message}`);
      if (p.op === OP_OACK) {
        if (expected !== 1) continue;
        serverPort = r.port;
        oack = {};
        for (const o of p.options) oack[o.key] = o.value;
        if (oack['blksize']) blksize = Number(oack['blksize']);
        if (oack['windowsize']) windowsize = Number(oack['windowsize']);
        c.send(buildAck(0), serverPort, address);
        continue;
      }
      if (p.op !== OP_DATA) continue;
      if (serverPort < 0) serverPort = r.port;
      if (p.block !== (expected & 0xffff)) {
        // A duplicate of an old block: ACK the last in-order block again (RFC 1350; the server ignores
        // duplicate ACKs). A gap (blocks ahead lost, windowed): ACK the last in-order block once per gap.
        const ahead = ((p.block - expected) & 0xffff) < 0x8000;
        if (!ahead || !gapAcked) c.send(buildAck((expected - 1) & 0xffff), serverPort, address);
        if (ahead) gapAcked = true;
        inWindow = 0;
        continue;
      }
      gapAcked = false;
      chunks.push(Buffer.from(p.data));
      blocks++;
      expected++;
      inWindow++;
      const last = p.data.length < blksize;
      if (last) await c.sendFlush(buildAck(p.block), serverPort, address);
      else if (inWindow >= windowsize) {
        c.send(buildAck(p.block), serverPort, address);
        inWindow = 0;
      }
      if (last) {
        return { data: Buffer.concat(chunks), oack, blocks, wraps: Math.floor((expected - 1) / 65536) };
      }
    }
  } finally {
    c.close();
  }
}
