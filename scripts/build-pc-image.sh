#!/usr/bin/env bash
# Builds a network-bootable PC disk image (BIOS and x86-64 UEFI) from Debian packages, without mounts,
# loop devices, chroot or root (files in the root partition are owned by root through fakeroot):
#
#   partition 1, FAT32 "NETBOOT" (what netbootd's TFTP serves): pxelinux.0 + ldlinux.c32 (BIOS),
#     syslinux.efi + ldlinux.e64 (UEFI), pxelinux.cfg/default (the kernel command line is its APPEND line),
#     vmlinuz (Debian's kernel: the package linux-image-amd64 depends on) and initrd.img (built here for that
#     kernel: busybox-static, nbd-client, nbd.ko + NIC/ext4/vfat modules; it gets an address by DHCP,
#     attaches nbdroot= with nbd-client, mounts root= and switch_roots to the root's /sbin/init)
#   partition 2, ext4 "root": by default a small busybox system (busybox-static init, getty on ttyS0 and
#     tty1, root without password, /boot = partition 1, the kernel's modules in /lib/modules), or the
#     directory given with --root (your own root file system, e.g. a Debian tree from mmdebstrap)
#
# The image is not bound to a server yet: `netbootd prep OUT.img --server ADDR --export NAME` writes
# nbdroot=/root= onto the APPEND line. See README.md, "A PC (BIOS or UEFI)".
#
#   scripts/build-pc-image.sh OUT.img [--size 4G] [--boot-size 256M] [--root DIR] [--hostname NAME]
#                             [--cmdline "ARGS"] [--kernel-pkg PKG] [--no-modules]
#   --size        the whole image (sparse), default 4G; the root partition takes what the boot one leaves
#   --boot-size   the FAT boot partition, default 256M (room for a few kernels and initramfs images)
#   --root        make the root file system from this directory instead of the busybox system
#   --hostname    the busybox system's host name (default netboot-pc)
#   --cmdline     kernel arguments (default "console=tty0 console=ttyS0,115200"); prep adds the NBD ones
#   --kernel-pkg  Debian kernel package (default: the one linux-image-amd64 depends on)
#   --no-modules  leave /lib/modules out of the busybox system (the initramfs loads what booting needs)
# Downloads (apt-get download, nothing installed) are cached in $NETBOOTD_E2E_CACHE, default
# /var/cache/netbootd-e2e for root and ~/.cache/netbootd for others. Needs: fdisk dosfstools mtools
# e2fsprogs pxelinux syslinux-common syslinux-efi cpio kmod nbd-client (and fakeroot when not root).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
usage() {
  echo "usage: build-pc-image.sh OUT.img [--size 4G] [--boot-size 256M] [--root DIR] [--hostname NAME] [--cmdline ARGS] [--kernel-pkg PKG] [--no-modules]" >&2
  exit 2
}
help() { sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0; }
out=""; size=4G; boot_size=256M; rootdir=""; hostname=netboot-pc; cmdline="console=tty0 console=ttyS0,115200"; modules=1
while [ $# -gt 0 ]; do
  case "$1" in
    --size) size=${2:?}; shift 2 ;;
    --boot-size) boot_size=${2:?}; shift 2 ;;
    --root) rootdir=${2:?}; shift 2 ;;
    --hostname) hostname=${2:?}; shift 2 ;;
    --cmdline) cmdline=${2?}; shift 2 ;;
    --kernel-pkg) export E2E_KERNEL_PKG=${2:?}; shift 2 ;;
    --no-modules) modules=0; shift ;;
    -h|--help) help ;;
    -*) echo "build-pc-image: unknown option $1" >&2; usage ;;
    *) [ -z "$out" ] || usage; out=$1; shift ;;
  esac
done
[ -n "$out" ] || usage
export PATH="$PATH:/usr/sbin:/sbin"

# SIZE[K|M|G|T] (binary units) -> 512-byte sectors, whole MiB.
sectors() {
  local v=$1 n unit
  [[ $v =~ ^([0-9]+)([KkMmGgTt]?)(i?B)?$ ]] || { echo "build-pc-image: size $v: give e.g. 4G or 512M" >&2; exit 2; }
  n=${BASH_REMATCH[1]}; unit=${BASH_REMATCH[2]^^}
  case "$unit" in
    K) n=$((n * 1024)) ;; M) n=$((n * 1024 ** 2)) ;; G) n=$((n * 1024 ** 3)) ;; T) n=$((n * 1024 ** 4)) ;;
  esac
  echo $(((n / 1048576) * 2048))
}
total_sectors=$(sectors "$size")
boot_sectors=$(sectors "$boot_size")
[ "$boot_sectors" -ge 65536 ] || { echo "build-pc-image: --boot-size $boot_size: at least 32M (FAT32)" >&2; exit 2; }
root_sectors=$((total_sectors - 2048 - boot_sectors))
[ "$root_sectors" -ge 65536 ] || { echo "build-pc-image: --size $size leaves no room for a root partition after the ${boot_size} boot partition" >&2; exit 2; }
if [ -n "$rootdir" ] && [ ! -d "$rootdir" ]; then echo "build-pc-image: --root $rootdir: not a directory" >&2; exit 2; fi

for tool in nbd-client cpio modprobe depmod apt-get dpkg-deb; do
  command -v "$tool" >/dev/null || {
    echo "build-pc-image: $tool is not installed; run: sudo apt-get install fdisk dosfstools mtools e2fsprogs pxelinux syslinux-common syslinux-efi cpio kmod nbd-client fakeroot" >&2
    exit 1
  }
done

# The kernel and busybox-static, unpacked (not installed) into a cache.
if [ -z "${NETBOOTD_E2E_CACHE:-}" ]; then
  if [ "$(id -u)" -eq 0 ]; then export NETBOOTD_E2E_CACHE=/var/cache/netbootd-e2e
  else export NETBOOTD_E2E_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/netbootd"; fi
fi
kroot=$(bash "$here/e2e/fetch-debs.sh" | tail -1)
kver=$(ls "$kroot/lib/modules" | head -1)
vmlinuz="$kroot/boot/vmlinuz-$kver"
[ -f "$vmlinuz" ] || { echo "build-pc-image: no kernel at $vmlinuz" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/build-pc-image.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The initramfs, for exactly this kernel (its modules are this kernel's).
bash "$here/e2e/build-initramfs.sh" --boot "$work/initrd.img" "$kroot"

if [ -z "$rootdir" ]; then
  rootdir="$work/root"
  r=$rootdir
  mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,etc/init.d,dev,proc,sys,run,tmp,root,mnt,boot,home,var/log,lib}
  chmod 1777 "$r/tmp"; chmod 700 "$r/root"
  cp "$kroot/bin/busybox" "$r/bin/busybox"
  # Every applet where Debian would put it, as a relative link to bin/busybox.
  for path in $("$r/bin/busybox" --list-full); do
    [ -e "$r/$path" ] && continue
    up=$(dirname "$path" | sed 's|[^/][^/]*|..|g')
    ln -s "$up/bin/busybox" "$r/$path"
  done
  cat >"$r/etc/inittab" <<'EOF'
::sysinit:/etc/init.d/rcS
ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100
tty1::respawn:/sbin/getty 38400 tty1
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/umount -a -r
EOF
  cat >"$r/etc/init.d/rcS" <<'EOF'
#!/bin/sh
# System start of the netbootd PC image's busybox root (made by scripts/build-pc-image.sh). The initramfs
# has already configured the network (DHCP), attached this root over NBD and loaded the modules booting needs.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
grep -q ' /dev ' /proc/mounts || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=755 tmpfs /run
hostname -F /etc/hostname
mount -a
[ -x /etc/rc.local ] && /etc/rc.local
root=$(awk '$2 == "/" && $1 != "rootfs" {print $1}' /proc/mounts | tail -1)
addr=$(ip -4 -o addr show scope global | awk '{print $2, $4}' | head -1)
boot=$(awk '$2 == "/boot" {print $1}' /proc/mounts)
echo "netboot: root up: / is $root over NBD, /boot is ${boot:-not mounted}, address $addr, $(cat /etc/netboot-image)"
EOF
  chmod 755 "$r/etc/init.d/rcS"
  cat >"$r/etc/fstab" <<'EOF'
# the boot partition of this image, over the same NBD connection (what netbootd's TFTP serves)
/dev/nbd0p1  /boot  vfat  defaults  0  0
EOF
  echo "$hostname" >"$r/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' "$hostname" >"$r/etc/hosts"
  printf 'root::0:0:root:/root:/bin/sh\n' >"$r/etc/passwd"
  printf 'root:x:0:\n' >"$r/etc/group"
  printf 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nexport PS1='\''\\h:\\w\\$ '\''\n' >"$r/etc/profile"
  printf 'netbootd PC image (busybox), \\n \\l\nroot has no password: set one with passwd\n\n' >"$r/etc/issue"
  echo "netbootd PC image: kernel $kver, busybox $("$r/bin/busybox" 2>&1 | head -1 | awk '{print $2}'), built $(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$r/etc/netboot-image"
  if [ "$modules" -eq 1 ]; then
    mkdir -p "$r/lib/modules"
    cp -a "$kroot/lib/modules/$kver" "$r/lib/modules/"
  fi
else
  [ -e "$rootdir/sbin/init" ] || [ -L "$rootdir/sbin/init" ] || echo "build-pc-image: warning: $rootdir has no sbin/init (give init= with --cmdline)" >&2
  [ -d "$rootdir/lib/modules/$kver" ] || [ -d "$rootdir/usr/lib/modules/$kver" ] ||
    echo "build-pc-image: warning: $rootdir has no lib/modules/$kver: only the modules in the initramfs will be loaded (kernel $kver)" >&2
fi

need_kib=$(( $(du -sk "$rootdir" | cut -f1) * 11 / 10 + 80 * 1024 ))
[ $((root_sectors / 2)) -ge "$need_kib" ] || {
  echo "build-pc-image: the root files need about $((need_kib / 1024)) MiB; --size $size leaves $((root_sectors / 2048)) MiB" >&2
  exit 2
}

bash "$here/lib/pc-disk.sh" "$out" --kernel "$vmlinuz" --initrd "$work/initrd.img" --append "$cmdline root=/dev/nbd0p2" \
  --root-dir "$rootdir" --boot-sectors "$boot_sectors" --root-sectors "$root_sectors" --entry linux --fat-label NETBOOT --root-label root --ipappend 2
echo "build-pc-image: $out: Debian kernel $kver; next: netbootd prep $out --server THIS_SERVER --export NAME --config FILE" >&2
