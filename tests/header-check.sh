#!/usr/bin/env bash
# Fails unless HEADER (default include/hornbeam.h) is exactly what the pinned cbindgen generates
# from ffi/: a stale header, a missing cbindgen, another cbindgen version, or a failing cbindgen
# are all failures. `make header` regenerates the header. CBINDGEN overrides the binary (tests).
set -euo pipefail
cd "$(dirname "$0")/.."
header=${1:-include/hornbeam.h}
pinned=0.29.0
cbindgen=${CBINDGEN:-cbindgen}
install="cargo install cbindgen --version $pinned --locked"

if ! command -v "$cbindgen" >/dev/null 2>&1; then
  echo "header-check: $cbindgen is not installed: $install" >&2
  exit 1
fi
version=$("$cbindgen" --version 2>/dev/null | awk '{print $2}') || version=""
if [[ "$version" != "$pinned" ]]; then
  echo "header-check: cbindgen ${version:-(no version)} found, $pinned required (another version formats differently): $install" >&2
  exit 1
fi
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
if ! "$cbindgen" --quiet --config ffi/cbindgen.toml --crate hornbeam-ffi --output "$tmp" ffi; then
  echo "header-check: cbindgen failed on ffi/" >&2
  exit 1
fi
if ! diff -u "$header" "$tmp" >&2; then
  echo "header-check: $header is stale: run make header" >&2
  exit 1
fi
echo "header-check: $header is up to date"
