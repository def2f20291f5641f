#!/usr/bin/env bash
# Builds the end-to-end PC disk image without mounting anything:
#   MBR (sfdisk): partition 1 FAT32 (boot, type 0x0c): pxelinux.0, ldlinux.c32 (BIOS), syslinux.efi,
#                 ldlinux.e64 (UEFI x86-64), pxelinux.cfg/default, vmlinuz, initrd.img
#                 partition 2 ext4 (type 0x83), made with mkfs.ext4 -d, holding /e2e-marker
# The layout is scripts/lib/pc-disk.sh's, shared with the user-facing scripts/build-pc-image.sh.
#
#   scripts/e2e/build-disk.sh OUT.img --server ADDR --export NAME [--port N] [--append "ARGS"]
#                             [--marker TEXT] [--initrd FILE] [--kernel-root DIR]
#   --server/--port/--export  make the kernel argument nbdroot=ADDR[:PORT]/NAME
#   --append       more kernel arguments (e.g. e2e.rewrite=1)
#   --marker       content of /e2e-marker on the root partition (default "netbootd-e2e")
#   --initrd       use this initramfs instead of building one with build-initramfs.sh
#   --kernel-root  unpacked kernel package (default: what fetch-debs.sh prints)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=""; server=""; port=""; export_name=""; append=""; marker="netbootd-e2e"; initrd=""; kroot=""
while [ $# -gt 0 ]; do
  case "$1" in
    --server) server=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --export) export_name=$2; shift 2 ;;
    --append) append=$2; shift 2 ;;
    --marker) marker=$2; shift 2 ;;
    --initrd) initrd=$2; shift 2 ;;
    --kernel-root) kroot=$2; shift 2 ;;
    -*) echo "build-disk: unknown option $1" >&2; exit 2 ;;
    *) out=$1; shift ;;
  esac
done
[ -n "$out" ] && [ -n "$server" ] && [ -n "$export_name" ] || {
  echo "usage: build-disk.sh OUT.img --server ADDR --export NAME [--port N] [--append ARGS] [--marker TEXT]" >&2
  exit 2
}
[ -n "$kroot" ] || kroot=$("$here/fetch-debs.sh")
kver=$(ls "$kroot/lib/modules" | head -1)
vmlinuz="$kroot/boot/vmlinuz-$kver"
[ -f "$vmlinuz" ] || { echo "build-disk: no kernel at $vmlinuz" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -z "$initrd" ]; then
  initrd="$work/initrd.img"
  "$here/build-initramfs.sh" "$initrd" "$kroot"
fi

nbdroot="$server${port:+:$port}/$export_name"
cmdline="console=ttyS0,115200 panic=-1 nbdroot=$nbdroot root=/dev/nbd0p2${append:+ $append}"
mkdir -p "$work/rootfs"
printf '%s\n' "$marker" >"$work/rootfs/e2e-marker"

# Layout in 512-byte sectors (scripts/lib/pc-disk.sh): 1 MiB gap, 64 MiB FAT32, 32 MiB ext4.
fat_start=2048; fat_sectors=131072
ext_start=$((fat_start + fat_sectors)); ext_sectors=65536
bash "$here/../lib/pc-disk.sh" "$out" --kernel "$vmlinuz" --initrd "$initrd" --append "$cmdline" --root-dir "$work/rootfs" \
  --boot-sectors "$fat_sectors" --root-sectors "$ext_sectors" --entry e2e --fat-label NETBOOT --root-label e2eroot
echo "build-disk: $out: p1 FAT32 @${fat_start}s, p2 ext4 @${ext_start}s; APPEND $cmdline" >&2
