/**
 * The shape of netbootd.yaml: one definition for validation, the `Config` type and the JSON Schema
 * published in config/netbootd.schema.json (regenerate with `node --import tsx scripts/gen-schema.ts`; a test keeps the
 * published file equal to this).
 */
import { isIP } from 'node:net';
import { parseCidr } from '../util/net.js';
import { s, type Infer } from './schema-dsl.js';

export function checkIPv4(v: string): string | null {
  return isIP(v) === 4 ? null : `must be an IPv4 address like 192.168.1.10, not \`${v}\``;
}

/** An address or CIDR block, IPv4 or IPv6: `192.168.1.0/24`, `10.0.0.5`, `fd00::/8`. */
export function checkCidr(v: string): string | null {
  const c = parseCidr(v);
  return 'error' in c ? c.error : null;
}

/**
 * Pi serials: 8 hex digits, case-insensitive. The 16-digit form of /proc/cpuinfo is shortened to its low 32
 * bits, which is what every Pi bootloader puts in its TFTP paths: `10000000…` (Pi 4) and `00000000…` (Pi 3)
 * silently, any other high half (Pi 5: rpi-eeprom issue #563) with a warning, since two Pi 5s whose low 8
 * digits are equal cannot be told apart (the config then refuses the second, naming both).
 */
export function normalizeSerial(raw: string): { key: string; warning?: string } | { error: string } {
  const v = raw.trim().toLowerCase();
  if (/^[0-9a-f]{8}$/.test(v)) return { key: v };
  const m = /^(?:10000000|00000000)([0-9a-f]{8})$/.exec(v);
  if (m) return { key: m[1]!, warning: `serial must be 8 hex digits; \`${raw}\` was shortened to \`${m[1]}\`` };
  const p5 = /^([0-9a-f]{8})([0-9a-f]{8})$/.exec(v);
  if (p5) {
    return {
      key: p5[2]!,
      warning: `Pi 5 serial \`${raw}\`: its bootloader asks for TFTP files under the low 32 bits only, \`${p5[2]}/\`; it is stored as that (two Pis whose last 8 digits are equal cannot both be configured)`,
    };
  }
  return { error: `serial must be 8 hex digits (as in /proc/cpuinfo, without a leading 10000000), not \`${raw}\`` };
}

/** A `pis` key: a serial (see normalizeSerial) or, for a Pi known by its MAC (TFTP_PREFIX=2, Pi 3), a MAC. */
export function normalizePiKey(raw: string): { key: string; warning?: string } | { error: string } {
  if (/^\s*[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}\s*$/.test(raw)) return normalizeMac(raw);
  const serial = normalizeSerial(raw);
  return serial;
}

/** MACs: six hex pairs with `:` or `-`, any case; stored lowercase with colons. */
export function normalizeMac(raw: string): { key: string } | { error: string } {
  const v = raw.trim().toLowerCase();
  const m = /^([0-9a-f]{2})([:-])([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})$/.exec(v);
  if (!m) return { error: `MAC address must look like 52:54:00:aa:bb:01, not \`${raw}\`` };
  return { key: [m[1], m[3], m[4], m[5], m[6], m[7]].join(':') };
}

/** The rule for image and export names (letters, digits, '.', '_', '-'; at most 64; not starting with a symbol). */
export const NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$';
const NAME_RE = new RegExp(NAME_PATTERN);

export function checkName(raw: string, what = 'image name'): string | null {
  return NAME_RE.test(raw) ? null : `${what} must be letters, digits, '.', '_' or '-' (at most 64), not \`${raw}\``;
}

const imageName = (raw: string): { key: string } | { error: string } => {
  const problem = checkName(raw);
  return problem ? { error: problem } : { key: raw };
};

const port = (def: number, description: string) => s.integer({ minimum: 0, maximum: 65535, default: def, description });
const nonEmpty = (v: string): string | null => (v.trim() === '' ? 'must not be empty' : null);
const path = (description: string) => s.string({ description, check: nonEmpty });

const bootFiles = s.object(
  {
    bios: s.string({ description: 'Boot file for PC BIOS (PXE arch 0), e.g. pxelinux.0' }),
    uefi: s.string({ description: 'Boot file for x86-64 UEFI (arch 7/9), e.g. syslinux.efi' }),
    uefi32: s.string({ description: 'Boot file for IA32 UEFI (arch 6)' }),
    arm64: s.string({ description: 'Boot file for ARM64 UEFI (arch 11)' }),
    arm32: s.string({ description: 'Boot file for ARM32 UEFI (arch 10)' }),
    http: s.string({ description: 'Boot URL for UEFI HTTP boot (arch 16/19)' }),
    ipxe: s.string({ description: 'Boot file or script for clients already running iPXE (option 77 "iPXE")' }),
  },
  { description: 'Boot file per firmware type' },
);

const bootFile = s.stringOrObject(
  s.string({ description: 'One boot file for every firmware type' }),
  bootFiles,
  { description: 'What the PXE client loads first: one file name, or one per firmware type (bios, uefi, uefi32, arm64, arm32, http, ipxe)' },
);

const pcTarget = {
  image: s.string({ description: 'Image (a key of `images`) whose boot partition TFTP serves to this PC' }),
  tftpRoot: path('A directory TFTP serves to this PC instead of an image'),
  bootFile,
  kernel: path('HTTP boot: the kernel, a path in the boot partition (or tftpRoot), for the iPXE script netbootd writes when the partition has no boot.ipxe'),
  initrd: s.array(path('An initramfs, a path in the boot partition (or tftpRoot)'), {
    description: 'HTTP boot: initramfs files loaded after the kernel, in order (with `kernel`)',
  }),
  cmdline: s.string({ description: 'HTTP boot: the kernel command line (with `kernel`)' }),
  http: s.boolean({
    description: 'Load boot files over HTTP when the client can (iPXE, UEFI HTTP boot) and `http.enabled` (default true); false keeps this PC on TFTP',
  }),
};

export const configSchema = s.object(
  {
    server: s.object(
      {
        address: s.string({
          description: 'IPv4 address put in DHCP replies, for TFTP and NBD; detected from the interfaces when omitted',
          check: checkIPv4,
          format: 'ipv4',
        }),
        stateDir: s.string({ default: '/var/lib/netbootd', description: 'Where copy-on-write overlays and state live' }),
      },
      { defaultEmpty: true, description: 'Where this server is' },
    ),
    dhcp: s.object(
      {
        enabled: s.boolean({ default: true, description: 'Answer PXE clients (proxy DHCP: never hands out addresses)' }),
        port: port(67, 'DHCP server port'),
        proxyPort: port(4011, 'PXE proxy port (UEFI clients ask here for the boot file)'),
        interface: s.string({
          description:
            'Network interface whose IPv4 address goes in replies when server.address is not set. Node.js cannot bind a socket to one interface, so this does not limit where netbootd listens',
        }),
        replyDelayMs: s.integer({ minimum: 0, maximum: 10000, default: 0, description: 'Wait this long before replying (dnsmasq dhcp-reply-delay)' }),
        answerPis: s.boolean({
          default: true,
          description: 'Answer Raspberry Pis (they cannot be told apart at DHCP time; unknown serials then get "file not found" from TFTP)',
        }),
      },
      { defaultEmpty: true },
    ),
    tftp: s.object(
      {
        enabled: s.boolean({ default: true }),
        port: port(69, 'TFTP port'),
        address: s.string({ default: '0.0.0.0', check: checkIPv4, description: 'Address to listen on' }),
        maxBlksize: s.integer({ minimum: 8, maximum: 65464, default: 1468, description: 'Largest blksize (RFC 2348) granted' }),
        maxWindowsize: s.integer({ minimum: 1, maximum: 65535, default: 64, description: 'Largest windowsize (RFC 7440) granted' }),
        maxTransfers: s.integer({ minimum: 1, maximum: 100000, default: 1024, description: 'Concurrent transfers, all clients (each holds its read-ahead, about 130 KiB in lock-step)' }),
        maxPerClient: s.integer({ minimum: 1, maximum: 10000, default: 16, description: 'Concurrent transfers per client address' }),
        timeoutMs: s.integer({ minimum: 100, maximum: 255000, default: 1000, description: 'Retransmit timeout when the client asks none' }),
        retries: s.integer({ minimum: 1, maximum: 100, default: 5, description: 'Retransmissions before a transfer is given up' }),
        firstAckTimeoutMs: s.integer({
          minimum: 100,
          maximum: 60000,
          default: 3000,
          description: 'A transfer whose client has not acknowledged its first packet (OACK or DATA 1) within this frees its slot',
        }),
        maxPerSubnet: s.integer({
          minimum: 1,
          maximum: 100000,
          default: 64,
          description: 'Concurrent transfers of clients not in the config (not under pis/hosts), per IPv4 /24',
        }),
        unknownShare: s.integer({
          minimum: 1,
          maximum: 100,
          default: 50,
          description: 'Percent of maxTransfers that clients not in the config may hold together; the rest is kept for configured Pis and PCs',
        }),
        notFoundPerSecond: s.integer({
          minimum: 1,
          maximum: 100000,
          default: 20,
          description: '"File not found" answers per second per client address (burst: twice that); requests beyond it are dropped unanswered',
        }),
      },
      { defaultEmpty: true },
    ),
    nbd: s.object(
      {
        enabled: s.boolean({ default: true }),
        port: port(10809, 'NBD port'),
        address: s.string({ default: '0.0.0.0', description: 'Address to listen on' }),
        tls: s.object(
          {
            cert: path('PEM certificate (chain) for STARTTLS'),
            key: path('PEM private key for STARTTLS'),
            ca: path(
              'PEM CA certificate(s) that sign client certificates. With it, STARTTLS asks each client for a certificate; a verified one whose subject CN or a SAN is a Pi serial, a MAC or a host `name` makes the connection that client (its overlay, its writer slot), whatever its address',
            ),
          },
          { required: ['cert', 'key'], description: 'Offer STARTTLS with this certificate' },
        ),
        maxConnections: s.integer({ minimum: 1, maximum: 100000, default: 256, description: 'Open NBD connections, all clients; more are closed at accept' }),
        maxConnectionsPerClient: s.integer({ minimum: 1, maximum: 10000, default: 16, description: 'Open NBD connections per client address; more are closed at accept' }),
        maxInflightBytes: s.integer({
          minimum: 1 << 20,
          maximum: 1 << 30,
          default: 32 << 20,
          description: 'Bytes in flight per connection (requests being served and replies the client has not read yet) before it waits',
        }),
        maxInflightBytesTotal: s.integer({
          minimum: 1 << 20,
          maximum: 16 * 2 ** 30,
          default: 256 << 20,
          description: 'The same over all connections; beyond it connections wait their turn (each may still have one request of up to 2 MiB)',
        }),
        stallTimeoutMs: s.integer({
          minimum: 100,
          maximum: 3600000,
          default: 60000,
          description: 'A connection whose queued replies make no progress (the client stopped reading) for this long is closed; idle ones are not',
        }),
        handshakeTimeoutMs: s.integer({ minimum: 100, maximum: 3600000, default: 30000, description: 'Time a connection has to finish the NBD handshake' }),
      },
      { defaultEmpty: true },
    ),
    http: s.object(
      {
        enabled: s.boolean({ default: false, description: 'Serve boot files over HTTP too (iPXE, UEFI HTTP boot): the same per-client views as TFTP' }),
        port: port(8080, 'HTTP port'),
        address: s.string({ default: '0.0.0.0', check: checkIPv4, description: 'Address to listen on' }),
        maxConnections: s.integer({ minimum: 1, maximum: 10000, default: 512, description: 'Open HTTP connections at once, all clients (more are reset at accept: a boot storm of iPXE clients holds one each)' }),
        idleTimeoutMs: s.integer({ minimum: 1000, maximum: 600000, default: 30000, description: 'A connection with no progress either way is closed after this long' }),
        chainIpxe: s.boolean({
          default: false,
          description: 'Send plain PXE ROMs (BIOS, UEFI) iPXE by TFTP first (ipxeBios / ipxeUefi), which then loads the rest over HTTP; clients already running iPXE are never sent it again',
        }),
        ipxeBios: s.string({ default: '/usr/lib/ipxe/undionly.kpxe', check: nonEmpty, description: 'iPXE for BIOS PXE ROMs, served as `undionly.kpxe` (Debian package ipxe)' }),
        ipxeUefi: s.string({ default: '/usr/lib/ipxe/ipxe.efi', check: nonEmpty, description: 'iPXE for UEFI (PXE and HTTP boot), served as `ipxe.efi` (Debian package ipxe)' }),
      },
      { defaultEmpty: true, description: 'HTTP boot files (off unless enabled)' },
    ),
    status: s.object(
      {
        enabled: s.boolean({ default: true }),
        address: s.string({ default: '127.0.0.1', description: 'Address of the /status and /metrics endpoint (keep it local)' }),
        port: port(9810, 'Port of the status endpoint'),
        token: s.string({
          description:
            'Bearer token every request to the status endpoint must carry (Authorization: Bearer TOKEN); required when address is not loopback',
          check: (v) => (v.length < 16 || /\s/.test(v) ? 'must be at least 16 characters with no spaces (e.g. `openssl rand -hex 16`)' : null),
        }),
        stalledAfterS: s.integer({ minimum: 5, maximum: 86400, default: 120, description: 'A boot quiet this long before its root is up is shown as stalled-at-<stage> (seconds)' }),
        journeyClients: s.integer({ minimum: 1, maximum: 65536, default: 256, description: 'Boot journeys kept: this many clients (the least recently active dropped first)' }),
        journeyBoots: s.integer({ minimum: 1, maximum: 100, default: 5, description: 'Boot journeys kept: the last this many boots per client' }),
        persistJourneys: s.boolean({ default: true, description: 'Keep the boot journeys across restarts in stateDir/journeys.json' }),
      },
      { defaultEmpty: true },
    ),
    images: s.map(
      { description: 'image name', pattern: NAME_PATTERN, normalize: imageName },
      s.object(
        {
          path: path('The disk image file (MBR or GPT)'),
          mode: s.string({
            enum: ['readwrite', 'readonly', 'cow'] as const,
            default: 'readwrite',
            description: 'readwrite: one client writes the image; readonly; cow: each client writes its own overlay',
          }),
          export: s.string({ description: 'NBD export name (default: the image name)' }),
          bootPartition: s.integer({ minimum: 1, maximum: 128, description: 'Partition TFTP serves (default: the first FAT-typed partition, else the first holding a FAT file system; prep --config records the one it edited)' }),
          allow: s.array(s.string({ check: checkCidr }), { description: 'Client addresses/CIDRs allowed to use the NBD export (default: all)' }),
          shared: s.boolean({ default: false, description: 'Let several clients open a readwrite export at once' }),
          tls: s.boolean({ default: false, description: 'Require TLS for this export (needs nbd.tls)' }),
          clientCert: s.boolean({
            default: false,
            description:
              'Require a verified client certificate naming a client of this image (a Pi or host whose `image` is this one, or any PC when `defaults.image` is); implies tls, needs nbd.tls.ca',
          }),
          description: s.string({ description: 'Shown to NBD clients that list exports' }),
        },
        { required: ['path'] },
      ),
      { description: 'Disk images, by name' },
    ),
    pis: s.map(
      {
        description: 'Raspberry Pi serial (8 hex digits; 16-digit serials are shortened to their last 8) or MAC address',
        pattern: '^([0-9a-fA-F]{8}|[0-9a-fA-F]{16}|[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5})$',
        normalize: normalizePiKey,
      },
      s.object(
        {
          image: s.string({ description: 'Image (a key of `images`) this Pi boots' }),
          address: s.string({
            check: checkCidr,
            description: 'Pin: the address or CIDR this Pi boots from; requests naming its serial from anywhere else are refused (TFTP, DHCP evidence, NBD)',
          }),
          partition: s.integer({ minimum: 1, maximum: 128, description: 'Boot partition, when not the image\'s' }),
          mac: s.string({
            check: (v) => ('error' in normalizeMac(v) ? `must be a MAC address like dc:a6:32:01:02:03, not \`${v}\`` : null),
            description:
              'This Pi\'s MAC (for a Pi listed by serial): requests under `dc-a6-32-01-02-03/` (EEPROM TFTP_PREFIX=2), under its `prefix`, or at the TFTP root (a Pi 3\'s bootcode.bin) from the address that MAC has are served this Pi\'s view',
          }),
          prefix: s.string({
            description:
              'The TFTP_PREFIX_STR of this Pi\'s EEPROM (TFTP_PREFIX=1), e.g. `pxe/`: its requests under that directory are served its view. Needs `mac` (or a MAC key): the directory names no Pi, its DHCP exchange does',
          }),
          model: s.integer({
            minimum: 3,
            maximum: 5,
            description: 'Pi family, 3 (3B, 3B+, 2B v1.2), 4 (4B, 400, CM4) or 5 (5, 500, CM5): `netbootd check` then checks the boot files that model needs',
          }),
        },
        { required: ['image'] },
      ),
      { description: 'Raspberry Pis, by serial (or by MAC)' },
    ),
    hosts: s.map(
      { description: 'PC MAC address', pattern: '^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$', normalize: normalizeMac },
      s.object({
        ...pcTarget,
        name: s.string({ description: 'A name for logs (and for client certificates: a certificate may name the host by it)' }),
        address: s.string({
          check: checkCidr,
          description: 'Pin: the address or CIDR this PC boots from; its MAC is never bound to another address (TFTP, DHCP evidence, NBD)',
        }),
      }),
      { description: 'PCs, by MAC address' },
    ),
    defaults: s.object(pcTarget, {
      description: 'What PXE PCs not listed in `hosts` get; omit to answer only listed clients',
    }),
    logging: s.object(
      {
        level: s.string({ enum: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const, default: 'info' }),
        pretty: s.boolean({ description: 'Human-readable logs (default: when stdout is a terminal)' }),
      },
      { defaultEmpty: true },
    ),
  },
  { description: 'netbootd configuration', defaultEmpty: true },
);

export type Config = Infer<typeof configSchema>;
export type ImageConfig = Config['images'][string];
export type HostConfig = Config['hosts'][string];
export type BootFileConfig = NonNullable<HostConfig['bootFile']>;
