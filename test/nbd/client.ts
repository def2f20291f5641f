/**
 * A raw NBD client for tests: byte-level control over the handshake and requests, so tests can send what
 * real clients never would (bad magic, unknown commands, vanishing mid-write).
 */
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import * as P from '../../src/nbd/packet.js';

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

export interface Chunk {
  flags: number;
  type: number;
  handle: bigint;
  payload: Buffer;
}

export class RawNbd {
  private buf = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  ended = false;
  readonly closed: Promise<void>;
  stream: Duplex;

  private constructor(readonly socket: net.Socket) {
    this.stream = socket;
    this.closed = new Promise((res) => socket.on('close', () => res()));
    socket.on('error', () => {});
    this.attach(socket);
  }

  private attach(s: Duplex): void {
    s.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake();
    });
    s.on('end', () => {
      this.ended = true;
      this.wake();
    });
    s.on('close', () => {
      this.ended = true;
      this.wake();
    });
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  static connect(port: number, opts: { localAddress?: string; host?: string } = {}): Promise<RawNbd> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ port, host: opts.host ?? '127.0.0.1', localAddress: opts.localAddress }, () => resolve(new RawNbd(s)));
      s.once('error', reject);
    });
  }

  /** Resolves with exactly n bytes, or rejects when the connection ends first. */
  async read(n: number, timeoutMs = 5000): Promise<Buffer> {
    const until = Date.now() + timeoutMs;
    while (this.buf.length < n) {
      if (this.ended) throw new Error(`connection ended with ${this.buf.length}/${n} bytes`);
      if (Date.now() > until) throw new Error(`timeout waiting for ${n} bytes (have ${this.buf.length})`);
      await new Promise<void>((res) => {
        this.waiters.push(res);
        setTimeout(res, 100);
      });
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return Buffer.from(out);
  }

  /** Resolves when the server closes the connection (after consuming whatever it sent). */
  async waitEnd(timeoutMs = 5000): Promise<Buffer> {
    const until = Date.now() + timeoutMs;
    while (!this.ended) {
      if (Date.now() > until) throw new Error('timeout waiting for the server to close');
      await new Promise<void>((res) => {
        this.waiters.push(res);
        setTimeout(res, 100);
      });
    }
    const rest = this.buf;
    this.buf = Buffer.alloc(0);
    return rest;
  }

  write(b: Buffer): void {
    this.stream.write(b);
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Reads the greeting and sends client flags. Returns the handshake flags. */
  async handshake(clientFlags = P.FLAG_C_FIXED_NEWSTYLE | P.FLAG_C_NO_ZEROES): Promise<number> {
    const g = await this.read(18);
    if (g.readBigUInt64BE(0) !== P.NBDMAGIC || g.readBigUInt64BE(8) !== P.IHAVEOPT) throw new Error('bad greeting');
    const f = Buffer.alloc(4);
    f.writeUInt32BE(clientFlags);
    this.write(f);
    return g.readUInt16BE(16);
  }

  sendOption(option: number, data: Buffer = Buffer.alloc(0)): void {
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(P.IHAVEOPT, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(data.length, 12);
    this.write(Buffer.concat([h, data]));
  }

  async readOptionReply(): Promise<OptionReply> {
    const h = await this.read(20);
    if (h.readBigUInt64BE(0) !== P.OPTION_REPLY_MAGIC) throw new Error('bad option reply magic');
    const len = h.readUInt32BE(16);
    return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: len ? await this.read(len) : Buffer.alloc(0) };
  }

  /** Sends an option and collects replies up to the final one (ACK or an error). */
  async option(option: number, data?: Buffer): Promise<OptionReply[]> {
    this.sendOption(option, data);
    const out: OptionReply[] = [];
    for (;;) {
      const r = await this.readOptionReply();
      out.push(r);
      if (r.type === P.REP_ACK || r.type >= 0x80000000) return out;
    }
  }

  static infoData(name: string, requests: number[] = []): Buffer {
    const n = Buffer.from(name);
    const b = Buffer.alloc(4 + n.length + 2 + 2 * requests.length);
    b.writeUInt32BE(n.length, 0);
    n.copy(b, 4);
    b.writeUInt16BE(requests.length, 4 + n.length);
    requests.forEach((r, i) => b.writeUInt16BE(r, 6 + n.length + 2 * i));
    return b;
  }

  static metaData(name: string, queries: string[]): Buffer {
    const parts: Buffer[] = [];
    const n = Buffer.from(name);
    const h = Buffer.alloc(4);
    h.writeUInt32BE(n.length);
    parts.push(h, n);
    const c = Buffer.alloc(4);
    c.writeUInt32BE(queries.length);
    parts.push(c);
    for (const q of queries) {
      const qb = Buffer.from(q);
      const l = Buffer.alloc(4);
      l.writeUInt32BE(qb.length);
      parts.push(l, qb);
    }
    return Buffer.concat(parts);
  }

  /** NBD_OPT_GO; returns size and transmission flags, or throws with the error reply type. */
  async go(name: string, requests: number[] = []): Promise<{ size: number; flags: number; replies: OptionReply[] }> {
    const replies = await this.option(P.OPT_GO, RawNbd.infoData(name, requests));
    const last = replies[replies.length - 1]!;
    if (last.type !== P.REP_ACK) throw Object.assign(new Error(`GO refused: 0x${last.type.toString(16)} ${last.data.toString()}`), { type: last.type });
    const exp = replies.find((r) => r.type === P.REP_INFO && r.data.readUInt16BE(0) === P.INFO_EXPORT)!;
    return { size: Number(exp.data.readBigUInt64BE(2)), flags: exp.data.readUInt16BE(10), replies };
  }

  /** Upgrades to TLS after STARTTLS's ACK (certificate not verified: tests use a self-signed one). */
  async startTls(): Promise<void> {
    const r = await this.option(P.OPT_STARTTLS);
    if (r[0]!.type !== P.REP_ACK) throw new Error(`STARTTLS refused 0x${r[0]!.type.toString(16)}`);
    this.socket.removeAllListeners('data');
    const t = tls.connect({ socket: this.socket, rejectUnauthorized: false });
    await new Promise<void>((res, rej) => {
      t.once('secureConnect', () => res());
      t.once('error', rej);
    });
    t.on('error', () => {});
    this.stream = t;
    this.attach(t);
  }

  request(type: number, flags: number, handle: bigint, offset: number | bigint, length: number, payload?: Buffer): void {
    const h = P.buildRequest(type, flags, handle, offset, length);
    this.write(payload ? Buffer.concat([h, payload]) : h);
  }

  async simpleReply(dataLength = 0): Promise<{ error: number; handle: bigint; data: Buffer }> {
    const h = await this.read(16);
    if (h.readUInt32BE(0) !== P.SIMPLE_REPLY_MAGIC) throw new Error(`not a simple reply: magic 0x${h.readUInt32BE(0).toString(16)}`);
    const error = h.readUInt32BE(4);
    const data = error === 0 && dataLength > 0 ? await this.read(dataLength) : Buffer.alloc(0);
    return { error, handle: h.readBigUInt64BE(8), data };
  }

  /** One reply message of either kind (structured chunk or simple reply without data). */
  async chunk(): Promise<Chunk & { simple?: boolean; error?: number }> {
    const m = (await this.read(4)).readUInt32BE(0);
    if (m === P.SIMPLE_REPLY_MAGIC) {
      const rest = await this.read(12);
      return { simple: true, flags: P.REPLY_FLAG_DONE, type: 0, error: rest.readUInt32BE(0), handle: rest.readBigUInt64BE(4), payload: Buffer.alloc(0) };
    }
    if (m !== P.STRUCTURED_REPLY_MAGIC) throw new Error(`bad reply magic 0x${m.toString(16)}`);
    const h = await this.read(16);
    const len = h.readUInt32BE(12);
    return { flags: h.readUInt16BE(0), type: h.readUInt16BE(2), handle: h.readBigUInt64BE(4), payload: len ? await this.read(len) : Buffer.alloc(0) };
  }
}
