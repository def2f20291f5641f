#!/usr/bin/env bash
# Builds a small sparse disk image laid out like Raspberry Pi OS, without mounts and without root:
#   MBR (disk id 0x6e657462), partition 1 FAT32 "bootfs" (64 MiB at 4 MiB) with config.txt, cmdline.txt,
#   cloud-init user-data, fake firmware/kernel/initramfs8 files, overlays/ and long file names; partition 2 Linux (ext4 "rootfs" built with
#   mkfs.ext4 -d when e2fsprogs is installed, else left empty).
# Usage: scripts/make-demo-image.sh OUT.img
set -euo pipefail

out=${1:?usage: $0 OUT.img}
for tool in sfdisk mkfs.vfat mcopy mmd dd; do
  if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ] && [ ! -x "/sbin/$tool" ]; then
    echo "make-demo-image: $tool is not installed; run: bash scripts/install-test-deps.sh" >&2
    exit 1
  fi
done
export PATH="$PATH:/usr/sbin:/sbin"

MiB=$((1024 * 1024))
disk_id=6e657462          # "netb"
boot_start_mib=4          # like Raspberry Pi OS: the boot partition starts at sector 8192
boot_mib=64
root_mib=128
total_mib=$((boot_start_mib + boot_mib + root_mib))

work=$(mktemp -d "${TMPDIR:-/tmp}/netbootd-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Deterministic filler bytes of a given size: a repeated, numbered line (so offsets are recognisable).
filler() { # NAME BYTES
  awk -v name="$1" -v size="$2" 'BEGIN {
    for (i = 0; size > 0; i++) {
      line = sprintf("%s block %08d netbootd demo filler\n", name, i)
      if (length(line) > size) line = substr(line, 1, size)
      printf "%s", line
      size -= length(line)
    }
  }'
}

mkdir -p "$work/boot/overlays" "$work/root/etc" "$work/root/boot/firmware"
cat >"$work/boot/config.txt" <<'EOF'
# netbootd demo: a Raspberry Pi OS style config.txt
dtparam=audio=on
camera_auto_detect=1
display_auto_detect=1
auto_initramfs=1
dtoverlay=vc4-kms-v3d
max_framebuffers=2
disable_fw_kms_setup=1
arm_64bit=1
disable_overscan=1
arm_boost=1

[cm4]
otg_mode=1

[all]
enable_uart=1
EOF
printf 'console=serial0,115200 console=tty1 root=PARTUUID=%s-02 rootfstype=ext4 fsck.repair=yes rootwait\n' "$disk_id" >"$work/boot/cmdline.txt"
filler start4.elf 393216 >"$work/boot/start4.elf"
filler fixup4.dat 5432 >"$work/boot/fixup4.dat"
filler kernel8.img 655360 >"$work/boot/kernel8.img"
filler initramfs8 262144 >"$work/boot/initramfs8"
cat >"$work/boot/user-data" <<'EOF'
#cloud-config
# netbootd demo: cloud-init user-data as Raspberry Pi Imager writes it
hostname: raspberrypi   # set by Imager
users:
  - name: pi
    groups: users,adm,dialout,audio,netdev,video,plugdev,cdrom,games,input,gpio,spi,i2c,render,sudo
    shell: /bin/bash
    lock_passwd: true
EOF
filler bcm2711-rpi-4-b.dtb 54321 >"$work/boot/bcm2711-rpi-4-b.dtb"
filler vc4-kms-v3d.dtbo 4321 >"$work/boot/overlays/vc4-kms-v3d.dtbo"
filler disable-bt.dtbo 1234 >"$work/boot/overlays/disable-bt.dtbo"
printf 'Device Tree overlays for the netbootd demo image.\n' >"$work/boot/overlays/README"
printf 'Copyright (c) 2006, Broadcom Corporation. (demo placeholder)\n' >"$work/boot/LICENCE.broadcom"
printf 'Raspberry Pi reference 2024-11-19 (netbootd demo image)\n' >"$work/boot/issue.txt"

# Fixed timestamps (and mcopy -m to keep them) so that the image and the demo output are reproducible.
find "$work/boot" "$work/root" -exec touch -d '2024-11-19 12:00:00' {} +

# The FAT file system, built in its own file with mtools, then copied into partition 1.
fat="$work/boot.fat"
truncate -s $((boot_mib * MiB)) "$fat"
mkfs.vfat -F 32 -n bootfs -i 6e657462 "$fat" >/dev/null 2>&1
export MTOOLS_SKIP_CHECK=1
mmd -i "$fat" ::/overlays
for f in config.txt cmdline.txt start4.elf fixup4.dat kernel8.img initramfs8 user-data bcm2711-rpi-4-b.dtb LICENCE.broadcom issue.txt; do
  mcopy -m -i "$fat" "$work/boot/$f" "::/$f"
done
for f in vc4-kms-v3d.dtbo disable-bt.dtbo README; do
  mcopy -m -i "$fat" "$work/boot/overlays/$f" "::/overlays/$f"
done

ext=-
if command -v mkfs.ext4 >/dev/null 2>&1; then
  printf 'netbootd-demo\n' >"$work/root/etc/hostname"
  printf 'proc /proc proc defaults 0 0\nPARTUUID=%s-01 /boot/firmware vfat defaults 0 2\nPARTUUID=%s-02 / ext4 defaults,noatime 0 1\n' \
    "$disk_id" "$disk_id" >"$work/root/etc/fstab"
  ext="$work/root.ext4"
  truncate -s $((root_mib * MiB)) "$ext"
  mkfs.ext4 -q -F -L rootfs -U 6e657462-6f6f-7464-8000-000000000002 -E root_owner=0:0 -d "$work/root" "$ext"
else
  echo "make-demo-image: mkfs.ext4 not found; partition 2 left empty" >&2
fi
bash "$(dirname "$0")/lib/assemble-mbr.sh" "$out" --id "$disk_id" --bootable \
  --fat "$fat" $((boot_start_mib * 2048)) $((boot_mib * 2048)) \
  --linux "$ext" $(((boot_start_mib + boot_mib) * 2048)) $((root_mib * 2048))
echo "built $out ($total_mib MiB, sparse)"
