#!/usr/bin/env bash
# Memory and thread checkers on the stable toolchain (make check-memory; CI: --quick).
#
#  1. valgrind memcheck over the Rust test binaries of hornbeam-core and hornbeam-ffi (debug
#     build): no invalid read or write, no use of uninitialised memory, no definite leak.
#     (The timed complexity checks, core/tests/complexity.rs, exist in release builds only.)
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
# The shared suites run on the embedded engine only here (Redis round trips under valgrind are
# slow; make test runs them on Redis).
export HORNBEAM_TEST_REDIS=off
# Built first, on its own line, so a failed build stops the script (set -e does not see a failure
# inside a process substitution).
json=$(mktemp)
trap 'rm -f "$json"' EXIT
$CARGO test -p hornbeam-core -p hornbeam-ffi --no-run --message-format=json >"$json"
mapfile -t bins < <(python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        # loom_wake is empty without --cfg loom, complexity in debug builds; redis needs a server.
        if m["target"]["name"] not in ("loom_wake", "redis", "complexity"):
            print(m["executable"])
' <"$json")
[[ ${#bins[@]} -ge 4 ]] || { echo "expected at least 4 test binaries, found ${#bins[@]}"; exit 1; }
for bin in "${bins[@]}"; do
  echo "-- $(basename "$bin")"
  "${VG[@]}" --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite \
    "$bin" --test-threads 2 -q
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
