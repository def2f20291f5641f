#!/usr/bin/env bash
# The bundled demo (`npm start` builds, then runs this). Without root, mounts or loop devices it:
#   1. builds a Raspberry Pi OS style disk image (.demo/demo.img: FAT32 bootfs + ext4 rootfs),
#   2. makes it netbootable with `netbootd prep` (cmdline.txt → root on NBD from this server),
#   3. writes a config for one Pi (serial 12345678) on unprivileged ports, checks it with `netbootd check`,
#   4. runs `netbootd serve` in the foreground: TFTP on 6969, NBD on 10809, status on 9810, DHCP off
#      (proxy DHCP would answer real PXE clients on your network; enable it in a real config).
# Ctrl-C stops it. Environment: DEMO_TFTP_PORT, DEMO_NBD_PORT, DEMO_STATUS_PORT override the ports.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

missing=()
for tool in sfdisk mkfs.vfat mcopy mmd; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
image=.demo/demo.img
config=.demo/netbootd.yaml
tftp_port=${DEMO_TFTP_PORT:-6969}
nbd_port=${DEMO_NBD_PORT:-10809}
status_port=${DEMO_STATUS_PORT:-9810}
cli=dist/src/cli/main.js
if [ ! -f "$cli" ]; then
  echo "demo: $cli is missing; run: npm run build (npm start does it)" >&2
  exit 1
fi
netbootd() { node "$cli" "$@"; }
show() {
  printf '\n$ netbootd %s\n' "$*"
  netbootd "$@"
}

if [ ! -f "$image" ]; then
  if [ ${#missing[@]} -gt 0 ]; then
    echo "demo: missing tools to build the demo image: ${missing[*]}" >&2
    echo "run: bash scripts/install-test-deps.sh --demo" >&2
    exit 1
  fi
  mkdir -p .demo
  bash scripts/make-demo-image.sh "$image"
fi

cat > "$config" <<YAML
# netbootd demo config (written by scripts/demo.sh): one Raspberry Pi, unprivileged ports, no DHCP.
server:
  address: 127.0.0.1
  stateDir: state
dhcp: { enabled: false }
tftp: { address: 127.0.0.1, port: $tftp_port }
nbd: { address: 127.0.0.1, port: $nbd_port }
status: { port: $status_port }
images:
  demo: { path: demo.img, mode: cow }
pis:
  "12345678": { image: demo }
YAML

show ls "$image"
server=127.0.0.1
if [ "$nbd_port" != 10809 ]; then server="127.0.0.1:$nbd_port"; fi
show prep "$image" --export demo --server "$server" --root-partition 2
show check --config "$config"

cat <<EOT

Serving .demo/demo.img to the Pi with serial 12345678 (Ctrl-C stops). Try, in another terminal:
  curl -s tftp://127.0.0.1:$tftp_port/12345678/cmdline.txt           # a boot file, out of the FAT partition
  nbdinfo nbd://127.0.0.1:$nbd_port/demo                              # the same image over NBD
  node $cli status --config $config                    # clients and transfers
EOT
exec node "$cli" serve --config "$config"
