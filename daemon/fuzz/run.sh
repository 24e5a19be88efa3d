#!/usr/bin/env bash
# Run every fuzz target for a bounded time: ./run.sh SECONDS_PER_TARGET
# Needs cargo-fuzz (installed here if missing); cargo-fuzz needs a nightly
# toolchain for sanitizers, so on stable we build with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install -q cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for t in $(cargo fuzz list); do
  echo "== fuzz $t for ${secs}s"
  mkdir -p corpus/$t
  cargo fuzz run "$t" corpus/$t -- -max_total_time="$secs" -rss_limit_mb=2048 -max_len=16384
done
