"""SPEC §5 through real sockets: one ordered outbound path per WebSocket (an `audio_config` answer
before the first frame at the new rate) and slow consumers (a reader that stalls and resumes gets at
most about 1 s of old audio, then live audio at 50 frames per second; others are undisturbed)."""
import asyncio
import json
import socket
import time

import numpy as np
import pytest
import websockets

from conftest import Server, KEY1, KEY2, api, new_call, recv_json, run
from test_websocket import collect, open_ws, sine, ws_url

FRAME_BYTES = {8000: 320, 16000: 640, 24000: 960, 48000: 1920}


def test_audio_config_answer_precedes_frames_at_the_new_rate(server):
    meeting = f"https://meet.example/order/{time.time()}"
    t, l = (new_call(server, platform="discord", meeting=meeting) for _ in range(2))

    async def go():
        wt = await open_ws(server, t)
        wl = await open_ws(server, l, rate=48000, receive=True)
        await wt.send(sine(700, 48000, 8.0, dbfs=-20).tobytes())
        await collect(wl, 0.2)
        rate = 48000
        for new in [16000, 48000, 24000, 8000, 48000, 16000, 8000, 24000, 48000, 16000, 48000]:
            await wl.send(json.dumps({"type": "audio_config", "sample_rate": new}))
            # Until the answer: frames of the old size only.
            while True:
                m = await asyncio.wait_for(wl.recv(), 2)
                if isinstance(m, bytes):
                    assert len(m) == FRAME_BYTES[rate], f"{len(m)}-byte frame before the answer to {rate} -> {new}"
                    continue
                o = json.loads(m)
                if o["type"] == "audio_config":
                    assert o["sample_rate"] == new and o["frame_bytes"] == FRAME_BYTES[new], o
                    break
            # After it: the new size only, and frames keep coming.
            frames, _ = await collect(wl, 0.25)
            sizes = [len(f) for f in frames]
            assert sizes and set(sizes) == {FRAME_BYTES[new]}, f"after the answer to {rate} -> {new}: sizes {sizes}"
            assert len(sizes) >= 6, len(sizes)
            rate = new
        await wt.close()
        await wl.close()
    run(go())


# ---------------------------------------------------------------------------------------------
# Slow consumer

RATE = 48000
BLOCK = RATE // 50                 # samples per 20 ms block
SLOT_S = 0.1                       # the tone changes every 100 ms
BASE_HZ, STEP_HZ = 300, 100        # slot s plays BASE_HZ + STEP_HZ * s (s < 180: up to 18.2 kHz)


def slot_block(k):
    """Block k of the talker's stream: slot k // 5's frequency, a whole number of cycles."""
    f = BASE_HZ + STEP_HZ * (k // 5)
    n = np.arange(BLOCK)
    return (10 ** (-12 / 20) * 32767 * np.sin(2 * np.pi * f * n / RATE)).round().astype("<i2").tobytes()


def slot_of(frame):
    """The slot a received 48 kHz block was sent in (None for silence or a mixed block)."""
    x = np.frombuffer(frame, dtype="<i2").astype(float)
    spec = np.abs(np.fft.rfft(x))
    k = int(spec.argmax())
    if spec[k] * 2 / len(x) < 2000:
        return None
    s = (k * (RATE // BLOCK) - BASE_HZ) / STEP_HZ
    return int(s) if s == int(s) and s >= 0 else None


@pytest.fixture(scope="module")
def slow_server():
    s = Server("--api-key", KEY1, "--api-key", KEY2)
    yield s
    s.stop()


def test_slow_reader_recovers_and_others_are_undisturbed(slow_server):
    server = slow_server
    meeting = f"https://meet.example/slow/{time.time()}"
    a, b, c = (new_call(server, platform="discord", meeting=meeting, name=n) for n in ("A", "B", "C"))
    dropped_before = server.metric("chamade_socket_dropped_frames_total")

    READ1, STALL, READ2 = 2.0, 3.0, 4.5

    async def talker(ws, t0, seconds):
        """Real-time stream: 5 blocks (100 ms) of lead, then one block every 20 ms on absolute deadlines."""
        lead = 5
        for k in range(lead):
            await ws.send(slot_block(k))
        k = lead
        while k < int(seconds * 50):
            due = t0 + (k - lead) * 0.02
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await ws.send(slot_block(k))
            k += 1

    async def reader(ws, until):
        got = []
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return got
            try:
                m = await asyncio.wait_for(ws.recv(), left)
            except asyncio.TimeoutError:
                return got
            if isinstance(m, bytes):
                got.append((time.monotonic(), slot_of(m), len(m)))

    async def go():
        wa = await open_ws(server, a)
        # B: a 4 KiB socket receive buffer (set before connect) and a client queue of one message.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        wb = await websockets.connect(ws_url(server, b), sock=sock, max_size=None, max_queue=1)
        assert (await recv_json(wb, "call_state"))["state"] == "active"
        await wb.send(json.dumps({"type": "audio_config", "receive": True}))
        assert (await recv_json(wb, "audio_config"))["receive"] is True
        wc = await open_ws(server, c, receive=True)

        t0 = time.monotonic()
        total = READ1 + STALL + READ2 + 0.5
        talk = asyncio.create_task(talker(wa, t0, total + 0.5))
        c_task = asyncio.create_task(reader(wc, t0 + total))
        b1 = await reader(wb, t0 + READ1)
        await asyncio.sleep(STALL)  # B reads nothing: the stall is what is tested
        resume = time.monotonic()
        b2 = await reader(wb, resume + READ2)
        c_got = await c_task
        await talk
        for w in (wa, wb, wc):
            await w.close()
        return t0, resume, b1, b2, c_got

    t0, resume, b1, b2, c_got = run(go(), timeout=40)
    dropped_after = server.metric("chamade_socket_dropped_frames_total")

    def age(t, s):
        """Seconds since the start of the slot the block was sent in."""
        return t - (t0 + s * SLOT_S)

    problems = []
    # Sanity: before the stall B got the live stream.
    b1_live = [x for x in b1 if x[1] is not None and x[0] >= t0 + 0.5]
    if len(b1) < 0.85 * READ1 * 50:
        problems.append(f"before the stall B got {len(b1)} frames in {READ1} s")

    # After resuming: at most ~1.2 s of audio sent before the resumption (its slot started more than
    # 0.2 s before it), counting what B's own kernel and library held.
    old = [x for x in b2 if x[1] is not None and t0 + x[1] * SLOT_S < resume - 0.2]
    if len(old) * 0.02 > 1.2:
        problems.append(f"{len(old) * 0.02:.2f} s of old audio after resuming (ages up to {max(age(t, s) for t, s, _ in old):.1f} s)")

    # Back to live within 1.5 s, then live audio at ~50 frames/s.
    live_from = next((t for t, s, _ in b2 if s is not None and age(t, s) < 0.4), None)
    if live_from is None or live_from - resume > 1.5:
        problems.append(f"B back to live audio only {None if live_from is None else round(live_from - resume, 2)} s after resuming")
    tail_start = resume + 1.5
    tail = [x for x in b2 if x[0] >= tail_start]
    tail_s = READ2 - 1.5
    if len(tail) < 46 * tail_s:
        problems.append(f"B got {len(tail)} frames in the last {tail_s} s ({len(tail) / tail_s:.1f}/s, want >= 46/s)")
    tail_ages = [age(t, s) for t, s, _ in tail if s is not None]
    late = [a for a in tail_ages if a > 0.4]
    if not tail_ages or len(late) > 0.05 * len(tail_ages):
        problems.append(f"B's last {tail_s} s: {len(late)} of {len(tail_ages)} identified frames older than 0.4 s"
                        + (f" (median age {np.median(tail_ages):.2f} s)" if tail_ages else ""))

    # C, in the same room, undisturbed throughout.
    c_run = [x for x in c_got if x[0] >= t0 + 0.3]
    span = (t0 + READ1 + STALL + READ2 + 0.5) - (t0 + 0.3)
    if len(c_run) < 46 * span:
        problems.append(f"C got {len(c_run)} frames in {span:.1f} s ({len(c_run) / span:.1f}/s)")
    if len(c_run) > 1:
        gaps = np.diff([x[0] for x in c_run])
        if gaps.max() > 0.25:
            problems.append(f"C had a {gaps.max() * 1000:.0f} ms gap")
    c_ages = [age(t, s) for t, s, _ in c_run if s is not None]
    if not c_ages or np.percentile(c_ages, 99) > 0.4:
        problems.append(f"C's audio is not live: p99 age {np.percentile(c_ages, 99) if c_ages else None}")

    # Drops on the socket side were counted.
    if dropped_before is None or dropped_after is None:
        problems.append("/metrics has no chamade_socket_dropped_frames_total")
    elif dropped_after <= dropped_before:
        problems.append(f"chamade_socket_dropped_frames_total did not increase ({dropped_before} -> {dropped_after})")

    summary = (f"B before stall {len(b1)} frames ({len(b1_live)} identified); after resuming {len(b2)} frames, "
               f"{len(old)} old; C {len(c_run)} frames")
    assert not problems, summary + "\n" + "\n".join(problems)
