"""Built-in speech through a live server (SPEC §7): `say` with espeak-ng heard by the room,
marks after it, barge-in with the words heard, and a server without TTS."""
import asyncio
import json
import time

import numpy as np
import pytest
import websockets

from conftest import KEY1, Server, api, new_call, recv_json, run

TEXT = "Hello everyone, this is the bridge speaking. The meeting starts in five minutes, please stay on the line."


@pytest.fixture(scope="module")
def server():
    s = Server("--api-key", KEY1, "--tts", "espeak")
    yield s
    s.stop()


def ws_url(server, call):
    return server.base.replace("http", "ws") + f"/api/call/{call['call_id']}/stream?api_key={KEY1}"


async def open_ws(server, call, rate, receive):
    ws = await websockets.connect(ws_url(server, call), max_size=None)
    assert (await recv_json(ws, "call_state"))["state"] == "active"
    await ws.send(json.dumps({"type": "audio_config", "sample_rate": rate, "receive": receive}))
    assert (await recv_json(ws, "audio_config"))["sample_rate"] == rate
    return ws


async def record(ws, seconds):
    chunks, messages = [], []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        try:
            m = await asyncio.wait_for(ws.recv(), left)
        except asyncio.TimeoutError:
            break
        if isinstance(m, bytes):
            chunks.append(m)
        else:
            messages.append(json.loads(m))
    return np.frombuffer(b"".join(chunks), dtype="<i2"), messages


def speech_frames(x, rate):
    """20 ms frames whose speech-band (300-3400 Hz) energy is above -45 dBFS."""
    n = rate // 50
    count = 0
    for i in range(0, len(x) - n + 1, n):
        spectrum = np.fft.rfft(x[i:i + n].astype(float) / 32768)
        freqs = np.fft.rfftfreq(n, 1 / rate)
        band = np.sum(np.abs(spectrum[(freqs >= 300) & (freqs <= 3400)]) ** 2) / n ** 2 * 2
        count += band > 10 ** (-45 / 10)
    return count


def test_say_is_heard_by_the_room_for_about_queued_ms(server):
    """A says TEXT: queued_ms is espeak-ng's length for it (about 54 ms a character); B hears
    speech-band energy for about that long (silences between words excepted), then nothing."""
    meeting = f"https://meet.example/say/{time.time()}"
    a, b = new_call(server, meeting=meeting), new_call(server, meeting=meeting, name="Listener")

    async def go():
        wb = await open_ws(server, b, 16000, True)
        start = time.monotonic()
        r = await asyncio.to_thread(api, server, "POST", f"/api/call/{a['call_id']}/say", json={"text": TEXT})
        answered = time.monotonic() - start
        assert r.status_code == 200, r.text
        queued = r.json()["queued_ms"]
        x, _ = await record(wb, queued / 1000 + 1.5)
        await wb.close()
        return queued, answered, x
    queued, answered, x = run(go())
    assert 0.5 * 54 * len(TEXT) < queued < 1.6 * 54 * len(TEXT), queued
    assert answered < 2.0, answered
    speaking = speech_frames(x, 16000) * 20
    # Speech fills most of the say (pauses between words are quiet), and nothing beyond it.
    assert 0.5 * queued <= speaking <= queued + 100, (speaking, queued)


def test_clear_mid_say_tells_the_words_heard(server):
    """A says TEXT and clears about 2 s into it: `cleared` says what was dropped and `spoken_text`,
    a prefix of TEXT ending at a word, roughly as long as 2 s of speech (54 ms a character); the
    HTTP stop-speaking after that drops nothing and tells ""."""
    meeting = f"https://meet.example/clear/{time.time()}"
    a, b = new_call(server, meeting=meeting), new_call(server, meeting=meeting)

    async def go():
        wa = await open_ws(server, a, 16000, False)
        r = await asyncio.to_thread(api, server, "POST", f"/api/call/{a['call_id']}/say", json={"text": TEXT})
        queued = r.json()["queued_ms"]
        await asyncio.sleep(2.0)
        await wa.send(json.dumps({"type": "clear"}))
        cleared = await recv_json(wa, "cleared", timeout=3)
        await wa.close()
        return queued, cleared
    queued, cleared = run(go())
    spoken = cleared["spoken_text"]
    assert TEXT.startswith(spoken) and spoken, cleared
    assert len(spoken) == len(TEXT) or TEXT[len(spoken)] in " ,.", spoken
    heard_ms = queued - cleared["dropped_ms"]
    assert 1500 <= heard_ms <= 2800, cleared
    # About 54 ms of speech a character: the words heard in ~2 s are some 25-55 characters.
    assert 15 <= len(spoken) <= 60, spoken
    r = api(server, "POST", f"/api/call/{a['call_id']}/stop-speaking")
    assert r.json() == {"dropped_ms": 0, "spoken_text": ""}


def test_no_tts_answers_tts_not_configured():
    s = Server("--api-key", KEY1, "--tts", "none")
    try:
        c = new_call(s)
        r = api(s, "POST", f"/api/call/{c['call_id']}/say", json={"text": "hello"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "tts_not_configured", r.text
        account = api(s, "GET", "/api/account").json()
        assert account["features"]["hosted_tts"] == "unavailable"
    finally:
        s.stop()
