#!/usr/bin/env bash
# Proves that tests/header-check.sh can fail: against the real header it passes; against a
# deliberately stale copy, a missing cbindgen, another cbindgen version and a failing cbindgen it
# must exit non-zero with its message.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0

expect_fail() { # name, expected message, command...
  local name=$1 want=$2; shift 2
  if "$@" >"$tmp/out" 2>&1; then
    echo "FAIL: $name: the header check passed"; failures=$((failures + 1))
  elif ! grep -q -- "$want" "$tmp/out"; then
    echo "FAIL: $name: no '$want' in:"; cat "$tmp/out"; failures=$((failures + 1))
  else
    echo "ok: $name fails ($want)"
  fi
}

tests/header-check.sh >/dev/null

sed '0,/hb_/s//hb_stale_/' include/hornbeam.h >"$tmp/stale.h"
! cmp -s include/hornbeam.h "$tmp/stale.h"
expect_fail "a stale header" "is stale: run make header" tests/header-check.sh "$tmp/stale.h"

cp include/hornbeam.h "$tmp/extra.h"; echo "int hb_removed_function(void);" >>"$tmp/extra.h"
expect_fail "a header with an extra declaration" "is stale" tests/header-check.sh "$tmp/extra.h"

expect_fail "a missing cbindgen" "is not installed" env CBINDGEN="$tmp/no-such-cbindgen" tests/header-check.sh

printf '#!/bin/sh\necho "cbindgen 0.26.0"\n' >"$tmp/old-cbindgen"; chmod +x "$tmp/old-cbindgen"
expect_fail "another cbindgen version" "0.29.0 required" env CBINDGEN="$tmp/old-cbindgen" tests/header-check.sh

printf '#!/bin/sh\ncase "$1" in --version) echo "cbindgen 0.29.0";; *) echo boom >&2; exit 3;; esac\n' >"$tmp/bad-cbindgen"
chmod +x "$tmp/bad-cbindgen"
expect_fail "a failing cbindgen" "cbindgen failed" env CBINDGEN="$tmp/bad-cbindgen" tests/header-check.sh

if [[ $failures -gt 0 ]]; then
  echo "test-header-check: $failures checks could not fail"; exit 1
fi
echo "test-header-check: the header check fails on every bad input"
