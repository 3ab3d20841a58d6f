#!/usr/bin/env bash
# Creates (once) the venv of the test tools pinned in ops/tools-requirements.lock
# (the OpenAPI validator, schemathesis, the Python MCP SDK, the notebook client's
# httpx + pandas + tqdm), in the cache outside the clone keyed by the lock file and
# the interpreter, and prints its python path on stdout. Separate from the Jesse
# venv (ops/python-env.sh), whose pins must not move for a test tool.
#
#   JESSE_MCP_CACHE_DIR   cache root (default: ~/.cache/jesse-mcp)
#   JESSE_MCP_TOOLS_PYTHON base interpreter, CPython >= 3.9 (default: python3)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
lock="$root/ops/tools-requirements.lock"
cache="${JESSE_MCP_CACHE_DIR:-$HOME/.cache/jesse-mcp}"

base="${JESSE_MCP_TOOLS_PYTHON:-python3}"
command -v "$base" >/dev/null 2>&1 || { echo "tools-env: $base not found; install CPython 3 or set JESSE_MCP_TOOLS_PYTHON" >&2; exit 1; }
# Resolve the real interpreter (pyenv shims are scripts, not interpreters).
real_base="$("$base" -c 'import sys; print(sys.executable)')"
key="$( (cat "$lock"; echo "$real_base"; "$real_base" -VV) | sha256sum | cut -c1-16)"
venv="$cache/tools-$key"

mkdir -p "$cache"
# Tests run in parallel: one creates the venv, the others wait for it.
exec 9>"$cache/tools-$key.lock"
flock 9
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "tools-env: creating $venv (test tools, pinned)" >&2
  rm -rf "$venv"
  "$real_base" -m venv "$venv"
  # .complete is written last, so an interrupted install is redone from scratch.
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
      --requirement "$lock" >&2
  "$venv/bin/python" -c "import openapi_spec_validator, schemathesis, mcp, jsonschema, httpx, pandas, tqdm" >&2
  touch "$venv/.complete"
fi
echo "$venv/bin/python"
