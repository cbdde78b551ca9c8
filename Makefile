# The Hornbeam engine. `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
CARGO ?= cargo
PYTEST := $(PY) -m pytest -q -p no:cacheprovider -W error --timeout 300
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: help venv install run test test-rust test-python test-examples test-browser test-c test-node \
        header header-check lint fmt bench bench-rust bench-python stress examples clean

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-16s %s\n", $$1, $$2}'

$(VENV)/.deps: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	touch $@

venv: $(VENV)/.deps ## Create .venv with the pinned Python dependencies

install: venv ## Build the engine (release) and install hornbeam_erlang into .venv
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release -q

run: install ## Start the demo (every example app) on http://127.0.0.1:8000
	$(VENV)/bin/uvicorn examples.demo.app:app --host $(HOST) --port $(PORT)

test: test-rust install test-python test-examples test-c test-node header-check ## Run every test
	@echo "make test: all suites passed"

test-rust: ## Rust unit, integration and doc tests
	$(CARGO) test --workspace --exclude hornbeam-python

test-python: install ## pytest: the hornbeam_erlang module
	$(PYTEST) python-bindings/tests

test-examples: install ## pytest: example apps on a real uvicorn, browser tests
	$(PYTEST) tests/py

stress: ## Long concurrency stress tests (ignored by default)
	$(CARGO) test --release --workspace --exclude hornbeam-python -- --ignored --test-threads 1

lint: ## cargo fmt --check, clippy -D warnings, header check, mypy stubtest
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(MAKE) header-check
	$(PY) -m mypy.stubtest hornbeam_erlang --allowlist python-bindings/stubtest-allowlist.txt

fmt: ## Format the Rust code
	$(CARGO) fmt --all

bench: bench-rust bench-python ## Every benchmark (criterion + Python + WebSocket)

bench-rust: ## Criterion benchmarks of core beside their baselines
	$(CARGO) bench -p hornbeam-benches

bench-python: install ## Python per-call and fan-out benchmarks
	$(PY) benches/python/bench_state.py
	$(PY) benches/python/bench_fanout.py

clean: ## Remove build outputs
	$(CARGO) clean
	rm -rf artifacts
