#!/usr/bin/env bash
# Memory and thread checkers on the stable toolchain (make check-memory; CI: --quick).
#
#  1. valgrind memcheck over the Rust test binaries of hornbeam-core and hornbeam-ffi (debug
#     build): no invalid read or write, no use of uninitialised memory, no definite leak.
#     --quick skips the two complexity tests (1,000,000 keys and 100,000 subscriptions), which
#     take minutes under valgrind.
#  2. helgrind and DRD over the threaded C test, against a libhornbeam built with the `valgrind`
#     feature (message hand-off annotated; tests/c/threads.supp says what else is hidden).
#  3. The C tests under memcheck and AddressSanitizer (make test-c), unless --quick (CI runs
#     them in make test).
# Exits non-zero on the first report.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[[ "${1:-}" == "--quick" ]] && quick=1
CARGO=${CARGO:-cargo}
VG=(valgrind -q --error-exitcode=99 --fair-sched=yes)

echo "== memcheck: Rust test binaries"
mapfile -t bins < <($CARGO test -p hornbeam-core -p hornbeam-ffi --no-run --message-format=json 2>/dev/null |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        # loom_wake is empty without --cfg loom; redis needs a server (make test-redis).
        if m["target"]["name"] not in ("loom_wake", "redis"):
            print(m["executable"])
')
[[ ${#bins[@]} -ge 4 ]] || { echo "expected at least 4 test binaries, found ${#bins[@]}"; exit 1; }
skip=()
[[ $quick == 1 ]] && skip=(--skip prefix_scan_cost --skip publish_cost)
for bin in "${bins[@]}"; do
  echo "-- $(basename "$bin")"
  "${VG[@]}" --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite \
    "$bin" --test-threads 2 -q "${skip[@]}"
done

echo "== helgrind and DRD: threaded C test"
$CARGO build --release -p hornbeam-ffi --features valgrind --target-dir target/valgrind
lib=$(pwd)/target/valgrind/release
mkdir -p target/ctest
cc -Wall -Wextra -Werror -std=c11 -D_POSIX_C_SOURCE=200809L -g -Iinclude -Itests/c \
  tests/c/test_threads.c -o target/ctest/test_threads-vg -L"$lib" -lhornbeam -Wl,-rpath,"$lib" -lpthread
for tool in helgrind drd; do
  echo "-- $tool"
  "${VG[@]}" --tool=$tool --suppressions=tests/c/threads.supp target/ctest/test_threads-vg
done

if [[ $quick == 0 ]]; then
  echo "== C tests: memcheck and AddressSanitizer"
  make --no-print-directory test-c
fi
echo "check-memory: no reports"
