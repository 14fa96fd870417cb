"""A live `chamade serve` on 127.0.0.1 for the socket-level tests, and small helpers."""
import asyncio
import json
import os
import signal
import subprocess
import threading
import time

import httpx
import numpy as np
import pytest
import websockets

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("CHAMADE_BIN", os.path.join(ROOT, ".build", "debug", "chamade"))
KEY1, KEY2 = "chmd_test_key_one", "chmd_test_key_two"


class Server:
    def __init__(self, *extra, env=None):
        # SIP's default port (5060) can be bound by one process only: a server of the tests listens
        # for SIP only when the test asks (`--sip 127.0.0.1:0`); otherwise SIP is off.
        sip_default = [] if "--sip" in extra or (env or {}).get("CHAMADE_SIP") else ["--sip", "off"]
        # Speech recognition (on by default in `serve`) transcribes every talker: a test server runs
        # it only when the test asks (`--stt pocketsphinx`), so other tests' tones cost no decoding.
        stt_default = [] if "--stt" in extra or (env or {}).get("CHAMADE_STT") else ["--stt", "none"]
        self.proc = subprocess.Popen(
            [BINARY, "serve", "--port", "0", *sip_default, *stt_default, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        self.lines = []
        # What httpx checks the server's certificate with (an ssl.SSLContext under TLS, see test_tls.py).
        self.verify = True
        deadline = time.time() + 30
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line.rstrip("\n"))
            if line.startswith(("listening on http://", "listening on https://")):
                self.base = line.split()[-1]
                self.port = int(self.base.rsplit(":", 1)[1])
                self.tls = self.base.startswith("https://")
                self.ws = ("wss://" + self.base[len("https://"):]) if self.tls else self.base.replace("http://", "ws://")
                # Keep reading its output so a chatty server never blocks on a full pipe.
                threading.Thread(target=self._drain, daemon=True).start()
                return
        self.proc.kill()
        raise RuntimeError("server did not start: " + "\n".join(self.lines))

    def _drain(self):
        for line in self.proc.stdout:
            if len(self.lines) < 10000:
                self.lines.append(line.rstrip("\n"))

    # The server process's footprint, from /proc (Linux).
    def rss_mb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def threads(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/task"))

    def fds(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def metric(self, name, key=None):
        """The sum of every sample of one metric family on /metrics (None when the server has none)."""
        text = api(self, "GET", "/metrics", key=key or KEY1).text
        values = [float(l.split()[-1]) for l in text.splitlines()
                  if l.startswith(name) and l[len(name):len(name) + 1] in (" ", "{")]
        return sum(values) if values else None

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.check_sanitizers()
        return self.proc.returncode

    def check_sanitizers(self):
        """A server built with a sanitizer (`make test-asan`, `make test-tsan`) reports on its
        output: any report fails the test that ran it, with the report."""
        time.sleep(0.1)  # the drain thread reads what the process wrote last
        reports = [i for i, l in enumerate(self.lines)
                   if "ERROR: AddressSanitizer" in l or "WARNING: ThreadSanitizer" in l
                   or "runtime error:" in l or "ERROR: LeakSanitizer" in l]
        if reports:
            raise AssertionError("sanitizer report from the server:\n" + "\n".join(self.lines[reports[0]:reports[0] + 60]))


@pytest.fixture(scope="module")
def server():
    s = Server("--api-key", KEY1, "--api-key", KEY2)
    yield s
    s.stop()


def api(server, method, path, key=KEY1, **kw):
    headers = kw.pop("headers", {})
    if key is not None:
        headers["X-API-Key"] = key
    return httpx.request(method, server.base + path, headers=headers, timeout=10,
                         verify=getattr(server, "verify", True), **kw)


_meeting = [0]


def new_meeting():
    """A meeting URL no other test (or run) uses: a room of its own."""
    _meeting[0] += 1
    return f"https://meet.example/{os.getpid()}/{time.time()}/{_meeting[0]}"


def new_call(server, platform="discord", meeting=None, key=KEY1, name="AI Agent"):
    if meeting is None:
        meeting = new_meeting()
    r = api(server, "POST", "/api/call", key=key, json={"platform": platform, "meeting_url": meeting, "agent_name": name})
    assert r.status_code == 200, r.text
    return r.json()


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def recv_json(ws, want_type=None, timeout=5):
    """Next text message (skipping audio frames), optionally of one type."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {want_type or 'text'} message")
        m = await asyncio.wait_for(ws.recv(), left)
        if isinstance(m, str):
            o = json.loads(m)
            if want_type is None or o.get("type") == want_type:
                return o


def ws_url(server, call, key=KEY1):
    return f"{server.ws}/api/call/{call['call_id']}/stream?api_key={key}"


async def open_stream(server, call, rate=8000, receive=True, key=KEY1, states=("active",)):
    """A call's WebSocket whose opening `call_state` is one of `states`, configured at `rate` and
    `receive`. Returns (ws, the call's state by then): a `call_state` that comes while the socket
    is being configured (connecting → active) is taken into account, not skipped."""
    ws = await websockets.connect(ws_url(server, call, key), max_size=None)
    first = await recv_json(ws, "call_state")
    assert first["state"] in states, first
    state = first["state"]
    await ws.send(json.dumps({"type": "audio_config", "sample_rate": rate, "receive": receive}))
    while (m := await recv_json(ws))["type"] != "audio_config":
        if m["type"] == "call_state":
            state = m["state"]
    assert m["ready"] is True and m["sample_rate"] == rate, m
    return ws, state


async def record(ws, seconds):
    """Everything a WebSocket gets for `seconds`: its audio as int16 samples, and its text messages
    (the server closing the socket shows as a last message of type "(closed)")."""
    chunks, messages = [], []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        try:
            m = await asyncio.wait_for(ws.recv(), left)
        except asyncio.TimeoutError:
            break
        except websockets.ConnectionClosed as e:
            messages.append({"type": "(closed)", "code": e.rcvd.code if e.rcvd else None})
            break
        if isinstance(m, bytes):
            chunks.append(m)
        else:
            messages.append(json.loads(m))
    return np.frombuffer(b"".join(chunks), dtype="<i2"), messages
