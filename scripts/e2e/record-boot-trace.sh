#!/usr/bin/env bash
# Records the NBD I/O of a real root-file-system boot, for bench/storm.ts's replay (bench/fixtures/boot-trace.txt).
#
#   scripts/e2e/record-boot-trace.sh IMAGE KERNEL INITRD OUT.txt
#
# IMAGE, KERNEL, INITRD: the e2e artifacts (test/e2e/artifacts.ts buildArtifacts: base.img, the Debian
# vmlinuz, the e2e initramfs). QEMU (TCG) boots the kernel and initramfs directly (no firmware, no PXE) on
# user-mode networking; the initramfs (scripts/e2e/init.sh) does what it does in every e2e boot: DHCP,
# nbd-client to nbdroot=, partition scan, mount the ext4 root, read /e2e-marker, write /boot-result and
# /boot-log, sync, umount, nbd-client -d, poweroff. The NBD server is nbdkit's file plugin behind its log
# filter (on a scratch copy of IMAGE, so the writes land nowhere that matters); every request it logs
# becomes one line of OUT: `R|W|F|T|Z offset length inflight` (hex offset and length; inflight = the
# requests outstanding when this one arrived, itself included, which the replay uses as its queue depth).
set -euo pipefail
[ $# -eq 4 ] || { echo "usage: $0 IMAGE KERNEL INITRD OUT.txt" >&2; exit 2; }
image=$1; kernel=$2; initrd=$3; out=$4
work=$(mktemp -d)
nbdkit_pid=""
cleanup() { [ -n "$nbdkit_pid" ] && kill "$nbdkit_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
[ -n "${KEEP_LOG:-}" ] && trap 'cp "$work/nbd.log" "$KEEP_LOG"; cleanup' EXIT
cp --sparse=always "$image" "$work/disk.img"
port=$(( 20000 + RANDOM % 20000 ))
nbdkit -f -i 127.0.0.1 -p "$port" --filter=log file "$work/disk.img" logfile="$work/nbd.log" &
nbdkit_pid=$!
sleep 1
# 10.0.2.2 is the host's loopback as QEMU's user-mode network shows it to the guest.
timeout 600 qemu-system-x86_64 -accel tcg -m 512 -display none -vga none -monitor none -serial stdio -no-reboot \
  -kernel "$kernel" -initrd "$initrd" \
  -append "console=ttyS0,115200 panic=-1 nbdroot=10.0.2.2:$port/e2e root=/dev/nbd0p2" \
  -netdev user,id=n0 -device e1000,netdev=n0 >"$work/console.log" 2>&1 || true
grep -q "E2E: .*DONE" "$work/console.log" || { echo "the boot did not finish:" >&2; grep -e "E2E:" -e "nbd" "$work/console.log" | tail -20 >&2; exit 1; }
grep 'E2E:' "$work/console.log" >&2
kill "$nbdkit_pid"; wait "$nbdkit_pid" 2>/dev/null || true; nbdkit_pid=""
# nbdkit 1.32 log lines: `... connection=N Read id=I offset=0x.. count=0x.. ...` and `... Read return id=I ...`.
awk '
  BEGIN { live = 0 }
  / \.\.\.(Read|Write|Flush|Trim|Zero) id=[0-9]+ / {
    for (i = 1; i <= NF; i++) if ($i ~ /^id=/) id = substr($i, 4)
    if (id in open) { delete open[id]; live-- }
    next
  }
  / (Read|Write|Flush|Trim|Zero) id=[0-9]+ / {
    off = "0"; cnt = "0"
    for (i = 1; i <= NF; i++) {
      if ($i ~ /^(Read|Write|Flush|Trim|Zero)$/) op = substr($i, 1, 1)
      if ($i ~ /^id=/) id = substr($i, 4)
      if ($i ~ /^offset=0x/) off = substr($i, 10)
      if ($i ~ /^count=0x/) cnt = substr($i, 9)
    }
    open[id] = 1; live++
    print op, off, cnt, live
  }
' "$work/nbd.log" >"$work/trace.txt"
{
  echo "# NBD requests of one e2e boot (scripts/e2e/record-boot-trace.sh, $(date -u +%Y-%m-%d), nbdkit log filter):"
  echo "# kernel $(basename "$kernel"), initramfs scripts/e2e/init.sh: partition scan, mount ext4 root, read marker,"
  echo "# write /boot-result, sync, umount. Lines: op offset(hex) length(hex) inflight-at-arrival."
  cat "$work/trace.txt"
} >"$out"
echo "record-boot-trace: $(grep -vc '^#' "$out") requests -> $out" >&2
