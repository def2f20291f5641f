/** Address helpers shared by the servers and `check`. */

/** Loopback: 127.0.0.0/8, ::1, ::ffff:127.x, `localhost`. */
export function isLoopbackAddress(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h) || /^::ffff:127\./.test(h);
}
