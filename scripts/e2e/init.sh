#!/bin/sh
# /init of the end-to-end test initramfs (built by scripts/e2e/build-initramfs.sh). It plays the part of a
# real root-on-NBD boot and reports each step on the serial console as `E2E: ...` lines:
#   modules -> DHCP (udhcpc) -> nbd-client to nbdroot= -> mount root= (ext4) -> check /e2e-marker
#   -> write /boot-result -> [e2e.rewrite=1: rewrite pxelinux.cfg/default on partition 1 (vfat)]
#   -> sync, umount, nbd-client -d -> poweroff.
# Kernel arguments read: nbdroot=SERVER[:PORT]/EXPORT, root=/dev/nbd0pN (default /dev/nbd0p2),
# e2e.rewrite=1 (boot 1 of the stale-boot-partition test), e2e.bootpart=/dev/nbd0pN (default /dev/nbd0p1),
# e2e.growinitrd=1 (the HTTP boot copy-on-write test: unless this initramfs already holds
# /e2e-initrd-marker, append /etc/e2e-grow.cpio, which holds it, to initrd.img on the boot partition).
#
# Built with `build-initramfs.sh --boot` (/etc/initramfs-mode says `boot`; scripts/build-pc-image.sh) it is a
# real system's initramfs: the same steps up to mounting root= over NBD, then it moves /dev into the root
# and hands over to the root's init (init= on the command line, default /sbin/init) with switch_root.
# Progress lines then read `netboot: ...`; on a failure it says why and starts a shell on the console.
export PATH=/bin:/sbin
MODE=e2e
[ -f /etc/initramfs-mode ] && read -r MODE </etc/initramfs-mode
TAG=E2E
[ "$MODE" = boot ] && TAG=netboot

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /tmp /run /newroot /bootpart

say() { read -r up _ </proc/uptime; echo "$TAG: [$up] $*"; }
finish() {
  sync
  say "POWEROFF $1"
  poweroff -f
  sleep 30
}
fail() {
  say "FAIL $*"
  if [ "$MODE" = boot ]; then
    echo "netboot: cannot boot; a shell follows (the kernel command line is the APPEND line of pxelinux.cfg/default)"
    exec sh </dev/console >/dev/console 2>&1
  fi
  umount /bootpart 2>/dev/null
  umount /newroot 2>/dev/null
  nbd-client -d /dev/nbd0 >/dev/null 2>&1
  finish failed
}

say "INIT kernel $(uname -r)"
echo 1 >/proc/sys/kernel/printk 2>/dev/null

# Modules in dependency order, with their options (nbd max_part=8), listed at build time.
while read -r path opts; do
  [ -n "$path" ] || continue
  insmod "$path" $opts 2>/tmp/insmod.err || {
    # File exists: built in or loaded; No such device: e.g. crc32c-intel without SSE4.2 under TCG.
    grep -q -e 'File exists' -e 'No such device' /tmp/insmod.err || say "insmod $path failed: $(cat /tmp/insmod.err)"
  }
done </etc/e2e-modules
say "MODULES loaded"

NBDROOT=""; ROOTDEV=/dev/nbd0p2; REWRITE=""; BOOTPART=/dev/nbd0p1; INIT=/sbin/init; GROW=""
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    init=*) INIT=${arg#init=} ;;
    nbdroot=*) NBDROOT=${arg#nbdroot=} ;;
    root=*) ROOTDEV=${arg#root=} ;;
    e2e.rewrite=*) REWRITE=${arg#e2e.rewrite=} ;;
    e2e.bootpart=*) BOOTPART=${arg#e2e.bootpart=} ;;
    e2e.growinitrd=*) GROW=${arg#e2e.growinitrd=} ;;
  esac
done
[ -n "$NBDROOT" ] || fail "no nbdroot= on the kernel command line"

# NIC: the one the PC booted from when the boot loader says (BOOTIF=01-aa-bb-cc-dd-ee-ff, PXELINUX's
# IPAPPEND 2), else the first non-loopback interface the drivers registered.
BOOTMAC=""
for arg in $(cat /proc/cmdline); do
  case "$arg" in BOOTIF=01-*) BOOTMAC=$(echo "${arg#BOOTIF=01-}" | tr 'A-F-' 'a-f:') ;; esac
done
IFACE=""
i=0
while [ $i -lt 50 ]; do
  for n in /sys/class/net/*; do
    n=${n##*/}
    [ "$n" = lo ] && continue
    if [ -n "$BOOTMAC" ]; then
      [ "$(cat /sys/class/net/$n/address)" = "$BOOTMAC" ] && { IFACE=$n; break; }
    else
      IFACE=$n; break
    fi
  done
  [ -n "$IFACE" ] && break
  sleep 0.2
  i=$((i + 1))
done
if [ -z "$IFACE" ] && [ -n "$BOOTMAC" ]; then
  say "no interface with the boot MAC $BOOTMAC; taking the first one"
  for n in /sys/class/net/*; do n=${n##*/}; [ "$n" = lo ] || { IFACE=$n; break; }; done
fi
[ -n "$IFACE" ] || fail "no network interface"
ip link set lo up
ip link set "$IFACE" up
say "DHCP on $IFACE mac $(cat /sys/class/net/$IFACE/address)"
udhcpc -i "$IFACE" -s /etc/udhcpc.script -n -q -f -t 10 -T 2 >/tmp/udhcpc.log 2>&1 || fail "DHCP: $(cat /tmp/udhcpc.log)"
ADDR=$(ip -4 -o addr show dev "$IFACE" | awk '{print $4}')
say "ADDRESS $ADDR"

# nbdroot=SERVER/EXPORT or SERVER:PORT/EXPORT
HOSTPORT=${NBDROOT%%/*}
EXPORT=${NBDROOT#*/}
[ "$EXPORT" != "$NBDROOT" ] && [ -n "$EXPORT" ] || fail "nbdroot=$NBDROOT has no export name"
HOST=${HOSTPORT%%:*}
PORT=10809
case "$HOSTPORT" in *:*) PORT=${HOSTPORT#*:} ;; esac
say "NBD connect $HOST port $PORT export $EXPORT"
nbd-client -N "$EXPORT" "$HOST" "$PORT" /dev/nbd0 -b 512 >/tmp/nbd.log 2>&1 || fail "nbd-client: $(cat /tmp/nbd.log)"
# Connected through netlink, the kernel scans the partition table at the device's first open.
dd if=/dev/nbd0 of=/dev/null bs=512 count=1 2>/dev/null
i=0
while [ ! -b "$ROOTDEV" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
[ -b "$ROOTDEV" ] || { blockdev --rereadpt /dev/nbd0 2>/dev/null; sleep 1; }
[ -b "$ROOTDEV" ] || fail "$ROOTDEV did not appear (partitions: $(ls /dev | grep nbd0 | tr '\n' ' '))"
say "NBD attached $(cat /sys/block/nbd0/size) sectors"

mount -t ext4 "$ROOTDEV" /newroot 2>/tmp/mount.err || fail "mount $ROOTDEV: $(cat /tmp/mount.err)"
if [ "$MODE" = boot ]; then
  [ -x "/newroot$INIT" ] || fail "$ROOTDEV has no executable $INIT (give init= on the command line)"
  [ -f /etc/resolv.conf ] && [ -d /newroot/etc ] && [ ! -s /newroot/etc/resolv.conf ] && cp /etc/resolv.conf /newroot/etc/resolv.conf 2>/dev/null
  say "ROOT $ROOTDEV mounted over NBD from $HOST:$PORT/$EXPORT; starting $INIT"
  # The NBD connection is the kernel's (netlink): it outlives this process and the initramfs.
  if [ -d /newroot/dev ]; then mount --move /dev /newroot/dev; else umount /dev 2>/dev/null; fi
  umount /sys /proc
  exec switch_root /newroot "$INIT"
fi
[ -f /newroot/e2e-marker ] || fail "marker /e2e-marker missing on $ROOTDEV"
say "MARKER $(cat /newroot/e2e-marker)"
{
  echo "cmdline: $(cat /proc/cmdline)"
  echo "address: $ADDR"
  echo "mac: $(cat /sys/class/net/$IFACE/address)"
  echo "marker: $(cat /newroot/e2e-marker)"
  echo "initrd-marker: $(cat /e2e-initrd-marker 2>/dev/null || echo none)"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "uptime: $(cut -d' ' -f1 /proc/uptime)"
} >/newroot/boot-result || fail "cannot write /boot-result"
# A per-boot log too, so that successive boots of one image can be told apart.
cat /newroot/boot-result >>/newroot/boot-log
sync
say "WROTE /boot-result"

if [ "$REWRITE" = 1 ]; then
  mount -t vfat "$BOOTPART" /bootpart 2>/tmp/mount.err || fail "mount $BOOTPART: $(cat /tmp/mount.err)"
  CFG=/bootpart/pxelinux.cfg/default
  [ -f "$CFG" ] || fail "$CFG missing"
  sed 's/ e2e\.rewrite=1/ e2e.second=1/' "$CFG" >/tmp/cfg.new
  grep -q 'e2e.second=1' /tmp/cfg.new || fail "rewrite of $CFG changed nothing"
  cat /tmp/cfg.new >"$CFG"
  sync
  umount /bootpart || fail "umount $BOOTPART"
  say "REWROTE pxelinux.cfg/default"
fi

if [ "$GROW" = 1 ] && [ ! -f /e2e-initrd-marker ]; then
  mount -t vfat "$BOOTPART" /bootpart 2>/tmp/mount.err || fail "mount $BOOTPART: $(cat /tmp/mount.err)"
  IRD=/bootpart/initrd.img
  [ -f "$IRD" ] || fail "$IRD missing"
  # An uncompressed archive must start 4-byte aligned (the kernel skips the zero padding).
  size=$(stat -c %s "$IRD")
  pad=$(( (4 - size % 4) % 4 ))
  [ "$pad" -eq 0 ] || head -c "$pad" /dev/zero >>"$IRD"
  cat /etc/e2e-grow.cpio >>"$IRD" || fail "append to $IRD"
  sync
  size=$(stat -c %s "$IRD")
  umount /bootpart || fail "umount $BOOTPART"
  say "GREW initrd.img to $size bytes"
fi

umount /newroot || fail "umount $ROOTDEV"
sync
nbd-client -d /dev/nbd0 >/dev/null 2>&1
say "DONE"
finish ok
