"""SPEC §6 SIP legs (UDP, RFC 3261) against SIPp 3.6.1 on 127.0.0.1, through real sockets.

SIPp plays the far end: the caller of inbound calls (UAC scenarios), the callee of outbound calls
and a registrar (UAS scenarios), from `Tests/server/sipp/*.xml`. Each scenario asserts the order and
kind of every SIP message the server sends (an unexpected or missing one fails it, and SIPp exits
1); `sip_peers` reads SIPp's message trace for what SIPp cannot check: SDP details, digest
credentials, timing. A test paces a scenario with TRIGGER datagrams (`Sipp.trigger`) rather than
sleeps. The media side is a Python UDP socket whose port the SDP names: it sends a G.711 tone to
the server's RTP port and collects what the server sends; the agent side is the call's WebSocket.
Audio is checked by analysis (spectral peak, level), as in test_rtp_legs.py.

The module's server: SIP on 127.0.0.1 (port picked at start-up), calls for `alice` routed to KEY1,
a ring timeout of 3 s, digest credentials bob:secret for 127.0.0.1, an RTP timeout of 5 s.
"""
import asyncio
import itertools
import json
import signal
import os
import socket
import time

import numpy as np
import pytest
import websockets

from conftest import KEY1, KEY2, Server, api, open_stream, record, recv_json, run
from rtp_peers import (
    PacedSender, UdpCollector, dtmf_packets, frame_levels, g711_decode, g711_tone_packets, host_port,
    parse_telephone_event, peak_frequency, playing_region, rtp_packet, sine,
)
from sip_peers import Sipp, audio_of, check_digest, parse_digest, recv_sip, sip_address, sip_request

RING_TIMEOUT = 3
RTP_TIMEOUT = 5
AUTH_USER, AUTH_PASSWORD = "bob", "secret"
SERVER_FLAGS = [
    "--api-key", KEY1, "--api-key", KEY2, "--sip", "127.0.0.1:0", "--sip-route", f"alice={KEY1}",
    "--sip-ring-timeout", str(RING_TIMEOUT), "--sip-auth", f"127.0.0.1={AUTH_USER}:{AUTH_PASSWORD}",
    "--rtp-timeout", str(RTP_TIMEOUT),
]
LEG_FIELDS = {"kind", "codec", "payload_type", "local_rtp", "remote_rtp", "packets_received", "packets_lost",
              "packets_late", "jitter_ms", "jitter_buffer_ms", "concealed_ms", "sip_call_id"}
# The RMS of a sine whose peak is -6.02 dBFS: the peak level minus 3.01 dB.
RMS_HALF_SCALE = 20 * np.log10(0.5 / np.sqrt(2))  # -9.03


def start_sip_server(*extra):
    """A server with SERVER_FLAGS (and `extra`); `sip_port` is its SIP port from its log."""
    s = Server(*SERVER_FLAGS, *extra)
    try:
        host, s.sip_port = sip_address(s)
        assert host == "127.0.0.1", host
    except BaseException:
        s.stop()
        raise
    return s


@pytest.fixture(scope="module")
def server():
    s = start_sip_server()
    yield s
    s.stop()


# ---------------------------------------------------------------------------------------------
# Helpers: calls, streams, audio

_callers = itertools.count(1)


def call_in(server, workdir, scenario, rtp_port, to_user="alice", from_name='"Ada Lovelace" ', te_pt=101, ptime=20):
    """SIPp calling the server with `scenario` (a UAC one): the From user is new for each call (so
    the call is found by its meeting_url, the From URI, kept as `sipp.from_uri`) and the offer's
    m= port is `rtp_port`."""
    from_user = f"caller{os.getpid()}n{next(_callers)}"
    sipp = Sipp(scenario, str(workdir), remote=f"127.0.0.1:{server.sip_port}",
                keys={"to_user": to_user, "from_user": from_user, "from_name": from_name,
                      "peer_rtp_port": rtp_port, "te_pt": te_pt, "ptime": ptime})
    sipp.from_user = from_user
    sipp.from_uri = f"sip:{from_user}@127.0.0.1:{sipp.port}"
    return sipp


def calls_of(server, key=KEY1):
    r = api(server, "GET", "/api/calls", key=key)
    assert r.status_code == 200, r.text
    return r.json()["calls"]


def get_call(server, call, key=KEY1):
    r = api(server, "GET", f"/api/call/{call['call_id']}", key=key)
    assert r.status_code == 200, r.text
    return r.json()


def wait_until(what, probe, timeout=5.0):
    """Polls `probe()` until it returns something true; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def ringing_call(server, sipp, key=KEY1, timeout=5.0):
    """The call SIPp's INVITE created, once SIPp has its 180: found among the key's calls by its
    meeting_url (the From URI)."""
    sipp.wait_received(status=180, timeout=timeout)
    return wait_until(f"a call for {sipp.from_uri}",
                      lambda: next((c for c in calls_of(server, key) if c["meeting_url"] == sipp.from_uri), None),
                      timeout)


def dial(server, url, key=KEY1):
    r = api(server, "POST", "/api/call", key=key, json={"platform": "sip", "meeting_url": url, "agent_name": "Agent"})
    assert r.status_code == 200, r.text
    return r.json()


def hang_up(server, *calls, key=KEY1):
    for c in calls:
        api(server, "DELETE", f"/api/call/{c['call_id']}", key=key)


def events_url(server, key):
    return f"{server.ws}/api/events?api_key={key}"


async def until_state(ws, state, timeout=5.0):
    """Every text message up to and including `call_state` `state`."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        m = await recv_json(ws, timeout=max(0.01, deadline - time.monotonic()))
        seen.append(m)
        if m.get("type") == "call_state" and m.get("state") == state:
            return seen


def check_heard(x, freq, min_seconds, rate=8000):
    """A steady tone of `freq` at -9.03 dBFS RMS (a -6 dBFS peak sine through G.711): its frequency,
    and its median 20 ms frame level within 1 dB (robust against a few concealed frames)."""
    tone = playing_region(x, rate)
    assert len(tone) >= min_seconds * rate, f"only {len(tone) / rate:.2f} s of tone"
    f = peak_frequency(tone, rate)
    assert abs(f - freq) < 2.0, f"peak at {f:.2f} Hz, sent {freq} Hz"
    median = float(np.median(frame_levels(tone, rate)))
    assert abs(median - RMS_HALF_SCALE) < 1.0, f"median frame level {median:.2f} dBFS"
    return tone


def check_sent_rtp(packets, server_rtp_port, freq, min_packets, pt=0):
    """What the server sent to the peer's socket: 20 ms PCMU packets (160 bytes) with continuous
    sequence numbers, one SSRC, from the leg's own RTP port, carrying the agent's tone."""
    audio = [(t, p, a) for t, p, a in packets if p.pt == pt]
    assert len(audio) >= min_packets, f"{len(audio)} RTP packets of payload type {pt}"
    assert {a for _, _, a in audio} == {("127.0.0.1", server_rtp_port)}, {a for _, _, a in audio}
    assert len({p.ssrc for _, p, _ in audio}) == 1
    assert all(len(p.payload) == 160 for _, p, _ in audio)
    seqs = [p.seq for _, p, _ in audio]
    assert all((b - a) % 65536 == 1 for a, b in zip(seqs, seqs[1:])), seqs
    x = g711_decode(b"".join(p.payload for _, p, _ in audio), "pcmu")
    check_heard(x, freq, min_seconds=0.5 * min_packets / 50)


def check_talked_both_ways(messages, x, sent, leg, rtp_port, peer_port):
    """After `talk_both_ways` on a PCMU call: no call_error; the agent heard the peer's 1 kHz; the
    peer got the agent's 500 Hz from the leg's port; the leg says sip/pcmu/0 and the peer's address."""
    assert not [m for m in messages if m.get("type") == "call_error"], messages
    check_heard(x, 1000, min_seconds=1.5)
    check_sent_rtp(sent, rtp_port, 500, min_packets=75)
    assert (leg["kind"], leg["codec"], leg["payload_type"]) == ("sip", "pcmu", 0), leg
    assert leg["remote_rtp"] == f"127.0.0.1:{peer_port}", leg


async def talk_both_ways(ws, peer, server_rtp, seconds=2.0, ssrc=0x51D0, seq=1000, ts=0):
    """The agent on `ws` sends a 500 Hz sine; the peer (a UdpCollector on the port the SDP names)
    sends a 1 kHz PCMU tone to the server's RTP address from that same socket. Returns what the
    agent heard and its text messages."""
    schedule, _ = g711_tone_packets("pcmu", 1000, seconds, -6, ssrc=ssrc, seq=seq, ts=ts)
    sender = PacedSender(peer.sock, server_rtp, schedule)
    await ws.send(sine(500, 8000, seconds + 0.5, -6).tobytes())
    sender.start()
    x, messages = await record(ws, seconds + 0.6)
    await asyncio.to_thread(sender.finish, 2)
    return x, messages


def check_call_object(c, direction, state, meeting_url, caller):
    assert (c["platform"], c["direction"], c["state"]) == ("sip", direction, state), c
    assert c["meeting_url"] == meeting_url, c
    assert c["caller"] == caller, c
    audio = c["audio"]
    assert (audio["sample_rate"], audio["format"], audio["channels"], audio["frame_duration_ms"],
            audio["frame_bytes"]) == (8000, "pcm_s16le", 1, 20, 320), audio


def check_offer_or_answer(media, rtp_port):
    """The server's SDP: audio on 127.0.0.1 at its leg's RTP port, RTP/AVP, 20 ms packets."""
    assert media.address == "127.0.0.1", media
    assert media.port == rtp_port, (media.port, rtp_port)
    assert media.proto == "RTP/AVP", media
    assert media.ptime == 20, media


# ---------------------------------------------------------------------------------------------
# Start-up


def test_sip_listens_and_account_says_ready(server):
    """`sip listening on udp:127.0.0.1:PORT` with the port it picked (`--sip 127.0.0.1:0`), held
    by the server; `GET /api/account` says SIP is ready and the sip platform runs at 8 kHz."""
    assert server.sip_port > 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        with pytest.raises(OSError):
            s.bind(("127.0.0.1", server.sip_port))
    o = api(server, "GET", "/api/account").json()
    assert o["features"]["sip"] == "ready", o["features"]
    assert o["platforms"]["sip"]["native_sample_rate"] == 8000, o["platforms"]["sip"]


def test_sip_off_refuses_sip_calls():
    """`--sip off`: no SIP socket, no listening line, `sip` calls refused with 400 `sip_unavailable`,
    the account says SIP is unavailable."""
    s = Server("--api-key", KEY1, "--sip", "off")
    try:
        r = api(s, "POST", "/api/call", json={"platform": "sip", "meeting_url": "sip:service@127.0.0.1:5999"})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "sip_unavailable", r.text
        assert api(s, "GET", "/api/account").json()["features"]["sip"] == "unavailable"
        assert not [l for l in s.lines if "sip listening" in l], s.lines
        assert calls_of(s) == []
    finally:
        s.stop()


# ---------------------------------------------------------------------------------------------
# Inbound calls


def test_inbound_call_rings_is_accepted_talks_and_hangs_up(server, tmp_path):
    """SIPp calls alice (routed to KEY1) from "Ada Lovelace": 180 (SIPp requires it before anything
    else but an optional 100); KEY1's account events get `call_ringing` with the call object
    (inbound, sip, caller = the display name, meeting_url = the From URI, 8 kHz, state ringing);
    `GET /api/calls` lists it for KEY1 only; an agent opens the stream while it rings. Accept: SIPp
    gets 200 with an SDP answer that picks PCMU (payload type 0, SIPp checks it) with the offer's
    telephone-event, on the leg's RTP port; SIPp ACKs; the call is active on the stream and on the
    account events. RTP both ways: the peer's 1 kHz reaches the agent, the agent's 500 Hz reaches
    the peer's socket (from the leg's port). The leg object says sip/pcmu/0 with the right
    addresses and the dialog's Call-ID. accept/refuse on the active call: 409. SIPp hangs up (BYE,
    SIPp requires the 200): the call ends on the stream and the account events, and leaves
    `GET /api/calls`."""
    with UdpCollector() as peer:
        async def go():
            events = await websockets.connect(events_url(server, KEY1))
            others = await websockets.connect(events_url(server, KEY2))
            with call_in(server, tmp_path, "inbound_accept", peer.port) as sipp:
                ringing = await recv_json(events, "call_ringing", timeout=5)
                call = ringing["call"]
                check_call_object(call, "inbound", "ringing", sipp.from_uri, "Ada Lovelace")
                await asyncio.to_thread(sipp.wait_received, None, 180)
                assert [m.status for m in sipp.received() if m.status and m.status >= 200] == [], "a final answer before accept"
                listed = {c["call_id"]: c for c in calls_of(server, KEY1)}
                check_call_object(listed[call["call_id"]], "inbound", "ringing", sipp.from_uri, "Ada Lovelace")
                assert call["call_id"] not in {c["call_id"] for c in calls_of(server, KEY2)}
                assert api(server, "GET", f"/api/call/{call['call_id']}", key=KEY2).status_code == 404

                ws, _ = await open_stream(server, call, states=("ringing",))
                r = api(server, "POST", f"/api/call/{call['call_id']}/accept")
                assert r.status_code == 200, r.text
                await until_state(ws, "active", timeout=3)
                ok = await asyncio.to_thread(sipp.wait_received, None, 200)
                await asyncio.to_thread(sipp.wait_sent, "ACK")
                answer = audio_of(ok)
                leg = (await asyncio.to_thread(get_call, server, call))["leg"]
                assert LEG_FIELDS <= set(leg), sorted(LEG_FIELDS - set(leg))
                _, rtp_port = host_port(leg["local_rtp"])
                check_offer_or_answer(answer, rtp_port)
                assert answer.formats[0] == 0 and 8 not in answer.formats, answer
                assert answer.pt_of("telephone-event/8000") == 101, answer
                assert answer.direction == "sendrecv", answer

                x, messages = await talk_both_ways(ws, peer, ("127.0.0.1", rtp_port))
                leg = (await asyncio.to_thread(get_call, server, call))["leg"]
                for verb in ("accept", "refuse"):
                    r = api(server, "POST", f"/api/call/{call['call_id']}/{verb}")
                    assert r.status_code == 409, (verb, r.status_code, r.text)

                await asyncio.to_thread(sipp.trigger)  # SIPp hangs up
                seen = await until_state(ws, "ended", timeout=5)
                await asyncio.to_thread(sipp.finish, 10)
                states = []
                while "ended" not in states:
                    m = await recv_json(events, "call_state", timeout=5)
                    if m["call_id"] == call["call_id"]:
                        states.append(m["state"])
                for w in (ws, events, others):
                    await w.close()
                return call, x, messages + seen, leg, rtp_port, states, sipp.call_id

        call, x, messages, leg, rtp_port, states, sipp_call_id = run(go(), timeout=60)
        sent = peer.rtp()

    check_talked_both_ways(messages, x, sent, leg, rtp_port, peer.port)
    assert leg["local_rtp"] == f"127.0.0.1:{rtp_port}", leg
    assert leg["packets_received"] >= 90, leg
    assert leg["sip_call_id"] == sipp_call_id, leg
    # (Whether the call's creation in `ringing` also goes out as a call_state is left open.)
    assert [st for st in states if st != "ringing"] == ["active", "ended"], states
    assert get_call(server, call)["state"] == "ended"
    assert call["call_id"] not in {c["call_id"] for c in calls_of(server)}


def test_inbound_dtmf_both_ways_with_the_offers_payload_type(server, tmp_path):
    """The caller's offer puts telephone-event at payload type 97 (not the usual 101): the answer
    keeps 97; the peer's RFC 4733 '5' (5 updates, end x3: 100 ms) reaches the agent as one
    `call_dtmf`; the agent's "12" goes out as two events of payload type 97 from the leg's port,
    each with a marker on its first packet and three end packets."""
    with UdpCollector() as peer:
        async def go():
            with call_in(server, tmp_path, "inbound_accept", peer.port, te_pt=97) as sipp:
                call = await asyncio.to_thread(ringing_call, server, sipp)
                ws, _ = await open_stream(server, call, states=("ringing",), receive=False)
                assert api(server, "POST", f"/api/call/{call['call_id']}/accept").status_code == 200
                await until_state(ws, "active", timeout=3)
                answer = audio_of(await asyncio.to_thread(sipp.wait_received, None, 200))
                assert answer.pt_of("telephone-event/8000") == 97, answer
                _, rtp_port = host_port((await asyncio.to_thread(get_call, server, call))["leg"]["local_rtp"])

                ssrc, seq, ts = 0xD7F0, 20000, 80000
                schedule = [(0.02 * i, rtp_packet(0, seq + i, ts + 160 * i, ssrc, b"\xff" * 160, marker=(i == 0)))
                            for i in range(10)]
                five, _ = dtmf_packets("5", ssrc, seq + 10, ts + 1600, 160, updates=5, pt=97)
                schedule += [(0.3 + dt, d) for dt, d in five]
                sender = PacedSender(peer.sock, ("127.0.0.1", rtp_port), schedule)
                sender.start()
                await ws.send(json.dumps({"type": "dtmf", "digits": "12"}))
                _, messages = await record(ws, 1.5)
                await asyncio.to_thread(sender.finish, 2)
                await asyncio.to_thread(sipp.trigger)
                await until_state(ws, "ended", timeout=5)
                await asyncio.to_thread(sipp.finish, 10)
                await ws.close()
                return messages, rtp_port

        messages, rtp_port = run(go(), timeout=60)
        sent = peer.rtp()

    got = [(m["digit"], m["duration_ms"]) for m in messages if m.get("type") == "call_dtmf"]
    assert [g[0] for g in got] == ["5"], got
    assert abs(got[0][1] - 100) <= 1, got
    events = []
    for _, p, a in sent:
        if p.pt != 97:
            continue
        assert a == ("127.0.0.1", rtp_port), a
        event, end, _, _ = parse_telephone_event(p.payload)
        if not events or events[-1]["ts"] != p.ts:
            events.append({"ts": p.ts, "event": event, "marker": [], "end": 0})
        events[-1]["marker"].append(p.marker)
        events[-1]["end"] += end
    assert [e["event"] for e in events] == [1, 2], events
    for e in events:
        assert e["marker"][0] and not any(e["marker"][1:]), e
        assert e["end"] == 3, e


def test_inbound_offer_with_ptime_40_gets_40_ms_packets(server, tmp_path):
    """The caller's offer asks for `a=ptime:40`: the leg sends the agent's tone as 40 ms PCMU
    packets (320 bytes, timestamps 320 apart, sequence numbers +1), still the tone."""
    with UdpCollector() as peer:
        async def go():
            with call_in(server, tmp_path, "inbound_accept", peer.port, ptime=40) as sipp:
                call = await asyncio.to_thread(ringing_call, server, sipp)
                ws, _ = await open_stream(server, call, states=("ringing",), receive=False)
                assert api(server, "POST", f"/api/call/{call['call_id']}/accept").status_code == 200
                await until_state(ws, "active", timeout=3)
                await ws.send(sine(500, 8000, 1.6, -6).tobytes())
                await asyncio.to_thread(wait_until, "30 RTP packets", lambda: len(peer.rtp()) >= 30, 5.0)
                await asyncio.to_thread(sipp.trigger)
                await until_state(ws, "ended", timeout=5)
                await asyncio.to_thread(sipp.finish, 10)
                await ws.close()

        run(go(), timeout=60)
        audio = [p for _, p, _ in peer.rtp() if p.pt == 0]
    assert len(audio) >= 30, len(audio)
    assert all((b.seq - a.seq) % 65536 == 1 for a, b in zip(audio, audio[1:]))
    # 40 ms each; a media step late on a loaded machine sends a packet short and starts a new one
    # (marked): only there may a packet hold 20 ms.
    whole = [a for a, b in zip(audio, audio[1:]) if not b.marker]
    assert all(len(p.payload) == 320 for p in whole), sorted({len(p.payload) for p in whole})
    assert all((b.ts - a.ts) % 2**32 == 320 for a, b in zip(audio, audio[1:]) if not b.marker)
    assert len(whole) >= 0.9 * (len(audio) - 1), len(whole)
    check_heard(g711_decode(b"".join(p.payload for p in audio), "pcmu"), 500, min_seconds=0.8)


def test_inbound_call_refused(server, tmp_path):
    """A caller with no display name: `caller` is the From user. Refuse: SIPp gets 603 (after the
    180; SIPp requires both and ACKs), the call is `refused` on its stream and in
    `GET /api/call`; accept after that: 409."""
    with UdpCollector() as peer, call_in(server, tmp_path, "inbound_refuse", peer.port, from_name="") as sipp:
        call = ringing_call(server, sipp)
        check_call_object(call, "inbound", "ringing", sipp.from_uri, sipp.from_user)

        async def go():
            ws, _ = await open_stream(server, call, states=("ringing",))
            r = api(server, "POST", f"/api/call/{call['call_id']}/refuse")
            assert r.status_code == 200, r.text
            seen = await until_state(ws, "refused", timeout=3)
            await ws.close()
            return seen
        seen = run(go(), timeout=20)
        msgs = sipp.finish(10)
        assert not [m for m in seen if m.get("type") == "call_error"], seen
        assert get_call(server, call)["state"] == "refused"
        # A whole response: its empty body declared (libre writes a refusal's headers as given).
        decline = next(m for m in msgs if m.status == 603)
        assert (decline.header("content-length") or "").strip() == "0", decline.text()
        assert api(server, "POST", f"/api/call/{call['call_id']}/accept").status_code == 409


def sip_metric(text, name, labels):
    """The value of `name{labels}` in Prometheus text (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.split()[-1])
    return 0.0


def test_metrics_count_dialogs_and_responses(server, tmp_path):
    """`/metrics` has the SIP families (SPEC §6): while an inbound call rings there is a ringing
    dialog; the 100 and 180 count as 1xx sent, the refusal as one 6xx sent; once it is over the
    ringing dialogs are back to what they were; every registration state has its line."""
    before = api(server, "GET", "/metrics").text
    with UdpCollector() as peer, call_in(server, tmp_path, "inbound_refuse", peer.port, from_name="") as sipp:
        call = ringing_call(server, sipp)
        during = api(server, "GET", "/metrics").text
        assert api(server, "POST", f"/api/call/{call['call_id']}/refuse").status_code == 200
        sipp.finish(10)
    after = api(server, "GET", "/metrics").text
    ringing = 'state="ringing"'
    assert sip_metric(during, "chamade_sip_dialogs", ringing) == sip_metric(before, "chamade_sip_dialogs", ringing) + 1
    assert sip_metric(after, "chamade_sip_dialogs", ringing) == sip_metric(before, "chamade_sip_dialogs", ringing)
    sent = lambda text, k: sip_metric(text, "chamade_sip_responses_sent_total", f'class="{k}"')
    assert sent(after, "1xx") - sent(before, "1xx") == 2, (sent(before, "1xx"), sent(after, "1xx"))
    assert sent(after, "6xx") - sent(before, "6xx") == 1
    received = lambda text: sip_metric(text, "chamade_sip_requests_total", 'direction="received"')
    assert received(after) - received(before) >= 2  # the INVITE and the ACK
    for state in ("registering", "registered", "failed"):
        assert f'chamade_sip_registrations{{state="{state}"}} 0' in after


def test_inbound_call_nobody_answers_gets_480(server, tmp_path):
    """Nobody accepts: --sip-ring-timeout (3 s) after the INVITE, SIPp gets 480 (and ACKs); the
    call ends (stream and account events); accept after that: 409."""
    with UdpCollector() as peer, call_in(server, tmp_path, "inbound_ring_timeout", peer.port) as sipp:
        call = ringing_call(server, sipp)

        async def go():
            events = await websockets.connect(events_url(server, KEY1))
            ws, _ = await open_stream(server, call, states=("ringing",))
            await until_state(ws, "ended", timeout=RING_TIMEOUT + 3)
            m = await recv_json(events, "call_state", timeout=3)
            while m["call_id"] != call["call_id"]:
                m = await recv_json(events, "call_state", timeout=3)
            for w in (ws, events):
                await w.close()
            return m
        m = run(go(), timeout=20)
        assert m["state"] == "ended", m
        msgs = sipp.finish(10)
        invite = next(m for m in msgs if m.method == "INVITE")
        final = next(m for m in msgs if m.status == 480)
        waited = final.time - invite.time
        assert RING_TIMEOUT - 0.2 <= waited <= RING_TIMEOUT + 1.5, f"480 after {waited:.2f} s"
        assert get_call(server, call)["state"] == "ended"
        assert api(server, "POST", f"/api/call/{call['call_id']}/accept").status_code == 409


def test_inbound_call_cancelled_by_the_caller(server, tmp_path):
    """The caller gives up while it rings: CANCEL gets 200 and the INVITE 487 (SIPp requires both,
    in either order, and ACKs the 487); the call ends on its stream; refuse after that: 409."""
    with UdpCollector() as peer, call_in(server, tmp_path, "inbound_cancel", peer.port) as sipp:
        call = ringing_call(server, sipp)

        async def go():
            ws, _ = await open_stream(server, call, states=("ringing",))
            await asyncio.to_thread(sipp.trigger)  # CANCEL
            seen = await until_state(ws, "ended", timeout=3)
            await ws.close()
            return seen
        seen = run(go(), timeout=20)
        sipp.finish(10)
        assert not [m for m in seen if m.get("type") == "call_error"], seen
        assert get_call(server, call)["state"] == "ended"
        assert api(server, "POST", f"/api/call/{call['call_id']}/refuse").status_code == 409


def test_inbound_call_for_an_unrouted_user_gets_404(server, tmp_path):
    """An INVITE for `nobody` (no --sip-route names it, and there is no `*` route): 404, never a 180
    (SIPp fails on one); no call for any key."""
    with UdpCollector() as peer, call_in(server, tmp_path, "inbound_no_route", peer.port, to_user="nobody") as sipp:
        sipp.finish(10)
        for key in (KEY1, KEY2):
            assert not [c for c in calls_of(server, key) if c["meeting_url"] == sipp.from_uri]


def test_inbound_offer_without_a_common_codec_gets_488(server, tmp_path):
    """An offer of G.729 only (payload type 18): 488, never a 180; no call."""
    with UdpCollector() as peer, call_in(server, tmp_path, "inbound_no_codec", peer.port) as sipp:
        sipp.finish(10)
        assert not [c for c in calls_of(server) if c["meeting_url"] == sipp.from_uri]


def test_inbound_hold_pauses_sending_and_the_rtp_timeout(server, tmp_path):
    """After an accepted call is talking both ways, the caller puts it on hold (re-INVITE with
    a=sendonly) and goes silent: the server answers 200 with a=recvonly (SIPp checks), sends no RTP
    at all while held although the agent keeps talking, and does not end the call through the RTP
    timeout (5 s) during 6.5 s of silence on hold (no call_error, still active, SIPp still in its
    call). The caller resumes (re-INVITE a=sendrecv; the answer is neither recvonly, sendonly nor
    inactive) and talks again: the agent's tone flows to the peer again, the peer's reaches the
    agent. Then SIPp hangs up."""
    hold_seconds = RTP_TIMEOUT + 1.5
    with UdpCollector() as peer:
        async def go():
            with call_in(server, tmp_path, "inbound_hold", peer.port) as sipp:
                call = await asyncio.to_thread(ringing_call, server, sipp)
                ws, _ = await open_stream(server, call, states=("ringing",))
                assert api(server, "POST", f"/api/call/{call['call_id']}/accept").status_code == 200
                await until_state(ws, "active", timeout=3)
                await asyncio.to_thread(sipp.wait_sent, "ACK")
                _, rtp_port = host_port((await asyncio.to_thread(get_call, server, call))["leg"]["local_rtp"])
                dest = ("127.0.0.1", rtp_port)

                # Talking: the agent sends 500 Hz for the whole test, the peer 1 kHz for 1.5 s.
                await ws.send(sine(500, 8000, hold_seconds + 8, -6).tobytes())
                before, _ = g711_tone_packets("pcmu", 1000, 1.5, -6, ssrc=0x401D, seq=100, ts=0)
                sender = PacedSender(peer.sock, dest, before)
                sender.start()
                x1, m1 = await record(ws, 1.6)
                await asyncio.to_thread(sender.finish, 2)

                # Hold.
                await asyncio.to_thread(sipp.trigger)
                held = await asyncio.to_thread(sipp.wait_received, None, 200, 2)
                await asyncio.to_thread(sipp.wait_sent, "ACK", None, 2)
                held_at = time.monotonic()
                _, m2 = await record(ws, hold_seconds)
                state_on_hold = (await asyncio.to_thread(get_call, server, call))["state"]
                # Not ended by the RTP timeout (that would also have sent SIPp an unexpected BYE).
                assert state_on_hold == "active" and sipp.poll() is None, (state_on_hold, m2, sipp.report())
                assert not [m for m in m2 if m.get("type") in ("call_error", "call_state", "(closed)")], m2
                resumed_at = time.monotonic()

                # Resume and talk again.
                await asyncio.to_thread(sipp.trigger)
                resumed = await asyncio.to_thread(sipp.wait_received, None, 200, 3)
                await asyncio.to_thread(sipp.wait_sent, "ACK", None, 3)
                after, _ = g711_tone_packets("pcmu", 1000, 2.0, -6, ssrc=0x401D, seq=175, ts=200000)
                sender = PacedSender(peer.sock, dest, after)
                sender.start()
                x3, m3 = await record(ws, 2.2)
                await asyncio.to_thread(sender.finish, 2)

                await asyncio.to_thread(sipp.trigger)  # BYE
                await until_state(ws, "ended", timeout=5)
                await asyncio.to_thread(sipp.wait_received, None, 200, 4)  # the BYE's: the scenario is over
                await ws.close()
                return sipp, x1, x3, m1 + m2 + m3, held, resumed, held_at, resumed_at, rtp_port

        sipp, x1, x3, messages, held, resumed, held_at, resumed_at, rtp_port = run(go(), timeout=90)
        sent = peer.rtp()

    # Every aspect is checked and reported together (a hold answer of a=inactive, say, should not
    # hide whether sending stopped).
    problems = []
    if audio_of(held).direction != "recvonly":
        problems.append(f"hold answered with a={audio_of(held).direction}, not a=recvonly:\n{held.text()}")
    if audio_of(resumed).direction != "sendrecv":
        problems.append(f"resume answered with a={audio_of(resumed).direction}:\n{resumed.text()}")
    bad = [m for m in messages if m.get("type") in ("call_error", "(closed)") or
           (m.get("type") == "call_state" and m.get("state") != "active")]
    if bad:
        problems.append(f"stream messages: {bad}")
    audio = [(t, p, a) for t, p, a in sent if p.pt == 0]
    talking = [e for e in audio if e[0] < held_at - 0.2]
    on_hold = [e for e in audio if held_at + 0.25 < e[0] < resumed_at]  # what was in flight may land
    again = [e for e in audio if e[0] > resumed_at]
    if len(talking) < 50:
        problems.append(f"only {len(talking)} RTP packets before the hold")
    if on_hold:
        problems.append(f"{len(on_hold)} RTP packets sent while on hold ({resumed_at - held_at:.1f} s)")
    for what, check in [("sent after resume", lambda: check_sent_rtp(again, rtp_port, 500, min_packets=80)),
                        ("heard before hold", lambda: check_heard(x1, 1000, min_seconds=1.0)),
                        ("heard after resume", lambda: check_heard(x3, 1000, min_seconds=1.5)),
                        ("SIPp's verdict", lambda: sipp.finish(5))]:
        try:
            check()
        except AssertionError as e:
            problems.append(f"{what}: {e}")
    assert not problems, "\n\n".join(problems)


# ---------------------------------------------------------------------------------------------
# Outbound calls


def branch(msg):
    """The branch parameter of a message's (first) Via."""
    return next(p.split("=", 1)[1] for p in msg.header("via").split(";")[1:] if p.strip().startswith("branch="))


def check_invite(invite, url, rtp_port):
    """The server's INVITE: to the meeting URL, with an SDP offer of PCMU (0), PCMA (8), Opus
    (opus/48000/2, dynamic, in-band FEC) and telephone-event/8000 on the leg's RTP port."""
    assert invite.uri == url, invite.start
    assert invite.header("contact") and invite.header("from") and invite.header("via"), invite.text()
    offer = audio_of(invite)
    check_offer_or_answer(offer, rtp_port)
    assert {0, 8} <= set(offer.formats), offer
    opus = offer.pt_of("opus/48000/2")
    assert opus is not None and 96 <= opus <= 127, offer
    assert "useinbandfec=1" in offer.fmtp.get(opus, ""), offer
    te = offer.pt_of("telephone-event/8000")
    assert te is not None and 96 <= te <= 127, offer
    assert offer.direction == "sendrecv", offer
    return offer


def test_outbound_call_is_answered_talks_and_hangs_up(server, tmp_path):
    """POST a sip call to SIPp (`sip:service@127.0.0.1:PORT`): the call is `connecting`, outbound,
    caller "". SIPp gets the INVITE with the full offer (SIPp checks PCMU, PCMA, opus/48000/2 and
    telephone-event/8000; the test checks the rest), answers 180 then 200 with PCMU on the peer's
    port, and requires the ACK; the call becomes active. RTP both ways as for inbound calls; the leg
    says sip/pcmu/0 with the dialog's Call-ID. DELETE: SIPp gets a BYE in the dialog (answers 200)
    and the call ends."""
    with UdpCollector() as peer, Sipp("outbound_answer", str(tmp_path), keys={"peer_rtp_port": peer.port}) as sipp:
        url = f"sip:service@127.0.0.1:{sipp.port}"
        call = dial(server, url)
        check_call_object(call, "outbound", "connecting", url, "")
        # (Whether a call carries `leg` before the dialog is up is left open; once active it must.)
        assert call.get("leg", {}).get("kind", "sip") == "sip", call

        async def go():
            ws, state = await open_stream(server, call, states=("connecting", "active"))
            if state == "connecting":
                await until_state(ws, "active", timeout=5)
            invite = await asyncio.to_thread(sipp.wait_received, "INVITE")
            await asyncio.to_thread(sipp.wait_received, "ACK")
            leg = (await asyncio.to_thread(get_call, server, call))["leg"]
            _, rtp_port = host_port(leg["local_rtp"])
            offer = check_invite(invite, url, rtp_port)
            x, messages = await talk_both_ways(ws, peer, ("127.0.0.1", offer.port))
            leg = (await asyncio.to_thread(get_call, server, call))["leg"]
            r = api(server, "DELETE", f"/api/call/{call['call_id']}")
            assert r.status_code == 200, r.text
            await until_state(ws, "ended", timeout=3)
            await ws.close()
            return invite, x, messages, leg, rtp_port

        invite, x, messages, leg, rtp_port = run(go(), timeout=60)
        msgs = sipp.finish(10)
        sent = peer.rtp()

    check_talked_both_ways(messages, x, sent, leg, rtp_port, peer.port)
    assert leg["sip_call_id"] == invite.call_id, leg
    bye = next(m for m in msgs if m.method == "BYE")
    assert bye.call_id == invite.call_id
    assert bye.cseq[0] > invite.cseq[0], (bye.cseq, invite.cseq)
    assert len([m for m in msgs if m.method == "INVITE"]) == 1
    assert get_call(server, call)["state"] == "ended"


@pytest.mark.parametrize("scenario,status", [("outbound_busy", 486), ("outbound_decline", 603)])
def test_outbound_call_turned_down(server, tmp_path, scenario, status):
    """The callee rings (180), then answers 486 Busy Here / 603 Decline (when the test, whose
    stream is open, triggers it): the stream gets `call_error` `call_failed` with `sip_status`, then
    `call_state` `ended`; the server ACKs the final answer (SIPp requires it)."""
    with Sipp(scenario, str(tmp_path)) as sipp:
        call = dial(server, f"sip:service@127.0.0.1:{sipp.port}")
        assert call["state"] == "connecting", call

        async def go():
            ws, _ = await open_stream(server, call, states=("connecting",))
            await asyncio.to_thread(sipp.wait_sent, None, 180)
            await asyncio.to_thread(sipp.trigger)
            seen = await until_state(ws, "ended", timeout=5)
            await ws.close()
            return seen
        seen = run(go(), timeout=30)
        sipp.finish(10)

    errors = [m for m in seen if m.get("type") == "call_error"]
    assert len(errors) == 1, seen
    assert errors[0]["code"] == "call_failed" and errors[0]["sip_status"] == status, errors
    assert get_call(server, call)["state"] == "ended"


def test_outbound_call_answers_a_digest_challenge(server, tmp_path):
    """The callee challenges the INVITE (401, realm "127.0.0.1", a fresh nonce): the server ACKs
    it and sends the INVITE again, same Call-ID and a higher CSeq, with Authorization for bob
    (from --sip-auth 127.0.0.1=bob:secret) that SIPp's verifyauth accepts and whose MD5 response
    the test recomputes (realm, nonce, uri, method); the first INVITE had no credentials. Then 180,
    200, ACK: active; DELETE: BYE."""
    nonce = os.urandom(12).hex()
    keys = {"realm": "127.0.0.1", "nonce": nonce, "auth_user": AUTH_USER, "auth_password": AUTH_PASSWORD}
    with UdpCollector() as peer, Sipp("outbound_auth", str(tmp_path), keys={**keys, "peer_rtp_port": peer.port}) as sipp:
        call = dial(server, f"sip:service@127.0.0.1:{sipp.port}")

        async def go():
            ws, state = await open_stream(server, call, states=("connecting", "active"))
            if state == "connecting":
                await until_state(ws, "active", timeout=5)
            assert api(server, "DELETE", f"/api/call/{call['call_id']}").status_code == 200
            await until_state(ws, "ended", timeout=3)
            await ws.close()
        run(go(), timeout=30)
        msgs = sipp.finish(10)

    invites = [m for m in msgs if m.method == "INVITE" and m.direction == "received"]
    assert len(invites) == 2, [m.start for m in msgs]
    first, second = invites
    assert first.header("authorization") is None, first.text()
    assert second.call_id == first.call_id and second.cseq[0] > first.cseq[0], (first.cseq, second.cseq)
    challenge = parse_digest(next(m for m in msgs if m.status == 401).header("www-authenticate"))
    assert challenge["nonce"] == nonce
    p = check_digest(second.header("authorization"), "INVITE", AUTH_USER, AUTH_PASSWORD, "127.0.0.1", nonce)
    assert p["uri"] == second.uri, (p["uri"], second.uri)
    acks = [m for m in msgs if m.method == "ACK"]
    assert len(acks) == 2 and acks[0].cseq == (first.cseq[0], "ACK"), [m.start for m in acks]


def test_outbound_remote_bye_ends_every_call_of_the_room(server, tmp_path):
    """A second call (another key) with the same meeting_url joins the first one's room and dialog:
    SIPp sees one INVITE only (it would fail on a second). The far end hangs up (BYE, SIPp
    requires the 200): both calls end, on their streams and in `GET /api/call`."""
    with UdpCollector() as peer, Sipp("outbound_remote_bye", str(tmp_path), keys={"peer_rtp_port": peer.port}) as sipp:
        url = f"sip:service@127.0.0.1:{sipp.port}"
        a = dial(server, url)

        async def go():
            wa, state = await open_stream(server, a, states=("connecting", "active"))
            if state == "connecting":
                await until_state(wa, "active", timeout=5)
            await asyncio.to_thread(sipp.wait_received, "ACK")
            b = dial(server, url, key=KEY2)
            assert b["room_id"] == a["room_id"], (a["room_id"], b["room_id"])
            assert b["state"] in ("connecting", "active"), b
            wb, state_b = await open_stream(server, b, key=KEY2, states=("connecting", "active"))
            if state_b == "connecting":
                await until_state(wb, "active", timeout=3)
            await asyncio.to_thread(sipp.trigger)  # BYE from the far end
            await asyncio.gather(until_state(wa, "ended", timeout=5), until_state(wb, "ended", timeout=5))
            for w in (wa, wb):
                await w.close()
            return b
        b = run(go(), timeout=30)
        msgs = sipp.finish(10)

    assert len([m for m in msgs if m.method == "INVITE"]) == 1, [m.start for m in msgs]
    assert get_call(server, a)["state"] == "ended"
    assert get_call(server, b, key=KEY2)["state"] == "ended"


def test_outbound_no_answer_fails_with_408_and_cancels(server, tmp_path):
    """The callee rings and never answers: --sip-ring-timeout (3 s) after the INVITE the server
    sends CANCEL (same Call-ID, CSeq number and branch as the INVITE; SIPp answers 200 and 487,
    and requires the ACK of the 487); the stream gets `call_error` `call_failed` with `sip_status`
    408, then `ended`."""
    with Sipp("outbound_no_answer", str(tmp_path)) as sipp:
        call = dial(server, f"sip:service@127.0.0.1:{sipp.port}")

        async def go():
            ws, _ = await open_stream(server, call, states=("connecting",))
            seen = await until_state(ws, "ended", timeout=RING_TIMEOUT + 3)
            await ws.close()
            return seen
        seen = run(go(), timeout=30)
        msgs = sipp.finish(10)

    errors = [m for m in seen if m.get("type") == "call_error"]
    assert [(e["code"], e["sip_status"]) for e in errors] == [("call_failed", 408)], seen
    invite = next(m for m in msgs if m.method == "INVITE")
    cancel = next(m for m in msgs if m.method == "CANCEL")
    waited = cancel.time - invite.time
    assert RING_TIMEOUT - 0.2 <= waited <= RING_TIMEOUT + 1.5, f"CANCEL after {waited:.2f} s"
    assert cancel.call_id == invite.call_id and cancel.cseq == (invite.cseq[0], "CANCEL"), (cancel.cseq, invite.cseq)
    assert branch(cancel) == branch(invite), (cancel.header("via"), invite.header("via"))
    assert get_call(server, call)["state"] == "ended"


def test_outbound_hang_up_before_the_answer_cancels(server, tmp_path):
    """DELETE while the callee rings: the room's last call ended, so the server sends CANCEL at
    once (well before the ring timeout; SIPp answers 200 and 487 and requires the ACK); the call
    ends with no call_error."""
    with Sipp("outbound_no_answer", str(tmp_path)) as sipp:
        call = dial(server, f"sip:service@127.0.0.1:{sipp.port}")

        async def go():
            ws, _ = await open_stream(server, call, states=("connecting",))
            await asyncio.to_thread(sipp.wait_sent, None, 180)
            assert api(server, "DELETE", f"/api/call/{call['call_id']}").status_code == 200
            seen = await until_state(ws, "ended", timeout=3)
            await ws.close()
            return seen
        seen = run(go(), timeout=30)
        msgs = sipp.finish(10)

    assert not [m for m in seen if m.get("type") == "call_error"], seen
    invite = next(m for m in msgs if m.method == "INVITE")
    cancel = next(m for m in msgs if m.method == "CANCEL")
    assert cancel.time - invite.time < RING_TIMEOUT - 1.0, f"CANCEL {cancel.time - invite.time:.2f} s after the INVITE"


# ---------------------------------------------------------------------------------------------
# Registration


def registrar_keys(expires):
    return {"realm": "127.0.0.1", "nonce": os.urandom(12).hex(), "auth_user": AUTH_USER,
            "auth_password": AUTH_PASSWORD, "expires": expires}


def registration(s, uri, state, timeout=5.0):
    def probe():
        regs = api(s, "GET", "/api/account").json().get("sip", {}).get("registrations", [])
        return next((r for r in regs if r.get("uri") == uri and r.get("state") == state), None)
    return wait_until(f"registration {uri} {state}", probe, timeout)


def test_registration_with_digest(tmp_path):
    """`--sip-register sip:bob@127.0.0.1:PORT` (SIPp as registrar): the first REGISTER (to the
    registrar, To bob, a Contact at the server's SIP address) has no credentials; challenged (401)
    it comes again in the same Call-ID with a higher CSeq and Authorization for bob/secret
    (verifyauth, and the test recomputes the digest); 200 with Expires 60. `GET /api/account` then
    shows the registration `registered`."""
    keys = registrar_keys(60)
    with Sipp("registrar", str(tmp_path), keys=keys) as sipp:
        uri = f"sip:bob@127.0.0.1:{sipp.port}"
        s = start_sip_server("--sip-register", uri)
        try:
            msgs = sipp.finish(15)
            first, second = [m for m in msgs if m.method == "REGISTER"]
            assert first.uri == f"sip:127.0.0.1:{sipp.port}", first.start
            assert f"sip:bob@127.0.0.1:{sipp.port}" in first.header("to"), first.header("to")
            assert first.header("authorization") is None, first.text()
            contact = first.header("contact")
            assert f"@127.0.0.1:{s.sip_port}" in contact or f"sip:127.0.0.1:{s.sip_port}" in contact, contact
            assert second.call_id == first.call_id and second.cseq[0] > first.cseq[0], (first.cseq, second.cseq)
            check_digest(second.header("authorization"), "REGISTER", AUTH_USER, AUTH_PASSWORD, "127.0.0.1", keys["nonce"])
            reg = registration(s, uri, "registered")
            assert reg["uri"] == uri, reg
        finally:
            s.stop()


def test_registration_is_refreshed_before_expiry(tmp_path):
    """The registrar grants 8 s: the server registers again before those 8 s are over (libre
    refreshes at 90 %, so 0.8 s before; with good credentials, resent or after a new challenge:
    SIPp checks) and stays `registered`."""
    keys = registrar_keys(8)
    with Sipp("registrar_refresh", str(tmp_path), keys=keys) as sipp:
        uri = f"sip:bob@127.0.0.1:{sipp.port}"
        s = start_sip_server("--sip-register", uri)
        try:
            msgs = sipp.finish(20)
            granted = next(m for m in msgs if m.status == 200 and m.direction == "sent")
            refresh = next(m for m in msgs if m.method == "REGISTER" and m.time > granted.time)
            after = refresh.time - granted.time
            assert 0.5 <= after < 8.0, f"refreshed {after:.2f} s after an 8 s registration"
            assert registration(s, uri, "registered")
        finally:
            s.stop()


# ---------------------------------------------------------------------------------------------
# Malformed and unknown requests


def test_garbage_and_unknown_requests_leave_the_server_up(server):
    """Datagrams that are not SIP or not whole SIP, to the SIP port, get no call created and do not
    stop the server; OPTIONS gets a final answer (any); an unknown method gets a final error (4xx
    to 6xx); a BYE for a dialog that does not exist gets 481 (RFC 3261 §12.2.2); the server still
    answers OPTIONS and /healthz afterwards."""
    port = server.sip_port
    dest = ("127.0.0.1", port)
    before = {c["call_id"] for c in calls_of(server)}
    garbage = [
        b"",
        b"\x00" * 64,
        os.urandom(1400),
        b"INVITE\r\n\r\n",
        b"INVITE sip:alice@127.0.0.1 SIP/2.0\r\n\r\n",                       # no headers at all
        b"INVITE sip:alice@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\n"
        b"From: <sip:x@127.0.0.1>;tag=1\r\nTo: <sip:alice@127.0.0.1>\r\nCSeq: 1 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n",                                         # no Call-ID
        b"INVITE sip:alice@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKy\r\n"
        b"From: <sip:x@127.0.0.1>;tag=1\r\nTo: <sip:alice@127.0.0.1>\r\nCall-ID: garbage-1\r\n"
        b"CSeq: one INVITE\r\nContent-Type: application/sdp\r\nContent-Length: 5000\r\n\r\nv=0\r\n",  # bad CSeq, short body
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKnone\r\nCall-ID: nothing\r\n"
        b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",                       # a response to nothing
        b"OPTIONS sip:127.0.0.1 SIP/3.0\r\n\r\n",
        b"\xff\xfe\xfd INVITE \xc3\x28 sip:\xa0@127.0.0.1 SIP/2.0\r\n\r\n",
        b"REGISTER sip:127.0.0.1 SIP/2.0\r\nX: " + b"a" * 60000 + b"\r\n\r\n",
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as junk:
        for d in garbage:
            junk.sendto(d, dest)

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        local = probe.getsockname()[1]

        def ask(data, call_id, timeout=3.0):
            probe.sendto(data, dest)
            return recv_sip(probe, timeout, lambda m: not m.is_request and m.call_id == call_id and m.status >= 200)

        cid = f"probe-{os.getpid()}-{time.time()}"
        r = ask(sip_request("OPTIONS", port, local, cid + "-options", "z9hG4bK-options-1"), cid + "-options")
        assert r is not None, "no final answer to OPTIONS"
        assert r.cseq == (1, "OPTIONS"), r.text()

        r = ask(sip_request("FROBNICATE", port, local, cid + "-frob", "z9hG4bK-frob-1"), cid + "-frob")
        assert r is not None and 400 <= r.status < 700, r and r.text()

        r = ask(sip_request("BYE", port, local, cid + "-bye", "z9hG4bK-bye-1", to_tag="nosuchdialog"), cid + "-bye")
        assert r is not None and r.status == 481, r and r.text()

        assert server.proc.poll() is None, "the server died"
        r = ask(sip_request("OPTIONS", port, local, cid + "-again", "z9hG4bK-options-2"), cid + "-again")
        assert r is not None, "no answer to OPTIONS after the garbage"

    assert api(server, "GET", "/healthz", key=None).status_code == 200
    assert {c["call_id"] for c in calls_of(server)} == before, "garbage created a call"


# ---------------------------------------------------------------------------------------------
# Shutdown


def test_sigterm_hangs_up_every_dialog_before_exiting(tmp_path):
    """SIGTERM with one answered dialog and one still ringing: before the process exits, the
    answered one gets a BYE and the ringing one a CANCEL (each SIPp scenario requires it and ends
    cleanly), the agents' streams get `call_state` ended, and the server exits 0."""
    s = start_sip_server()
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    try:
        with UdpCollector() as peer, \
                Sipp("outbound_answer", str(tmp_path / "a"), keys={"peer_rtp_port": peer.port}) as answered, \
                Sipp("outbound_no_answer", str(tmp_path / "b")) as ringing:
            a = dial(s, f"sip:service@127.0.0.1:{answered.port}")
            b = dial(s, f"sip:service@127.0.0.1:{ringing.port}")

            async def go():
                wa, _ = await open_stream(s, a, states=("connecting", "active"))
                wb, _ = await open_stream(s, b, states=("connecting",))
                await asyncio.to_thread(answered.wait_received, "ACK")
                await asyncio.to_thread(ringing.wait_sent, None, 180)
                s.proc.send_signal(signal.SIGTERM)
                seen = [await until_state(w, "ended", timeout=5) for w in (wa, wb)]
                return seen
            run(go(), timeout=30)
            assert s.proc.wait(15) == 0
            bye = [m for m in answered.finish(10) if m.method == "BYE"]
            cancel = [m for m in ringing.finish(10) if m.method == "CANCEL"]
        assert len(bye) == 1 and len(cancel) == 1, (bye, cancel)
    finally:
        if s.proc.poll() is None:
            s.stop()
