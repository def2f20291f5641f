#!/usr/bin/env bash
# The bundled demo (`npm start` builds, then runs this): looks inside a Raspberry Pi OS style disk image
# without mounting it. Later issues replace this with the daemon serving the same image.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

missing=()
for tool in sfdisk mkfs.vfat mcopy mmd; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
image=.demo/demo.img
if [ ! -f "$image" ]; then
  if [ ${#missing[@]} -gt 0 ]; then
    echo "demo: missing tools to build the demo image: ${missing[*]}" >&2
    echo "run: bash scripts/install-test-deps.sh" >&2
    exit 1
  fi
  mkdir -p .demo
  bash scripts/make-demo-image.sh "$image"
fi
cli=dist/src/cli/main.js
if [ ! -f "$cli" ]; then
  echo "demo: $cli is missing; run: npm run build (npm start does it)" >&2
  exit 1
fi

show() {
  printf '\n$ netbootd %s\n' "$*"
  node "$cli" "$@"
}
show ls "$image"
show ls "$image" 1:/
show cat "$image" 1:/cmdline.txt
