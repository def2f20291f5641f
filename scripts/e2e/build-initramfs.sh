#!/usr/bin/env bash
# Builds the end-to-end test initramfs (cpio newc, gzip): busybox-static, Debian's nbd-client with the
# shared libraries ldd lists, the kernel modules the boot needs (nbd with max_part=8, e1000, virtio-net,
# ext4, vfat and their dependencies, in load order) and scripts/e2e/init.sh as /init.
#   scripts/e2e/build-initramfs.sh [--boot] OUT.img [KERNEL_ROOT]
# KERNEL_ROOT: a folder with lib/modules/<version>/ and bin/busybox (default: what fetch-debs.sh prints).
# --boot: a real system's initramfs (scripts/build-pc-image.sh): after mounting the root over NBD, init.sh
# hands over to the root's /sbin/init (switch_root) instead of running the end-to-end test steps.
# No root needed beyond reading files; no mounts.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
mode=e2e
args=()
for a in "$@"; do
  if [ "$a" = --boot ]; then mode=boot; else args+=("$a"); fi
done
set -- "${args[@]}"
out=${1:?usage: build-initramfs.sh [--boot] OUT.img [KERNEL_ROOT]}
kroot=${2:-$("$here/fetch-debs.sh")}
kver=$(ls "$kroot/lib/modules" | head -1)
[ -n "$kver" ] || { echo "build-initramfs: no lib/modules in $kroot" >&2; exit 1; }
[ -x "$kroot/bin/busybox" ] || { echo "build-initramfs: no busybox-static in $kroot/bin" >&2; exit 1; }
nbdclient=$(command -v nbd-client || echo /usr/sbin/nbd-client)
[ -x "$nbdclient" ] || { echo "build-initramfs: nbd-client not installed" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ir="$work/root"
mkdir -p "$ir"/{bin,sbin,etc,proc,sys,dev,tmp,run,newroot,bootpart,lib,lib64}

# busybox-static and its applets as symlinks.
cp "$kroot/bin/busybox" "$ir/bin/busybox"
for applet in $("$ir/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$ir/bin/$applet"
done

# nbd-client and the shared libraries it links (paths kept as ldd prints them, plus the loader).
cp "$nbdclient" "$ir/sbin/nbd-client"
ldd "$nbdclient" | awk '/=> \//{print $3} /^\t\/.*ld-linux/{print $1}' | while read -r lib; do
  mkdir -p "$ir$(dirname "$lib")"
  cp -L "$lib" "$ir$lib"
done
# /lib64/ld-linux-x86-64.so.2 must exist at the path compiled into the binary.
interp=$(readelf -l "$nbdclient" 2>/dev/null | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p' || true)
if [ -n "$interp" ] && [ ! -e "$ir$interp" ]; then
  mkdir -p "$ir$(dirname "$interp")"
  cp -L "$interp" "$ir$interp"
fi

# Modules, dependencies first, each once. modprobe --show-depends prints `insmod PATH OPTS` lines in load
# order (or `builtin NAME` for built-in ones). crc32c before ext4 (ext4's softdep, invisible to insmod).
modlist="$work/modules"
: >"$modlist"
mods="crc32c_generic nbd e1000 virtio_pci virtio_net ext4 nls_cp437 nls_ascii nls_utf8 nls_iso8859-1 vfat"
# A real system's initramfs: the wired NIC drivers of common PCs too (those this kernel has).
[ "$mode" = boot ] && mods="$mods e1000e igb igc r8169 realtek tg3 bnx2 bnxt_en ixgbe i40e atlantic alx sky2 forcedeth 8139too r8152"
for m in $mods; do
  modprobe -d "$kroot" -S "$kver" --show-depends "$m" >/dev/null 2>&1 || { echo "build-initramfs: kernel $kver has no module $m" >&2; continue; }
  modprobe -d "$kroot" -S "$kver" --show-depends "$m" | while read -r kind path opts; do
    [ "$kind" = insmod ] || continue
    rel=${path#"$kroot"}
    grep -q "^$rel " "$modlist" 2>/dev/null || grep -qx "$rel" "$modlist" || {
      [ "$m" = nbd ] && [ "${rel##*/}" = nbd.ko ] && opts="max_part=8"
      echo "$rel $opts" >>"$modlist"
    }
  done
done
while read -r rel _; do
  mkdir -p "$ir$(dirname "$rel")"
  cp "$kroot$rel" "$ir$rel"
done <"$modlist"
cp "$modlist" "$ir/etc/e2e-modules"

install -m 755 "$here/init.sh" "$ir/init"
# e2e.growinitrd=1 (the HTTP boot copy-on-write test): a second, uncompressed cpio archive that init.sh
# appends to initrd.img on the boot partition over NBD. The kernel unpacks concatenated archives, so the
# next boot that loads the grown file finds /e2e-initrd-marker in its initramfs.
if [ "$mode" = e2e ]; then
  mkdir -p "$work/grow"
  echo "appended over NBD by boot 1" >"$work/grow/e2e-initrd-marker"
  (cd "$work/grow" && echo e2e-initrd-marker | cpio -o -H newc --quiet -R 0:0) >"$ir/etc/e2e-grow.cpio"
fi
echo "$mode" >"$ir/etc/initramfs-mode"
install -m 755 "$here/udhcpc.script" "$ir/etc/udhcpc.script"

mkdir -p "$(dirname "$out")"
(cd "$ir" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) | gzip -9 >"$out.tmp"
mv "$out.tmp" "$out"
echo "build-initramfs: $out ($(stat -c %s "$out") bytes, kernel $kver, $(wc -l <"$modlist") modules, $mode mode)" >&2
