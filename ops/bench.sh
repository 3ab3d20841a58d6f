#!/usr/bin/env bash
# `make bench`: runs the bench scripts with the venv's python against the release binaries.
# `ops/bench.sh batch` runs only the batch bench (ops/bench_batch.py), `ops/bench.sh optimize`
# only the optimization bench (ops/bench_optimize.py), `ops/bench.sh durability` only the
# submit-durability bench (ops/bench_submit.py), `ops/bench.sh backtest` only the backtest and
# candle-store part (ops/bench.py); each replaces its own section of docs/BENCHMARKS.md and keeps
# the others.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/jesse-mcp/target}"
export PYTHONDONTWRITEBYTECODE=1  # the bench imports its helpers from ops/; no __pycache__ there
part="${1:-all}"
case "$part" in
  all|backtest|batch|optimize|durability) ;;
  *) echo "usage: ops/bench.sh [all|backtest|batch|optimize|durability]" >&2; exit 2 ;;
esac
python="$(ops/python-env.sh)"
cargo build --release --workspace --bins --quiet
if [ "$part" = backtest ]; then
  BENCH_KEEP_REST=1 "$python" ops/bench.py "$CARGO_TARGET_DIR/release"
fi
if [ "$part" = all ]; then
  "$python" ops/bench.py "$CARGO_TARGET_DIR/release"
  "$python" ops/bench_scale.py "$CARGO_TARGET_DIR/release"
fi
if [ "$part" = all ] || [ "$part" = batch ]; then
  "$python" ops/bench_batch.py "$CARGO_TARGET_DIR/release"
fi
if [ "$part" = all ] || [ "$part" = optimize ]; then
  "$python" ops/bench_optimize.py "$CARGO_TARGET_DIR/release"
fi
if [ "$part" = all ] || [ "$part" = durability ]; then
  "$python" ops/bench_submit.py "$CARGO_TARGET_DIR/release"
fi
