#!/usr/bin/env bash
# Vendors the dashboard's one third-party asset, TradingView's lightweight-charts,
# from the npm install locked by tests/browser/package-lock.json into web/vendor/
# (its standalone production ES module and its LICENSE; its NOTICE is checked in
# beside them, as the npm package does not ship it). The API embeds web/ at build time.
#
#   ops/vendor-web.sh           copy from the locked install
#   ops/vendor-web.sh --check   exit 1 unless web/vendor/ equals the locked package's files
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "${1:-}" = "--check" ]; then
  modules="$("$root/ops/browser-env.sh" --check)"
else
  modules="$("$root/ops/browser-env.sh")"
fi
package="$modules/lightweight-charts"
vendor="$root/web/vendor"
pairs=(
  "dist/lightweight-charts.standalone.production.mjs:lightweight-charts.standalone.production.mjs"
  "LICENSE:lightweight-charts.LICENSE"
)
status=0
for pair in "${pairs[@]}"; do
  from="$package/${pair%%:*}"
  to="$vendor/${pair##*:}"
  if [ "${1:-}" = "--check" ]; then
    if ! cmp -s "$from" "$to"; then
      echo "vendor-web: $to differs from $from (the locked lightweight-charts); run ops/vendor-web.sh" >&2
      status=1
    fi
  else
    mkdir -p "$vendor"
    cp "$from" "$to"
  fi
done
exit "$status"
