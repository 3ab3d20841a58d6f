#!/usr/bin/env bash
# Creates (once) the Python venv with the pinned Jesse and its pinned dependencies,
# in a cache outside the clone keyed by the lock file and the base interpreter, and
# points ./.venv at it. Prints the venv's python path on stdout.
#
#   JESSE_MCP_CACHE_DIR   cache root (default: ~/.cache/jesse-mcp)
#   JESSE_MCP_BASE_PYTHON base interpreter, must be CPython 3.11 (default: python3.11 or python3)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
lock="$root/ops/requirements.lock"
cache="${JESSE_MCP_CACHE_DIR:-$HOME/.cache/jesse-mcp}"

base="${JESSE_MCP_BASE_PYTHON:-}"
if [ -z "$base" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then base="$(command -v "$candidate")"; break; fi
  done
fi
[ -n "$base" ] || { echo "python-env: no python3.11 found; install CPython 3.11 or set JESSE_MCP_BASE_PYTHON" >&2; exit 1; }
version="$("$base" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$version" != "3.11" ]; then
  echo "python-env: $base is Python $version; Jesse 3.5.3 needs 3.11 (set JESSE_MCP_BASE_PYTHON)" >&2
  exit 1
fi
# Resolve the real base interpreter (pyenv shims are scripts, not interpreters).
real_base="$("$base" -c 'import sys; print(sys.executable)')"
key="$( (cat "$lock"; echo "$real_base"; "$real_base" -VV) | sha256sum | cut -c1-16)"
venv="$cache/venv-$key"

if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "python-env: creating $venv (Jesse 3.5.3, pinned; about a minute)" >&2
  rm -rf "$venv"
  mkdir -p "$cache"
  "$real_base" -m venv "$venv"
  # .complete is written last, so an interrupted install is redone from scratch.
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
      --requirement "$lock" >&2
  "$venv/bin/python" -c 'import jesse.version, numpy; assert jesse.version.__version__ == "3.5.3", jesse.version.__version__' >&2
  touch "$venv/.complete"
fi
ln -sfn "$venv" "$root/.venv"
echo "$venv/bin/python"
