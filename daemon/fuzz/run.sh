#!/usr/bin/env bash
# Run every fuzz target for a bounded time, starting from the committed corpus.
#
#   ./run.sh [SECONDS]          each target for SECONDS (default 60); corpus/
#                               is only read, new inputs go to a scratch dir
#   ./run.sh --merge [SECONDS]  the same, then minimizes corpus/TARGET plus
#                               what the run found back into corpus/TARGET
#                               (`cargo fuzz cmin`): commit the result
#   FUZZ_TARGETS="a b" ./run.sh ...   only these targets
#
# corpus/ is committed so that every run (CI's clean clones included) starts
# where the last merge ended; keep it small (see docs/fuzzing.md).
# Needs cargo-fuzz (installed here if missing); cargo-fuzz needs a nightly
# toolchain for its instrumentation, so on stable we build with
# RUSTC_BOOTSTRAP=1. No sanitizer (-s none): the code the targets reach has
# no `unsafe` (only sys/ does), so AddressSanitizer would find nothing there
# and costs 5-40x the executions (Reed-Solomon setup at 256 shards: 2.8 s).
set -euo pipefail
cd "$(dirname "$0")"
merge=0
if [ "${1:-}" = "--merge" ]; then
  merge=1
  shift
fi
secs=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install -q cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
# Inputs that grow coverage land here, not in the committed corpus.
finds="${CARGO_TARGET_DIR:-target}/fuzz-finds"
targets=${FUZZ_TARGETS:-$(cargo fuzz list)}
# -timeout: one input running this long (s) is a hang, reported as a failure.
opts=(-rss_limit_mb=2048 -max_len=8192 -timeout=20)
for t in $targets; do
  echo "== fuzz $t for ${secs}s"
  mkdir -p "corpus/$t" "$finds/$t"
  cargo fuzz run -s none "$t" "$finds/$t" "corpus/$t" -- -max_total_time="$secs" "${opts[@]}"
  if [ "$merge" = 1 ]; then
    cp -n "$finds/$t"/* "corpus/$t/" 2>/dev/null || true
    cargo fuzz cmin -s none "$t" "corpus/$t" -- "${opts[@]}"
    rm -rf "${finds:?}/$t"
    echo "== corpus/$t: $(ls "corpus/$t" | wc -l) inputs, $(du -sh --apparent-size "corpus/$t" | cut -f1)"
  fi
done
