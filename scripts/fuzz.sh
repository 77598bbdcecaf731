#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS seconds each (default 10: the smoke run of
# `make test`; `make fuzz` runs them long). New inputs go to fuzz/corpus/<target>
# (not committed); fuzz/seeds/<target> are the committed seeds; a crash stops the run and
# leaves its input under fuzz/artifacts/<target>/ (commit it as a regression seed).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECONDS_PER_TARGET=${1:-10}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
targets=$(cargo +nightly fuzz list)
cargo +nightly fuzz build -O $targets >/dev/null 2>&1 || cargo +nightly fuzz build -O
total=0
for t in $targets; do
  mkdir -p "corpus/$t"
  log=$(mktemp)
  cargo +nightly fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$SECONDS_PER_TARGET" -max_len=8192 -print_final_stats=1 >"$log" 2>&1 || {
      tail -40 "$log"; echo "fuzz target $t FAILED"; exit 1; }
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  total=$((total + runs))
  printf '%-16s %12s executions in %ss\n' "$t" "$runs" "$SECONDS_PER_TARGET"
  rm -f "$log"
done
echo "all targets: $total executions"
