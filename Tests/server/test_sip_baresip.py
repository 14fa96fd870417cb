"""SPEC §3, §4 and §6 (SIP): baresip 1.0.0, a real softphone (baresip_peer.py), calls Chamade's SIP
user agent and is called by it, on 127.0.0.1. The agent side is the call's WebSocket at the native
rate (8000 Hz). Checked end to end: the inbound call rings (API, account events), is accepted and
carries audio both ways; the outbound call goes connecting → active; RFC 4733 DTMF both ways; each
side's hang-up reaches the other. Audio is checked by analysis: the spectral peak, the level, and
the fitted-sine SNR of 100 ms windows (G.711 µ-law/A-law quantisation keeps a -6 dBFS sine near
38 dB; a lost or concealed packet costs a window or two, hence the median and the share of good
windows rather than the minimum). Every wait is bounded and waits for an event (a baresip event,
a WebSocket message, a number of audio frames; GET /api/calls polled where there is none), never
a fixed sleep.

Tones: baresip's `ausine` sends 1 kHz at -6 dBFS peak (-9.03 dBFS RMS); the agent sends 600 Hz at
-6 dBFS. The agent hears its room's mix-minus (baresip only), and baresip's `sndfile` filter
records what it decodes (read once its call has closed)."""
import asyncio
import json
import re
import time

import numpy as np
import pytest
import websockets

from baresip_peer import Baresip, write_tone_wav
from conftest import KEY1, Server, api, recv_json, run
from rtp_peers import frame_levels, peak_frequency, playing_region, rms_dbfs, sine, windowed_snr
from sip_peers import sip_address

# This file's share of the server's RTP port space (test_rtp_legs.py uses 31000-31999); baresip
# takes its own from 40000-49999 (baresip_peer's default).
RTP_PORTS = (33000, 33499)
RATE = 8000                                       # SIP rooms' native rate, whatever the codec
RMS_MINUS_6_PEAK = 20 * np.log10(0.5 / np.sqrt(2))  # -9.03 dBFS: a sine whose peak is -6.02 dBFS
PEER_TONE, AGENT_TONE = 1000, 600
LEG_FIELDS = {"kind", "codec", "payload_type", "local_rtp", "remote_rtp", "packets_received", "packets_lost",
              "packets_late", "jitter_ms", "jitter_buffer_ms", "concealed_ms", "sip_call_id"}


@pytest.fixture(scope="module")
def server():
    s = Server("--api-key", KEY1, "--sip", "127.0.0.1:0", "--sip-route", f"alice={KEY1}",
               "--rtp-timeout", "10", "--rtp-ports", f"{RTP_PORTS[0]}-{RTP_PORTS[1]}")
    _, s.sip_port = sip_address(s)
    yield s
    s.stop()


def get_call(server, call_id):
    r = api(server, "GET", f"/api/call/{call_id}")
    assert r.status_code == 200, r.text
    return r.json()


def ringing_call_from(server, peer, timeout=10.0):
    """The id of the ringing inbound call from `peer`, looked for in GET /api/calls (for the tests
    that do not check the account events)."""
    deadline = time.monotonic() + timeout
    while True:
        for c in api(server, "GET", "/api/calls").json()["calls"]:
            if c["direction"] == "inbound" and c["state"] == "ringing" and \
                    c["meeting_url"].startswith(f"sip:{peer.user}@127.0.0.1:{peer.sip_port}"):
                return c["call_id"]
        assert time.monotonic() < deadline, f"no ringing call from {peer.uri}:\n{peer.proc.output()}"
        time.sleep(0.05)


class Reader:
    """A WebSocket read by a task of its own: binary frames go to `audio` (bytes), text messages to
    `messages`; the wait_* methods wait for what has arrived, bounded in time."""

    def __init__(self, ws, messages=()):
        self.ws = ws
        self.audio = bytearray()
        self.messages = list(messages)
        self.closed = False
        self._cond = asyncio.Condition()
        self._task = asyncio.create_task(self._read())

    async def _read(self):
        try:
            async for m in self.ws:
                async with self._cond:
                    if isinstance(m, bytes):
                        self.audio += m
                    else:
                        self.messages.append(json.loads(m))
                    self._cond.notify_all()
        except websockets.ConnectionClosed:
            pass
        finally:
            async with self._cond:
                self.closed = True
                self._cond.notify_all()

    async def wait(self, predicate, timeout, what):
        try:
            async with self._cond:
                await asyncio.wait_for(self._cond.wait_for(lambda: predicate() or self.closed), timeout)
        except asyncio.TimeoutError:
            pass
        if not predicate():
            raise AssertionError(f"{what}: not within {timeout} s (closed={self.closed}, messages={self.messages})")

    def of_type(self, type_):
        return [m for m in self.messages if m.get("type") == type_]

    async def wait_message(self, type_, timeout, **match):
        def found():
            return [m for m in self.of_type(type_) if all(m.get(k) == v for k, v in match.items())]
        await self.wait(found, timeout, f"{type_} {match}")
        return found()[0]

    async def close(self):
        await self.ws.close()
        await asyncio.wait_for(self._task, 5)


class AccountEvents(Reader):
    """`GET /api/events` (SPEC §3), open for a whole test."""

    @classmethod
    async def open(cls, server):
        return cls(await websockets.connect(f"{server.ws}/api/events?api_key={KEY1}"))

    def states(self, call_id):
        """The `call_state` events of one call so far, in order of arrival."""
        return [m["state"] for m in self.of_type("call_state") if m["call_id"] == call_id]

    async def wait_state(self, call_id, state, timeout=10.0):
        """Waits for `state` among the call's events; all of its states so far."""
        await self.wait(lambda: state in self.states(call_id), timeout, f"call_state {state} of {call_id}")
        return self.states(call_id)


class Agent(Reader):
    """An agent: the call's stream at the native rate, receiving the room's mix-minus."""

    @classmethod
    async def open(cls, server, call_id, want_state="active"):
        """Opens the call's stream; `want_state`: the states the opening call_state may carry. The
        messages that come between it and the `audio_config` answer (a `call_state` `active`, say)
        are kept in `messages`, not skipped."""
        ws = await websockets.connect(f"{server.ws}/api/call/{call_id}/stream?api_key={KEY1}", max_size=None)
        first = await recv_json(ws, "call_state")
        assert first["state"] in want_state.split("|"), first
        await ws.send(json.dumps({"type": "audio_config", "sample_rate": RATE, "receive": True}))
        between = []
        while True:
            m = await recv_json(ws, timeout=5)
            if m.get("type") == "audio_config":
                break
            between.append(m)
        assert m["ready"] is True and m["sample_rate"] == m["native_sample_rate"] == RATE, m
        agent = cls(ws, between)
        agent.first_state = first["state"]
        return agent

    async def record(self, seconds, timeout_extra=5.0):
        """The next `seconds` of received audio (int16), waited for frame by frame."""
        start = len(self.audio)
        want = start + int(seconds * RATE) * 2
        await self.wait(lambda: len(self.audio) >= want, seconds + timeout_extra, f"{seconds} s of audio")
        return np.frombuffer(bytes(self.audio[start:want]), dtype="<i2")

    async def talk(self, samples, timeout_extra=5.0):
        """Sends PCM and waits (a `mark`) until all of it has been played into the room."""
        name = f"talked-{time.monotonic()}"
        await self.ws.send(samples.astype("<i2").tobytes())
        await self.ws.send(json.dumps({"type": "mark", "name": name}))
        await self.wait_message("mark", len(samples) / RATE + timeout_extra, name=name)


def check_tone(x, rate, freq, what, min_seconds, min_median_snr=30.0):
    """A tone from its start to its end: its frequency, its level (median 20 ms frame within 1.5 dB
    of -9.03 dBFS) and its 100 ms windowed SNR (median at least `min_median_snr`, 80 % of the
    windows at least 10 dB under it)."""
    tone = playing_region(x, rate)
    assert len(tone) >= min_seconds * rate, f"{what}: only {len(tone) / rate:.2f} s of tone"
    f = peak_frequency(tone, rate)
    assert abs(f - freq) < 2.0, f"{what}: peak at {f:.2f} Hz, sent {freq} Hz"
    median_level = float(np.median(frame_levels(tone, rate)))
    assert abs(median_level - RMS_MINUS_6_PEAK) < 1.5, f"{what}: median frame level {median_level:.2f} dBFS"
    assert abs(rms_dbfs(tone) - RMS_MINUS_6_PEAK) < 2.5, f"{what}: level {rms_dbfs(tone):.2f} dBFS"
    snr = windowed_snr(tone, freq, rate)
    assert np.median(snr) >= min_median_snr, f"{what}: median windowed SNR {np.median(snr):.1f} dB ({snr.round(1)})"
    good = float(np.mean(snr >= min_median_snr - 10))
    assert good >= 0.8, f"{what}: only {good:.0%} of the 100 ms windows at {min_median_snr - 10} dB or more ({snr.round(1)})"
    return tone


def check_leg(call, codec):
    leg = call["leg"]
    assert LEG_FIELDS <= set(leg), sorted(LEG_FIELDS - set(leg))
    assert (leg["kind"], leg["codec"]) == ("sip", codec), leg
    host, port = leg["local_rtp"].rsplit(":", 1)
    assert host == "127.0.0.1" and RTP_PORTS[0] <= int(port) <= RTP_PORTS[1], leg
    assert leg["remote_rtp"].startswith("127.0.0.1:"), leg
    assert call["audio"]["sample_rate"] == RATE, call["audio"]
    return leg


async def talk_listen_and_dial(agent, server, call_id, peer):
    """The agent talks 600 Hz for 2.5 s while it listens (its own voice is not in its mix-minus)
    and hears baresip's tone; then DTMF both ways: "123" from baresip, "9#" from the agent.
    Returns baresip's event mark from before the agent's digits."""
    talking = asyncio.create_task(agent.talk(sine(AGENT_TONE, RATE, 2.5)))
    heard = await agent.record(3.0)
    await talking
    check_tone(heard, RATE, PEER_TONE, "agent hears baresip", min_seconds=2.5)
    await dtmf_from_peer(agent, peer, "123")
    return await dtmf_to_peer(server, call_id, peer, "9#")


async def dtmf_from_peer(agent, peer, digits="123"):
    """baresip sends `digits` (one sndcode: 180 ms per digit at 20 ms ptime, the end packet 3 times):
    the agent gets one call_dtmf per digit, in order, with baresip's duration (9 x 20 ms)."""
    before = len(agent.of_type("call_dtmf"))
    await asyncio.to_thread(peer.send_dtmf, digits)
    await agent.wait(lambda: len(agent.of_type("call_dtmf")) >= before + len(digits), 10,
                     f"{len(digits)} call_dtmf")
    # The last digit's end packet is repeated twice more within 40 ms: let 300 ms of frames pass
    # before counting, so a duplicate report would be seen.
    await agent.record(0.3)
    got = agent.of_type("call_dtmf")[before:]
    assert [m["digit"] for m in got] == list(digits), got
    for m in got:
        assert 160 <= m["duration_ms"] <= 200, m


async def dtmf_to_peer(server, call_id, peer, digits="9#"):
    """The agent sends `digits` with the API: baresip reports exactly those, in order."""
    mark = peer.mark()
    r = await asyncio.to_thread(api, server, "POST", f"/api/call/{call_id}/dtmf", json={"digits": digits})
    assert r.status_code == 200, r.text
    got = await asyncio.to_thread(peer.wait_dtmf, len(digits), 10, mark)
    assert got == digits, got
    return mark


# ---------------------------------------------------------------------------------------------


def test_baresip_calls_in(server, tmp_path):
    """baresip (user bob, playing a 1 kHz WAV with its aufile source) calls sip:alice@ (routed to
    KEY1): the call rings (180 at
    baresip, `call_ringing` on the account events, `ringing` in GET /api/calls with direction,
    platform, caller and meeting_url); the agent accepts (200, `active`, a PCMU `leg` whose
    sip_call_id is baresip's Call-ID); on the WebSocket it hears 1 kHz while it talks 600 Hz; DTMF
    "123" from baresip reaches it as three call_dtmf; its DTMF "9#" reaches baresip; baresip hangs
    up: the WebSocket gets `ended` and closes, the account events say `ended`, the call is ended
    and gone from the list; baresip's recording of the call is the agent's 600 Hz."""
    tone = write_tone_wav(str(tmp_path / "tone.wav"), PEER_TONE, seconds=30, rate=8000)
    with Baresip(str(tmp_path / "bob"), tone_wav=tone, user="bob") as peer:
        async def go():
            events = await AccountEvents.open(server)
            mark = peer.mark()
            await asyncio.to_thread(peer.dial, f"sip:alice@127.0.0.1:{server.sip_port}")
            ringing = await events.wait_message("call_ringing", 10)
            call = ringing["call"]
            call_id = call["call_id"]
            await asyncio.to_thread(peer.wait_event, "CALL_RINGING", 10, mark)
            assert (call["state"], call["direction"], call["platform"], call["caller"]) == \
                ("ringing", "inbound", "sip", "bob"), call
            assert re.fullmatch(rf"sip:bob@127\.0\.0\.1:{peer.sip_port}(;.*)?", call["meeting_url"]), call
            listed = {c["call_id"]: c for c in api(server, "GET", "/api/calls").json()["calls"]}
            assert listed[call_id]["state"] == "ringing", listed[call_id]

            r = await asyncio.to_thread(api, server, "POST", f"/api/call/{call_id}/accept")
            assert r.status_code == 200, r.text
            assert r.json()["state"] == "active", r.json()
            established = await asyncio.to_thread(peer.wait_established, 10, mark)
            leg = check_leg(get_call(server, call_id), "pcmu")
            assert leg["sip_call_id"] == established["id"], (leg, established)
            assert await events.wait_state(call_id, "active") == ["ringing", "active"]

            agent = await Agent.open(server, call_id)
            dtmf_mark = await talk_listen_and_dial(agent, server, call_id, peer)

            closed = peer.mark()
            await asyncio.to_thread(peer.hangup)
            await asyncio.to_thread(peer.wait_closed, 10, closed)
            await agent.wait_message("call_state", 10, state="ended")
            await agent.wait(lambda: agent.closed, 5, "the WebSocket closes")
            assert await events.wait_state(call_id, "ended") == ["ringing", "active", "ended"]
            await events.close()
            assert not agent.of_type("call_error"), agent.messages
            return call_id, dtmf_mark

        call_id, dtmf_mark = run(go())
        assert get_call(server, call_id)["state"] == "ended"
        assert call_id not in [c["call_id"] for c in api(server, "GET", "/api/calls").json()["calls"]]
        assert peer.received_dtmf(dtmf_mark) == "9#", "baresip saw other digits"
        rate, x = peer.recording()
        assert rate == RATE
        check_tone(x, rate, AGENT_TONE, "baresip hears the agent", min_seconds=2.0)


def test_server_calls_baresip(server, tmp_path):
    """POST /api/call {platform sip, meeting_url baresip's URI}; baresip (auto-answer, playing
    1 kHz) answers within milliseconds, so the call is `connecting` or, when the 2xx came first,
    already `active` in the POST's answer (the server reads the dialog's state as it creates the
    call); the account events (open before the POST) say connecting then active, or only active,
    consistently with that answer; the WebSocket opens in either and, opened in `connecting`, gets
    `active` (test_outbound_call_connects_on_the_answer pins the `connecting` step down); the leg is
    PCMU with baresip's Call-ID. The agent's 600 Hz reaches baresip, baresip's 1 kHz reaches the
    agent, DTMF goes both ways; DELETE hangs up: baresip sees the call closed by the far end, the
    WebSocket gets `ended`."""
    with Baresip(str(tmp_path / "bob"), tone_hz=PEER_TONE, user="bob", auto_answer=True) as peer:
        async def go():
            events = await AccountEvents.open(server)
            mark = peer.mark()
            r = await asyncio.to_thread(api, server, "POST", "/api/call",
                                        json={"platform": "sip", "meeting_url": peer.uri, "agent_name": "Agent"})
            assert r.status_code == 200, r.text
            call = r.json()
            call_id = call["call_id"]
            assert (call["platform"], call["meeting_url"], call["direction"]) == ("sip", peer.uri, "outbound"), call
            assert call["state"] in ("connecting", "active"), call
            agent = await Agent.open(server, call_id, want_state="connecting|active")
            established = await asyncio.to_thread(peer.wait_established, 10, mark, direction="incoming")
            await events.wait_state(call_id, "active")
            if agent.first_state == "connecting":
                await agent.wait_message("call_state", 10, state="active")
            leg = check_leg(get_call(server, call_id), "pcmu")
            assert get_call(server, call_id)["state"] == "active"
            assert leg["sip_call_id"] == established["id"], (leg, established)

            dtmf_mark = await talk_listen_and_dial(agent, server, call_id, peer)

            closed = peer.mark()
            r = await asyncio.to_thread(api, server, "DELETE", f"/api/call/{call_id}")
            assert r.status_code == 200, r.text
            bye = await asyncio.to_thread(peer.wait_closed, 10, closed)
            assert bye["param"] == "Connection reset by peer", bye  # a BYE from the server
            await agent.wait_message("call_state", 10, state="ended")
            await agent.wait(lambda: agent.closed, 5, "the WebSocket closes")
            # Every change, in order: connecting (the call's creation) then active; only active when
            # the 2xx was in before the call was created, which the POST's answer then says.
            states = await events.wait_state(call_id, "ended")
            allowed = [["connecting", "active", "ended"]] + ([["active", "ended"]] if call["state"] == "active" else [])
            assert states in allowed, (f"POST answered {call['state']}", states)
            await events.close()
            assert not agent.of_type("call_error"), agent.messages
            return call_id, dtmf_mark

        call_id, dtmf_mark = run(go())
        assert get_call(server, call_id)["state"] == "ended"
        assert peer.received_dtmf(dtmf_mark) == "9#", "baresip saw other digits"
        rate, x = peer.recording()
        assert rate == RATE
        check_tone(x, rate, AGENT_TONE, "baresip hears the agent", min_seconds=2.0)


def test_outbound_call_connects_on_the_answer(server, tmp_path):
    """The server calls baresip in manual answer mode: baresip gets the INVITE (CALL_INCOMING) and
    rings; meanwhile the call is `connecting` (POST answer, GET, the WebSocket's opening
    call_state, account events); baresip answers: the WebSocket and the account events get
    `active`, and the leg appears; DELETE: BYE, baresip's call closes, the call is `ended`."""
    with Baresip(str(tmp_path / "bob"), user="bob", auto_answer=False) as peer:
        async def go():
            events = await AccountEvents.open(server)
            mark = peer.mark()
            r = await asyncio.to_thread(api, server, "POST", "/api/call",
                                        json={"platform": "sip", "meeting_url": peer.uri})
            assert r.status_code == 200, r.text
            call = r.json()
            call_id = call["call_id"]
            assert call["state"] == "connecting", call
            incoming = await asyncio.to_thread(peer.wait_incoming, 10, mark)
            assert await events.wait_state(call_id, "connecting") == ["connecting"]
            agent = await Agent.open(server, call_id, want_state="connecting")
            ringing = get_call(server, call_id)
            assert ringing["state"] == "connecting", ringing
            await asyncio.to_thread(peer.answer)
            await asyncio.to_thread(peer.wait_established, 10, mark)
            await agent.wait_message("call_state", 10, state="active")
            assert await events.wait_state(call_id, "active") == ["connecting", "active"]
            leg = check_leg(get_call(server, call_id), "pcmu")
            assert leg["sip_call_id"] == incoming["id"], (leg, incoming)

            closed = peer.mark()
            r = await asyncio.to_thread(api, server, "DELETE", f"/api/call/{call_id}")
            assert r.status_code == 200, r.text
            bye = await asyncio.to_thread(peer.wait_closed, 10, closed)
            assert bye["param"] == "Connection reset by peer", bye
            await agent.wait_message("call_state", 10, state="ended")
            assert await events.wait_state(call_id, "ended") == ["connecting", "active", "ended"]
            await events.close()
            await agent.close()
            assert [m["state"] for m in agent.of_type("call_state")] == ["active", "ended"], agent.messages
            return call_id

        assert get_call(server, run(go()))["state"] == "ended"


@pytest.mark.parametrize("codec", ["pcma", "opus"])
def test_baresip_calls_in_with_one_codec(server, tmp_path, codec):
    """baresip offers only `codec` (Opus: opus/48000/2 on payload type 96): the accepted call's leg
    uses it with baresip's payload type, the agent hears baresip's 1 kHz and baresip hears the
    agent's 600 Hz (Opus: decoded at 48 kHz stereo by baresip, averaged to mono here; measured
    medians of the windowed SNR: 40-45 dB with Opus, 37-39 dB with G.711)."""
    pt = {"pcma": 8, "opus": 96}[codec]
    with Baresip(str(tmp_path / "bob"), tone_hz=PEER_TONE, user="bob", codecs=(codec,)) as peer:
        async def go():
            mark = peer.mark()
            await asyncio.to_thread(peer.dial, f"sip:alice@127.0.0.1:{server.sip_port}")
            call_id = await asyncio.to_thread(ringing_call_from, server, peer)
            r = await asyncio.to_thread(api, server, "POST", f"/api/call/{call_id}/accept")
            assert r.status_code == 200, r.text
            await asyncio.to_thread(peer.wait_established, 10, mark)
            leg = check_leg(get_call(server, call_id), codec)
            assert leg["payload_type"] == pt, leg

            agent = await Agent.open(server, call_id)
            talking = asyncio.create_task(agent.talk(sine(AGENT_TONE, RATE, 2.5)))
            heard = await agent.record(3.0)
            await talking
            closed = peer.mark()
            await asyncio.to_thread(peer.hangup)
            await asyncio.to_thread(peer.wait_closed, 10, closed)
            await agent.wait_message("call_state", 10, state="ended")
            await agent.close()
            assert not agent.of_type("call_error"), agent.messages
            return heard

        heard = run(go())
        check_tone(heard, RATE, PEER_TONE, f"agent hears baresip ({codec})", min_seconds=2.5)
        rate, x = peer.recording()
        assert rate == (48000 if codec == "opus" else RATE)
        check_tone(x, rate, AGENT_TONE, f"baresip hears the agent ({codec})", min_seconds=2.0)


def test_leg_counts_no_loss_for_dtmf_packets(server, tmp_path):
    """RFC 4733 packets share the audio's SSRC and sequence numbers (RFC 3550's loss counts every
    packet of the source): on a clean loopback call where baresip sends DTMF "123" (12 packets per
    digit), the leg's packets_lost stays 0 and packets_late 0."""
    with Baresip(str(tmp_path / "bob"), tone_hz=PEER_TONE, user="bob") as peer:
        async def go():
            mark = peer.mark()
            await asyncio.to_thread(peer.dial, f"sip:alice@127.0.0.1:{server.sip_port}")
            call_id = await asyncio.to_thread(ringing_call_from, server, peer)
            r = await asyncio.to_thread(api, server, "POST", f"/api/call/{call_id}/accept")
            assert r.status_code == 200, r.text
            await asyncio.to_thread(peer.wait_established, 10, mark)
            agent = await Agent.open(server, call_id)
            await agent.record(0.5)
            await dtmf_from_peer(agent, peer, "123")
            await agent.record(0.5)  # audio after the events: any gap they left is behind the receiver
            leg = get_call(server, call_id)["leg"]
            closed = peer.mark()
            await asyncio.to_thread(peer.hangup)
            await asyncio.to_thread(peer.wait_closed, 10, closed)
            await agent.close()
            return leg

        leg = run(go())
        assert leg["packets_received"] > 50, leg
        assert (leg["packets_lost"], leg["packets_late"]) == (0, 0), json.dumps(leg)
