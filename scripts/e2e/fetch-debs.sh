#!/usr/bin/env bash
# Fetches the Debian packages the end-to-end boots need but that must not be installed on the test machine
# (a kernel: installing one in a container runs hooks; busybox-static: conflicts with busybox), unpacks
# them with dpkg-deb -x into a cache and prints the unpacked root. Idempotent: a second run only prints.
#   scripts/e2e/fetch-debs.sh            -> prints e.g. /var/cache/netbootd-e2e/root-6.1.0-56-amd64
# Cache folder: $NETBOOTD_E2E_CACHE (default /var/cache/netbootd-e2e). Kernel: $E2E_KERNEL_PKG, default the
# versioned package linux-image-amd64 depends on.
set -euo pipefail

CACHE=${NETBOOTD_E2E_CACHE:-/var/cache/netbootd-e2e}
mkdir -p "$CACHE"

kpkg=${E2E_KERNEL_PKG:-}
if [ -z "$kpkg" ]; then
  kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -1)
  if [ -z "$kpkg" ]; then
    apt-get update -q >&2
    kpkg=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -1)
  fi
fi
[ -n "$kpkg" ] || { echo "fetch-debs: cannot find the kernel package linux-image-amd64 depends on" >&2; exit 1; }
kver=${kpkg#linux-image-}
root="$CACHE/root-$kver"

if [ -f "$root/.complete" ]; then
  echo "$root"
  exit 0
fi

# One fetch at a time (a test run and a benchmark may start together on a fresh machine).
exec 9>"$CACHE/.lock"
flock 9
if [ -f "$root/.complete" ]; then
  echo "$root"
  exit 0
fi
tmp=$(mktemp -d "$CACHE/fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
echo "fetch-debs: downloading $kpkg busybox-static into $CACHE" >&2
# apt-get download writes into the current folder; _apt may not write there, hence -o APT::Sandbox::User=root.
(cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "$kpkg" busybox-static >&2) || {
  apt-get update -q >&2
  (cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "$kpkg" busybox-static >&2)
}
mkdir -p "$tmp/root"
for deb in "$tmp"/*.deb; do
  dpkg-deb -x "$deb" "$tmp/root"
  rm -f "$deb"
done
# The package's postinst would run depmod: do it here, in the unpacked tree.
depmod -b "$tmp/root" "$kver"
rm -rf "$root"
mv "$tmp/root" "$root"
touch "$root/.complete"
echo "$root"
