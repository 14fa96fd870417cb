"""The soak of issue 13 in its CI size: `chamade loadtest --soak` against a live server for two
minutes while agents join and leave all the time (native, resampled, marks and clears, slow
readers, agents in rooms with an RTP leg whose far end echoes). Nothing may be lost or creep. The size fits a debug server and a debug load generator
sharing two cores; the 10-minute, 200-agent run (release) is in docs/reliability.md."""
import json
import subprocess

from conftest import BINARY, KEY1, Server

AGENTS, ROOMS, SECONDS, CHURN = 24, 6, 120, 40


def test_two_minute_soak_with_churn_holds_steady():
    server = Server("--api-key", KEY1)
    try:
        out = subprocess.run(
            [BINARY, "loadtest", "--url", server.base, "--api-key", KEY1, "--agents", str(AGENTS),
             "--rooms", str(ROOMS), "--soak", str(SECONDS), "--churn", str(CHURN), "--json"],
            capture_output=True, text=True, timeout=SECONDS + 120)
        assert out.returncode == 0, out.stderr[-2000:]
        r = json.loads(out.stdout)
        summary = json.dumps({k: v for k, v in r.items() if k != "samples"})
        # Churn happened: every slot lived several calls.
        assert r["calls_created"] >= AGENTS + CHURN * SECONDS // 60 * 0.7, summary
        # Every call was created and connected at the first try (the load generator would retry a
        # create left unanswered for 30 s, and count it).
        assert r["connect_failures"] == 0 and r["create_retries"] == 0, summary
        # Well-behaved agents lose nothing; the server never ran late.
        assert r["frames_expected"] > AGENTS * 0.8 * (SECONDS - 10) * 50 * 0.8, summary
        assert r["frames_lost"] == 0, summary
        assert r["late_ticks"] == 0, summary
        assert r["slow_reader_frames_received"] > 0, summary
        # Legs came and went (a new leg and port pair each time), and their RTP made the round trip.
        assert r["rtp_leg_calls"] >= 2, summary
        sent, received = server.metric("chamade_leg_packets_sent_total"), server.metric("chamade_leg_packets_received_total")
        assert sent > 1000 and received >= sent * 0.99, (sent, received)
        # Every mark and clear got its answer.
        assert r["marks_sent"] > 0 and r["marks_answered"] == r["marks_sent"], summary
        assert r["clears_sent"] > 0 and r["clears_answered"] == r["clears_sent"], summary
        # Latency at the end as at the start (p99 within 20 %).
        first, last = r["latency_p99_first_minute_ms"], r["latency_p99_last_minute_ms"]
        assert 0 < first and last <= first * 1.2, summary
        # Memory flat after the warm-up (no trend: the second half's mean within 10 % of the
        # first's); threads and descriptors back to where they started.
        assert r["rss_drift_percent"] <= 10, summary
        assert r["final"]["threads"] <= r["baseline"]["threads"], summary
        assert r["final"]["fds"] <= r["baseline"]["fds"], summary
        assert len(r["samples"]) == SECONDS // 10, summary
    finally:
        server.stop()
