#!/usr/bin/env bash
# The whole test suite, from a fresh clone: venv (cached), formatting and lints,
# binaries, then unit and end-to-end tests against real Jesse.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/jesse-mcp/target}"

ops/python-env.sh >/dev/null
echo "== fmt"; cargo fmt --all --check
echo "== clippy"; cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== build"; cargo build --workspace --bins --quiet
echo "== tests"
# End-to-end tests start real runner processes; two at a time suits two cores.
cargo test --workspace -- --test-threads=2
