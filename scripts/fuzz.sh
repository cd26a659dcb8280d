#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60) and stops at the first
# crash. Installs cargo-fuzz (`cargo install cargo-fuzz --locked`) when it is
# missing, and exits non-zero when it cannot; on a stable
# toolchain RUSTC_BOOTSTRAP=1 lets it pass the sanitizer flags it needs.
# Not part of CI: the same decoders run under proptest in the ordinary suite.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-60}
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: cargo-fuzz is missing; installing it: cargo install cargo-fuzz --locked"
  cargo install cargo-fuzz --locked || {
    echo "fuzz.sh: could not install cargo-fuzz; install it with: cargo install cargo-fuzz --locked" >&2
    exit 1
  }
fi
targets=$(cargo fuzz list)
[ -n "$targets" ] || { echo "fuzz.sh: cargo fuzz list found no targets" >&2; exit 1; }
for target in $targets; do
  echo "==> $target for ${seconds}s"
  cargo fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10
done
