#!/usr/bin/env python3
"""The cluster's figures (docs/cluster.md): three `chamade serve` nodes and a redis-server on
127.0.0.1, started here.

  - the extra latency of a forwarded API call: GET /api/call/{id} and POST /api/call through the
    owner and through another node (medians of N requests each, same sitting);
  - Redis operations: per second with the nodes idle (leases, scans), and per call (create, events,
    end), from Redis's own INFO commandstats;
  - SIGKILL of a node → `bridge_disconnected` on a survivor's account events, and → a successful
    re-create of the room on a live node (K kills, medians).

    scripts/cluster-measure.py [--binary .build/release/chamade] [--requests 500] [--kills 5]
"""
import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "Tests", "server"))
import httpx  # noqa: E402
import websockets  # noqa: E402

import conftest  # noqa: E402
from test_cluster import Cluster, Redis, owner_of  # noqa: E402

KEY = conftest.KEY1


def commandstats(redis):
    calls = {}
    for line in redis("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, rest = line[len("cmdstat_"):].split(":", 1)
            calls[name] = int(dict(kv.split("=") for kv in rest.split(","))["calls"])
    return calls


def delta(before, after):
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}


def timed(client, method, url, **kw):
    t = time.perf_counter()
    r = client.request(method, url, headers={"X-API-Key": KEY}, **kw)
    assert r.status_code == 200, r.text
    return (time.perf_counter() - t) * 1000, r


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", default=os.path.join(conftest.ROOT, ".build", "release", "chamade"))
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--kills", type=int, default=5)
    a = p.parse_args()
    conftest.BINARY = a.binary
    out = {}

    redis = Redis()
    c = Cluster(redis, ids=("ma", "mb", "mc"))
    try:
        client = httpx.Client(timeout=10)
        # Redis operations of three idle nodes over 10 s.
        before = commandstats(redis)
        time.sleep(10)
        idle = delta(before, commandstats(redis))
        out["redis_ops_per_second_idle_3_nodes"] = round(sum(idle.values()) / 10, 1)
        out["redis_ops_idle_by_command_per_second"] = {k: round(v / 10, 1) for k, v in sorted(idle.items())}

        # Forwarded vs direct reads of one call; creates into an open room through owner and other.
        meeting = "https://discord.example/measure/1"
        first = timed(client, "POST", c["ma"].base + "/api/call", json={"platform": "discord", "meeting_url": meeting})[1].json()
        owner = owner_of(first)
        other = next(i for i in ("ma", "mb", "mc") if i != owner)
        for _ in range(50):  # warm both paths (pooled connections between nodes)
            timed(client, "GET", c[owner].base + f"/api/call/{first['call_id']}")
            timed(client, "GET", c[other].base + f"/api/call/{first['call_id']}")
        direct, forwarded = [], []
        for _ in range(a.requests):
            direct.append(timed(client, "GET", c[owner].base + f"/api/call/{first['call_id']}")[0])
            forwarded.append(timed(client, "GET", c[other].base + f"/api/call/{first['call_id']}")[0])
        out["get_call_ms"] = {"direct_p50": round(statistics.median(direct), 3),
                              "forwarded_p50": round(statistics.median(forwarded), 3),
                              "direct_p99": round(sorted(direct)[int(len(direct) * .99)], 3),
                              "forwarded_p99": round(sorted(forwarded)[int(len(forwarded) * .99)], 3)}
        made, direct, forwarded = [], [], []
        for _ in range(min(a.requests, 120)):  # 241 calls: under a room's 256
            ms, r = timed(client, "POST", c[owner].base + "/api/call", json={"platform": "discord", "meeting_url": meeting})
            direct.append(ms)
            made.append(r.json())
            ms, r = timed(client, "POST", c[other].base + "/api/call", json={"platform": "discord", "meeting_url": meeting})
            forwarded.append(ms)
            made.append(r.json())
        out["create_call_in_open_room_ms"] = {"direct_p50": round(statistics.median(direct), 3),
                                              "forwarded_p50": round(statistics.median(forwarded), 3)}
        for m in made + [first]:
            client.delete(c[owner].base + f"/api/call/{m['call_id']}", headers={"X-API-Key": KEY})

        # Redis operations per call: 100 calls, each in a new room, created through a node that is
        # not always the owner, each ended.
        before = commandstats(redis)
        for i in range(100):
            r = timed(client, "POST", c["ma"].base + "/api/call",
                      json={"platform": "discord", "meeting_url": f"https://discord.example/measure/room{i}"})[1]
            client.delete(c["ma"].base + f"/api/call/{r.json()['call_id']}", headers={"X-API-Key": KEY})
        time.sleep(0.5)
        per = delta(before, commandstats(redis))
        # What the heartbeats did meanwhile is not the calls': subtract the idle rate for the time.
        out["redis_ops_per_call_new_room_with_heartbeats"] = {k: round(v / 100, 2) for k, v in sorted(per.items())}
        client.close()
    finally:
        c.stop()
        redis.stop()

    # SIGKILL → bridge_disconnected, and → a re-create that succeeds.
    to_event, to_recreate = [], []
    for k in range(a.kills):
        redis = Redis()
        c = Cluster(redis, ids=(f"k{k}a", f"k{k}b", f"k{k}c"))
        try:
            meeting = f"https://discord.example/kill/{k}"
            call = httpx.post(c[f"k{k}a"].base + "/api/call", headers={"X-API-Key": KEY},
                              json={"platform": "discord", "meeting_url": meeting}).json()
            victim = owner_of(call)
            watcher = next(i for i in c.nodes if i != victim)

            async def go():
                events = await websockets.connect(f"{c[watcher].ws}/api/events?api_key={KEY}")
                t0 = time.monotonic()
                c[victim].proc.send_signal(signal.SIGKILL)
                while True:
                    e = json.loads(await asyncio.wait_for(events.recv(), 15))
                    if e.get("type") == "call_error" and e.get("call_id") == call["call_id"]:
                        break
                t_event = time.monotonic() - t0
                await events.close()
                return t0, t_event

            t0, t_event = asyncio.run(go())
            to_event.append(t_event)
            while True:
                r = httpx.post(c[watcher].base + "/api/call", headers={"X-API-Key": KEY},
                               json={"platform": "discord", "meeting_url": meeting})
                if r.status_code == 200 and owner_of(r.json()) != victim:
                    break
                time.sleep(0.01)
            to_recreate.append(time.monotonic() - t0)
        finally:
            c.nodes[victim].proc.wait(5)
            c.stop()
            redis.stop()
    out["sigkill_to_bridge_disconnected_s"] = {"median": round(statistics.median(to_event), 2), "all": [round(x, 2) for x in to_event]}
    out["sigkill_to_recreate_s"] = {"median": round(statistics.median(to_recreate), 2), "all": [round(x, 2) for x in to_recreate]}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
