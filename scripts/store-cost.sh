#!/usr/bin/env bash
# Instructions per job of the shard write path (enqueue, claim, finish in transactions of 256), counted by
# valgrind's callgrind: repeatable to a fraction of a percent, unlike timings on a shared 2-core machine.
# Usage: scripts/store-cost.sh [BATCHES]   (needs valgrind: apt-get install -y valgrind)
set -euo pipefail
cd "$(dirname "$0")/.."
batches="${1:-8}"
command -v valgrind >/dev/null || { echo "store-cost: valgrind is missing (apt-get install -y valgrind)" >&2; exit 1; }
cargo build -q --release -p flowork-gateway --example store_cost
bin=target/release/examples/store_cost
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
declare -A ir
for phase in setup enqueue claim finish; do
  valgrind --tool=callgrind --callgrind-out-file="$out/$phase.out" "$bin" "$phase" "$batches" 2>"$out/$phase.log" \
    || { cat "$out/$phase.log" >&2; exit 1; }
  ir[$phase]=$(grep -oP '^summary: \K[0-9]+' "$out/$phase.out")
done
jobs=$((batches * 256))
echo "instructions per job ($jobs jobs, transactions of 256):"
echo "  enqueue $(( (ir[enqueue] - ir[setup]) / jobs ))"
echo "  claim   $(( (ir[claim] - ir[enqueue]) / jobs ))"
echo "  finish  $(( (ir[finish] - ir[claim]) / jobs ))"
echo "  total   $(( (ir[finish] - ir[setup]) / jobs ))"
