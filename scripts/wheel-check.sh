#!/usr/bin/env bash
# Builds the Python wheel (pyproject.toml: mgrd and mgrctl, built by maturin),
# installs it into a fresh venv, starts the wheel's mgrd and runs README.md's
# Python snippet against it with the venv's own python: what a Python user who
# installs mgrd from the package index gets.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

python3 -m venv "$work/build"
"$work/build/bin/pip" install --quiet --disable-pip-version-check 'maturin>=1.9,<2'
"$work/build/bin/maturin" build --quiet --release -o "$work/dist"

python3 -m venv "$work/user"
"$work/user/bin/pip" install --quiet --disable-pip-version-check "$work"/dist/libmgr-*.whl
[ -x "$work/user/bin/mgrd" ] && [ -x "$work/user/bin/mgrctl" ] \
  || { echo "wheel-check: the wheel did not install mgrd and mgrctl"; exit 1; }
[ ! -e "$work/user/bin/mgr-bench" ] || { echo "wheel-check: mgr-bench is in the wheel"; exit 1; }

MGR_AUTHKEY=secret "$work/user/bin/mgrd" --address 127.0.0.1:0 >"$work/mgrd.out" 2>"$work/mgrd.err" &
pid=$!
for _ in $(seq 100); do
  grep -q '^mgrd listening on ' "$work/mgrd.out" 2>/dev/null && break
  sleep 0.1
done
address=$(sed -n 's/^mgrd listening on //p' "$work/mgrd.out")
[ -n "$address" ] || { echo "wheel-check: mgrd did not start"; cat "$work/mgrd.err"; exit 1; }
port=${address##*:}

# README's Python snippet, on the port this mgrd got instead of 50000.
python3 - "$port" >"$work/snippet.py" <<'PY'
import re, sys
readme = open("README.md").read()
blocks = re.findall(r"^```python\n(.*?)^```", readme, re.S | re.M)
assert len(blocks) == 1, "one Python snippet in README.md"
snippet = blocks[0].replace("50000", sys.argv[1])
print(snippet + "\nprint('wheel-check: snippet ok', d['k'], ns.state)")
PY
"$work/user/bin/python" "$work/snippet.py" | tee "$work/snippet.out"
grep -q "wheel-check: snippet ok \[1, 2\] running" "$work/snippet.out"
MGR_AUTHKEY=secret "$work/user/bin/mgrctl" --address "$address" shutdown
wait "$pid"; pid=
echo "wheel-check: the wheel's mgrd served README's Python snippet"
