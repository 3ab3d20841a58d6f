#!/usr/bin/env bash
# `make bench`: runs ops/bench.py with the venv's python against the release binaries.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/jesse-mcp/target}"
python="$(ops/python-env.sh)"
cargo build --release --workspace --bins --quiet
"$python" ops/bench.py "$CARGO_TARGET_DIR/release"
"$python" ops/bench_scale.py "$CARGO_TARGET_DIR/release"
