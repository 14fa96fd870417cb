"""SPEC §3, §4 and §9 limits through real sockets: Bearer keys, calls per key, sockets per call,
header size, retention of ended calls, the account document, bounded marks and bounded text replies."""
import asyncio
import json
import os
import socket
import time

import numpy as np
import pytest
import websockets

from conftest import KEY1, KEY2, Server, api, new_call, recv_json, run
from test_websocket import collect, open_ws, sine, ws_url


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def error_code(r):
    return r.json()["error"]["code"]


@pytest.fixture(scope="module")
def limited():
    """A server with a low per-key limit and a one-second retention of ended calls."""
    s = Server("--api-key", KEY1, "--api-key", KEY2, "--max-calls-per-key", "3", "--ended-retention", "1")
    yield s
    s.stop()


# ---------------------------------------------------------------------------------------------
# Bearer keys


def test_bearer_key_on_every_kind_of_route(server):
    h = bearer(KEY1)
    r = api(server, "POST", "/api/call", key=None, headers=dict(h),
            json={"platform": "zoom", "meeting_url": f"https://meet.example/bearer/{time.time()}"})
    assert r.status_code == 200, r.text
    cid = r.json()["call_id"]
    r = api(server, "GET", f"/api/call/{cid}", key=None, headers=dict(h))
    assert r.status_code == 200 and r.json()["call_id"] == cid
    r = api(server, "GET", "/api/calls", key=None, headers=dict(h))
    assert r.status_code == 200 and cid in [c["call_id"] for c in r.json()["calls"]]
    for method, path, body in [("POST", f"/api/call/{cid}/chat", {"text": "hi"}), ("POST", f"/api/call/{cid}/typing", None),
                               ("GET", "/api/account", None), ("GET", "/metrics", None)]:
        r = api(server, method, path, key=None, headers=dict(h), json=body)
        assert r.status_code == 200, (method, path, r.status_code, r.text)
    # A Bearer key is a key like any other: isolation holds.
    assert api(server, "GET", f"/api/call/{cid}", key=None, headers=bearer(KEY2)).status_code == 404
    r = api(server, "DELETE", f"/api/call/{cid}", key=None, headers=dict(h))
    assert r.status_code == 200 and r.json()["state"] == "ended"


def test_wrong_bearer_key_is_401(server):
    c = new_call(server)
    for method, path in [("POST", "/api/call"), ("GET", f"/api/call/{c['call_id']}"), ("GET", "/api/calls"),
                         ("DELETE", f"/api/call/{c['call_id']}"), ("GET", "/api/account")]:
        for headers in [bearer("chmd_wrong"), {"Authorization": "Bearer"}, {"Authorization": f"Basic {KEY1}"}]:
            r = api(server, method, path, key=None, headers=headers, json={"platform": "discord", "meeting_url": "u"})
            assert r.status_code == 401, (method, path, headers, r.status_code)
            assert error_code(r) == "unauthorized"
    # Nothing above ended the call.
    assert api(server, "GET", f"/api/call/{c['call_id']}").json()["state"] == "active"


def test_websocket_accepts_a_bearer_key(server):
    c = new_call(server)
    url = f"{server.ws}/api/call/{c['call_id']}/stream"

    async def go():
        async with websockets.connect(url, additional_headers=bearer(KEY1)) as ws:
            assert (await recv_json(ws, "call_state"))["state"] == "active"
        for key, status in [("chmd_wrong", 401), (KEY2, 404)]:
            with pytest.raises(websockets.InvalidStatus) as e:
                async with websockets.connect(url, additional_headers=bearer(key)):
                    pass
            assert e.value.response.status_code == status
    run(go())


# ---------------------------------------------------------------------------------------------
# Calls per key


def test_too_many_calls_per_key(limited):
    made = [new_call(limited, platform="zoom") for _ in range(3)]
    r = api(limited, "POST", "/api/call", json={"platform": "zoom", "meeting_url": f"https://meet.example/4th/{time.time()}"})
    assert r.status_code == 429, r.text
    assert error_code(r) == "too_many_calls"
    assert isinstance(r.json()["error"]["message"], str)
    # Joining an existing room counts the same.
    r = api(limited, "POST", "/api/call", json={"platform": "zoom", "meeting_url": made[0]["meeting_url"]})
    assert r.status_code == 429
    # Another key is not affected.
    others = [new_call(limited, platform="zoom", key=KEY2) for _ in range(3)]
    # Ending one frees its place; an ended call, still readable, does not count.
    assert api(limited, "DELETE", f"/api/call/{made[1]['call_id']}").status_code == 200
    made[1] = new_call(limited, platform="zoom")
    assert api(limited, "POST", "/api/call", json={"platform": "zoom", "meeting_url": "https://meet.example/x"}).status_code == 429
    assert len(api(limited, "GET", "/api/calls").json()["calls"]) == 3
    for c in made:
        api(limited, "DELETE", f"/api/call/{c['call_id']}")
    for c in others:
        api(limited, "DELETE", f"/api/call/{c['call_id']}", key=KEY2)


def test_limits_from_environment_variables():
    env = dict(os.environ, CHAMADE_API_KEYS="chmd_env", CHAMADE_MAX_CALLS_PER_KEY="2", CHAMADE_ENDED_RETENTION="0.5")
    s = Server(env=env)
    try:
        assert api(s, "GET", "/api/account", key="chmd_env").json()["limits"]["max_calls_per_key"] == 2
        a, _ = (new_call(s, key="chmd_env") for _ in range(2))
        r = api(s, "POST", "/api/call", key="chmd_env", json={"platform": "zoom", "meeting_url": "https://meet.example/e"})
        assert r.status_code == 429 and error_code(r) == "too_many_calls"
        assert api(s, "DELETE", f"/api/call/{a['call_id']}", key="chmd_env").status_code == 200
        assert wait_for_status(s, f"/api/call/{a['call_id']}", 404, key="chmd_env", timeout=3) <= 3
    finally:
        s.stop()


# ---------------------------------------------------------------------------------------------
# Sockets per call


def test_ninth_socket_is_refused_before_the_upgrade(server):
    c = new_call(server)
    other = new_call(server)

    async def go():
        socks = []
        for _ in range(8):
            ws = await websockets.connect(ws_url(server, c))
            assert (await recv_json(ws, "call_state"))["state"] == "active"
            socks.append(ws)
        with pytest.raises(websockets.InvalidStatus) as e:
            async with websockets.connect(ws_url(server, c)):
                pass
        assert e.value.response.status_code == 409
        assert json.loads(e.value.response.body)["error"]["code"] == "too_many_streams"
        # The limit is per call.
        async with websockets.connect(ws_url(server, other)) as w:
            assert (await recv_json(w, "call_state"))["state"] == "active"
        # The eight still work.
        for ws in socks:
            await ws.send(json.dumps({"type": "audio_config"}))
            assert (await recv_json(ws, "audio_config"))["ready"] is True
        # Once one closes, a new one is accepted (within a bounded time: the server notices the close).
        await socks.pop().close()
        deadline = time.monotonic() + 3
        while True:
            try:
                ws = await websockets.connect(ws_url(server, c))
                break
            except websockets.InvalidStatus as e2:
                assert e2.response.status_code == 409
                assert time.monotonic() < deadline, "a closed socket still counts against the limit after 3 s"
                await asyncio.sleep(0.05)
        assert (await recv_json(ws, "call_state"))["state"] == "active"
        socks.append(ws)
        with pytest.raises(websockets.InvalidStatus) as e:
            async with websockets.connect(ws_url(server, c)):
                pass
        assert e.value.response.status_code == 409
        for ws in socks:
            await ws.close()
    run(go())


# ---------------------------------------------------------------------------------------------
# Header size


def raw_request(server, head: bytes, timeout=5):
    """Sends a raw request head; returns (status, headers, body, closed_after)."""
    s = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    try:
        s.sendall(head)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        assert b"\r\n\r\n" in data, f"no response head: {data[:200]!r}"
        head_bytes, body = data.split(b"\r\n\r\n", 1)
        lines = head_bytes.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
        n = int(headers.get("content-length", "0"))
        while len(body) < n:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        # Is the connection closed after the answer?
        try:
            closed = s.recv(1) == b""
        except (socket.timeout, TimeoutError):
            closed = False
        except ConnectionResetError:
            closed = True
        return status, headers, body, closed
    finally:
        s.close()


def request_with_headers(server, extra: list[tuple[str, str]]):
    head = f"GET /api/calls HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nX-API-Key: {KEY1}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in extra) + "\r\n"
    return head.encode()


def test_headers_over_16_kib_get_431(server):
    # 8 KiB of headers: fine.
    status, _, body, _ = raw_request(server, request_with_headers(server, [("X-Pad", "a" * 8192)]))
    assert status == 200, body[:200]
    assert "calls" in json.loads(body)
    # One 20 KiB header, or 200 headers of 100 bytes (20 KiB in all): 431 with the JSON error, then closed.
    for extra in ([("X-Pad", "a" * 20480)], [(f"X-Pad-{i}", "b" * 100) for i in range(200)]):
        status, headers, body, closed = raw_request(server, request_with_headers(server, extra))
        assert status == 431, (status, body[:200])
        assert "code" in json.loads(body)["error"], body[:200]
        assert closed, "the connection stays open after a 431"
    # The server is still fine.
    assert api(server, "GET", "/api/calls").status_code == 200


# ---------------------------------------------------------------------------------------------
# Retention of ended calls


def wait_for_status(server, path, status, key=KEY1, timeout=5.0):
    """Polls GET path until it answers `status`; returns the seconds it took (or fails)."""
    start = time.monotonic()
    while True:
        r = api(server, "GET", path, key=key)
        if r.status_code == status:
            return time.monotonic() - start
        assert time.monotonic() - start < timeout, f"{path} still answers {r.status_code} after {timeout} s"
        time.sleep(0.1)


def test_ended_call_readable_then_404_after_retention(limited):
    c = new_call(limited)
    r = api(limited, "DELETE", f"/api/call/{c['call_id']}")
    ended = time.monotonic()
    assert r.status_code == 200
    r = api(limited, "GET", f"/api/call/{c['call_id']}")
    assert r.status_code == 200 and r.json()["state"] == "ended" and r.json()["ended_at"]
    wait_for_status(limited, f"/api/call/{c['call_id']}", 404, timeout=4)
    took = time.monotonic() - ended
    assert 0.5 <= took <= 3.5, took
    r = api(limited, "GET", f"/api/call/{c['call_id']}")
    assert error_code(r) == "not_found"
    assert api(limited, "DELETE", f"/api/call/{c['call_id']}").status_code == 404
    # A call that has not ended is not touched by the retention.
    live = new_call(limited)
    time.sleep(1.6)  # longer than the retention: what is asserted is that nothing happened
    assert api(limited, "GET", f"/api/call/{live['call_id']}").json()["state"] == "active"
    api(limited, "DELETE", f"/api/call/{live['call_id']}")


# ---------------------------------------------------------------------------------------------
# Account and voice configs


def check_account(s, max_calls):
    r = api(s, "GET", "/api/account")
    assert r.status_code == 200
    o = r.json()
    features = o["features"]
    for f in ["audio_in", "audio_out", "text_chat", "hosted_stt", "hosted_tts", "sip"]:
        assert features[f] in ("ready", "unavailable"), (f, features.get(f))
    assert features["audio_in"] == features["audio_out"] == features["text_chat"] == "ready"
    assert o["limits"]["max_calls_per_key"] == max_calls
    assert isinstance(o["concurrent_calls"], int)
    assert set(o["platforms"]) >= {"discord", "teams", "meet", "zoom", "telegram", "slack", "nctalk", "sip", "whatsapp", "rtp"}
    for name, p in o["platforms"].items():
        assert isinstance(p["native_sample_rate"], int) and 8000 <= p["native_sample_rate"] <= 48000, name
        assert isinstance(p["capabilities"], list), name
    assert api(s, "GET", "/api/account", key=None).status_code == 401


def test_account_features_and_limits(server, limited):
    check_account(server, 1000)
    check_account(limited, 3)
    # concurrent_calls follows the key's calls.
    before = api(limited, "GET", "/api/account", key=KEY2).json()["concurrent_calls"]
    c = new_call(limited, key=KEY2)
    assert api(limited, "GET", "/api/account", key=KEY2).json()["concurrent_calls"] == before + 1
    api(limited, "DELETE", f"/api/call/{c['call_id']}", key=KEY2)
    assert api(limited, "GET", "/api/account", key=KEY2).json()["concurrent_calls"] == before


def test_voice_configs(server):
    r = api(server, "GET", "/api/voice-configs")
    assert r.status_code == 200, r.text
    o = r.json()
    assert isinstance(o["tts"], list) and isinstance(o["stt"], list)
    for preset in o["tts"] + o["stt"]:
        assert {"id", "provider", "language", "enabled"} <= set(preset), preset
    assert api(server, "GET", "/api/voice-configs", key=None).status_code == 401


# ---------------------------------------------------------------------------------------------
# text_ws_url from the server's own address


def test_text_ws_url_ignores_the_host_header(server):
    r = api(server, "POST", "/api/call", headers={"Host": "evil.example:666"},
            json={"platform": "zoom", "meeting_url": f"https://meet.example/host/{time.time()}"})
    assert r.status_code == 200, r.text
    c = r.json()
    assert "evil.example" not in c["text_ws_url"]
    assert c["text_ws_url"] == f"{server.ws}/api/call/{c['call_id']}/stream"


def test_advertise_sets_text_ws_url():
    s = Server("--api-key", KEY1, "--advertise", "https://bridge.example.com:9443")
    try:
        c = new_call(s)
        assert c["text_ws_url"] == f"wss://bridge.example.com:9443/api/call/{c['call_id']}/stream"
    finally:
        s.stop()


# ---------------------------------------------------------------------------------------------
# Marks


def test_mark_name_over_256_bytes_is_refused(server):
    c = new_call(server, platform="zoom")

    async def go():
        ws = await open_ws(server, c)
        await ws.send(json.dumps({"type": "mark", "name": "x" * 256}))
        assert (await recv_json(ws, "mark", timeout=2))["name"] == "x" * 256
        # 257 bytes, or 129 two-byte characters (258 bytes): refused, the connection stays open.
        for name in ["x" * 257, "é" * 129]:
            await ws.send(json.dumps({"type": "mark", "name": name}, ensure_ascii=False))
            m = await recv_json(ws, timeout=2)
            assert m["type"] == "call_error" and m["code"] == "invalid_message", m
        await ws.send(json.dumps({"type": "audio_config"}))
        assert (await recv_json(ws, "audio_config"))["ready"] is True
        await ws.close()
    run(go())


def test_marks_wait_for_their_audio(server):
    """Each mark comes back once the audio sent before it has played, never before."""
    meeting = f"https://meet.example/marks/{time.time()}"
    c = new_call(server, platform="zoom", meeting=meeting)

    async def go():
        ws = await open_ws(server, c)
        start = time.monotonic()
        for k in range(5):
            await ws.send(sine(440, 16000, 0.4, dbfs=-20).tobytes())
            await ws.send(json.dumps({"type": "mark", "name": f"m{k}"}))
        for k in range(5):
            m = await recv_json(ws, "mark", timeout=4)
            t = time.monotonic() - start
            assert m["name"] == f"m{k}"
            assert t >= (k + 1) * 0.4 - 0.045, (k, t)
            assert t <= (k + 1) * 0.4 + 0.6, (k, t)
        await ws.close()
    run(go())


def test_4096_pending_marks_then_too_many_marks(server):
    """4,096 marks wait behind queued audio; each one beyond is refused with `too_many_marks` (and
    never answered), and no mark is answered before its audio has played."""
    c = new_call(server, platform="zoom")
    audio_s, extra = 6.0, 904

    async def go():
        ws = await open_ws(server, c)
        before = time.monotonic()
        await ws.send(np.zeros(int(16000 * audio_s), dtype="<i2").tobytes())
        for i in range(4096 + extra):
            await ws.send(json.dumps({"type": "mark", "name": f"m{i}"}))
            if i % 256 == 0:
                await asyncio.sleep(0)
        sent = time.monotonic() - before
        assert sent < audio_s - 1, f"sending the marks took {sent:.1f} s"
        errors, marks, early = [], [], []
        while len(marks) < 4096:
            m = await recv_json(ws, timeout=audio_s + 5)
            t = time.monotonic() - before
            if m["type"] == "call_error":
                errors.append(m["code"])
            elif m["type"] == "mark":
                if t < audio_s - 0.045:
                    early.append((m["name"], round(t, 3)))
                marks.append(m["name"])
        assert not early, f"{len(early)} marks answered before their {audio_s} s of audio had played: {early[:3]}..."
        assert errors == ["too_many_marks"] * extra, (len(errors), set(errors))
        assert sorted(marks) == sorted(f"m{i}" for i in range(4096))
        with pytest.raises(TimeoutError):
            await recv_json(ws, "mark", timeout=0.3)  # the refused ones are never answered
        # With the queue drained, marks are accepted (and answered at once) again.
        await ws.send(json.dumps({"type": "mark", "name": "again"}))
        assert (await recv_json(ws, "mark", timeout=1))["name"] == "again"
        await ws.close()
    run(go(), timeout=40)


# ---------------------------------------------------------------------------------------------
# Text replies to a client that does not read


@pytest.mark.parametrize("kind", ["invalid", "marks"])
def test_unread_replies_close_the_socket_1008(server, kind):
    """A client that never reads but keeps sending messages that are answered at once (7-byte
    invalid messages, or marks with 200-byte names while nothing is queued) is closed (1008) once
    about 1 MB of replies waits for it, and the server's memory stays bounded."""
    c = new_call(server, platform="zoom")
    message = "notjson" if kind == "invalid" else json.dumps({"type": "mark", "name": "n" * 200})

    async def go():
        # The size of one reply, from a client that reads.
        probe = await open_ws(server, new_call(server, platform="zoom"))
        await probe.send(message)
        reply = await recv_json(probe, timeout=2)
        assert reply["type"] == ("call_error" if kind == "invalid" else "mark"), reply
        reply_bytes = len(json.dumps(reply, separators=(",", ":"))) + 2
        await probe.close()
        count = int(4_000_000 / reply_bytes)  # about 4 MB of replies: four times the bound

        # A client with a 4 KiB receive buffer whose library reads nothing once one message waits.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        ws = await websockets.connect(ws_url(server, c), sock=sock, max_queue=1, max_size=None,
                                      ping_interval=None, compression=None)
        rss0 = peak = server.rss_mb()
        start = time.monotonic()
        sent = 0
        send_failed = None
        try:
            while sent < count and time.monotonic() - start < 15:
                await asyncio.wait_for(ws.send(message), 5)
                sent += 1
                if sent % 2000 == 0:
                    peak = max(peak, server.rss_mb())
        except (websockets.ConnectionClosed, asyncio.TimeoutError, OSError) as e:
            send_failed = repr(e)
        peak = max(peak, server.rss_mb())
        # Now read everything: the server must have closed the connection.
        received = 0
        closed = None
        try:
            async with asyncio.timeout(10):
                while True:
                    received += len(await ws.recv())
        except websockets.ConnectionClosed as e:
            closed = e
        except TimeoutError:
            pass
        peak = max(peak, server.rss_mb())
        ws.transport.abort()
        return dict(sent=sent, send_failed=send_failed, closed=closed, received=received, rss0=rss0, peak=peak,
                    elapsed=time.monotonic() - start, count=count, reply_bytes=reply_bytes)

    r = run(go(), timeout=45)
    info = {k: v for k, v in r.items() if k != "closed"}
    assert r["closed"] is not None, f"the server never closed the connection: {info}"
    rcvd = r["closed"].rcvd
    # A close frame may not reach a client that does not read; when one does, it says 1008.
    if rcvd is not None:
        assert rcvd.code == 1008, (rcvd, info)
    assert r["received"] < 3_000_000, f"the client could read {r['received']} bytes of replies: {info}"
    assert r["peak"] - r["rss0"] < 50, f"server RSS grew by {r['peak'] - r['rss0']:.0f} MB: {info}"
    # The server is fine, and so is the call: a new socket on it works.
    assert api(server, "GET", f"/api/call/{c['call_id']}").json()["state"] == "active"

    async def again():
        ws = await open_ws(server, c)
        await ws.send("notjson")
        assert (await recv_json(ws, "call_error"))["code"] == "invalid_message"
        await ws.close()
    run(again())


def test_unread_replies_do_not_disturb_another_call(server):
    """While a non-reading client piles up replies, a listener of another room keeps 50 frames/s."""
    c = new_call(server, platform="zoom")
    meeting = f"https://meet.example/undisturbed/{time.time()}"
    talker, listener = (new_call(server, platform="discord", meeting=meeting) for _ in range(2))

    async def abuse(stop_at):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        ws = await websockets.connect(ws_url(server, c), sock=sock, max_queue=1, ping_interval=None, compression=None)
        try:
            n = 0
            while time.monotonic() < stop_at:
                await asyncio.wait_for(ws.send("notjson"), 5)
                n += 1
                if n % 100 == 0:
                    await asyncio.sleep(0)
        except (websockets.ConnectionClosed, asyncio.TimeoutError, OSError):
            pass
        ws.transport.abort()

    async def go():
        wt = await open_ws(server, talker)
        wl = await open_ws(server, listener, receive=True)
        await wt.send(sine(440, 48000, 8.0, dbfs=-20).tobytes())
        await collect(wl, 0.5)
        stop_at = time.monotonic() + 4.0
        abuser = asyncio.create_task(abuse(stop_at))
        frames, times = await collect(wl, 4.0, frame_bytes=1920)
        await abuser
        await wt.close()
        await wl.close()
        return frames, times

    frames, times = run(go())
    assert len(frames) >= 185, len(frames)
    x = np.frombuffer(b"".join(frames[-50:]), dtype="<i2")
    assert np.abs(x).max() > 1000  # the tone, not silence
