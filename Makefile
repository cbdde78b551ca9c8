# The Hornbeam engine. `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
CARGO ?= cargo
PYTEST := $(PY) -m pytest -q -p no:cacheprovider -W error --timeout 300
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: help venv install run test test-rust test-python test-local test-redis redis-server test-examples test-c test-node lib install-lib test-install \
        header header-check test-header-check lint fmt stress-quick loom soak soak-quick bench bench-rust bench-python stress examples clean \
        fuzz fuzz-quick fuzz-tools test-fuzz check-memory check-memory-quick

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-16s %s\n", $$1, $$2}'

$(VENV)/.deps: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	touch $@

venv: $(VENV)/.deps ## Create .venv with the pinned Python dependencies

install: venv ## Build the engine (release) and install hornbeam_erlang into .venv (C library: make install-lib)
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release -q

run: install ## Start the demo (every example app) on http://127.0.0.1:8000
	$(VENV)/bin/uvicorn examples.demo.app:app --host $(HOST) --port $(PORT)

test: test-rust test-fuzz install test-python test-local test-redis test-examples test-c test-node test-wheel header-check test-header-check ## Run every test
	@echo "make test: all suites passed"

test-rust: redis-server ## Rust unit, integration and doc tests (the shared suites on every backend), complexity checks in release
	tests/with-redis.sh $(CARGO) test --workspace --exclude hornbeam-python
	$(CARGO) test --release -p hornbeam-core --test complexity

test-python: install ## pytest: the hornbeam_erlang module
	$(PYTEST) python-bindings/tests

test-examples: install redis-server ## pytest: example apps on a real uvicorn, browser tests
	$(PYTEST) tests/py

test-node: install ## Node: the official phoenix client and hornbeam.js against the channels server
	cd tests/node && npm ci --no-audit --no-fund --silent && HORNBEAM_PYTHON=$(abspath $(PY)) node --test

test-wheel: venv ## `pip install .` into a fresh venv: the wheel carries all four packages and stubs
	set -e; tmp=$$(mktemp -d); python3 -m venv $$tmp/venv; \
	  $$tmp/venv/bin/pip install -q . ; \
	  cd $$tmp && $$tmp/venv/bin/python -c "import hornbeam_erlang, hornbeam_channels, hornbeam_presence, hornbeam_ml, pathlib; \
	    p = pathlib.Path(hornbeam_erlang.__file__).parent; assert (p / '__init__.pyi').exists() and (p / 'py.typed').exists(); \
	    assert (pathlib.Path(hornbeam_channels.__file__).parent / 'static' / 'hornbeam.js').exists(); \
	    assert (pathlib.Path(hornbeam_ml.__file__).parent / 'py.typed').exists(); \
	    hornbeam_erlang.state_set('k', {'a': 1}); assert hornbeam_erlang.state_get('k') == {'a': 1}; print('test-wheel: pip install . works')"; \
	  rm -rf $$tmp

redis-server: ## Install redis-server when missing (Debian package)
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }

test-redis: redis-server install ## The Python suite on a private redis-server (free port, stopped by PID; test-rust runs core's)
	tests/with-redis.sh bash -c 'HORNBEAM_URL=$$HORNBEAM_TEST_REDIS_URL $(PYTEST) python-bindings/tests'

test-local: install ## The core and Python suites on local:// (LMDB in a fresh directory, removed after)
	HORNBEAM_TEST_REDIS=off $(CARGO) test -p hornbeam-core --test local --test store --test bus
	set -e; dir=$$(mktemp -d); trap 'rm -rf $$dir' EXIT; \
	  HORNBEAM_URL=local://$$dir $(PYTEST) python-bindings/tests

soak: install ## Soak the WebSocket chat: 1,000 clients for 2 minutes (RSS flat, no loss, no fd leak)
	$(PY) tests/soak/soak_chat.py

soak-quick: install ## The soak test in short (100 clients, 15 s): CI's version of `make soak`
	$(PY) tests/soak/soak_chat.py --quick

stress: ## Long concurrency stress tests (ignored by default)
	$(CARGO) test --release --workspace --exclude hornbeam-python -- --ignored --test-threads 1

loom: ## Loom model checks of core's synchronisation protocols (core/src/sync.rs; core/tests/loom_*.rs)
	RUSTFLAGS="--cfg loom" $(CARGO) test --release -p hornbeam-core --test loom_wake --test loom_sync --target-dir target/loom

# Fuzzing. cargo-fuzz on the stable toolchain: RUSTC_BOOTSTRAP=1 lets it pass -Zsanitizer=address
# (the AddressSanitizer runtime ships with stable Rust). Corpora grow under target/fuzz/corpus;
# the seeds (fuzz/seeds) and every input a fuzzer found (fuzz/regressions) are committed and
# replayed by `make test-fuzz`. Crashes land in fuzz/artifacts/<target>/.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := msgpack_value topics store_model mailbox_model
CARGO_FUZZ := RUSTC_BOOTSTRAP=1 $(CARGO) fuzz
FUZZ_FLAGS := --fuzz-dir fuzz --target-dir $(abspath target/fuzz) -O

fuzz-tools: ## Install the pinned cargo-fuzz when missing
	@$(CARGO) fuzz --version 2>/dev/null | grep -q '0.13.1' || $(CARGO) install cargo-fuzz --version 0.13.1 --locked --quiet

fuzz: fuzz-tools install ## Fuzz every target for FUZZ_SECONDS each (default 60): cargo-fuzz (Rust) then atheris (Python)
	$(CARGO_FUZZ) build $(FUZZ_FLAGS)
	set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p target/fuzz/corpus/$$t; echo "== cargo fuzz: $$t ($(FUZZ_SECONDS) s)"; \
	  $(CARGO_FUZZ) run $(FUZZ_FLAGS) $$t target/fuzz/corpus/$$t fuzz/seeds/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 2>&1 | grep -E -A2 '^(Done|stat::number_of_executed_units)|panicked|SUMMARY|artifact'; \
	  test $${PIPESTATUS[0]} -eq 0; \
	done
	$(PY) fuzz/python/run.py --seconds $(FUZZ_SECONDS)

fuzz-quick: ## CI's short fuzzing run (15 s per target)
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=15

test-fuzz: ## Replay the fuzz seeds and every input a fuzzer found through the targets' checks
	$(CARGO) test --manifest-path fuzz/Cargo.toml --target-dir $(abspath target) -q

check-memory: ## valgrind memcheck over the Rust tests, helgrind + DRD over threaded C, C tests under memcheck and ASan
	tests/check-memory.sh

check-memory-quick: ## CI's version of check-memory (skips the two complexity tests and the C suite make test runs)
	tests/check-memory.sh --quick

stress-quick: ## The stress tests once, in release mode (CI's short version of `make stress`)
	$(CARGO) test --release -p hornbeam-core --test stress -- --ignored --test-threads 1

lint: install ## cargo fmt --check, clippy -D warnings, header check, mypy stubtest, mypy --strict
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --manifest-path fuzz/Cargo.toml --target-dir $(abspath target) --all-targets -- -D warnings
	RUSTFLAGS="--cfg loom" $(CARGO) clippy -p hornbeam-core --tests --target-dir target/loom -- -D warnings
	$(MAKE) header-check
	$(PY) -m mypy.stubtest hornbeam_erlang
	$(PY) -m mypy --strict -p hornbeam_channels -p hornbeam_presence

fmt: ## Format the Rust code
	$(CARGO) fmt --all
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml

bench: install redis-server ## Every benchmark, beside its baseline, written into BENCHMARKS.md (about an hour; a quiet machine)
	PY=$(PY) python3 benches/write_benchmarks.py

bench-rust: ## Criterion benchmarks of core beside their baselines (printed, BENCHMARKS.md untouched)
	$(CARGO) bench -p hornbeam-benches --benches -- --noplot
	python3 benches/report.py

bench-python: install redis-server ## The Python, fan-out and many-workers sections of BENCHMARKS.md, re-run
	PY=$(PY) python3 benches/write_benchmarks.py --only python-per-call python-redis-per-call python-fanout redis-fanout local watch

CFLAGS_C := -Wall -Wextra -Werror -std=c11 -D_POSIX_C_SOURCE=200809L -g -Iinclude -Itests/c
LIBDIR := $(abspath target/release)
C_TESTS := test_store test_bus test_watch test_threads test_calls
CTEST_DIR := target/ctest

lib: ## Build libhornbeam (shared and static) in target/release
	$(CARGO) build --release -p hornbeam-ffi

header: ## Regenerate include/hornbeam.h from ffi/ with cbindgen
	cbindgen --quiet --config ffi/cbindgen.toml --crate hornbeam-ffi --output include/hornbeam.h ffi

header-check: ## Fail when include/hornbeam.h differs from what the pinned cbindgen generates (or cbindgen is missing, another version, failing)
	tests/header-check.sh

test-header-check: ## Prove the header check fails: on a stale copy, a missing, wrong or failing cbindgen
	tests/test-header-check.sh

test-c: lib ## C tests (-Wall -Wextra -Werror) under valgrind and AddressSanitizer
	mkdir -p $(CTEST_DIR)
	set -e; for t in $(C_TESTS); do \
	  cc $(CFLAGS_C) tests/c/$$t.c -o $(CTEST_DIR)/$$t -L$(LIBDIR) -lhornbeam -Wl,-rpath,$(LIBDIR) -lpthread; \
	  echo "== $$t (valgrind)"; \
	  valgrind -q --error-exitcode=1 --child-silent-after-fork=yes --leak-check=full --errors-for-leak-kinds=definite,indirect \
	    --show-leak-kinds=definite,indirect $(CTEST_DIR)/$$t; \
	  cc $(CFLAGS_C) -fsanitize=address,undefined -fno-omit-frame-pointer tests/c/$$t.c -o $(CTEST_DIR)/$$t-asan \
	    -L$(LIBDIR) -lhornbeam -Wl,-rpath,$(LIBDIR) -lpthread; \
	  echo "== $$t (AddressSanitizer)"; \
	  ASAN_OPTIONS=detect_leaks=1 $(CTEST_DIR)/$$t-asan; \
	done
	$(MAKE) --no-print-directory examples
	valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect target/examples/sensor_hub < /dev/null
	$(MAKE) --no-print-directory test-install

PREFIX ?= /usr/local
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

install-lib: lib ## Install header, libraries and hornbeam.pc under PREFIX (default /usr/local)
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 include/hornbeam.h $(DESTDIR)$(PREFIX)/include/
	install -m 755 target/release/libhornbeam.so $(DESTDIR)$(PREFIX)/lib/
	install -m 644 target/release/libhornbeam.a $(DESTDIR)$(PREFIX)/lib/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' ffi/hornbeam.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/hornbeam.pc

examples: lib ## Build the C examples into target/examples
	mkdir -p target/examples
	cc $(CFLAGS_C) examples/c/sensor_hub.c -o target/examples/sensor_hub -L$(LIBDIR) -lhornbeam -Wl,-rpath,$(LIBDIR) -lpthread

test-install: lib ## Install into a temporary PREFIX and build the example with pkg-config
	set -e; tmp=$$(mktemp -d); $(MAKE) --no-print-directory install-lib PREFIX=$$tmp; \
	  PKG_CONFIG_PATH=$$tmp/lib/pkgconfig cc -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror \
	    examples/c/sensor_hub.c -o $$tmp/sensor_hub $$(PKG_CONFIG_PATH=$$tmp/lib/pkgconfig pkg-config --cflags --libs hornbeam) \
	    -Wl,-rpath,$$tmp/lib -lpthread; \
	  $$tmp/sensor_hub < /dev/null > $$tmp/out; tail -1 $$tmp/out; rm -rf $$tmp

clean: ## Remove build outputs
	$(CARGO) clean
	rm -rf artifacts
