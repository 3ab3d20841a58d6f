#!/usr/bin/env bash
# Creates (once) the Python venv with the pinned Jesse and its pinned dependencies,
# in a cache outside the clone keyed by the lock file and the base interpreter, and
# points ./.venv at it. Prints the venv's python path on stdout.
#
#   JESSE_MCP_CACHE_DIR   cache root (default: ~/.cache/jesse-mcp)
#   JESSE_MCP_BASE_PYTHON base interpreter, must be CPython 3.11 (default: python3.11 or python3)
#   JESSE_MCP_VENV_CACHE  where the venv itself lives (default: the cache root; as root, see below)
#
# As root, the runner sandbox runs jobs as an unprivileged uid (JESSE_MCP_RUNNER_UID, default
# 65534), which must be able to read the interpreter and the venv (docs/SECURITY.md). A home
# directory such as /root is 0700, so as root this script prefers a 3.11 interpreter that uid can
# run (e.g. Debian's /usr/bin/python3.11 over a pyenv build under /root) and keeps the venv in
# /var/cache/jesse-mcp (root-owned, readable, not writable by that uid). It never changes the
# permissions of an existing directory.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
lock="$root/ops/requirements.lock"
cache="${JESSE_MCP_CACHE_DIR:-$HOME/.cache/jesse-mcp}"
runner_uid="${JESSE_MCP_RUNNER_UID:-65534}"
as_root=0
if [ "$(id -u)" = 0 ] && [ "$runner_uid" != off ]; then
  if command -v setpriv >/dev/null 2>&1; then
    as_root=1
  else
    echo "python-env: warning: running as root without setpriv (util-linux), so this script cannot check which" \
         "Python uid $runner_uid can run; jobs may run as uid 0 with every capability dropped instead (docs/SECURITY.md)" >&2
  fi
fi

# Can the runner uid run this interpreter (its stdlib included)?
runner_can_run() {
  [ "$as_root" = 1 ] || return 0
  setpriv --reuid="$runner_uid" --regid="${JESSE_MCP_RUNNER_GID:-$runner_uid}" --clear-groups -- \
    "$1" -c 'import encodings, ssl, sqlite3, venv' >/dev/null 2>&1
}
is_311() {
  [ "$("$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = 3.11 ] &&
    "$1" -c 'import ensurepip, sysconfig; assert sysconfig.get_config_var("Py_ENABLE_SHARED")' >/dev/null 2>&1
}

base="${JESSE_MCP_BASE_PYTHON:-}"
if [ -z "$base" ]; then
  fallback=""
  for candidate in python3.11 python3 /usr/bin/python3.11 /usr/local/bin/python3.11; do
    command -v "$candidate" >/dev/null 2>&1 || continue
    candidate="$(command -v "$candidate")"
    is_311 "$candidate" || continue
    [ -n "$fallback" ] || fallback="$candidate"
    if runner_can_run "$candidate"; then base="$candidate"; break; fi
  done
  if [ -z "$base" ] && [ -n "$fallback" ]; then
    base="$fallback"
    echo "python-env: uid $runner_uid cannot run any Python 3.11 here ($fallback is under a private directory);" \
         "jobs will run as uid 0 with every capability dropped instead (docs/SECURITY.md)" >&2
    as_root=0
  fi
fi
[ -n "$base" ] || { echo "python-env: no CPython 3.11 (with venv and a shared libpython) found; install it or set JESSE_MCP_BASE_PYTHON" >&2; exit 1; }
version="$("$base" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$version" != "3.11" ]; then
  echo "python-env: $base is Python $version; Jesse 3.5.3 needs 3.11 (set JESSE_MCP_BASE_PYTHON)" >&2
  exit 1
fi
venv_cache="${JESSE_MCP_VENV_CACHE:-}"
if [ -z "$venv_cache" ]; then
  venv_cache="$cache"
  if [ "$as_root" = 1 ] && runner_can_run "$base"; then venv_cache=/var/cache/jesse-mcp; fi
fi
# A venv the runner uid (or anyone but root) could write would let a job change
# the code the next job imports: the shared cache must be root's alone.
if [ "$venv_cache" = /var/cache/jesse-mcp ] && [ -e "$venv_cache" ]; then
  if [ "$(stat -c %u "$venv_cache")" != 0 ] || [ -n "$(find "$venv_cache" -maxdepth 0 -perm /022)" ]; then
    echo "python-env: $venv_cache must be owned by root and writable by no one else; fix or remove it" >&2
    exit 1
  fi
fi
# Resolve the real base interpreter (pyenv shims are scripts, not interpreters).
real_base="$("$base" -c 'import sys; print(sys.executable)')"
key="$( (cat "$lock"; echo "$real_base"; "$real_base" -VV) | sha256sum | cut -c1-16)"
venv="$venv_cache/venv-$key"

if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "python-env: creating $venv (Jesse 3.5.3, pinned; about a minute)" >&2
  rm -rf "$venv"
  umask 022
  mkdir -p "$venv_cache"
  "$real_base" -m venv "$venv"
  # .complete is written last, so an interrupted install is redone from scratch.
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
      --requirement "$lock" >&2
  "$venv/bin/python" -c 'import jesse.version, numpy; assert jesse.version.__version__ == "3.5.3", jesse.version.__version__' >&2
  if [ "$as_root" = 1 ] && ! runner_can_run "$venv/bin/python"; then
    echo "python-env: warning: uid $runner_uid cannot run $venv/bin/python; jobs will run as uid 0 with every capability dropped" >&2
  fi
  touch "$venv/.complete"
fi
# How the worker links this Python (.cargo/config.toml points PYO3_CONFIG_FILE here).
"$venv/bin/python" "$root/ops/pyo3_config.py" "$venv/pyo3-build-config.txt"
ln -sfn "$venv" "$root/.venv"
echo "$venv/bin/python"
