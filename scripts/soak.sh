#!/usr/bin/env bash
# Soak test: many connections doing mixed creates, calls and releases against a
# real mgrd for SECONDS (default 300), then checks that the object count is back
# at its baseline and that mgrd's RSS stayed flat after warm-up (tests/soak.rs,
# soak_long). MGR_SOAK_CLIENTS sets the number of clients (default 16).
#
#   scripts/soak.sh [SECONDS]              mgrd spawned by the test, RSS checked
#   scripts/soak.sh SECONDS --valgrind     mgrd under valgrind --leak-check=full
#                                          (RSS not checked; the leak summary is
#                                          printed and any error fails the run)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-300}
mode=${2:-}
cargo build --quiet --bins --tests

if [ "$mode" != "--valgrind" ]; then
  MGR_SOAK_SECS="$seconds" cargo test --quiet --test soak soak_long -- --ignored --nocapture
  exit
fi

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
MGR_AUTHKEY=soak-key valgrind --leak-check=full --show-leak-kinds=definite,indirect \
  --errors-for-leak-kinds=definite,indirect --error-exitcode=99 \
  --log-file="$dir/valgrind.log" \
  target/debug/mgrd --address 127.0.0.1:0 >"$dir/out" 2>"$dir/err" &
pid=$!
for _ in $(seq 300); do
  grep -q "listening on" "$dir/out" 2>/dev/null && break
  sleep 0.1
done
address=$(sed -n 's/^mgrd listening on //p' "$dir/out")
[ -n "$address" ] || { echo "mgrd did not start"; cat "$dir/err"; kill "$pid"; exit 1; }
echo "mgrd (valgrind, pid $pid) on $address"
MGR_SOAK_ADDR="$address" MGR_SOAK_SECS="$seconds" \
  cargo test --quiet --test soak soak_long -- --ignored --nocapture
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
sed -n '/HEAP SUMMARY/,$p' "$dir/valgrind.log"
echo "mgrd under valgrind exited with $status"
exit "$status"
