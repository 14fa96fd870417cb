"""SPEC §4 through a real WebSocket: messages, audio in and out, mix-minus, marks, clears."""
import asyncio
import base64
import json
import socket
import time

import numpy as np
import pytest
import websockets

from conftest import KEY1, KEY2, api, new_call, recv_json, run


def ws_url(server, call, key=KEY1):
    return f"{server.ws}/api/call/{call['call_id']}/stream?api_key={key}"


def sine(freq, rate, seconds, dbfs=-6.0, phase=0.0):
    t = np.arange(int(rate * seconds)) / rate
    return (10 ** (dbfs / 20) * 32767 * np.sin(2 * np.pi * freq * t + phase)).round().astype("<i2")


def band_amplitude(x, freq, rate):
    x = np.asarray(x, dtype=float)
    w = np.hanning(len(x))
    spec = np.abs(np.fft.rfft(x * w)) * 2 / w.sum()
    k = int(round(freq * len(x) / rate))
    return spec[max(0, k - 2):k + 3].max()


def fitted_snr(x, freq, rate):
    x = np.asarray(x, dtype=float)
    t = np.arange(len(x)) / rate
    A = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t), np.ones_like(t)], axis=1)
    coef, *_ = np.linalg.lstsq(A, x, rcond=None)
    fit = A[:, :2] @ coef[:2]
    resid = x - fit - coef[2]
    return 10 * np.log10((fit ** 2).sum() / (resid ** 2).sum()), np.hypot(coef[0], coef[1])


async def collect(ws, seconds, frame_bytes=None):
    """Binary frames for `seconds`, with arrival times."""
    frames, times = [], []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            m = await asyncio.wait_for(ws.recv(), max(0.01, end - time.monotonic()))
        except asyncio.TimeoutError:
            break
        if isinstance(m, bytes):
            if frame_bytes is not None:
                assert len(m) == frame_bytes
            frames.append(m)
            times.append(time.monotonic())
    return frames, times


async def open_ws(server, call, rate=None, receive=None, key=KEY1):
    ws = await websockets.connect(ws_url(server, call, key), max_size=None)
    state = await recv_json(ws, "call_state")
    assert state["state"] == "active"
    if rate is not None or receive is not None:
        msg = {"type": "audio_config"}
        if rate is not None:
            msg["sample_rate"] = rate
        if receive is not None:
            msg["receive"] = receive
        await ws.send(json.dumps(msg))
        cfg = await recv_json(ws, "audio_config")
        assert cfg["ready"] is True
    return ws


def test_refused_before_upgrade(server):
    c = new_call(server)

    async def go():
        for url, status in [(ws_url(server, c, "chmd_wrong"), 401), (ws_url(server, c, KEY2), 404),
                            (f"{server.ws}/api/call/nope/stream?api_key={KEY1}", 404),
                            (f"{server.ws}/api/call/{c['call_id']}/stream", 401)]:
            with pytest.raises(websockets.InvalidStatus) as e:
                async with websockets.connect(url):
                    pass
            assert e.value.response.status_code == status, url
            assert json.loads(e.value.response.body)["error"]["code"] in ("unauthorized", "not_found")
        # The key in a header works too.
        async with websockets.connect(f"{server.ws}/api/call/{c['call_id']}/stream",
                                      additional_headers={"X-API-Key": KEY1}) as ws:
            assert (await recv_json(ws, "call_state"))["state"] == "active"
    run(go())


def test_audio_config_cases(server):
    c = new_call(server, platform="discord")

    async def go():
        ws = await open_ws(server, c)
        await ws.send(json.dumps({"type": "audio_config"}))
        cfg = await recv_json(ws, "audio_config")
        assert cfg == {"type": "audio_config", "sample_rate": 48000, "native_sample_rate": 48000, "resampling": False,
                       "format": "pcm_s16le", "channels": 1, "frame_duration_ms": 20, "frame_bytes": 1920,
                       "ready": True, "receive": False}
        await ws.send(json.dumps({"type": "audio_config", "sample_rate": 24000, "receive": True}))
        cfg = await recv_json(ws, "audio_config")
        assert (cfg["sample_rate"], cfg["resampling"], cfg["frame_bytes"], cfg["receive"]) == (24000, True, 960, True)
        frames, _ = await collect(ws, 0.3)
        assert frames and all(len(f) == 960 for f in frames)
        for bad in [7999, 8025, 48050, 96000, 0, -16000, "16000", 22050.5]:
            await ws.send(json.dumps({"type": "audio_config", "sample_rate": bad}))
            err = await recv_json(ws, "call_error")
            assert err["code"] == "unsupported_sample_rate", bad
        await ws.send(json.dumps({"type": "audio_config"}))
        assert (await recv_json(ws, "audio_config"))["sample_rate"] == 24000  # nothing changed
        for odd_rate in [8050, 22050, 44100]:
            await ws.send(json.dumps({"type": "audio_config", "sample_rate": odd_rate}))
            assert (await recv_json(ws, "audio_config"))["frame_bytes"] == odd_rate // 50 * 2
        await ws.send(json.dumps({"type": "audio_config", "receive": False}))
        cfg = await recv_json(ws, "audio_config")
        assert cfg["receive"] is False
        await asyncio.sleep(0.1)
        frames, _ = await collect(ws, 0.3)
        assert frames == []
        await ws.close()
    run(go())


def test_bad_messages_keep_the_connection(server):
    c = new_call(server)

    async def go():
        ws = await open_ws(server, c)
        for text, code in [("not json", "invalid_message"), ("[1,2]", "invalid_message"), ('{"no":"type"}', "invalid_message"),
                           ('{"type":"dance"}', "unknown_type"), ('{"type":"audio","audio":"!!notbase64"}', "invalid_audio"),
                           ('{"type":"say","text":""}', "invalid_text"), ('{"type":"say"}', "invalid_text")]:
            await ws.send(text)
            assert (await recv_json(ws, "call_error"))["code"] == code, text
        await ws.send(json.dumps({"type": "audio_config"}))
        assert (await recv_json(ws, "audio_config"))["ready"]
        await ws.close()
    run(go())


def test_frame_size_limits_and_odd_bytes(server):
    c = new_call(server, platform="teams")

    async def go():
        ws = await open_ws(server, c, rate=8000)  # 8 kHz: 1 MiB queues 65 s, beyond the 60 s playout queue
        await ws.send(b"\x00" * (1024 * 1024 + 1))
        assert (await recv_json(ws, "call_error"))["code"] == "frame_too_large"
        big = np.zeros(1024 * 1024 // 2, dtype="<i2").tobytes()
        await ws.send(big)  # 1 MiB: accepted; 65.5 s at 8 kHz overflows the 60 s queue, reported
        assert (await recv_json(ws, "call_error"))["code"] == "playout_overflow"
        await ws.send(json.dumps({"type": "clear"}))
        cleared = await recv_json(ws, "cleared")
        assert 59000 <= cleared["dropped_ms"] <= 60100
        # Odd byte counts and single bytes are a byte stream: 3 + 1 + 1 + 5 bytes make 5 samples.
        for chunk in [b"\x01\x02\x03", b"\x04", b"\x05", b"\x06\x07\x08\x09\x0a"]:
            await ws.send(chunk)
        await ws.send(json.dumps({"type": "audio_config"}))  # still usable
        assert (await recv_json(ws, "audio_config"))["sample_rate"] == 8000
        await ws.close()
    run(go())


def test_two_talkers_and_a_listener_mix_minus(server):
    meeting = f"https://meet.example/mix/{time.time()}"
    a, b, l = (new_call(server, platform="discord", meeting=meeting) for _ in range(3))

    async def go():
        wa = await open_ws(server, a, rate=48000, receive=True)
        wb = await open_ws(server, b, rate=48000, receive=True)
        wl = await open_ws(server, l, rate=48000, receive=True)
        await wa.send(sine(440, 48000, 2.0).tobytes())
        await wb.send(base64.b64encode(sine(1000, 48000, 2.0).tobytes()).decode().join(['{"type":"audio","audio":"', '"}']))
        heard = await asyncio.gather(collect(wa, 1.8), collect(wb, 1.8), collect(wl, 1.8))
        sig = [np.frombuffer(b"".join(f[-60:]), dtype="<i2") for f, _ in heard]
        full = 10 ** (-6 / 20) * 32767
        db = lambda x, f: 20 * np.log10(max(band_amplitude(x, f, 48000), 1e-3) / full)
        assert db(sig[0], 1000) > -1.5 and db(sig[0], 440) < -60, "A hears B only"
        assert db(sig[1], 440) > -1.5 and db(sig[1], 1000) < -60, "B hears A only"
        assert db(sig[2], 440) > -1.5 and db(sig[2], 1000) > -1.5, "the listener hears both"
        for w in (wa, wb, wl):
            await w.close()
    run(go())


def test_24k_talker_heard_by_16k_listener(server):
    meeting = f"https://meet.example/rates/{time.time()}"
    t, l = (new_call(server, platform="discord", meeting=meeting) for _ in range(2))

    async def go():
        wt = await open_ws(server, t, rate=24000)
        wl = await open_ws(server, l, rate=16000, receive=True)
        await wt.send(sine(1000, 24000, 2.0).tobytes())
        frames, _ = await collect(wl, 1.8, frame_bytes=640)
        x = np.frombuffer(b"".join(frames[-50:]), dtype="<i2")
        snr, amp = fitted_snr(x, 1000, 16000)
        assert snr >= 70, snr
        assert abs(20 * np.log10(amp / (10 ** (-6 / 20) * 32767))) < 0.5
        await wt.close()
        await wl.close()
    run(go())


def test_five_seconds_in_one_frame_plays_in_five_seconds_then_mark(server):
    meeting = f"https://meet.example/playout/{time.time()}"
    t, l = (new_call(server, platform="zoom", meeting=meeting) for _ in range(2))

    async def go():
        wt = await open_ws(server, t)
        wl = await open_ws(server, l, receive=True)
        await wt.send(sine(500, 16000, 5.0, dbfs=-12).tobytes())
        sent = time.monotonic()
        await wt.send(json.dumps({"type": "mark", "name": "end-of-5s"}))
        frames, times = await collect(wl, 6.5, frame_bytes=640)
        loud = [tm for f, tm in zip(frames, times) if np.abs(np.frombuffer(f, dtype="<i2")).max() > 1000]
        assert 4.6 <= loud[-1] - sent <= 5.6, loud[-1] - sent
        assert 240 <= len(loud) <= 252
        mark = await recv_json(wt, "mark", timeout=2)
        assert mark["name"] == "end-of-5s"
        # A mark with nothing queued comes back at once.
        await wt.send(json.dumps({"type": "mark", "name": "now"}))
        assert (await recv_json(wt, "mark", timeout=1))["name"] == "now"
        await wt.close()
        await wl.close()
    run(go())


def test_clear_midway_reports_dropped_ms(server):
    c = new_call(server, platform="telegram")

    async def go():
        ws = await open_ws(server, c)
        await ws.send(np.zeros(16000 * 10, dtype="<i2").tobytes())  # 10 s
        await ws.send(json.dumps({"type": "mark", "name": "after-10s"}))
        await asyncio.sleep(2.0)
        await ws.send(json.dumps({"type": "clear"}))
        first = await recv_json(ws, timeout=2)
        second = await recv_json(ws, timeout=2)
        by_type = {first["type"]: first, second["type"]: second}
        assert by_type["mark"]["name"] == "after-10s"   # a mark pending at a clear is reported at once
        assert 7700 <= by_type["cleared"]["dropped_ms"] <= 8250, by_type
        r = api(server, "POST", f"/api/call/{c['call_id']}/stop-speaking")
        assert r.json() == {"dropped_ms": 0, "spoken_text": ""}
        await ws.send(np.zeros(16000 * 3, dtype="<i2").tobytes())
        await asyncio.sleep(0.5)
        dropped = api(server, "POST", f"/api/call/{c['call_id']}/stop-speaking").json()["dropped_ms"]
        assert 2300 <= dropped <= 2750, dropped
        await ws.close()
    run(go())


def test_a_stalled_reader_does_not_disturb_another(server):
    meeting = f"https://meet.example/slow/{time.time()}"
    s, f = (new_call(server, platform="discord", meeting=meeting) for _ in range(2))

    def dropped():
        m = api(server, "GET", "/metrics").text
        return float([l for l in m.splitlines() if l.startswith("chamade_socket_dropped_frames_total")][0].split()[1])

    before = dropped()

    async def go():
        # A client that stops reading, with a small receive buffer so the backlog reaches the server
        # within the test rather than filling megabytes of loopback buffers first.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        slow = await websockets.connect(ws_url(server, s), max_size=None, max_queue=1, sock=sock)
        await slow.send(json.dumps({"type": "audio_config", "receive": True}))
        fast = await open_ws(server, f, receive=True)
        frames, times = await collect(fast, 4.0, frame_bytes=1920)  # `slow` never reads meanwhile
        assert 185 <= len(frames) <= 205, len(frames)
        gaps = np.diff(times)
        assert np.percentile(gaps, 99) < 0.060, np.percentile(gaps, 99)
        await slow.close()
        await fast.close()
    run(go())
    # The stalled reader's losses are counted (oldest first, in the engine's outbound queue).
    after = dropped()
    assert after > before, (before, after)


def test_chat_typing_and_transcript_events(server):
    meeting = f"https://meet.example/chat/{time.time()}"
    a = new_call(server, platform="slack", meeting=meeting, name="Alice Bot")
    b = new_call(server, platform="slack", meeting=meeting, name="Bob Bot")

    async def go():
        wa = await open_ws(server, a)
        wb = await open_ws(server, b)
        api(server, "POST", f"/api/call/{a['call_id']}/chat", json={"text": "hello from A", "sender_name": "Alice"})
        assert await recv_json(wb, "call_chat") == {"type": "call_chat", "sender": "Alice", "text": "hello from A"}
        await wb.send(json.dumps({"type": "send_chat", "text": "hi from B"}))
        assert await recv_json(wa, "call_chat") == {"type": "call_chat", "sender": "Bob Bot", "text": "hi from B"}
        api(server, "POST", f"/api/call/{b['call_id']}/typing")
        assert (await recv_json(wa, "call_typing"))["type"] == "call_typing"
        # A call never gets its own chat.
        with pytest.raises(TimeoutError):
            await recv_json(wa, "call_chat", timeout=0.5)
        await wa.close()
        await wb.close()
    run(go())


def test_hang_up_closes_the_socket(server):
    c = new_call(server)

    async def go():
        ws = await open_ws(server, c)
        api(server, "DELETE", f"/api/call/{c['call_id']}")
        assert (await recv_json(ws, "call_state"))["state"] == "ended"
        with pytest.raises(websockets.ConnectionClosed) as e:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert e.value.rcvd is not None and e.value.rcvd.code == 1000
        # An ended call refuses new streams before the upgrade.
        with pytest.raises(websockets.InvalidStatus) as e2:
            async with websockets.connect(ws_url(server, c)):
                pass
        assert e2.value.response.status_code == 409
    run(go())


def test_rate_changes_while_receiving(server):
    """Rate changes racing the delivery of blocks: every frame has the size of some declared rate,
    and the connection and the server survive."""
    meeting = f"https://meet.example/churn/{time.time()}"
    t, l = (new_call(server, platform="discord", meeting=meeting) for _ in range(2))

    async def go():
        wt = await open_ws(server, t)
        wl = await open_ws(server, l, receive=True)
        await wt.send(sine(700, 48000, 3.0).tobytes())
        sizes = {16000: 640, 24000: 960, 48000: 1920, 8000: 320}
        seen = set()
        for i in range(60):
            await wl.send(json.dumps({"type": "audio_config", "sample_rate": list(sizes)[i % 4]}))
            frames, _ = await collect(wl, 0.02)
            seen.update(len(f) for f in frames)
        assert seen and seen <= set(sizes.values()), seen
        await wl.send(json.dumps({"type": "audio_config", "sample_rate": 16000}))
        await recv_json(wl, "audio_config")
        frames, _ = await collect(wl, 0.5)
        assert frames and len(frames[-1]) == 640
        await wt.close()
        await wl.close()
    run(go())
    assert api(server, "GET", "/api/calls").status_code == 200
