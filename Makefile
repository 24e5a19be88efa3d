# kcpvpn — the commands that matter. Everything runs from a virtualenv in .venv
# so the system Python stays untouched; `make dev` creates it.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
CARGO_MANIFEST := daemon/Cargo.toml
# The lab's own native workspace (the link emulator, kcpvpn_lab._emulator): not part of the product.
LAB_MANIFEST := lab/native/Cargo.toml
export CARGO_TARGET_DIR ?= $(CURDIR)/daemon/target

.PHONY: dev deps venv build test test-rust test-python lint fmt fuzz fuzz-corpus bench bench-criterion bench-quick lab clean \
	wheel install uninstall

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
	$(PY) -m pip install -q "maturin>=1.7,<2" typer rich pyroute2 prometheus_client pytest pytest-xdist pytest-timeout hypothesis scapy ruff mypy tomli-w matplotlib

build:                        ## build the product, then the lab (each native, release) into the venv
	$(VENV)/bin/maturin develop --release -q
	cd lab && VIRTUAL_ENV=$(abspath $(VENV)) $(abspath $(VENV))/bin/maturin develop --release -q

test: test-rust test-python   ## every test: Rust unit/differential/simulation tests, then pytest

test-rust:
	cargo test --manifest-path $(CARGO_MANIFEST) --workspace --release
	cargo test --manifest-path daemon/fuzz/Cargo.toml --release   # the fuzz corpus, replayed
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
	$(VENV)/bin/mypy daemon/kcpvpn
	$(PY) -m mypy.stubtest --allowlist daemon/kcpvpn/_engine/stubtest-allowlist.txt kcpvpn._engine

fmt:
	cargo fmt --manifest-path $(CARGO_MANIFEST) --all
	cargo fmt --manifest-path $(LAB_MANIFEST) --all
	$(VENV)/bin/ruff format daemon/kcpvpn lab tests
	$(VENV)/bin/ruff check --fix daemon/kcpvpn lab tests

FUZZ_SECONDS ?= 60
fuzz:                         ## run every fuzz target for FUZZ_SECONDS each, from the committed corpus
	./daemon/fuzz/run.sh $(FUZZ_SECONDS)

fuzz-corpus:                  ## fuzz, then minimize the finds into daemon/fuzz/corpus (commit it)
	./daemon/fuzz/run.sh --merge $(FUZZ_SECONDS)

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

# --- packaging ---------------------------------------------------------------
# `make wheel`: an abi3 wheel (CPython >= 3.11) that pip installs without Rust.
# By default it links with zig (from PyPI, maturin[zig]) against glibc 2.17
# symbols, so the wheel is manylinux2014 and runs on any glibc distribution of
# the last decade; `make wheel ZIG=` builds with the host's toolchain instead
# (tagged with the oldest manylinux the result allows, manylinux_2_34 on Debian 12).
# Its own target directory: zig's C compiler would otherwise rebuild `make dev`'s.
WHEEL_DIR ?= dist
ZIG ?= 1
BUILD_VENV ?= .venv-build
WHEEL_COMPAT ?= $(if $(ZIG),manylinux2014,)
WHEEL ?=

$(BUILD_VENV)/bin/maturin:
	python3 -m venv $(BUILD_VENV)
	$(BUILD_VENV)/bin/python -m pip install -q "maturin[zig]>=1.7,<2"

wheel: $(BUILD_VENV)/bin/maturin  ## the wheel, in dist/
	rm -f $(WHEEL_DIR)/kcpvpn-*.whl
	PATH="$(CURDIR)/$(BUILD_VENV)/bin:$$PATH" CARGO_TARGET_DIR="$(CURDIR)/daemon/target-wheel" \
	  $(BUILD_VENV)/bin/maturin build --release --strip -o $(WHEEL_DIR) \
	  $(if $(ZIG),--zig) $(if $(WHEEL_COMPAT),--compatibility $(WHEEL_COMPAT))

# `make install` (root): the wheel into a virtualenv at PREFIX, `kcpvpn` linked
# into BINDIR, the systemd units into UNITDIR when it exists (and their user).
# WHEEL=path installs that wheel instead of building one. See packaging/install.sh.
PREFIX ?= /opt/kcpvpn
BINDIR ?= /usr/local/bin
UNITDIR ?= /etc/systemd/system
CONFDIR ?= /etc/kcpvpn
INSTALL_ENV = PREFIX="$(PREFIX)" BINDIR="$(BINDIR)" UNITDIR="$(UNITDIR)" CONFDIR="$(CONFDIR)"

install:                      ## install kcpvpn (PREFIX=/opt/kcpvpn, BINDIR=/usr/local/bin)
	@if [ -z "$(WHEEL)" ]; then $(MAKE) --no-print-directory wheel; fi
	$(INSTALL_ENV) packaging/install.sh "$(or $(WHEEL),$$(ls -t $(WHEEL_DIR)/kcpvpn-*.whl | head -n 1))"

uninstall:                    ## remove what `make install` installed (configuration stays)
	$(INSTALL_ENV) packaging/uninstall.sh

clean:
	rm -rf daemon/target daemon/target-wheel $(VENV) $(BUILD_VENV) $(WHEEL_DIR)
