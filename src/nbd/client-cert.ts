/**
 * TLS client certificates: which CAs a configured bundle holds, whether a peer certificate was issued by one
 * of them, and which names a verified certificate gives a connection.
 */
import type tls from 'node:tls';
import { X509Certificate } from 'node:crypto';

/** The certificates of a PEM bundle (unparsable blocks are skipped). */
export function parseCas(pem: string | Buffer): X509Certificate[] {
  const blocks = pem.toString().match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  const out: X509Certificate[] = [];
  for (const b of blocks) {
    try {
      out.push(new X509Certificate(b));
    } catch {
      // not a certificate
    }
  }
  return out;
}

/**
 * Whether a client certificate was issued and signed by one of `cas` and is valid now. A bare TLSSocket
 * (STARTTLS on an accepted socket) does not set `authorized`, so the check is made here, explicitly: the
 * client certificate must be signed directly by a CA of nbd.tls.ca (no intermediates).
 */
export function verifiedBy(peer: X509Certificate, cas: X509Certificate[], now = Date.now()): boolean {
  if (!(now >= Date.parse(peer.validFrom) && now <= Date.parse(peer.validTo))) return false;
  for (const ca of cas) {
    try {
      if (peer.checkIssued(ca) && peer.verify(ca.publicKey)) return true;
    } catch {
      // a key type that cannot verify this signature
    }
  }
  return false;
}

/** Names a verified certificate gives: subject CN, then SAN values (DNS, email, URI), bounded. */
export function certNames(cert: tls.PeerCertificate | undefined): string[] {
  if (!cert || typeof cert !== 'object') return [];
  const out: string[] = [];
  const cn = (cert.subject as unknown as Record<string, unknown> | undefined)?.CN;
  for (const v of Array.isArray(cn) ? cn : [cn]) if (typeof v === 'string' && v) out.push(v);
  const san = typeof cert.subjectaltname === 'string' ? cert.subjectaltname : '';
  for (const part of san.split(', ')) {
    const m = /^(?:DNS|email|URI):(.+)$/.exec(part);
    if (m) out.push(m[1]!);
  }
  return out.filter((n) => n.length <= 255).slice(0, 16);
}
