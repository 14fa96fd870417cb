#!/usr/bin/env bash
# The long soak (make soak): a release server on a free port and `chamade loadtest --soak` against
# it; prints the report. Usage: scripts/soak.sh AGENTS ROOMS SECONDS CHURN [--json]
set -euo pipefail
cd "$(dirname "$0")/.."
agents=${1:-200} rooms=${2:-40} seconds=${3:-600} churn=${4:-60}
key=chmd_soak_$$
log=$(mktemp)
.build/release/chamade serve --port 0 --sip off --stt none --tts none --api-key "$key" > "$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 50); do grep -q "^listening on" "$log" && break; sleep 0.2; done
url=$(grep "^listening on" "$log" | awk '{print $3}')
.build/release/chamade loadtest --url "$url" --api-key "$key" --agents "$agents" --rooms "$rooms" \
    --soak "$seconds" --churn "$churn" "${@:5}"
