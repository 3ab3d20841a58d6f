#!/usr/bin/env bash
# `make fuzz`: coverage-guided fuzzing (libFuzzer through cargo-fuzz) of the parsers
# that read untrusted bytes: candle CSV uploads, the static strategy checker and the
# worker <-> runner frame decoder. FUZZ_SECONDS per target (default 60). A crash
# leaves its input in fuzz/artifacts/<target>/; turn it into a regression test
# beside the code it broke. cargo-fuzz is installed on first use; the toolchain is
# the machine's stable one (RUSTC_BOOTSTRAP lets it take libFuzzer's -Z flags).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/fuzz"
seconds="${FUZZ_SECONDS:-60}"
export CARGO_TARGET_DIR="${JESSE_MCP_FUZZ_TARGET_DIR:-$HOME/.cache/jesse-mcp/fuzz-target}"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
targets="${*:-csv_parser strategy_static runner_frames}"
for target in $targets; do
    corpus="$CARGO_TARGET_DIR/corpus/$target"
    mkdir -p "$corpus"
    echo "== fuzz $target (${seconds}s)"
    # Seeds: the repository's own inputs of that kind.
    case "$target" in
        csv_parser) cp -n "$root"/tests/fixtures/*.csv "$corpus"/ 2>/dev/null || true ;;
        strategy_static) for f in "$root"/strategies/*/__init__.py "$root"/tests/fixtures/strategies/*/__init__.py; do
                             cp -n "$f" "$corpus/$(basename "$(dirname "$f")").py"; done ;;
    esac
    cargo fuzz run --sanitizer none "$target" "$corpus" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1
done
