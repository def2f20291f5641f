/**
 * Attackers for the TFTP attack tests: many UDP sockets bound to loopback addresses (any 127.x.y.z is a
 * local address on Linux) that send RRQs and never acknowledge anything; and a real client (curl) bound to
 * an address of its own.
 */
import dgram from 'node:dgram';
import { buildRequest, OP_RRQ } from '../../src/tftp/packet.js';
import { run } from '../helpers/tools.js';

export class NeverAck {
  private timer: NodeJS.Timeout | null = null;
  /** Datagrams the attackers received (OACK, DATA, ERROR…). */
  received = 0;
  private constructor(readonly socks: dgram.Socket[]) {
    for (const s of socks) {
      s.on('message', () => this.received++);
      s.on('error', () => {});
    }
  }

  /** `perAddress` sockets (one client port each) on every address. */
  static async open(addresses: string[], perAddress: number): Promise<NeverAck> {
    const socks: dgram.Socket[] = [];
    for (const address of addresses) {
      for (let i = 0; i < perAddress; i++) {
        const s = dgram.createSocket('udp4');
        await new Promise<void>((r) => s.bind({ address, port: 0 }, () => r()));
        socks.push(s);
      }
    }
    return new NeverAck(socks);
  }

  /** Every socket sends one RRQ for `file` (with options: the server answers with an OACK). */
  burst(port: number, file: string): void {
    const rrq = buildRequest(OP_RRQ, file, 'octet', [{ name: 'blksize', value: '1468' }, { name: 'tsize', value: '0' }]);
    for (const s of this.socks) s.send(rrq, port, '127.0.0.1');
  }

  /** Repeats the burst every `everyMs` (a slot freed by a timeout is taken again at once). */
  sustain(port: number, file: string, everyMs = 200): void {
    this.burst(port, file);
    this.timer = setInterval(() => this.burst(port, file), everyMs);
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (const s of this.socks) {
      try {
        s.close();
      } catch {
        /* closed */
      }
    }
  }
}

/** `127.0.<first+i>.<host>` for i < n: n addresses in n different /24s. */
export function spreadAddresses(n: number, first = 10, host = 1): string[] {
  return Array.from({ length: n }, (_, i) => `127.0.${first + i}.${host}`);
}

/** Downloads with curl from source address `from`; resolves with the bytes, or null with curl's complaint. */
export async function curlFrom(from: string, port: number, file: string, timeoutMs = 5000): Promise<{ data: Buffer | null; err: string; ms: number }> {
  const t0 = Date.now();
  const r = await run('curl', ['-sS', '--interface', from, '--max-time', String(timeoutMs / 1000), '--tftp-blksize', '1468', `tftp://127.0.0.1:${port}/${file}`], {
    allowFail: true,
    timeoutMs: timeoutMs + 2000,
  });
  return { data: r.code === 0 ? r.stdout : null, err: r.stderr.trim(), ms: Date.now() - t0 };
}

/** Polls `cond` every 20 ms until true or `ms` passed; returns whether it became true. */
export async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}
