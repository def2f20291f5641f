#!/usr/bin/env bash
# Installs the Debian packages netbootd's tests, demo and benchmarks use. Idempotent: it runs
# `apt-get update` once (only when something is missing) and installs only what is not installed yet.
# Peers that conflict with an installed package (tftpd-hpa vs atftpd) are unpacked into a private
# folder, $PEERS_DIR (default /opt/netbootd-peers), never installed system-wide.
set -euo pipefail

PACKAGES=(
  # building test images without mounting
  fdisk dosfstools mtools e2fsprogs xz-utils gzip fakeroot
  # TFTP peers: clients and reference servers
  atftp atftpd tftp-hpa curl busybox wget
  # NBD peers
  libnbd-bin qemu-utils fio nbdkit nbd-server nbd-client openssl
  # DHCP tests: namespaces and a real DHCP server/client; nftables: packet loss inside a namespace (the storm)
  iproute2 dnsmasq-base udhcpc nftables
  # e2e boots: QEMU with SeaBIOS + iPXE and OVMF, boot loaders, initramfs tools (the kernel and busybox-static
  # are not installed: scripts/e2e/fetch-debs.sh unpacks them into /var/cache/netbootd-e2e); ipxe: the iPXE
  # binaries (undionly.kpxe, ipxe.efi) that http.chainIpxe hands to plain PXE ROMs
  qemu-system-x86 ipxe-qemu ipxe ovmf pxelinux syslinux-common syslinux-efi cpio kmod
  # the status page's browser tests: Debian's Chromium, driven by playwright-core (never a downloaded browser)
  chromium
)
PEERS_DIR=${PEERS_DIR:-/opt/netbootd-peers}

# `--demo`: only what `npm start` needs (build the demo image without mounts, fetch a file by TFTP).
DEMO_ONLY=0
if [ "${1:-}" = "--demo" ]; then
  DEMO_ONLY=1
  PACKAGES=(fdisk dosfstools mtools e2fsprogs curl libnbd-bin)
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

updated=0
apt_update() {
  if [ "$updated" -eq 0 ]; then
    $SUDO apt-get update -q
    updated=1
  fi
}

if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-test-deps: installing ${missing[*]}"
  apt_update
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "install-test-deps: all ${#PACKAGES[@]} Debian packages present"
fi

if [ "$DEMO_ONLY" -eq 1 ]; then exit 0; fi

# tftpd-hpa conflicts with atftpd: unpack its in.tftpd privately for the TFTP benchmark.
if [ ! -x "$PEERS_DIR/tftpd-hpa/usr/sbin/in.tftpd" ]; then
  apt_update
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -q tftpd-hpa)
  $SUDO mkdir -p "$PEERS_DIR/tftpd-hpa"
  $SUDO dpkg-deb -x "$tmp"/tftpd-hpa_*.deb "$PEERS_DIR/tftpd-hpa"
  rm -rf "$tmp"
  echo "install-test-deps: unpacked tftpd-hpa into $PEERS_DIR/tftpd-hpa"
fi
