# jesse-mcp: `make run` serves the API with local workers; `make test` runs the suite.
SHELL := /bin/bash
CACHE_DIR ?= $(HOME)/.cache/jesse-mcp
export CARGO_TARGET_DIR ?= $(CACHE_DIR)/target
export JESSE_MCP_CACHE_DIR ?= $(CACHE_DIR)

.PHONY: run help test bench bench-backtest bench-batch bench-optimize bench-durability fuzz venv browser vendor-web build release lint fmt clean-data

## run: bootstrap what is missing, build, serve on 127.0.0.1:8080 with local workers
run: release
	@ops/run.sh

## help: list these targets
help:
	@echo 'make <target>   (default: run)'
	@sed -nE 's/^## ([A-Za-z0-9_-]+): (.*)/\1\t\2/p' $(firstword $(MAKEFILE_LIST)) | \
		awk -F'\t' '{ printf "  %-18s %s\n", $$1, $$2 }'

## test: the whole suite (unit + end-to-end with real Jesse), plus fmt and clippy
test:
	@ops/test.sh

## bench: service vs bare Jesse on a year of 1m candles; writes docs/BENCHMARKS.md
bench: release
	@ops/bench.sh

## bench-backtest: only the backtest and candle-store bench (service vs bare Jesse, fresh-process cost)
bench-backtest: release
	@ops/bench.sh backtest

## bench-batch: only the batch bench (one batch vs separate submits vs a bare Jesse process pool)
bench-batch: release
	@ops/bench.sh batch

## bench-optimize: only the optimization bench (one study through the service vs jesse.research.optimize)
bench-optimize: release
	@ops/bench.sh optimize

## bench-durability: only the submit bench (SQLite synchronous=FULL vs NORMAL)
bench-durability: release
	@ops/bench.sh durability

## browser: Debian's chromium and the browser tests' locked npm packages (for the dashboard tests)
browser:
	@ops/browser-env.sh >/dev/null

## vendor-web: copy the locked lightweight-charts into web/vendor/ (after changing tests/browser/package-lock.json)
vendor-web:
	@ops/vendor-web.sh

## fuzz: libFuzzer on the CSV parser, the strategy checker and the runner frames (FUZZ_SECONDS each, default 60)
fuzz:
	@ops/fuzz.sh

## venv: the cached Python venv with the pinned Jesse
venv:
	@ops/python-env.sh >/dev/null

## build: debug build of the binaries
build: venv
	cargo build --workspace --bins

## release: release build of the binaries (what make run serves)
release: venv
	cargo build --release --workspace --bins

## lint: cargo fmt --check and clippy with warnings as errors
lint: venv
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

## fmt: format the workspace
fmt:
	cargo fmt --all

## clean-data: delete the local store and queue (data/); the next make run stores the demo data again
clean-data:
	rm -rf data
