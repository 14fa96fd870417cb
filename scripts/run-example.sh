#!/usr/bin/env bash
# Runs examples/agent_client.py against a live `chamade serve` on a free port; fails if it fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CHAMADE_BIN:-.build/debug/chamade}
log=$(mktemp)
"$bin" serve --port 0 --api-key chmd_example >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 1 100); do
  grep -q '^listening on ' "$log" && break
  sleep 0.1
done
url=$(grep -m1 '^listening on ' "$log" | awk '{print $3}')
[[ -n $url ]] || { cat "$log"; echo "server did not start" >&2; exit 1; }
CHAMADE_URL=$url CHAMADE_API_KEY=chmd_example python3 examples/agent_client.py
