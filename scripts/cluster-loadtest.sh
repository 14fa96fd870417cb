#!/usr/bin/env bash
# Agents held by NODES release nodes on one Redis (all on this machine), against the same load on one
# node: `chamade loadtest` through the first node (creates are sent on to the rooms' owners, each
# agent streams to its call's text_ws_url). Prints one JSON line per run.
#   scripts/cluster-loadtest.sh AGENTS ROOMS SECONDS [NODES]      (NODES 1: a node of its own)
set -euo pipefail
cd "$(dirname "$0")/.."
agents=${1:-300} rooms=${2:-30} seconds=${3:-20} nodes=${4:-3}
key=chmd_cluster_$$
dir=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
cluster=()
if [ "$nodes" -gt 1 ]; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no > "$dir/redis.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 50); do redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
    cluster=(--cluster "redis://127.0.0.1:$port")
fi
for i in $(seq "$nodes"); do
    id=()
    [ "$nodes" -gt 1 ] && id=(--node-id "load$i")
    .build/release/chamade serve --port 0 --sip off --stt none --tts none --api-key "$key" "${cluster[@]}" "${id[@]}" \
        > "$dir/node$i.log" 2>&1 &
    pids+=($!)
done
for i in $(seq "$nodes"); do
    for _ in $(seq 50); do grep -q "^listening on" "$dir/node$i.log" && break; sleep 0.2; done
done
sleep 2  # every node's first heartbeat: placement sees them all
url=$(grep "^listening on" "$dir/node1.log" | awk '{print $3}')
.build/release/chamade loadtest --url "$url" --api-key "$key" --agents "$agents" --rooms "$rooms" --seconds "$seconds" --json
