#!/usr/bin/env bash
# Builds a Raspberry Pi style disk image for the scripted-Pi end-to-end test, without mounting anything:
#   MBR: partition 1 FAT32 (type 0x0c) with the files a Pi 4 / Pi 5 bootloader fetches over TFTP —
#        start4.elf, fixup4.dat, config.txt, cmdline.txt (nbdroot=SERVER/EXPORT), kernel8.img,
#        kernel_2712.img, initrd.img, bcm2711-rpi-4-b.dtb, bcm2712-rpi-5-b.dtb, overlays/*.dtbo
#        (firmware/kernel files are random bytes of realistic sizes: the test compares bytes, not behaviour);
#        partition 2 ext4 (type 0x83) made with mkfs.ext4 -d, holding /e2e-marker.
#   scripts/e2e/build-pi-disk.sh OUT.img --server ADDR --export NAME [--seed N]
#   scripts/e2e/build-pi-disk.sh OUT.img --stock [--seed N]
#        (--stock: cmdline.txt as Raspberry Pi OS ships it, root=PARTUUID=…; `netbootd prep` makes it netbootable)
set -euo pipefail

out=""; server=""; export_name=""; seed=1; stock=0
while [ $# -gt 0 ]; do
  case "$1" in
    --server) server=$2; shift 2 ;;
    --export) export_name=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --stock) stock=1; shift ;;
    -*) echo "build-pi-disk: unknown option $1" >&2; exit 2 ;;
    *) out=$1; shift ;;
  esac
done
[ -n "$out" ] && { [ "$stock" = 1 ] || { [ -n "$server" ] && [ -n "$export_name" ]; }; } || {
  echo "usage: build-pi-disk.sh OUT.img (--server ADDR --export NAME | --stock) [--seed N]" >&2
  exit 2
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
files="$work/files"
mkdir -p "$files/overlays"
# Deterministic pseudo-random content per file (seeded), so sizes and bytes are reproducible.
rnd() { set +o pipefail; openssl enc -aes-128-ctr -pass "pass:netbootd-e2e-$seed-$1" -nosalt -pbkdf2 </dev/zero 2>/dev/null | head -c "$2" >"$files/$1"; set -o pipefail; }
rnd start4.elf 2281760
rnd fixup4.dat 5446
rnd kernel8.img 8388609
rnd kernel_2712.img 9437185
rnd initrd.img 3145727
rnd bcm2711-rpi-4-b.dtb 55793
rnd bcm2712-rpi-5-b.dtb 78525
rnd overlays/vc4-kms-v3d-pi4.dtbo 4095
rnd overlays/disable-bt.dtbo 1073
cat >"$files/config.txt" <<EOF
# netbootd e2e Raspberry Pi config.txt
[pi4]
kernel=kernel8.img
[pi5]
kernel=kernel_2712.img
[all]
arm_64bit=1
initramfs initrd.img followkernel
dtoverlay=vc4-kms-v3d-pi4
dtoverlay=disable-bt
EOF
if [ "$stock" = 1 ]; then
  printf 'console=serial0,115200 console=tty1 root=PARTUUID=6e657462-02 rootfstype=ext4 fsck.repair=yes rootwait\n' >"$files/cmdline.txt"
else
  printf 'console=serial0,115200 console=tty1 root=/dev/nbd0p2 nbdroot=%s/%s rootfstype=ext4 rootwait\n' "$server" "$export_name" >"$files/cmdline.txt"
fi

fat_start=2048; fat_sectors=131072
ext_start=$((fat_start + fat_sectors)); ext_sectors=32768
fat="$work/fat.img"
truncate -s $((fat_sectors * 512)) "$fat"
mkfs.vfat -F 32 -n PIBOOT -h "$fat_start" "$fat" >/dev/null
export MTOOLS_SKIP_CHECK=1
mmd -i "$fat" ::overlays
for f in start4.elf fixup4.dat config.txt cmdline.txt kernel8.img kernel_2712.img initrd.img bcm2711-rpi-4-b.dtb bcm2712-rpi-5-b.dtb; do
  mcopy -i "$fat" "$files/$f" "::$f"
done
mcopy -i "$fat" "$files/overlays/vc4-kms-v3d-pi4.dtbo" "$files/overlays/disable-bt.dtbo" ::overlays/

mkdir -p "$work/rootfs"
echo "netbootd-e2e-pi-$seed" >"$work/rootfs/e2e-marker"
ext="$work/ext4.img"
mkfs.ext4 -q -F -L pi-root -d "$work/rootfs" "$ext" $((ext_sectors / 2))k >&2

bash "$(dirname "$0")/../lib/assemble-mbr.sh" "$out" --fat "$fat" "$fat_start" "$fat_sectors" --linux "$ext" "$ext_start" "$ext_sectors" --id 6e657462
echo "build-pi-disk: $out: p1 FAT32 @${fat_start}s, p2 ext4 @${ext_start}s; $(cat "$files/cmdline.txt")" >&2
