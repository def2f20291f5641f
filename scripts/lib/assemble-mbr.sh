#!/usr/bin/env bash
# Assembles a sparse MBR disk image from two file-system images, without mounts or loop devices:
# partition 1 FAT32 (type 0x0c), partition 2 Linux (type 0x83). Used by the demo and e2e image builders.
#   assemble-mbr.sh OUT --fat FILE START SECTORS --linux FILE START SECTORS [--bootable] [--id HEX8]
# START and SECTORS are in 512-byte sectors. The Linux FILE may be '-' (partition left empty).
set -euo pipefail

out=$1; shift
fat=""; fat_start=""; fat_sectors=""; ext=""; ext_start=""; ext_sectors=""; bootable=""; id=""
while [ $# -gt 0 ]; do
  case "$1" in
    --fat) fat=$2; fat_start=$3; fat_sectors=$4; shift 4 ;;
    --linux) ext=$2; ext_start=$3; ext_sectors=$4; shift 4 ;;
    --bootable) bootable=", bootable"; shift ;;
    --id) id=$2; shift 2 ;;
    *) echo "assemble-mbr: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$fat" ] && [ -n "$ext" ] || { echo "usage: assemble-mbr.sh OUT --fat FILE START SECTORS --linux FILE START SECTORS [--bootable] [--id HEX8]" >&2; exit 2; }

rm -f "$out"
truncate -s $(((ext_start + ext_sectors) * 512)) "$out"
{
  echo "label: dos"
  if [ -n "$id" ]; then echo "label-id: 0x$id"; fi
  echo "unit: sectors"
  echo "start=$fat_start, size=$fat_sectors, type=c$bootable"
  echo "start=$ext_start, size=$ext_sectors, type=83"
} | sfdisk --no-reread --no-tell-kernel -q "$out"
dd if="$fat" of="$out" bs=512 seek="$fat_start" conv=notrunc,sparse status=none
if [ "$ext" != "-" ]; then
  dd if="$ext" of="$out" bs=512 seek="$ext_start" conv=notrunc,sparse status=none
fi
