/** Address helpers shared by the config, the servers and `check`. */
import type http from 'node:http';
import { isIP } from 'node:net';

/** Loopback: 127.0.0.0/8, ::1, ::ffff:127.x, `localhost`. */
export function isLoopbackAddress(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h) || /^::ffff:127\./.test(h);
}

/** An address or CIDR block (`192.168.1.0/24`, `10.0.0.5`, `fd00::/8`), parsed once for the config and allow-lists. */
export interface Cidr {
  address: string;
  family: 'ipv4' | 'ipv6';
  /** Prefix length; absent for a single address. */
  bits?: number;
}

export function parseCidr(text: string): Cidr | { error: string } {
  const [address, bits, extra] = text.trim().split('/');
  const family = isIP(address ?? '');
  if (family === 0 || extra !== undefined) return { error: `must be an address or CIDR like 192.168.1.0/24, not \`${text}\`` };
  const kind = family === 4 ? 'ipv4' : 'ipv6';
  if (bits === undefined) return { address: address!, family: kind };
  const n = /^\d{1,3}$/.test(bits) ? Number(bits) : NaN;
  const max = family === 4 ? 32 : 128;
  if (!(n >= 0 && n <= max)) return { error: `prefix length in \`${text}\` must be 0-${max}` };
  return { address: address!, family: kind, bits: n };
}

/** Unwraps `::ffff:a.b.c.d` (an IPv4 peer on a dual-stack socket) to `a.b.c.d`. */
export function normalizeAddress(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m ? m[1]! : address;
}

/** Closes an HTTP server and every connection it holds (keep-alive ones included). */
export function closeHttpServer(server: http.Server | null): Promise<void> {
  if (!server) return Promise.resolve();
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Receive buffer a request socket asks for (proxy DHCP, TFTP port 69): room for a boot storm's burst. */
export const REQUEST_RCVBUF = 4 * 1024 * 1024;

/**
 * Asks for a larger receive buffer on a bound UDP socket, so a burst of requests (hundreds of clients
 * powered on at once) is not dropped while the event loop serves transfers; the default (~208 KiB) holds
 * about 90. The kernel caps it at net.core.rmem_max; a refusal keeps the default.
 */
export function askRecvBuffer(sock: { setRecvBufferSize(n: number): void }, bytes = REQUEST_RCVBUF): void {
  try {
    sock.setRecvBufferSize(bytes);
  } catch {
    /* capped or refused: the default stays */
  }
}
