#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60) and stops at the first
# crash. Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); on a stable
# toolchain RUSTC_BOOTSTRAP=1 lets it pass the sanitizer flags it needs.
# Not part of CI: the same decoders run under proptest in the ordinary suite.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-60}
export RUSTC_BOOTSTRAP=1
for target in $(cargo fuzz list); do
  echo "==> $target for ${seconds}s"
  cargo fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10
done
