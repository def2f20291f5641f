/**
 * Build products of the end-to-end boots: the unpacked Debian kernel, the initramfs and the PC disk image,
 * made by scripts/e2e/*.sh (no mounts). Shared by test/e2e/*.test.ts and bench/boot.ts.
 */
import { existsSync, mkdirSync, readFileSync, copyFileSync, constants } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../helpers/tools.js';

/** The repository root, found from this file whether it runs from test/ (tsx) or dist/test/ (tsc). */
export const E2E_ROOT = ((): string => {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && existsSync(join(dir, 'scripts/e2e'))) return dir;
    const up = dirname(dir);
    if (up === dir) return resolve(dirname(fileURLToPath(import.meta.url)), '../..');
    dir = up;
  }
})();

export const SCRIPTS = join(E2E_ROOT, 'scripts/e2e');

/** Debian tools the e2e boots need (besides ip, which NetLab checks). */
export const E2E_TOOLS = [
  'qemu-system-x86_64', 'dnsmasq', 'nbd-server', 'nbd-client', 'sfdisk', 'mkfs.vfat', 'mcopy', 'mmd', 'mtype',
  'mkfs.ext4', 'debugfs', 'cpio', 'depmod', 'modprobe', 'apt-get', 'dpkg-deb',
];
export const OVMF = '/usr/share/ovmf/OVMF.fd';
export const BOOT_LOADERS = [
  '/usr/lib/PXELINUX/pxelinux.0', '/usr/lib/syslinux/modules/bios/ldlinux.c32',
  '/usr/lib/SYSLINUX.EFI/efi64/syslinux.efi', '/usr/lib/syslinux/modules/efi64/ldlinux.e64', OVMF,
];

/** Files (not on PATH) that must exist; the missing ones. */
export function missingFiles(): string[] {
  return BOOT_LOADERS.filter((f) => !existsSync(f));
}

export interface Artifacts {
  kernelRoot: string;
  initrd: string;
  /** Pristine disk image (never booted): copy it per boot with `copyImage`. */
  baseImage: string;
  serverAddress: string;
  exportName: string;
  /** Content of /e2e-marker on the root partition. */
  marker: string;
}

export interface BuildOptions {
  serverAddress: string;
  exportName: string;
  marker?: string;
  /** Extra kernel arguments (default: `e2e.rewrite=1`, the stale-boot-partition test's first boot). */
  append?: string;
}

const BUILD_TIMEOUT = 10 * 60_000;

/**
 * Fetches the kernel (cached in $NETBOOTD_E2E_CACHE, default /var/cache/netbootd-e2e), builds the initramfs
 * and the disk image into `dir`.
 */
export async function buildArtifacts(dir: string, o: BuildOptions): Promise<Artifacts> {
  mkdirSync(dir, { recursive: true });
  const fetched = await run('bash', [join(SCRIPTS, 'fetch-debs.sh')], { timeoutMs: BUILD_TIMEOUT });
  const kernelRoot = fetched.stdout.toString().trim().split('\n').pop()!;
  const initrd = join(dir, 'initrd.img');
  await run('bash', [join(SCRIPTS, 'build-initramfs.sh'), initrd, kernelRoot], { timeoutMs: BUILD_TIMEOUT });
  const marker = o.marker ?? `netbootd-e2e-${process.pid}-${Date.now()}`;
  const baseImage = join(dir, 'base.img');
  await run('bash', [
    join(SCRIPTS, 'build-disk.sh'), baseImage, '--server', o.serverAddress, '--export', o.exportName,
    '--append', o.append ?? 'e2e.rewrite=1', '--marker', marker, '--initrd', initrd, '--kernel-root', kernelRoot,
  ], { timeoutMs: BUILD_TIMEOUT });
  return { kernelRoot, initrd, baseImage, serverAddress: o.serverAddress, exportName: o.exportName, marker };
}

/** A fresh copy of the pristine image (sparse-preserving where the file system can clone). */
export async function copyImage(a: Artifacts, to: string): Promise<string> {
  try {
    await run('cp', ['--reflink=auto', '--sparse=always', a.baseImage, to]);
  } catch {
    copyFileSync(a.baseImage, to, constants.COPYFILE_FICLONE);
  }
  return to;
}

/** Whether the daemon (issue 6) exists yet: the netbootd branch of the e2e tests needs it. */
export function daemonAvailable(): boolean {
  return existsSync(join(E2E_ROOT, 'src/daemon.ts')) || existsSync(join(E2E_ROOT, 'dist/src/daemon.js'));
}

export const DAEMON_MISSING = 'netbootd serve does not exist yet (src/daemon.ts, issue 6): netbootd boot stack skipped';

/** The kernel command line written into the image (pxelinux.cfg/default APPEND). */
export function appendLine(cfg: string): string {
  return /^\s*APPEND\s+(.*)$/m.exec(cfg)?.[1]?.trim() ?? '';
}

export function readText(path: string): string {
  return readFileSync(path, 'utf8');
}
