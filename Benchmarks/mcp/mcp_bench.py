#!/usr/bin/env python3
"""Tool-call latency through `chamade mcp` (SPEC §8) against the same call made directly over HTTP.

Starts `chamade serve` (release build if present) and `chamade mcp` as a real MCP client (the
Python `mcp` package) spawns it over stdio; one call joins a room and says one line, then N
`chamade_call_status` tool calls (since=0) and N `GET /api/call/{id}?since=0` requests with one
keep-alive httpx client, one after the other, alternating in blocks of 10 so both see the same
machine. Prints p50/p99/max of each and their ratio; --json prints one object.

    python3 Benchmarks/mcp/mcp_bench.py [--calls 200] [--binary PATH] [--json]
"""
import argparse
import asyncio
import json
import os
import statistics
import sys
import time

import httpx
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "Tests", "server"))
import conftest  # noqa: E402

KEY = "chmd_bench_mcp"


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


async def bench(base, binary, n):
    params = StdioServerParameters(command=binary, args=["mcp", "--url", base, "--api-key", KEY])
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as s:
            await s.initialize()
            joined = await s.call_tool("chamade_call_join", {"platform": "discord", "meeting_url": f"https://bench/{time.time()}"})
            cid = (getattr(joined, "structured_content", None) or joined.structuredContent)["call_id"]
            await s.call_tool("chamade_call_say", {"call_id": cid, "text": "a line for the transcript"})
            mcp_ms, http_ms = [], []
            async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": KEY}) as http:
                for _ in range(10):  # warm-up of both paths
                    await s.call_tool("chamade_call_status", {"call_id": cid, "since": 0})
                    await http.get(f"/api/call/{cid}?since=0")
                for block in range(n // 10):
                    for _ in range(10):
                        t = time.perf_counter()
                        r = await s.call_tool("chamade_call_status", {"call_id": cid, "since": 0})
                        mcp_ms.append((time.perf_counter() - t) * 1000)
                        assert not getattr(r, "is_error", None)
                    for _ in range(10):
                        t = time.perf_counter()
                        r = await http.get(f"/api/call/{cid}?since=0")
                        http_ms.append((time.perf_counter() - t) * 1000)
                        assert r.status_code == 200
            await s.call_tool("chamade_call_hangup", {"call_id": cid})
    return mcp_ms, http_ms


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=200)
    release = os.path.join(ROOT, ".build", "release", "chamade")
    ap.add_argument("--binary", default=release if os.path.exists(release) else conftest.BINARY)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    conftest.BINARY = a.binary
    server = conftest.Server("--api-key", KEY)
    try:
        mcp_ms, http_ms = asyncio.run(bench(server.base, a.binary, a.calls))
    finally:
        server.stop()
    out = {"calls": len(mcp_ms), "binary": a.binary,
           "mcp_ms": {"p50": round(statistics.median(mcp_ms), 2), "p99": round(pct(mcp_ms, 0.99), 2), "max": round(max(mcp_ms), 2)},
           "http_ms": {"p50": round(statistics.median(http_ms), 2), "p99": round(pct(http_ms, 0.99), 2), "max": round(max(http_ms), 2)}}
    out["ratio_p50"] = round(out["mcp_ms"]["p50"] / out["http_ms"]["p50"], 2)
    if a.json:
        print(json.dumps(out))
    else:
        print(f"{out['calls']} chamade_call_status through chamade mcp: p50 {out['mcp_ms']['p50']} ms, p99 {out['mcp_ms']['p99']} ms, max {out['mcp_ms']['max']} ms")
        print(f"{out['calls']} GET /api/call/ID?since=0 over HTTP:       p50 {out['http_ms']['p50']} ms, p99 {out['http_ms']['p99']} ms, max {out['http_ms']['max']} ms")
        print(f"ratio of medians: {out['ratio_p50']}x")


if __name__ == "__main__":
    main()
