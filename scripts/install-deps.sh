#!/usr/bin/env bash
# Installs what the build and the test suite need beyond the Rust toolchain, on a
# fresh Debian machine: a C/C++ compiler and make (C examples), valgrind (leak
# checks), pkg-config and binutils (install and symbol checks), python3 with venv
# (interop, and the wheel check, which pip-installs maturin into a venv).
# Only what is missing is installed; running it twice is harmless.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have cc || need+=(gcc)
have c++ || need+=(g++)
have make || need+=(make)
have valgrind || need+=(valgrind)
have pkg-config || need+=(pkg-config)
have readelf || need+=(binutils)
have python3 || need+=(python3)
# The wheel check builds mgrd's Python wheel in a venv (Debian splits venv out).
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
# tests/python/test_cpython_suite.py runs CPython's own manager tests
# (test._test_multiprocessing) against mgrd; Debian splits the test package out.
# (Only for Debian's python3: another interpreter brings its own or skips.)
if ! python3 -c 'import test._test_multiprocessing' >/dev/null 2>&1 \
  && [ "$(command -v python3)" = /usr/bin/python3 ]; then
  need+=("libpython$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')-testsuite")
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}"
fi

for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    rustup component add "$component"
  fi
done
echo "install-deps: ok"
