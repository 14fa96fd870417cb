"""Hostile clients through real sockets (SPEC §3, §4, §9): silent and slow-loris connections,
malformed HTTP heads, pipelining, idle connections, WebSocket frame abuse (fragment floods, 16 MiB
messages, unmasked frames, reserved bits and opcodes, ping floods), hostile JSON and text, and
races on one call. Every socket here has a bounded timeout.

A canary call receives its mix-minus at 8 kHz for the whole module, on the same server: it must
keep getting one frame every 20 ms (at least 95 % of the frames, no gap over 200 ms) while the
hostile clients do their worst.

`chamade serve` has no flag for the idle timeout (60 s, SPEC §9), so the idle case runs in the
background from the module's start, beside the 10 s head-timeout cases (a silent connection, a
partial request line, 50 slow-loris connections), while the other tests run."""
import asyncio
import base64
import json
import os
import select
import socket
import struct
import threading
import time
from collections import namedtuple

import numpy as np
import pytest

from conftest import KEY1, Server, new_call, open_stream

HEAD_TIMEOUT = 10.0   # SPEC §9: a request head must be complete within 10 s (not configurable)
IDLE_TIMEOUT = 60.0   # SPEC §9: a connection idle for 60 s is closed (no flag to shorten it)
MAX_WAIT = 15.0       # no single socket operation of this file waits longer
SLOW_LORIS = 50


# ---------------------------------------------------------------------------------------------
# Raw sockets and raw HTTP


def connect(server, timeout=MAX_WAIT):
    s = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class Received:
    """What a raw socket got: its bytes, when the first arrived, whether and when the peer closed."""

    def __init__(self):
        self.data = b""
        self.first = None
        self.closed = False
        self.closed_at = None
        self.reset = False

    def __repr__(self):
        return (f"<{len(self.data)} bytes {self.data[:160]!r}, closed={self.closed}"
                f"{' (reset)' if self.reset else ''}>")


def read_until(s, limit, done=None, rec=None):
    """Reads until the peer closes, `done(data)` holds, or `limit` seconds pass."""
    rec = rec or Received()
    deadline = time.monotonic() + limit
    while not rec.closed and not (done and done(rec.data)):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        s.settimeout(min(left, MAX_WAIT))
        try:
            chunk = s.recv(1 << 16)
        except (socket.timeout, TimeoutError):
            continue
        except (ConnectionResetError, BrokenPipeError):
            rec.closed, rec.reset, rec.closed_at = True, True, time.monotonic()
            break
        if not chunk:
            rec.closed, rec.closed_at = True, time.monotonic()
            break
        if rec.first is None:
            rec.first = time.monotonic()
        rec.data += chunk
    return rec


Response = namedtuple("Response", "status headers body line")


def parse_responses(data):
    """The complete HTTP responses at the start of `data` (bodies framed by Content-Length)."""
    out, i = [], 0
    while True:
        j = data.find(b"\r\n\r\n", i)
        if j < 0:
            return out
        lines = data[i:j].decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        if j + 4 + n > len(data):
            return out
        out.append(Response(int(lines[0].split()[1]), headers, data[j + 4:j + 4 + n], lines[0]))
        i = j + 4 + n


def send_quietly(s, data):
    """sendall, tolerating a server that has already answered and closed."""
    try:
        s.sendall(data)
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False


def exchange(server, raw, limit=5.0, until_close=True):
    """Sends `raw` on a new connection; returns (its first response or None, what was received,
    the time it was sent). Reads until the server closes (or `limit`) when `until_close`."""
    s = connect(server)
    try:
        t0 = time.monotonic()
        send_quietly(s, raw)
        rec = read_until(s, limit, None if until_close else (lambda d: len(parse_responses(d)) >= 1))
        responses = parse_responses(rec.data)
        return (responses[0] if responses else None), rec, t0
    finally:
        s.close()


def request(server, method, path, body=None, key=KEY1, headers=""):
    """One request with a JSON body; returns the response (the connection is not kept)."""
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body, ensure_ascii=False).encode()
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers
    if key:
        head += f"X-API-Key: {key}\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    resp, rec, _ = exchange(server, head.encode() + b"\r\n" + (body or b""), limit=10, until_close=False)
    assert resp is not None, f"{method} {path}: no response within 10 s: {rec}"
    return resp


def json_error(resp, status):
    """Asserts `resp` is `status` with the contract's JSON error body; returns its code."""
    assert resp is not None, f"no response (expected {status})"
    assert resp.status == status, f"expected {status}, got {resp.line!r}: {resp.body[:300]!r}"
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    err = json.loads(resp.body)["error"]
    assert isinstance(err.get("code"), str) and err["code"], err
    assert isinstance(err.get("message"), str), err
    return err["code"]


# ---------------------------------------------------------------------------------------------
# Raw WebSocket


def mask_bytes(payload, key):
    if not payload:
        return b""
    a = np.frombuffer(payload, dtype=np.uint8)
    return (a ^ np.resize(np.frombuffer(key, dtype=np.uint8), len(a))).tobytes()


def frame(opcode, payload=b"", fin=True, mask=True, rsv=0):
    """One WebSocket frame as a client sends it (masked unless told otherwise)."""
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    m = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head = bytes([b0, m | n])
    elif n < 65536:
        head = bytes([b0, m | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, m | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + mask_bytes(payload, key)


def text(obj):
    return frame(0x1, json.dumps(obj, ensure_ascii=False).encode())


def upgrade_request(path):
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n\r\n").encode()


def stream_path(call, key=KEY1):
    return f"/api/call/{call['call_id']}/stream?api_key={key}"


class RawWS:
    """A client WebSocket spoken frame by frame over a plain socket."""

    def __init__(self, sock, rest=b""):
        self.sock, self.buf = sock, bytearray(rest)
        self.closed = False  # the TCP connection ended (FIN or reset)

    @classmethod
    def open(cls, server, call, key=KEY1):
        s = connect(server)
        s.sendall(upgrade_request(stream_path(call, key)))
        rec = read_until(s, 5, lambda d: b"\r\n\r\n" in d)
        head, sep, rest = rec.data.partition(b"\r\n\r\n")
        assert sep and head.split(b"\r\n")[0].split()[1] == b"101", f"upgrade refused: {rec}"
        ws = cls(s, rest)
        assert ws.next_message("call_state")["state"] == "active"
        return ws

    def send(self, *frames):
        return send_quietly(self.sock, b"".join(frames))

    def close(self):
        self.sock.close()

    def _pop(self):
        buf = self.buf
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        n, j = b1 & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return None
            n, j = struct.unpack(">H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n, j = struct.unpack(">Q", buf[2:10])[0], 10
        key = None
        if b1 & 0x80:
            if len(buf) < j + 4:
                return None
            key, j = bytes(buf[j:j + 4]), j + 4
        if len(buf) < j + n:
            return None
        payload = bytes(buf[j:j + n])
        del buf[:j + n]
        if key:
            payload = mask_bytes(payload, key)
        return b0 & 0x0F, payload

    def next_frame(self, timeout):
        """The next frame (opcode, payload), None once the connection has ended; TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            f = self._pop()
            if f is not None:
                return f
            if self.closed:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame")
            self.sock.settimeout(min(left, MAX_WAIT))
            try:
                chunk = self.sock.recv(1 << 20)
            except (socket.timeout, TimeoutError):
                continue
            except (ConnectionResetError, BrokenPipeError):
                self.closed = True
                continue
            if not chunk:
                self.closed = True
            self.buf += chunk

    def next_message(self, want=None, timeout=5.0):
        """The next text message (as JSON) of type `want`, skipping audio and control frames."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                f = self.next_frame(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise AssertionError(f"no {want or 'text'} message within {timeout} s") from None
            assert f is not None, f"connection closed while waiting for {want or 'a text message'}"
            op, payload = f
            if op == 0x8:
                raise AssertionError(f"close frame {close_of(payload)} while waiting for {want or 'a text message'}")
            if op == 0x1:
                o = json.loads(payload)
                if want is None or o.get("type") == want:
                    return o

    def messages_until(self, want, timeout=5.0):
        """Every text message up to and including the first of type `want`."""
        out = []
        while True:
            out.append(self.next_message(timeout=timeout))
            if out[-1].get("type") == want:
                return out

    def expect_close(self, timeout=5.0):
        """Reads until the server's close frame; returns (code, reason, when it came)."""
        deadline = time.monotonic() + timeout
        seen = []  # the text messages that came instead, for the failure message
        while True:
            try:
                f = self.next_frame(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise AssertionError(f"no close frame within {timeout} s (connection open); got {seen}") from None
            assert f is not None, f"the connection ended without a close frame; got {seen}"
            if f[0] == 0x1:
                seen.append(f[1][:120])
            if f[0] == 0x8:
                code, reason = close_of(f[1])
                return code, reason, time.monotonic()

    def expect_tcp_closed(self, timeout=5.0):
        """Asserts the server ends the TCP connection within `timeout` (frames before are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.next_frame(max(0.0, deadline - time.monotonic())) is None:
                    return
            except TimeoutError:
                raise AssertionError(f"the server did not close the TCP connection within {timeout} s") from None

    def expect_open(self, seconds):
        """Asserts no close frame and no end of connection for `seconds` (other frames are fine)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                f = self.next_frame(left)
            except TimeoutError:
                return
            assert f is not None, "the server closed the connection"
            assert f[0] != 0x8, f"the server sent close {close_of(f[1])}"

    def round_trip(self, name="probe", timeout=5.0):
        """A mark on an idle call is answered at once: proof the connection still serves messages.
        Returns the messages that came before the answer."""
        self.send(text({"type": "mark", "name": name}))
        msgs = self.messages_until("mark", timeout)
        assert msgs[-1].get("name") == name, msgs[-1]
        return msgs[:-1]


def close_of(payload):
    if len(payload) < 2:
        return None, ""
    return struct.unpack(">H", payload[:2])[0], payload[2:].decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------
# The server, the canary and the background probes


@pytest.fixture(scope="module")
def server():
    s = Server("--api-key", KEY1, "--tts", "none")
    yield s
    s.stop()


class Canary:
    """One call receiving its (silent) mix-minus at 8 kHz in a thread of its own, with every
    frame's arrival time."""

    FRAME = 0.020

    def __init__(self, server):
        self.times = []
        self.error = None
        self.bad_sizes = 0
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.call = new_call(server, meeting=f"https://meet.example/canary/{os.getpid()}/{time.time()}")
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main(server)), daemon=True)
        self.thread.start()
        assert self.ready.wait(15) and self.error is None, f"canary did not start: {self.error}"
        self.start = time.monotonic()

    async def _main(self, server):
        try:
            ws, _ = await open_stream(server, self.call, rate=8000, receive=True)
            self.ready.set()
            while not self.stopping.is_set():
                try:
                    m = await asyncio.wait_for(ws.recv(), 0.5)
                except asyncio.TimeoutError:
                    continue
                if isinstance(m, bytes):
                    self.times.append(time.monotonic())
                    if len(m) != 320:
                        self.bad_sizes += 1
            await ws.close()
        except Exception as e:  # reported by check()
            self.error = repr(e)
        finally:
            self.ready.set()

    def window(self, t0, t1):
        times = [t for t in list(self.times) if t0 <= t <= t1]
        edges = [t0] + times + [t1]
        return len(times), (t1 - t0) / self.FRAME, max(b - a for a, b in zip(edges, edges[1:]))

    def check(self, t0, what, settle=0.3):
        """Asserts a steady 20 ms cadence from `t0` to now (after `settle` s for frames in flight)."""
        time.sleep(settle)
        t1 = time.monotonic()
        assert self.error is None, f"canary failed during {what}: {self.error}"
        assert self.bad_sizes == 0, f"canary got {self.bad_sizes} frames not of 320 bytes"
        n, expected, gap = self.window(t0, t1)
        assert n >= 0.95 * expected - 2, f"canary during {what}: {n} frames of {expected:.0f} expected over {t1 - t0:.1f} s"
        assert gap <= 0.200, f"canary during {what}: a gap of {gap * 1000:.0f} ms between frames"
        return n, expected, gap


@pytest.fixture(scope="module", autouse=True)
def canary(server):
    c = Canary(server)
    yield c
    c.stopping.set()
    c.thread.join(5)


class Job:
    """A probe running in a daemon thread."""

    def __init__(self, fn, *args):
        self.result, self.error, self.done = None, None, threading.Event()
        threading.Thread(target=self._run, args=(fn, *args), daemon=True).start()

    def _run(self, fn, *args):
        try:
            self.result = fn(*args)
        except BaseException as e:
            self.error = e
        finally:
            self.done.set()

    def get(self, timeout):
        assert self.done.wait(timeout), f"background probe still running after {timeout} s"
        if self.error is not None:
            raise self.error
        return self.result


def probe_silent(server):
    """Connects and sends nothing."""
    s = connect(server)
    t0 = time.monotonic()
    try:
        return t0, read_until(s, MAX_WAIT)
    finally:
        s.close()


def probe_partial(server):
    """Sends half a request line, then nothing."""
    s = connect(server)
    t0 = time.monotonic()
    try:
        s.sendall(b"GET /heal")
        return t0, read_until(s, MAX_WAIT)
    finally:
        s.close()


def probe_slow_loris(server):
    """A request head that never ends: one header byte a second, until the server answers."""
    s = connect(server)
    t0 = time.monotonic()
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        drip, sent = b"X-Slow: " + b"a" * 100, 0
        while time.monotonic() - t0 < MAX_WAIT:
            readable, _, _ = select.select([s], [], [], 1.0)
            if readable:
                break
            if not send_quietly(s, drip[sent:sent + 1]):
                break
            sent += 1
        return t0, sent, read_until(s, max(0.1, t0 + MAX_WAIT - time.monotonic()))
    finally:
        s.close()


def probe_idle(server):
    """One request answered, then a connection left idle: the server should close it at 60 s."""
    s = connect(server)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = read_until(s, 5, lambda d: len(parse_responses(d)) >= 1)
        responses = parse_responses(first.data)
        t_answered = time.monotonic()
        rest = read_until(s, IDLE_TIMEOUT + 10)
        return responses, t_answered, rest
    finally:
        s.close()


@pytest.fixture(scope="module", autouse=True)
def background(server, canary):
    """The slow probes, started at the module's start so their waits overlap the other tests."""
    jobs = {
        "silent": Job(probe_silent, server),
        "partial": Job(probe_partial, server),
        "slow_loris": [Job(probe_slow_loris, server) for _ in range(SLOW_LORIS)],
        "idle": Job(probe_idle, server),
    }
    yield jobs


# ---------------------------------------------------------------------------------------------
# HTTP: malformed heads get their status, the JSON error body, and the connection closed

BIG_HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(
    f"X-Pad-{i}: {'a' * 1000}\r\n".encode() for i in range(80)) + b"\r\n"

MALFORMED = [
    ("control byte in the path", b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("bare LF line ends", b"GET /healthz HTTP/1.1\nHost: x\n\n", 400),
    ("Content-Length with Transfer-Encoding",
     f"POST /api/call HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY1}\r\nContent-Length: 5\r\n"
     "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n".encode(), 400),
    ("duplicate Content-Length",
     f"POST /api/call HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY1}\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{{}}".encode(), 400),
    ("negative Content-Length",
     f"POST /api/call HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY1}\r\nContent-Length: -1\r\n\r\n".encode(), 400),
    ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    ("unknown method", b"FOO /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 501),
    ("Transfer-Encoding gzip, chunked",
     f"POST /api/call HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY1}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".encode(), 501),
    ("HTTP/1.1 without Host", b"GET /healthz HTTP/1.1\r\n\r\n", 400),
    ("obs-fold header", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n  b\r\n\r\n", 400),
    ("whitespace before the colon", b"GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    ("80 KB of headers", BIG_HEAD, 431),
    ("Content-Length over 1 MiB (body never sent)",
     f"POST /api/call HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY1}\r\nContent-Type: application/json\r\n"
     "Content-Length: 2097152\r\n\r\n".encode(), 413),
]


@pytest.mark.parametrize("raw,status", [(r, s) for _, r, s in MALFORMED], ids=[n for n, _, _ in MALFORMED])
def test_malformed_request_gets_its_status_json_and_close(server, raw, status):
    resp, rec, t0 = exchange(server, raw, limit=12)
    assert resp is not None, f"no response within {time.monotonic() - t0:.1f} s: {rec}"
    json_error(resp, status)
    assert rec.data.count(b"HTTP/1.1 ") == 1, f"more than one response: {rec}"
    assert rec.closed, f"the connection stayed open after {resp.line!r}"
    assert rec.first - t0 < 2.0, f"{resp.line!r} came only after {rec.first - t0:.1f} s"
    assert rec.closed_at - t0 < 3.0, f"closed only after {rec.closed_at - t0:.1f} s"


def test_wrong_method_on_known_path_is_405_with_allow_then_closed(server):
    resp, rec, _ = exchange(server, f"PUT /api/calls HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY1}\r\n"
                                    "Content-Length: 0\r\n\r\n".encode())
    json_error(resp, 405)
    assert "GET" in resp.headers.get("allow", ""), resp.headers
    assert rec.closed, "the connection stayed open after the 405"


def test_unknown_path_is_404_json(server):
    resp, rec, _ = exchange(server, f"GET /api/nothing/here HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY1}\r\n\r\n".encode(),
                            until_close=False)
    json_error(resp, 404)


def test_http10_without_keep_alive_is_closed_after_the_answer(server):
    resp, rec, t0 = exchange(server, b"GET /healthz HTTP/1.0\r\n\r\n", limit=5)
    assert resp is not None and resp.status == 200, rec
    assert rec.closed and rec.closed_at - t0 < 2.0, f"not closed within 2 s: {rec}"


def test_pipelined_requests_all_answered(server):
    s = connect(server)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 20)
        rec = read_until(s, 10, lambda d: len(parse_responses(d)) >= 20)
    finally:
        s.close()
    statuses = [r.status for r in parse_responses(rec.data)]
    assert statuses == [200] * 20, f"{len(statuses)} responses: {statuses}"


def test_deeply_nested_json_body_is_400(server):
    resp = request(server, "POST", "/api/call", body=b"[" * 100_000)
    json_error(resp, 400)
    # The server is still serving.
    assert request(server, "GET", "/healthz", key=None).status == 200


def test_delete_race_has_exactly_one_winner(server):
    statuses = parallel(server, 32, f"DELETE /api/call/{new_call(server)['call_id']}")
    assert sorted(statuses) == [200] + [409] * 31, statuses


def test_parallel_stop_speaking_all_200(server):
    statuses = parallel(server, 50, f"POST /api/call/{new_call(server)['call_id']}/stop-speaking")
    assert statuses == [200] * 50, statuses


def parallel(server, n, request_line):
    """`n` connections send the same request at the same moment; their statuses."""
    raw = f"{request_line} HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY1}\r\nContent-Length: 0\r\n\r\n".encode()
    barrier = threading.Barrier(n)
    socks = [connect(server) for _ in range(n)]
    results = [None] * n

    def one(i):
        barrier.wait(10)
        socks[i].sendall(raw)
        rs = parse_responses(read_until(socks[i], 10, lambda d: len(parse_responses(d)) >= 1).data)
        results[i] = rs[0].status if rs else None

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
    finally:
        for s in socks:
            s.close()
    return results


# ---------------------------------------------------------------------------------------------
# WebSocket: the handshake


@pytest.mark.parametrize("path", ["/api/nothing", "/nothing", "/api/call/nope/nothing"])
def test_ws_upgrade_on_unknown_path_is_404_json(server, path):
    resp, rec, t0 = exchange(server, upgrade_request(f"{path}?api_key={KEY1}"), until_close=False)
    assert resp is not None, f"no response ({rec}, after {time.monotonic() - t0:.1f} s)"
    json_error(resp, 404)


@pytest.mark.parametrize("drop", ["Sec-WebSocket-Key", "Sec-WebSocket-Version"])
def test_ws_upgrade_missing_handshake_header_is_400_json(server, drop):
    raw = b"".join(line + b"\r\n" for line in upgrade_request(stream_path(new_call(server))).split(b"\r\n")[:-1]
                   if not line.startswith(drop.encode()))
    resp, rec, t0 = exchange(server, raw, until_close=False)
    assert resp is not None, f"no response ({rec}, after {time.monotonic() - t0:.1f} s)"
    json_error(resp, 400)


# ---------------------------------------------------------------------------------------------
# WebSocket: frames


def test_ws_zero_length_continuation_flood_closes_1009(server, canary):
    t0 = time.monotonic()
    c = new_call(server)
    rss0 = server.rss_mb()
    # 1,000 fragments are a message still allowed; the 1,001st closes it.
    ws = RawWS.open(server, c)
    try:
        ws.send(frame(0x1, b'{"type":', fin=False), *[frame(0x0, b"", fin=False) for _ in range(999)])
        ws.expect_open(0.5)
        ws.send(frame(0x0, b"", fin=False))
        code, reason, _ = ws.expect_close(5)
        assert code == 1009, (code, reason)
        ws.expect_tcp_closed(5)
    finally:
        ws.close()
    # The whole flood at once: 2,000 empty continuations.
    ws = RawWS.open(server, c)
    try:
        ws.send(frame(0x1, b'{"type":', fin=False), *[frame(0x0, b"", fin=False) for _ in range(2000)])
        code, reason, _ = ws.expect_close(5)
        assert code == 1009, (code, reason)
        ws.expect_tcp_closed(5)
    finally:
        ws.close()
    grown = server.rss_mb() - rss0
    assert grown < 20, f"server RSS grew by {grown:.1f} MB"
    canary.check(t0, "the continuation flood")


def test_ws_fragmented_message_over_16_mib_closes_1009(server, canary):
    t0 = time.monotonic()
    ws = RawWS.open(server, new_call(server))
    try:
        mib = b"\x00" * (1 << 20)
        ws.send(frame(0x2, mib, fin=False))
        for _ in range(15):
            ws.send(frame(0x0, mib, fin=False))   # 16 MiB so far: still allowed
        ws.send(frame(0x0, b"\x00", fin=True))     # the 17th fragment: 16 MiB + 1
        code, reason, _ = ws.expect_close(10)
        assert code == 1009, (code, reason)
        ws.expect_tcp_closed(5)
    finally:
        ws.close()
    canary.check(t0, "the 16 MiB fragmented message")


@pytest.mark.parametrize("frames", [
    pytest.param(lambda: [frame(0x1, b'{"type":"clear"}', mask=False)], id="unmasked text frame"),
    pytest.param(lambda: [frame(0x0, b'{"type":"clear"}', fin=True)], id="continuation with no message begun"),
    pytest.param(lambda: [frame(0x1, b'{"type":', fin=False), frame(0x1, b'{"type":"clear"}')],
                 id="new text frame inside a fragmented message"),
    pytest.param(lambda: [frame(0x1, b'{"type":"clear"}', rsv=4)], id="RSV1 set"),
    pytest.param(lambda: [frame(0x3, b"x")], id="reserved opcode 3"),
])
def test_ws_protocol_violation_closes_1002(server, frames):
    ws = RawWS.open(server, new_call(server))
    try:
        ws.send(*frames())
        code, reason, _ = ws.expect_close(5)
        assert code == 1002, (code, reason)
    finally:
        ws.close()


@pytest.mark.parametrize("frames,code", [
    pytest.param(lambda: [frame(0x1, b'{"type":"clear"}', mask=False)], 1002, id="unmasked frame"),
    pytest.param(lambda: [frame(0x1, b'{"type":', fin=False)] + [frame(0x0, b"", fin=False) for _ in range(1000)],
                 1009, id="1,001 empty fragments"),
])
def test_ws_frames_sent_with_the_upgrade_request_are_checked_too(server, frames, code):
    """A client need not wait for the 101: frames that arrive with the upgrade request are held to
    the same rules as later ones."""
    s = connect(server)
    try:
        s.sendall(upgrade_request(stream_path(new_call(server))) + b"".join(frames()))
        rec = read_until(s, 5, lambda d: b"\r\n\r\n" in d)
        head, sep, rest = rec.data.partition(b"\r\n\r\n")
        assert sep and head.split(b"\r\n")[0].split()[1] == b"101", f"upgrade refused: {rec}"
        got, reason, _ = RawWS(s, rest).expect_close(5)
        assert got == code, (got, reason)
    finally:
        s.close()


def test_ws_base64_with_extra_padding_is_invalid_audio_and_stays_open(server):
    ws = RawWS.open(server, new_call(server))
    try:
        ws.send(text({"type": "audio", "audio": "AAAA=="}))
        err = ws.next_message("call_error")
        assert err["code"] == "invalid_audio", err
        ws.round_trip()
    finally:
        ws.close()


def test_ws_invalid_utf8_text_is_answered_and_stays_open(server):
    ws = RawWS.open(server, new_call(server))
    try:
        ws.send(frame(0x1, b'{"type":"\xff\xfe"}'))
        err = ws.next_message("call_error")
        assert err.get("code"), err
        ws.round_trip()
    finally:
        ws.close()


def test_ws_deeply_nested_json_is_invalid_message_and_stays_open(server):
    ws = RawWS.open(server, new_call(server))
    try:
        ws.send(frame(0x1, b"[" * 100_000))
        err = ws.next_message("call_error")
        assert err["code"] == "invalid_message", err
        ws.round_trip()
    finally:
        ws.close()


def test_ws_ping_flood_leaves_server_and_canary_alone(server, canary):
    t0 = time.monotonic()
    ws = RawWS.open(server, new_call(server))
    try:
        pings = b"".join(frame(0x9, b"p" * 125) for _ in range(5000))
        ws.sock.settimeout(MAX_WAIT)
        ws.sock.sendall(pings)  # nothing read meanwhile
        time.sleep(1.0)
        assert request(server, "GET", "/healthz", key=None).status == 200
        assert server.proc.poll() is None
    finally:
        ws.close()
    canary.check(t0, "the ping flood")


# ---------------------------------------------------------------------------------------------
# Text limits count Unicode scalars


def accents(n):
    return "a" + "\u0301" * n


def test_chat_over_http_counts_scalars(server):
    cid = new_call(server)["call_id"]
    resp = request(server, "POST", f"/api/call/{cid}/chat", body={"text": accents(400_000)})
    assert json_error(resp, 400) == "invalid_text"
    resp = request(server, "POST", f"/api/call/{cid}/chat", body={"text": accents(9_999)})
    assert resp.status == 200, (resp.line, resp.body[:300])


def test_chat_over_ws_counts_scalars(server):
    meeting = f"https://meet.example/hostile-chat/{os.getpid()}/{time.time()}"
    talker = RawWS.open(server, new_call(server, meeting=meeting))
    listener = RawWS.open(server, new_call(server, meeting=meeting))
    try:
        talker.send(text({"type": "send_chat", "text": accents(400_000)}))
        err = talker.next_message("call_error", timeout=10)
        assert err["code"] == "invalid_text", err
        ok = accents(9_999)
        talker.send(text({"type": "send_chat", "text": ok}))
        before = talker.round_trip()
        assert not [m for m in before if m.get("type") == "call_error"], before
        chat = listener.next_message("call_chat")
        assert chat["text"] == ok
    finally:
        talker.close()
        listener.close()


# ---------------------------------------------------------------------------------------------
# The slow ones (started by `background` at the module's start)


def test_silent_connection_gets_408_then_closed(background):
    t0, rec = background["silent"].get(HEAD_TIMEOUT + 10)
    responses = parse_responses(rec.data)
    assert responses, f"nothing within {MAX_WAIT} s: {rec}"
    assert json_error(responses[0], 408) == "request_timeout"
    assert 9.0 <= rec.first - t0 <= 12.5, f"408 after {rec.first - t0:.1f} s"
    assert rec.closed and rec.closed_at - t0 <= 13.0, f"not closed after the 408: {rec}"


def test_partial_request_line_gets_408_then_closed(background):
    t0, rec = background["partial"].get(HEAD_TIMEOUT + 10)
    responses = parse_responses(rec.data)
    assert responses, f"nothing within {MAX_WAIT} s: {rec}"
    assert json_error(responses[0], 408) == "request_timeout"
    assert 9.0 <= rec.first - t0 <= 12.5, f"408 after {rec.first - t0:.1f} s"
    assert rec.closed and rec.closed_at - t0 <= 13.0, f"not closed after the 408: {rec}"


def test_fifty_slow_loris_connections_get_408_and_close(background, server):
    problems = []
    for i, job in enumerate(background["slow_loris"]):
        t0, sent, rec = job.get(MAX_WAIT + 10)
        responses = parse_responses(rec.data)
        if not responses or responses[0].status != 408:
            problems.append(f"#{i}: {responses[0].line if responses else 'no response'} ({sent} bytes dripped) {rec}")
            continue
        json_error(responses[0], 408)
        if not 9.0 <= rec.first - t0 <= 12.5:
            problems.append(f"#{i}: 408 after {rec.first - t0:.1f} s")
        if not rec.closed or rec.closed_at - t0 > 15.0:
            problems.append(f"#{i}: not closed within 15 s")
    assert not problems, "\n".join(problems)
    assert request(server, "GET", "/healthz", key=None).status == 200


def test_idle_connection_after_a_response_is_closed(background):
    responses, t_answered, rest = background["idle"].get(IDLE_TIMEOUT + 30)
    assert [r.status for r in responses] == [200], responses
    assert rest.closed, f"still open {IDLE_TIMEOUT + 10:.0f} s after the response"
    idle = rest.closed_at - t_answered
    assert IDLE_TIMEOUT - 2 <= idle <= IDLE_TIMEOUT + 10, f"closed after {idle:.1f} s idle"


def test_canary_steady_for_the_whole_module(canary, server):
    """Last: the canary's cadence over everything above."""
    n, expected, gap = canary.check(canary.start, "the whole module", settle=0)
    print(f"canary: {n} frames of {expected:.0f} expected, largest gap {gap * 1000:.0f} ms")
    assert server.proc.poll() is None
