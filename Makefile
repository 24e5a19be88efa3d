# kcpvpn — the commands that matter. Everything runs from a virtualenv in .venv
# so the system Python stays untouched; `make dev` creates it.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
CARGO_MANIFEST := daemon/Cargo.toml
# The lab's own native workspace (the link emulator, kcpvpn_lab._emulator): not part of the product.
LAB_MANIFEST := lab/native/Cargo.toml
export CARGO_TARGET_DIR ?= $(CURDIR)/daemon/target

.PHONY: dev deps venv build test test-rust test-python lint fmt fuzz bench bench-criterion bench-quick lab clean

dev: deps venv build          ## set up everything on a fresh Debian machine

deps:                         ## Debian packages the tests and the lab use
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=$$(for p in iproute2 iperf3 iputils-ping nftables ethtool tcpdump; do \
	    dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi; \
	fi

venv:
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "maturin>=1.7,<2" typer rich pyroute2 pytest pytest-xdist pytest-timeout hypothesis scapy ruff tomli-w matplotlib

build:                        ## build the product, then the lab (each native, release) into the venv
	$(VENV)/bin/maturin develop --release -q
	cd lab && VIRTUAL_ENV=$(abspath $(VENV)) $(abspath $(VENV))/bin/maturin develop --release -q

test: test-rust test-python   ## every test: Rust unit/differential/simulation tests, then pytest

test-rust:
	cargo test --manifest-path $(CARGO_MANIFEST) --workspace --release
	cargo test --manifest-path $(LAB_MANIFEST) --workspace --release

test-python:
	$(PY) -m pytest -n 2 tests

lint:
	cargo fmt --manifest-path $(CARGO_MANIFEST) --all -- --check
	cargo clippy --manifest-path $(CARGO_MANIFEST) --workspace --all-targets --release -- -D warnings
	cargo fmt --manifest-path $(LAB_MANIFEST) --all -- --check
	cargo clippy --manifest-path $(LAB_MANIFEST) --workspace --all-targets --release -- -D warnings
	$(VENV)/bin/ruff check daemon/kcpvpn lab tests
	$(VENV)/bin/ruff format --check daemon/kcpvpn lab tests

fmt:
	cargo fmt --manifest-path $(CARGO_MANIFEST) --all
	cargo fmt --manifest-path $(LAB_MANIFEST) --all
	$(VENV)/bin/ruff format daemon/kcpvpn lab tests
	$(VENV)/bin/ruff check --fix daemon/kcpvpn lab tests

FUZZ_SECONDS ?= 60
fuzz:                         ## run every fuzz target for FUZZ_SECONDS each
	./daemon/fuzz/run.sh $(FUZZ_SECONDS)

bench-criterion:              ## criterion benchmarks of the protocol machinery and the lab's emulator
	cargo bench --manifest-path $(CARGO_MANIFEST) --workspace
	cargo bench --manifest-path $(LAB_MANIFEST) --workspace

bench-quick:                  ## iperf3 through the tunnel on a clean link: Mbit/s and CPU-s/GB
	$(PY) -m kcpvpn_lab.bench_quick

BENCH_ARGS ?=
bench:                        ## kcpvpn vs no tunnel vs wireguard-go: bench-results/<time>/report.md (root)
	$(PY) -m kcpvpn_lab.bench $(BENCH_ARGS)

LAB_ARGS ?=
lab:                          ## the demo: a server and two clients over a lossy emulated link (root)
	$(VENV)/bin/kcpvpn lab demo $(LAB_ARGS)

clean:
	rm -rf daemon/target $(VENV)
