#!/usr/bin/env bash
# Lays out a network-bootable PC disk image, without mounts, loop devices or root:
#   MBR (sfdisk, via assemble-mbr.sh)
#   partition 1 FAT32 (type 0x0c, bootable): pxelinux.0 + ldlinux.c32 (BIOS), syslinux.efi + ldlinux.e64
#     (x86-64 UEFI), pxelinux.cfg/default (one entry: KERNEL vmlinuz, INITRD initrd.img, APPEND CMDLINE),
#     vmlinuz, initrd.img — made in a file of its own with mkfs.vfat + mtools, then dd'd into place
#   partition 2 ext4 (type 0x83), filled from a directory by mkfs.ext4 -d, written straight into the image at
#     its offset (mkfs.ext4 -E offset=); run under fakeroot when not root, so files are owned by root
# Shared by scripts/build-pc-image.sh (users) and scripts/e2e/build-disk.sh (the end-to-end tests).
#
#   pc-disk.sh OUT.img --kernel VMLINUZ --initrd INITRD --append "CMDLINE" --root-dir DIR
#              --boot-sectors N --root-sectors N [--entry LABEL] [--fat-label L] [--root-label L] [--ipappend N]
# --ipappend 2: PXELINUX adds BOOTIF=01-<mac> (the NIC it booted from) to the kernel command line.
# Sizes are in 512-byte sectors; partition 1 starts at 1 MiB, partition 2 right after it.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=""; kernel=""; initrd=""; append=""; rootdir=""; boot_sectors=""; root_sectors=""
entry=linux; fat_label=NETBOOT; root_label=root; ipappend=""
while [ $# -gt 0 ]; do
  case "$1" in
    --kernel) kernel=$2; shift 2 ;;
    --initrd) initrd=$2; shift 2 ;;
    --append) append=$2; shift 2 ;;
    --root-dir) rootdir=$2; shift 2 ;;
    --boot-sectors) boot_sectors=$2; shift 2 ;;
    --root-sectors) root_sectors=$2; shift 2 ;;
    --entry) entry=$2; shift 2 ;;
    --fat-label) fat_label=$2; shift 2 ;;
    --root-label) root_label=$2; shift 2 ;;
    --ipappend) ipappend=$2; shift 2 ;;
    -*) echo "pc-disk: unknown option $1" >&2; exit 2 ;;
    *) out=$1; shift ;;
  esac
done
[ -n "$out" ] && [ -n "$kernel" ] && [ -n "$initrd" ] && [ -n "$rootdir" ] && [ -n "$boot_sectors" ] && [ -n "$root_sectors" ] || {
  echo "usage: pc-disk.sh OUT.img --kernel F --initrd F --append CMDLINE --root-dir DIR --boot-sectors N --root-sectors N" >&2
  exit 2
}
export PATH="$PATH:/usr/sbin:/sbin"

# Boot loaders from Debian's pxelinux, syslinux-common and syslinux-efi.
PXELINUX=/usr/lib/PXELINUX/pxelinux.0
LDLINUX_C32=/usr/lib/syslinux/modules/bios/ldlinux.c32
SYSLINUX_EFI=/usr/lib/SYSLINUX.EFI/efi64/syslinux.efi
LDLINUX_E64=/usr/lib/syslinux/modules/efi64/ldlinux.e64
for f in "$PXELINUX" "$LDLINUX_C32" "$SYSLINUX_EFI" "$LDLINUX_E64"; do
  [ -f "$f" ] || { echo "pc-disk: missing $f (apt-get install pxelinux syslinux-common syslinux-efi)" >&2; exit 1; }
done
for tool in sfdisk mkfs.vfat mcopy mmd mkfs.ext4; do
  command -v "$tool" >/dev/null || { echo "pc-disk: $tool is not installed (apt-get install fdisk dosfstools mtools e2fsprogs)" >&2; exit 1; }
done
as_root=()
if [ "$(id -u)" -ne 0 ]; then
  command -v fakeroot >/dev/null || { echo "pc-disk: not root: fakeroot is needed so that the root file system's files belong to root (apt-get install fakeroot)" >&2; exit 1; }
  as_root=(fakeroot)
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/pc-disk.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The kernel command line lives on the APPEND line (netbootd prep rewrites it; netbootd check reads it).
cat >"$work/default" <<EOF
SERIAL 0 115200
DEFAULT $entry
PROMPT 0
TIMEOUT 0
LABEL $entry
  KERNEL vmlinuz
  INITRD initrd.img
  APPEND $append
EOF
[ -z "$ipappend" ] || echo "  IPAPPEND $ipappend" >>"$work/default"

fat_start=2048
root_start=$((fat_start + boot_sectors))
fat="$work/fat.img"
truncate -s $((boot_sectors * 512)) "$fat"
mkfs.vfat -F 32 -n "$fat_label" -h "$fat_start" "$fat" >/dev/null
export MTOOLS_SKIP_CHECK=1
mmd -i "$fat" ::pxelinux.cfg
mcopy -i "$fat" "$PXELINUX" ::pxelinux.0
mcopy -i "$fat" "$LDLINUX_C32" ::ldlinux.c32
mcopy -i "$fat" "$SYSLINUX_EFI" ::syslinux.efi
mcopy -i "$fat" "$LDLINUX_E64" ::ldlinux.e64
mcopy -i "$fat" "$kernel" ::vmlinuz
mcopy -i "$fat" "$initrd" ::initrd.img
mcopy -i "$fat" "$work/default" ::pxelinux.cfg/default

bash "$here/assemble-mbr.sh" "$out" --fat "$fat" "$fat_start" "$boot_sectors" --linux - "$root_start" "$root_sectors" --bootable
"${as_root[@]}" mkfs.ext4 -q -F -L "$root_label" -E offset=$((root_start * 512)) -d "$rootdir" "$out" $((root_sectors / 2))k >&2
echo "pc-disk: $out: p1 FAT32 @${fat_start}s ($((boot_sectors / 2048)) MiB), p2 ext4 @${root_start}s ($((root_sectors / 2048)) MiB); APPEND $append" >&2
