"""SIPp 3.6.1 (Debian `sip-tester`) as the far end of the SIP tests (test_sip.py), driven from Python,
and what the tests need to read SIP: SIPp's message trace, SDP bodies and digest credentials.

One `Sipp` is one SIPp process running one scenario of `Tests/server/sipp/` for one call (`-m 1`),
in a folder of the test's own, with its message trace (`-trace_msg`), which SIPp writes as it goes,
so a test can wait for a message while the call runs. Its exit code is the verdict on everything
the scenario asserts: an unexpected message, a missing one, a failed `ereg check_it` or
`verifyauth` fails the call and SIPp exits 1. What SIPp cannot check (timing, the digest against
the challenge, the SDP in detail) the test reads from the trace.

Pacing a scenario from the test: a scenario that waits at `<recv request="TRIGGER"/>` goes on when
`Sipp.trigger()` sends it a datagram of that (made-up) method with the call's Call-ID. SIPp does
not answer it. As a UAC, SIPp's Call-ID is known in advance (`-cid_str`); as a UAS, it is the
Call-ID of the first request SIPp received, read from the trace.

Every SIPp runs in its own session and is killed with its children when its `with` block ends
(`rtp_peers.Proc`).
"""
import datetime
import hashlib
import itertools
import os
import re
import shutil
import socket
import time
from typing import NamedTuple

from rtp_peers import Proc, wait_udp_bound

SIPP = shutil.which("sipp") or "/usr/bin/sipp"
SCENARIOS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sipp")

# ---------------------------------------------------------------------------------------------
# The server's SIP address


def sip_address(server, timeout=10.0):
    """(host, port) from the server's `sip listening on udp:HOST:PORT` line (SPEC §2). The line may
    come before or after `listening on http://...`, so this waits for it in the output that
    conftest's `Server` keeps reading into `server.lines`."""
    rx = re.compile(r"sip listening on udp:(\S+):(\d+)\s*$")
    deadline = time.monotonic() + timeout
    while True:
        for line in list(server.lines):
            m = rx.search(line)
            if m:
                return m.group(1), int(m.group(2))
        if server.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("no 'sip listening on udp:HOST:PORT' line; server output:\n"
                               + "\n".join(server.lines[-40:]))
        time.sleep(0.02)


# ---------------------------------------------------------------------------------------------
# Ports


def free_sipp_ports():
    """(SIP port, media port) for one SIPp on 127.0.0.1: SIPp binds UDP on its SIP port (-p) and,
    for its RTP echo, on the media port (-mp) and media port + 2, even when a scenario uses none."""
    for _ in range(200):
        socks = []
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(s)
            s.bind(("127.0.0.1", 0))
            sip = s.getsockname()[1]
            m = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(m)
            m.bind(("127.0.0.1", 0))
            media = m.getsockname()[1]
            if media + 2 > 65535 or media + 2 == sip:
                continue
            e = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(e)
            e.bind(("127.0.0.1", media + 2))
            return sip, media
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free ports for SIPp")


# ---------------------------------------------------------------------------------------------
# SIP messages (as SIPp's trace shows them)

COMPACT = {"i": "call-id", "f": "from", "t": "to", "v": "via", "m": "contact", "l": "content-length",
           "c": "content-type", "k": "supported", "e": "content-encoding", "s": "subject"}


class SipMessage(NamedTuple):
    time: float       # wall-clock seconds, from the trace's time stamp (compare them with each other only)
    direction: str    # "sent" or "received", from SIPp's side
    start: str        # the request or status line
    headers: tuple    # ((lower-case name, value), ...) in order; compact names expanded
    body: str

    @property
    def is_request(self):
        return not self.start.startswith("SIP/2.0 ")

    @property
    def method(self):
        return self.start.split(" ", 1)[0] if self.is_request else None

    @property
    def uri(self):
        return self.start.split(" ")[1] if self.is_request else None

    @property
    def status(self):
        return None if self.is_request else int(self.start.split(" ")[1])

    def header(self, name):
        """The first value of a header (None when absent)."""
        values = self.all(name)
        return values[0] if values else None

    def all(self, name):
        name = name.lower()
        return [v for n, v in self.headers if n == name]

    @property
    def call_id(self):
        return self.header("call-id")

    @property
    def cseq(self):
        """(number, method)."""
        num, method = self.header("cseq").split()
        return int(num), method

    def text(self):
        return "\n".join([self.start] + [f"{n}: {v}" for n, v in self.headers] + ["", self.body])


_SEPARATOR = re.compile(r"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\s*$")
_KIND = re.compile(r"^\w+ message (sent|received)\b")


def parse_sip(text, when=0.0, direction=""):
    """One SIP message from its text (CRLF or LF line ends)."""
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        return None
    start, headers, i = lines[0].strip(), [], 1
    while i < len(lines) and lines[i].strip():
        line = lines[i]
        if line[:1] in (" ", "\t") and headers:  # a folded header line
            n, v = headers[-1]
            headers[-1] = (n, v + " " + line.strip())
        elif ":" in line:
            n, v = line.split(":", 1)
            n = n.strip().lower()
            headers.append((COMPACT.get(n, n), v.strip()))
        i += 1
    body = "\n".join(lines[i + 1:]).strip("\n")
    return SipMessage(when, direction, start, tuple(headers), body)


def parse_trace(text):
    """The messages of a SIPp `-trace_msg` file, in order. Each entry is a line of dashes with a
    time stamp, a line `UDP message sent (N bytes):` or `UDP message received [N] bytes :`, a blank
    line, then the message."""
    out = []
    blocks = []
    for line in text.split("\n"):
        m = _SEPARATOR.match(line.rstrip("\r"))
        if m:
            blocks.append([m.group(1), []])
        elif blocks:
            blocks[-1][1].append(line)
    for stamp, lines in blocks:
        when = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()
        head = next((i for i, l in enumerate(lines) if l.strip()), None)
        if head is None:
            continue
        k = _KIND.match(lines[head].strip())
        if not k:
            continue
        msg = parse_sip("\n".join(lines[head + 1:]), when, k.group(1))
        if msg is not None:
            out.append(msg)
    return out


# ---------------------------------------------------------------------------------------------
# SDP


class Media(NamedTuple):
    kind: str           # "audio"
    port: int
    proto: str          # "RTP/AVP"
    formats: list       # payload types, in the m= line's order
    rtpmap: dict        # pt -> "PCMU/8000"
    fmtp: dict          # pt -> "0-15"
    attributes: list    # every a= line of the media, without "a="
    direction: str      # sendrecv / sendonly / recvonly / inactive (media level, else session level)
    address: str        # c= of the media, else of the session
    ptime: int | None

    def pt_of(self, encoding):
        """The payload type whose rtpmap starts with `encoding` ("PCMU/8000", "opus/48000"), or None."""
        enc = encoding.lower()
        for pt in self.formats:
            if self.rtpmap.get(pt, "").lower().startswith(enc):
                return pt
        static = {"pcmu/8000": 0, "pcma/8000": 8}
        pt = static.get(enc)
        return pt if pt in self.formats and pt not in self.rtpmap else None


def parse_sdp(body):
    """The media descriptions of an SDP body."""
    session_dir, session_addr, media = "sendrecv", None, []
    current = None
    for raw in body.replace("\r\n", "\n").split("\n"):
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:]
        if kind == "m":
            parts = value.split()
            current = {"kind": parts[0], "port": int(parts[1]), "proto": parts[2],
                       "formats": [int(p) for p in parts[3:] if p.isdigit()], "attrs": [], "c": None}
            media.append(current)
        elif kind == "c":
            addr = value.split()[2].split("/")[0]
            if current is None:
                session_addr = addr
            else:
                current["c"] = addr
        elif kind == "a":
            if current is None:
                if value in ("sendrecv", "sendonly", "recvonly", "inactive"):
                    session_dir = value
            else:
                current["attrs"].append(value)
    out = []
    for m in media:
        rtpmap, fmtp, direction, ptime = {}, {}, session_dir, None
        for a in m["attrs"]:
            name, _, rest = a.partition(":")
            if name == "rtpmap":
                pt, enc = rest.split(None, 1)
                rtpmap[int(pt)] = enc.strip()
            elif name == "fmtp":
                pt, params = (rest.split(None, 1) + [""])[:2]
                fmtp[int(pt)] = params.strip()
            elif name == "ptime":
                ptime = int(float(rest))
            elif a in ("sendrecv", "sendonly", "recvonly", "inactive"):
                direction = a
        out.append(Media(m["kind"], m["port"], m["proto"], m["formats"], rtpmap, fmtp, m["attrs"], direction,
                         m["c"] or session_addr, ptime))
    return out


def audio_of(msg):
    """The one audio media description of a message's SDP body."""
    assert (msg.header("content-type") or "").lower().startswith("application/sdp"), msg.text()
    audio = [m for m in parse_sdp(msg.body) if m.kind == "audio"]
    assert len(audio) == 1, msg.text()
    return audio[0]


# ---------------------------------------------------------------------------------------------
# Digest (RFC 2617 / RFC 3261 §22)


def parse_digest(value):
    """The parameters of a `Digest ...` header value (WWW-Authenticate or Authorization), keys in
    lower case, quotes removed."""
    scheme, _, rest = value.strip().partition(" ")
    assert scheme.lower() == "digest", value
    params = {}
    for m in re.finditer(r'\s*([A-Za-z0-9_-]+)\s*=\s*("((?:[^"\\]|\\.)*)"|[^,\s]*)\s*(,|$)', rest):
        params[m.group(1).lower()] = m.group(3) if m.group(3) is not None else m.group(2)
    return params


def md5_hex(text):
    return hashlib.md5(text.encode()).hexdigest()


def digest_response(username, realm, password, method, uri, nonce, qop=None, nc=None, cnonce=None):
    """The `response` a client must send (MD5; with qop=auth when the client chose it)."""
    ha1 = md5_hex(f"{username}:{realm}:{password}")
    ha2 = md5_hex(f"{method}:{uri}")
    if qop:
        return md5_hex(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return md5_hex(f"{ha1}:{nonce}:{ha2}")


def check_digest(authorization, method, username, password, realm, nonce):
    """Asserts that an Authorization value answers the challenge (realm, nonce) for `method` with
    these credentials; returns its parameters."""
    p = parse_digest(authorization)
    assert p.get("username") == username, p
    assert p.get("realm") == realm, p
    assert p.get("nonce") == nonce, p
    assert p.get("uri"), p
    assert p.get("algorithm", "MD5").upper() == "MD5", p
    want = digest_response(username, realm, password, method, p["uri"], nonce,
                           p.get("qop"), p.get("nc"), p.get("cnonce"))
    assert p.get("response", "").lower() == want, (p, want)
    return p


# ---------------------------------------------------------------------------------------------
# SIPp


class SippFailed(AssertionError):
    pass


_runs = itertools.count(1)


class Sipp(Proc):
    """One SIPp process running `Tests/server/sipp/<scenario>.xml` (or the scenario file at an
    absolute path) for one call.

    remote:  "127.0.0.1:PORT" for a UAC scenario (SIPp calls out); None for a UAS one (SIPp waits).
    keys:    {name: value}, each given as `-key name value` (fills `[name]` in the scenario).
    timeout: SIPp's global timeout in seconds (-timeout with -timeout_error: reaching it fails).
    extra:   more SIPp arguments.

    `port` is SIPp's SIP port; the constructor returns once SIPp holds it (so a UAS is ready)."""

    def __init__(self, scenario, workdir, remote=None, keys=None, timeout=40, extra=()):
        path = scenario if os.path.isabs(scenario) else os.path.join(SCENARIOS, scenario + ".xml")
        self.scenario = os.path.splitext(os.path.basename(path))[0]
        self.port, self.media_port = free_sipp_ports()
        run = next(_runs)
        stem = os.path.join(workdir, f"sipp-{run}-{self.scenario}")
        self.trace_path, self.error_path = stem + "-messages.log", stem + "-errors.log"
        self._cid = f"chamade-{os.getpid()}-{run}-{self.port}"
        self._triggers = 0
        argv = [SIPP, "-sf", path]
        if remote:
            argv.append(remote)
        argv += ["-m", "1", "-i", "127.0.0.1", "-p", str(self.port), "-mp", str(self.media_port),
                 "-nostdin", "-timeout", f"{timeout}s", "-timeout_error",
                 "-trace_msg", "-message_file", self.trace_path, "-trace_err", "-error_file", self.error_path,
                 "-cid_str", self._cid + "-%u"]
        for k, v in (keys or {}).items():
            argv += ["-key", k, str(v)]
        argv += list(extra)
        self.uac = remote is not None
        super().__init__(argv, cwd=workdir)
        try:
            wait_udp_bound(self.port, timeout=10, proc=self)
        except BaseException:
            self.kill()
            raise

    # The trace

    def messages(self):
        try:
            with open(self.trace_path, errors="replace") as f:
                return parse_trace(f.read())
        except FileNotFoundError:
            return []

    def received(self, method=None, status=None):
        """Messages SIPp received: requests of `method`, or responses of `status`."""
        return [m for m in self.messages() if m.direction == "received" and _is(m, method, status)]

    def sent(self, method=None, status=None):
        return [m for m in self.messages() if m.direction == "sent" and _is(m, method, status)]

    def wait_received(self, method=None, status=None, count=1, timeout=10.0):
        """Waits until SIPp has received `count` such messages; the last of them."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.received(method, status)
            if len(got) >= count:
                return got[count - 1]
            if self.poll() is not None:
                got = self.received(method, status)
                if len(got) >= count:
                    return got[count - 1]
                raise SippFailed(f"SIPp ended (exit {self.returncode}) without receiving "
                                 f"{count} x {method or status}\n{self.report()}")
            if time.monotonic() > deadline:
                raise SippFailed(f"SIPp did not receive {count} x {method or status} within {timeout} s\n{self.report()}")
            time.sleep(0.02)

    def wait_sent(self, method=None, status=None, count=1, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            got = self.sent(method, status)
            if len(got) >= count:
                return got[count - 1]
            if self.poll() is not None or time.monotonic() > deadline:
                raise SippFailed(f"SIPp did not send {count} x {method or status}\n{self.report()}")
            time.sleep(0.02)

    @property
    def call_id(self):
        """The call's Call-ID: SIPp's own as a UAC, the first received request's as a UAS."""
        if self.uac:
            return self._cid + "-1"
        first = next((m for m in self.messages() if m.direction == "received" and m.is_request), None)
        assert first is not None, "SIPp has received no request yet"
        return first.call_id

    # Pacing

    def trigger(self):
        """Lets a scenario waiting at `<recv request="TRIGGER"/>` go on (a datagram of that method
        with the call's Call-ID, to SIPp's port; SIPp sends no answer)."""
        self._triggers += 1
        n = self._triggers
        text = (f"TRIGGER sip:sipp@127.0.0.1:{self.port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-trigger-{self.port}-{n}\r\n"
                f"From: <sip:test@127.0.0.1>;tag=trigger{n}\r\n"
                f"To: <sip:sipp@127.0.0.1:{self.port}>\r\n"
                f"Call-ID: {self.call_id}\r\n"
                f"CSeq: {n} TRIGGER\r\n"
                "Max-Forwards: 70\r\n"
                "Content-Length: 0\r\n\r\n")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(text.encode(), ("127.0.0.1", self.port))
        # Its arrival shows in the trace: so the next trigger cannot overtake it.
        self.wait_received("TRIGGER", count=n, timeout=5)

    # The verdict

    def finish(self, timeout=15.0):
        """Waits for SIPp to end; asserts the scenario passed (exit 0). Returns the trace."""
        try:
            rc = self.proc.wait(timeout)
        except Exception:
            self.kill()
            raise SippFailed(f"SIPp still running after {timeout} s\n{self.report()}") from None
        self._reader.join(2)
        if rc != 0:
            raise SippFailed(f"SIPp scenario {self.scenario} failed (exit {rc})\n{self.report()}")
        return self.messages()

    def report(self):
        """SIPp's last output lines, its unexpected messages and its message trace, for a failure."""
        parts = [self.output()]
        for path, title in [(self.error_path, "errors"), (self.trace_path, "messages")]:
            try:
                with open(path, errors="replace") as f:
                    text = f.read()
            except FileNotFoundError:
                continue
            parts.append(f"--- SIPp {title} ({path}) ---\n" + text[-6000:])
        return "\n".join(parts)


def _is(m, method, status):
    if method is not None and m.method != method:
        return False
    if status is not None and m.status != status:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Hand-made SIP over a UDP socket (probes that need no scenario)


def sip_request(method, target_port, local_port, call_id, branch, cseq=1, to_tag=None):
    """A body-less request to 127.0.0.1:target_port, as from 127.0.0.1:local_port (an OPTIONS
    probe, or a request the server cannot know: an unknown method, a BYE for no dialog)."""
    to = f"<sip:127.0.0.1:{target_port}>" + (f";tag={to_tag}" if to_tag else "")
    return (f"{method} sip:127.0.0.1:{target_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch={branch};rport\r\n"
            f"From: <sip:probe@127.0.0.1:{local_port}>;tag=probe{cseq}\r\n"
            f"To: {to}\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"Contact: <sip:probe@127.0.0.1:{local_port}>\r\n"
            "Max-Forwards: 70\r\n"
            "Accept: application/sdp\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def recv_sip(sock, timeout, want=lambda m: True):
    """Messages arriving on `sock` until one matches `want` (returned) or `timeout` passes (None)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, _ = sock.recvfrom(65536)
        except socket.timeout:
            return None
        m = parse_sip(data.decode("utf-8", "replace"), time.time(), "received")
        if m is not None and want(m):
            return m
    return None

