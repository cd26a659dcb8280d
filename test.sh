#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests (which also build and run
# the C examples and drive Python scripts), the Python unittest suite that runs
# CPython's multiprocessing against a freshly built mgrd, and an install of the C
# library into a scratch prefix that a C program then builds against, and the Python
# wheel of mgrd installed into a fresh venv that runs README's Python snippet.
set -uo pipefail
cd "$(dirname "$0")"

passed=0
failed=0
run() {
  echo "==> $*"
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $*"; fi
}

cargo build --workspace --lib --bins || { echo "suites: 0 passed, 1 failed"; exit 1; }
run cargo test --workspace
run env MGRD="$PWD/target/debug/mgrd" PYTHONPATH="$PWD/tests/python" \
  python3 -m unittest discover -s tests/python -p 'test_*.py' -v
run scripts/install-check.sh
run scripts/wheel-check.sh

echo "suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
