"""SPEC §3 through a real socket: every route, its errors, auth and isolation."""
import httpx

from conftest import KEY2, api, new_call

PLATFORM_RATES = {"discord": 48000, "meet": 48000, "nctalk": 48000, "slack": 48000,
                  "teams": 16000, "zoom": 16000, "telegram": 16000, "whatsapp": 16000}


def test_create_call_per_platform_native_rate(server):
    for platform, rate in PLATFORM_RATES.items():
        c = new_call(server, platform=platform)
        assert c["state"] == "active"
        assert c["platform"] == platform
        assert c["audio"] == {"sample_rate": rate, "format": "pcm_s16le", "channels": 1,
                              "frame_duration_ms": 20, "frame_bytes": rate // 50 * 2}
        for field in ["call_id", "room_id", "participant_id", "text_ws_url", "capabilities", "meeting_url",
                      "agent_name", "direction", "created_at", "ended_at"]:
            assert field in c, field
        assert c["text_ws_url"].endswith(f"/api/call/{c['call_id']}/stream")
        assert c["agent_name"] == "AI Agent"
    # This server runs with SIP off: `sip` is refused clearly instead of making a hollow room (SPEC
    # §6: with SIP off, `sip` calls are refused with 400 sip_unavailable; test_sip.py covers SIP); an
    # `rtp` call needs an rtp:// URL (test_rtp_legs.py covers the legs).
    for platform, code in [("sip", "sip_unavailable"), ("rtp", "invalid_meeting_url")]:
        r = api(server, "POST", "/api/call", json={"platform": platform, "meeting_url": "sip:1@127.0.0.1"})
        assert r.status_code == 400 and r.json()["error"]["code"] == code, r.text


def test_same_platform_and_url_share_a_room_whatever_the_key(server):
    a = new_call(server, platform="zoom", meeting="https://zoom.example/shared")
    b = new_call(server, platform="zoom", meeting="https://zoom.example/shared", key=KEY2)
    c = new_call(server, platform="teams", meeting="https://zoom.example/shared")
    assert a["room_id"] == b["room_id"]
    assert c["room_id"] != a["room_id"]


def test_create_call_errors(server):
    assert api(server, "POST", "/api/call", json={"meeting_url": "x"}).status_code == 400
    r = api(server, "POST", "/api/call", json={"platform": "myspace", "meeting_url": "x"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_platform"
    r = api(server, "POST", "/api/call", json={"platform": "discord"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_meeting_url"
    r = api(server, "POST", "/api/call", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = api(server, "POST", "/api/call", content=b"x" * (1024 * 1024 + 10))
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    # Unknown fields are ignored; a trailing slash is accepted.
    r = api(server, "POST", "/api/call/", json={"platform": "zoom", "meeting_url": "z:1", "transcripts": False, "zzz": 1})
    assert r.status_code == 200, r.text
    assert r.json()["audio"]["sample_rate"] == 16000


def test_auth_missing_and_wrong_key(server):
    for key in [None, "chmd_wrong"]:
        for method, path in [("GET", "/api/calls"), ("POST", "/api/call"), ("GET", "/api/account"), ("GET", "/metrics"),
                             ("GET", "/api/call/x"), ("DELETE", "/api/call/x")]:
            r = api(server, method, path, key=key, json={"platform": "discord", "meeting_url": "u"})
            assert r.status_code == 401, (key, method, path)
            assert r.json()["error"]["code"] == "unauthorized"


def test_isolation_between_keys(server):
    c = new_call(server)
    cid = c["call_id"]
    for method, path in [("GET", f"/api/call/{cid}"), ("DELETE", f"/api/call/{cid}"), ("POST", f"/api/call/{cid}/chat"),
                         ("POST", f"/api/call/{cid}/stop-speaking"), ("POST", f"/api/call/{cid}/typing"),
                         ("POST", f"/api/call/{cid}/say"), ("POST", f"/api/call/{cid}/accept")]:
        r = api(server, method, path, key=KEY2, json={"text": "hi"})
        assert r.status_code == 404, (method, path, r.text)
    assert cid not in [x["call_id"] for x in api(server, "GET", "/api/calls", key=KEY2).json()["calls"]]
    assert cid in [x["call_id"] for x in api(server, "GET", "/api/calls").json()["calls"]]
    assert api(server, "GET", f"/api/call/{cid}").status_code == 200


def test_status_with_since_and_transcript_fields(server):
    c = new_call(server)
    r = api(server, "GET", f"/api/call/{c['call_id']}?since=0")
    assert r.status_code == 200
    o = r.json()
    assert o["transcript"] == [] and o["transcript_length"] == 0
    assert api(server, "GET", f"/api/call/{c['call_id']}?since=-1").status_code == 400
    assert api(server, "GET", f"/api/call/{c['call_id']}?since=abc").status_code == 400
    assert api(server, "GET", "/api/call/call_doesnotexist").status_code == 404


def test_hang_up_and_list(server):
    c = new_call(server)
    r = api(server, "DELETE", f"/api/call/{c['call_id']}")
    assert r.status_code == 200 and r.json()["state"] == "ended" and r.json()["ended_at"]
    assert c["call_id"] not in [x["call_id"] for x in api(server, "GET", "/api/calls").json()["calls"]]
    r = api(server, "DELETE", f"/api/call/{c['call_id']}")
    assert r.status_code == 409 and r.json()["error"]["code"] == "call_ended"
    assert api(server, "GET", f"/api/call/{c['call_id']}").json()["state"] == "ended"
    assert api(server, "POST", f"/api/call/{c['call_id']}/chat", json={"text": "x"}).status_code == 409


def test_chat_say_stop_typing_accept_refuse(server):
    c = new_call(server)
    cid = c["call_id"]
    assert api(server, "POST", f"/api/call/{cid}/chat", json={"text": "hello", "sender_name": "Bot"}).status_code == 200
    for bad in ["", "x" * 10001]:
        r = api(server, "POST", f"/api/call/{cid}/chat", json={"text": bad})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_text"
    assert api(server, "POST", f"/api/call/{cid}/chat", json={"text": "x" * 10000}).status_code == 200
    r = api(server, "POST", f"/api/call/{cid}/stop-speaking")
    assert r.status_code == 200 and r.json() == {"dropped_ms": 0, "spoken_text": ""}
    # The built-in TTS is on by default (test_speech.py has the rest of say).
    r = api(server, "POST", f"/api/call/{cid}/say", json={"text": "hi"})
    assert r.status_code == 200 and r.json()["queued_ms"] > 100, r.text
    for bad in ["", "x" * 10001]:
        r = api(server, "POST", f"/api/call/{cid}/say", json={"text": bad})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_text"
    assert api(server, "POST", f"/api/call/{cid}/typing").status_code == 200
    for action in ["accept", "refuse"]:
        r = api(server, "POST", f"/api/call/{cid}/{action}")
        assert r.status_code == 409 and r.json()["error"]["code"] == "not_ringing"


def test_account_health_metrics(server):
    new_call(server)
    r = api(server, "GET", "/api/account")
    assert r.status_code == 200
    o = r.json()
    assert o["concurrent_calls"] >= 1
    for platform, rate in PLATFORM_RATES.items():
        assert o["platforms"][platform]["native_sample_rate"] == rate
        assert "audio_in" in o["platforms"][platform]["capabilities"]
    r = httpx.get(server.base + "/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    m = api(server, "GET", "/metrics").text
    for name in ["chamade_calls", "chamade_rooms", "chamade_ticks_total", "chamade_late_ticks_total",
                 'chamade_tick_seconds_bucket{le="+Inf"}', "chamade_engine_dropped_blocks_total", "chamade_socket_dropped_frames_total", "chamade_bytes_in_total"]:
        assert name in m, name
    ticks = int([l for l in m.splitlines() if l.startswith("chamade_ticks_total")][0].split()[1])
    assert ticks > 0


def test_process_metrics_match_proc(server):
    """The process_* gauges a soak watches are the process's own, as /proc gives them."""
    rss, threads, fds = server.rss_mb(), server.threads(), server.fds()
    m = api(server, "GET", "/metrics").text
    value = {l.split()[0]: float(l.split()[1]) for l in m.splitlines() if l.startswith("process_")}
    assert abs(value["process_resident_memory_bytes"] / 2**20 - rss) <= 0.1 * rss, (value, rss)
    # The scrape's own connection and handler threads may come and go between the two readings.
    assert abs(value["process_threads"] - threads) <= 2, (value, threads)
    assert abs(value["process_open_fds"] - fds) <= 2, (value, fds)
    assert value["process_cpu_seconds_total"] > 0
