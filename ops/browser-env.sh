#!/usr/bin/env bash
# What the dashboard's browser tests need, installed once:
#   - Debian's `chromium` (apt-get) when /usr/bin/chromium is missing;
#   - the npm packages pinned in tests/browser/package-lock.json (playwright-core,
#     and lightweight-charts, the source of web/vendor/), installed with `npm ci`
#     into a cache outside the clone keyed by the lock file and Node's major version.
# Prints the node_modules directory on stdout.
#
#   --check               install nothing: fail (exit 1, saying what is missing) unless both are present
#   JESSE_MCP_CACHE_DIR   cache root (default: ~/.cache/jesse-mcp)
#   JESSE_MCP_CHROMIUM    the browser (default: /usr/bin/chromium)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
lock="$root/tests/browser/package-lock.json"
cache="${JESSE_MCP_CACHE_DIR:-$HOME/.cache/jesse-mcp}"
chromium="${JESSE_MCP_CHROMIUM:-/usr/bin/chromium}"
check=0
[ "${1:-}" = "--check" ] && check=1

command -v node >/dev/null 2>&1 || { echo "browser-env: node is not installed (Node >= 20 and npm are needed for the browser tests)" >&2; exit 1; }
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || { echo "browser-env: Node $node_major is too old; the browser tests need Node >= 20" >&2; exit 1; }

if [ ! -x "$chromium" ]; then
  if [ "$check" = 1 ]; then
    echo "browser-env: $chromium is missing; run ops/browser-env.sh (it installs Debian's chromium) or set JESSE_MCP_CHROMIUM" >&2
    exit 1
  fi
  [ "$chromium" = /usr/bin/chromium ] || { echo "browser-env: JESSE_MCP_CHROMIUM=$chromium does not exist" >&2; exit 1; }
  command -v apt-get >/dev/null 2>&1 || { echo "browser-env: no apt-get; install Chromium and set JESSE_MCP_CHROMIUM to it" >&2; exit 1; }
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "browser-env: installing Debian's chromium (apt-get)" >&2
  install() { $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >&2; }
  install || { $sudo apt-get update >&2 && install; }
fi

key="$( (cat "$lock"; echo "node $node_major") | sha256sum | cut -c1-16)"
dir="$cache/npm-$key"
if [ ! -f "$dir/.complete" ]; then
  if [ "$check" = 1 ]; then
    echo "browser-env: the browser tests' npm packages are not installed ($dir); run ops/browser-env.sh" >&2
    exit 1
  fi
  mkdir -p "$cache"
  # Tests and make targets may run this at once: one installs, the others wait.
  exec 9>"$cache/npm-$key.lock"
  flock 9
  if [ ! -f "$dir/.complete" ]; then
    echo "browser-env: npm ci into $dir (tests/browser/package-lock.json)" >&2
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$root/tests/browser/package.json" "$lock" "$dir/"
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
    # .complete is written last, so an interrupted install is redone from scratch.
    touch "$dir/.complete"
  fi
fi
echo "$dir/node_modules"
