"""Built-in speech through a live server (SPEC §7): `say` with espeak-ng heard by the room,
marks and audio after it waiting for it, barge-in with the words heard, a text far longer than
the playout queue fed as it plays, and a server without TTS."""
import asyncio
import json
import time

import numpy as np
import pytest

from conftest import KEY1, Server, api, new_call, open_stream, record, recv_json, run

TEXT = "Hello everyone, this is the bridge speaking. The meeting starts in five minutes, please stay on the line."


@pytest.fixture(scope="module")
def server():
    s = Server("--api-key", KEY1, "--tts", "espeak")
    yield s
    s.stop()


async def open_ws(server, call, rate, receive):
    ws, state = await open_stream(server, call, rate=rate, receive=receive)
    assert state == "active", state
    return ws


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


def test_marks_and_audio_sent_after_a_ws_say_wait_for_it(server):
    """On the socket: say, then a 1 kHz tone, then a mark. The room hears the speech, then the
    tone (held behind the say while it is fed), and the mark comes back only once both played."""
    meeting = f"https://meet.example/order/{time.time()}"
    a, b = new_call(server, meeting=meeting), new_call(server, meeting=meeting, name="Listener")
    tone = (np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000) * 8000).astype("<i2").tobytes()

    async def go():
        wa = await open_ws(server, a, 16000, False)
        wb = await open_ws(server, b, 16000, True)
        start = time.monotonic()
        await wa.send(json.dumps({"type": "say", "text": "Good morning everyone, let us begin."}))
        await wa.send(tone)
        await wa.send(json.dumps({"type": "mark", "name": "after"}))
        x, _ = await record(wb, 5)
        mark = await recv_json(wa, "mark", timeout=5)
        await wa.close()
        await wb.close()
        return x, mark, time.monotonic() - start
    x, mark, _ = run(go())
    assert mark["name"] == "after"
    # Per 20 ms: where the speech is, and where the 1 kHz tone is (its band holds most energy).
    n = 320
    frames = [x[i:i + n].astype(float) for i in range(0, len(x) - n + 1, n)]
    def tone_frame(f):
        spectrum = np.abs(np.fft.rfft(f)) ** 2
        freqs = np.fft.rfftfreq(n, 1 / 16000)
        return spectrum.sum() > 0 and spectrum[(freqs > 900) & (freqs < 1100)].sum() > 0.9 * spectrum.sum()
    loud = [i for i, f in enumerate(frames) if np.sqrt(np.mean(f ** 2)) > 300]
    tones = [i for i, f in enumerate(frames) if tone_frame(f) and np.sqrt(np.mean(f ** 2)) > 3000]
    speech = [i for i in loud if i not in tones]
    assert len(tones) >= 45, len(tones)
    assert len(speech) >= 40, len(speech)
    # The tone comes after all the speech, as one block of about 1 s.
    assert min(tones) > max(speech), (min(tones), max(speech))
    assert max(tones) - min(tones) <= 52


def test_a_say_longer_than_the_queue_is_fed_as_it_plays(server):
    """A 5,000-character say (about 4.5 minutes, far beyond the 60 s playout queue): answered at
    once with queued_ms for the whole text, never `playout_overflow`; only about 20 s is queued
    ahead at any time (a stop-speaking 3 s in drops some 20 s, not 4 minutes); the words heard are
    a prefix of the text; the say's transcript line is that part only."""
    meeting = f"https://meet.example/long/{time.time()}"
    a, b = new_call(server, meeting=meeting, name="Speaker"), new_call(server, meeting=meeting, name="Listener")
    text = " ".join([TEXT] * 60)[:5000].rsplit(" ", 1)[0]

    async def go():
        wa = await open_ws(server, a, 16000, False)
        wb = await open_ws(server, b, 16000, True)
        start = time.monotonic()
        r = await asyncio.to_thread(api, server, "POST", f"/api/call/{a['call_id']}/say", json={"text": text})
        answered = time.monotonic() - start
        x, _ = await record(wb, 3)
        stop = await asyncio.to_thread(api, server, "POST", f"/api/call/{a['call_id']}/stop-speaking")
        after, messages = await record(wb, 2)
        _, mine = await record(wa, 0.5)
        await wa.close()
        await wb.close()
        return r, answered, x, stop.json(), after, messages, mine
    r, answered, x, stop, after, messages, mine = run(go())
    assert r.status_code == 200, r.text
    queued = r.json()["queued_ms"]
    assert answered < 2.0, answered
    assert 0.6 * 54 * len(text) < queued < 1.6 * 54 * len(text), queued
    assert not any(m.get("code") == "playout_overflow" for m in mine), mine
    assert speech_frames(x, 16000) >= 50
    # Fed as it plays: about 20 s ahead (plus one part), never the whole text.
    assert 10_000 <= stop["dropped_ms"] <= 45_000, stop
    spoken = stop["spoken_text"]
    assert spoken and text.startswith(spoken), stop
    assert 15 <= len(spoken) <= 120, spoken
    # The room goes quiet at once.
    assert speech_frames(after[16000 // 2:], 16000) <= 3
    lines = [m for m in messages if m.get("type") == "call_transcript"]
    assert [m["text"] for m in lines] == [spoken], lines
    assert lines[0]["speaker"] == "Speaker"


def test_digits_never_overflow_and_a_say_behind_a_long_one_answers_at_once(server):
    """2,000 zeros ("zero zero …", far more speech per character than words): fed without ever
    overflowing the playout queue; a second say sent while the first is still being fed is
    answered at once (its length estimated from its text), not when its turn comes."""
    c = new_call(server, meeting=f"https://meet.example/digits/{time.time()}")

    async def go():
        ws = await open_ws(server, c, 16000, False)
        start = time.monotonic()
        first = await asyncio.to_thread(api, server, "POST", f"/api/call/{c['call_id']}/say", json={"text": "0" * 2000})
        first_s = time.monotonic() - start
        start = time.monotonic()
        second = await asyncio.to_thread(api, server, "POST", f"/api/call/{c['call_id']}/say", json={"text": TEXT})
        second_s = time.monotonic() - start
        _, messages = await record(ws, 4)
        await ws.close()
        return first, first_s, second, second_s, messages
    first, first_s, second, second_s, messages = run(go())
    assert first.status_code == 200 and first_s < 2.0, (first.text, first_s)
    assert first.json()["queued_ms"] > 60_000, first.json()
    assert second.status_code == 200 and second_s < 1.0, (second.text, second_s)
    assert abs(second.json()["queued_ms"] - 54 * len(TEXT)) < 10, second.json()
    assert not any(m.get("code") == "playout_overflow" for m in messages), messages
    r = api(server, "POST", f"/api/call/{c['call_id']}/stop-speaking")
    assert r.status_code == 200 and 10_000 <= r.json()["dropped_ms"] <= 60_000, r.json()
