/**
 * A lossy UDP relay on loopback for TFTP tests: it drops, duplicates and reorders a share of packets in
 * both directions, from a seeded PRNG (deterministic choices; timing still varies).
 *
 * TFTP changes ports mid-conversation (each transfer answers from its own port, its TID), so the relay
 * mirrors that: a client talks to the relay's front port; the relay talks to the server from one upstream
 * socket per client endpoint; every server endpoint seen on that upstream socket gets its own downstream
 * socket on the relay, from which the client sees the server's packets (and to which it answers).
 */
import dgram from 'node:dgram';

export interface LossyRelayOptions {
  /** The real server. */
  target: { address: string; port: number };
  seed?: number;
  /** Share of packets impaired (split evenly between drop, duplicate, reorder). Default 0.1. */
  rate?: number;
  /** A held (reordered) packet goes out after the next one in its direction, or after this long. */
  holdMs?: number;
}

export interface RelayStats {
  forwarded: number;
  dropped: number;
  duplicated: number;
  reordered: number;
}

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Held {
  buf: Buffer;
  timer: NodeJS.Timeout;
}

interface ClientLink {
  up: dgram.Socket;
  /** Server endpoint key → downstream socket the client sees. */
  down: Map<string, dgram.Socket>;
}

export class LossyRelay {
  readonly stats: RelayStats = { forwarded: 0, dropped: 0, duplicated: 0, reordered: 0 };
  private readonly rng: () => number;
  private readonly rate: number;
  private readonly holdMs: number;
  private readonly links = new Map<string, ClientLink>();
  private readonly held = new Map<string, Held>();
  private readonly sockets = new Set<dgram.Socket>();
  private closed = false;
  private readonly ids = new Map<dgram.Socket, number>();

  private constructor(
    private readonly front: dgram.Socket,
    private readonly opts: LossyRelayOptions,
  ) {
    this.rng = mulberry32(opts.seed ?? 1);
    this.rate = opts.rate ?? 0.1;
    this.holdMs = opts.holdMs ?? 20;
    this.sockets.add(front);
    front.on('message', (msg, r) => {
      const link = this.link(r.address, r.port);
      this.deliver(link.up, msg, opts.target.port, opts.target.address);
    });
  }

  static async start(opts: LossyRelayOptions): Promise<LossyRelay> {
    const front = await LossyRelay.bound();
    return new LossyRelay(front, opts);
  }

  private static bound(): Promise<dgram.Socket> {
    return new Promise((resolve) => {
      const s = dgram.createSocket('udp4');
      s.on('error', () => {});
      s.bind({ address: '127.0.0.1', port: 0 }, () => resolve(s));
    });
  }

  get port(): number {
    return this.front.address().port;
  }

  private link(address: string, port: number): ClientLink {
    const key = `${address}:${port}`;
    let l = this.links.get(key);
    if (l) return l;
    const up = dgram.createSocket('udp4');
    up.on('error', () => {});
    up.bind({ address: '127.0.0.1', port: 0 });
    this.sockets.add(up);
    const link: ClientLink = { up, down: new Map() };
    this.links.set(key, link);
    up.on('message', (msg, r) => {
      if (r.port === this.opts.target.port && r.address === this.opts.target.address) {
        this.deliver(this.front, msg, port, address);
        return;
      }
      const sk = `${r.address}:${r.port}`;
      let d = link.down.get(sk);
      if (!d) {
        d = dgram.createSocket('udp4');
        d.on('error', () => {});
        d.bind({ address: '127.0.0.1', port: 0 });
        this.sockets.add(d);
        link.down.set(sk, d);
        const server = { address: r.address, port: r.port };
        d.on('message', (m, from) => {
          if (from.address !== address || from.port !== port) return;
          this.deliver(up, m, server.port, server.address);
        });
      }
      this.deliver(d, msg, port, address);
    });
    return link;
  }

  /** Sends with impairment: drop, duplicate, or hold back behind the next packet. */
  private deliver(sock: dgram.Socket, buf: Buffer, port: number, address: string): void {
    if (this.closed) return;
    let id = this.ids.get(sock);
    if (id === undefined) this.ids.set(sock, (id = this.ids.size));
    const dir = `${id}>${address}:${port}`;
    const r = this.rng();
    const third = this.rate / 3;
    const send = (b: Buffer): void => {
      if (this.closed) return;
      this.stats.forwarded++;
      sock.send(b, port, address);
    };
    const flushHeld = (): void => {
      const h = this.held.get(dir);
      if (h) {
        this.held.delete(dir);
        clearTimeout(h.timer);
        send(h.buf);
      }
    };
    if (r < third) {
      this.stats.dropped++;
      return;
    }
    if (r < 2 * third) {
      this.stats.duplicated++;
      send(buf);
      send(buf);
      flushHeld();
      return;
    }
    if (r < 3 * third && !this.held.has(dir)) {
      this.stats.reordered++;
      const copy = Buffer.from(buf);
      const timer = setTimeout(flushHeld, this.holdMs);
      this.held.set(dir, { buf: copy, timer });
      return;
    }
    send(buf);
    flushHeld();
  }

  close(): void {
    this.closed = true;
    for (const h of this.held.values()) clearTimeout(h.timer);
    this.held.clear();
    for (const s of this.sockets) {
      try {
        s.close();
      } catch {
        /* closed */
      }
    }
    this.sockets.clear();
  }
}
