/**
 * Raspberry Pi OS style images for tests, built without mounts (scripts/make-demo-image.sh: MBR, FAT32
 * `bootfs` at 4 MiB with config.txt, cmdline.txt, user-data, start4.elf, kernel8.img, initramfs8,
 * overlays/; ext4 `rootfs`), and the same image made netbootable by `netbootd prep` run as the CLI.
 * Reusable by the e2e Pi scenario: `buildPreppedPiImage` gives an image and a netbootd YAML ready to serve.
 */
import { closeSync, openSync, readSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { cliCommand, REPO_ROOT, run, type RunResult } from './tools.js';
import { prng, randomBytes } from './fatimg.js';

const MiB = 1024 * 1024;

/** Where make-demo-image.sh puts things. */
export const PI_OS_LAYOUT = {
  diskId: '6e657462',
  bootStart: 4 * MiB,
  bootSize: 64 * MiB,
  rootStart: 68 * MiB,
  rootSize: 128 * MiB,
  size: 196 * MiB,
  bootPartition: 1,
  rootPartition: 2,
  cmdline: 'console=serial0,115200 console=tty1 root=PARTUUID=6e657462-02 rootfstype=ext4 fsck.repair=yes rootwait\n',
} as const;

/** The tools building and prepping need. */
export const PI_IMAGE_TOOLS = ['sfdisk', 'mkfs.vfat', 'mcopy', 'mmd', 'mkfs.ext4', 'dd'];

/** Builds a Raspberry Pi OS style image at `path` (about 200 MiB, sparse). */
export async function buildPiOsImage(path: string): Promise<void> {
  await run('bash', [join(REPO_ROOT, 'scripts/make-demo-image.sh'), path]);
}

/** Runs the netbootd CLI (TypeScript through tsx) with `args`; never rejects on a non-zero exit. */
export function netbootd(args: string[], opts: { cwd?: string } = {}): Promise<RunResult> {
  const { cmd, args: pre } = cliCommand();
  return run(cmd, [...pre, ...args], { allowFail: true, ...(opts.cwd ? { cwd: opts.cwd } : {}) });
}

export interface PreppedPiImage {
  image: string;
  /** The netbootd YAML prep added the image and the Pi to. */
  config: string;
  /** The initrd.img copied into the boot partition. */
  initrd: Buffer;
  exportName: string;
  server: string;
  serial: string;
  /** The arguments `netbootd prep` ran with (to run it again). */
  prepArgs: string[];
  /** What `netbootd prep` printed. */
  stdout: string;
}

export interface PrepPiOptions {
  server: string;
  exportName?: string;
  serial?: string;
  /** --size (default 1G). */
  size?: string;
  packages?: string[];
  /** Bytes of the initrd.img to copy (default: 3 MiB of seeded random bytes). */
  initrd?: Buffer;
  /** Initial contents of the netbootd YAML (default: a commented file with one other image). */
  configText?: string;
  /** Start from a copy of this image (from `buildPiOsImage`) instead of building one. */
  from?: string;
}

export const DEFAULT_CONFIG_TEXT = `# netbootd test config
server:
  address: 10.0.0.1   # the boot server
images:
  other: { path: /srv/other.img }  # another image, kept as is
`;

/**
 * Builds a Pi OS style image in `dir` and runs `netbootd prep` on it with --size, --serial, --export,
 * --server, --copy initrd.img, --packages and --config. Rejects if prep fails.
 */
export async function buildPreppedPiImage(dir: string, o: PrepPiOptions): Promise<PreppedPiImage> {
  const image = join(dir, 'pios.img');
  const config = join(dir, 'netbootd.yaml');
  if (o.from !== undefined) await run('cp', ['--sparse=always', o.from, image]);
  else await buildPiOsImage(image);
  const initrd = o.initrd ?? randomBytes(prng(0x1417), 3 * MiB + 12345);
  writeFileSync(join(dir, 'initrd.img'), initrd);
  writeFileSync(config, o.configText ?? DEFAULT_CONFIG_TEXT);
  const exportName = o.exportName ?? 'pios';
  const serial = o.serial ?? '3a4b5c6d';
  const prepArgs = [
    'prep', image, '--size', o.size ?? '1G', '--serial', serial, '--export', exportName, '--server', o.server,
    '--copy', join(dir, 'initrd.img'), '--packages', (o.packages ?? ['nbd-client']).join(','), '--config', config,
  ];
  const r = await netbootd(prepArgs);
  if (r.code !== 0) throw new Error(`netbootd prep failed (${r.code}): ${r.stderr}`);
  return { image, config, initrd, exportName, server: o.server, serial, prepArgs, stdout: r.stdout.toString() };
}

/** Copies bytes [start, start+size) of `image` into a new file `out` (e.g. a partition for fsck.fat). */
export function extractRange(image: string, start: number, size: number, out: string): void {
  const src = openSync(image, 'r');
  const dst = openSync(out, 'w');
  try {
    const buf = Buffer.alloc(4 * MiB);
    for (let done = 0; done < size;) {
      const n = readSync(src, buf, 0, Math.min(buf.length, size - done), start + done);
      if (n <= 0) break;
      writeSync(dst, buf, 0, n, done);
      done += n;
    }
  } finally {
    closeSync(src);
    closeSync(dst);
  }
}
