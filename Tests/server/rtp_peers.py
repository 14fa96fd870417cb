"""Peers for the RTP leg tests (test_rtp_legs.py): real ones (GStreamer, ffmpeg, dumpcap and tshark,
run as subprocesses) and hand-made ones (RTP, RTCP and RFC 4733 packets crafted with struct, G.711
in numpy), plus the audio analysis the tests share.

Every subprocess runs in its own session and is killed, with its children, when its `Proc` block
ends, whatever happens in between.
"""
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import wave
from typing import NamedTuple

import numpy as np

# ---------------------------------------------------------------------------------------------
# Ports


def _bound_udp_ports():
    """Local UDP ports bound on this machine, from /proc/net/udp (no probing bind, so no race with
    the process that is about to bind one)."""
    ports = set()
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    ports.add(int(line.split()[1].rsplit(":", 1)[1], 16))
        except FileNotFoundError:
            pass
    return ports


def free_udp_port(pair=False):
    """A UDP port on 127.0.0.1 that nothing holds now (the kernel's pick: in the ephemeral range,
    so never inside the server's --rtp-ports). With pair: an even port P with P + 1 free too, as an
    RTP peer that also takes RTCP on P + 1 (ffmpeg) needs."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not pair:
            return port
        port &= ~1
        socks = []
        try:
            for p in (port, port + 1):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free UDP port pair")


def wait_udp_bound(port, timeout=10.0, proc=None):
    """Waits until some process holds UDP `port` (a peer that is about to receive)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port in _bound_udp_ports():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"peer exited ({proc.returncode}) before binding UDP {port}:\n{proc.output()}")
        time.sleep(0.02)
    raise TimeoutError(f"nothing bound UDP port {port} within {timeout} s")


def udp_port_free(port):
    """True when a plain bind of 127.0.0.1:port succeeds (the port is not held)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def host_port(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


# ---------------------------------------------------------------------------------------------
# Subprocesses


class Proc:
    """A peer subprocess in its own session; its output (stdout and stderr together) is drained
    into `lines` by a thread. Use as a context manager: on exit the whole session is killed."""

    def __init__(self, argv, cwd=None):
        self.argv = argv
        self.lines = []
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, errors="replace",
                                     cwd=cwd, start_new_session=True)
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self):
        return " ".join(self.argv[:3]) + " …\n" + "\n".join(self.lines[-40:])

    def poll(self):
        return self.proc.poll()

    @property
    def returncode(self):
        return self.proc.returncode

    def wait_line(self, pattern, timeout=10.0):
        """Waits for an output line matching the regular expression `pattern`."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            while seen < len(self.lines):
                if rx.search(self.lines[seen]):
                    return self.lines[seen]
                seen += 1
            if self.proc.poll() is not None and seen >= len(self.lines):
                self._reader.join(1)
                if seen >= len(self.lines):
                    break
            time.sleep(0.02)
        raise TimeoutError(f"no line matching {pattern!r}:\n{self.output()}")

    def wait(self, timeout):
        """Waits for the process to exit by itself; its exit code."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"peer still running after {timeout} s:\n{self.output()}") from None

    def stop(self, sig=signal.SIGINT, timeout=10.0):
        """Asks the process to finish (SIGINT: GStreamer's -e sends EOS, ffmpeg and dumpcap close
        their files) and waits; kills it when it does not finish in time. Its exit code."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise TimeoutError(f"peer did not stop on {sig!r} within {timeout} s:\n{self.output()}") from None
        self._reader.join(2)
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()
        self._reader.join(2)
        return False


# GStreamer 1.22 and ffmpeg 5.1 command lines (SPEC §6 peers; proven in /work/shared/FACTS.md).

def gst_opus_sender(port, seconds, freq=440, volume=0.5, pt=111, lossy=False):
    """A live Opus RTP stream (20 ms packets, FEC on) of a sine at `volume` of full scale for
    `seconds`, to 127.0.0.1:port; with lossy, through netsim: 5 % dropped, 10 % delayed by 5-40 ms
    and so reordered."""
    chain = [
        "gst-launch-1.0", "-q",
        "audiotestsrc", "is-live=true", f"num-buffers={int(seconds * 50)}", "samplesperbuffer=960",
        f"freq={freq}", f"volume={volume}", "!",
        "audio/x-raw,format=S16LE,rate=48000,channels=1", "!",
        "opusenc", "bitrate=32000", "frame-size=20", "inband-fec=true", "packet-loss-percentage=10", "!",
        "rtpopuspay", f"pt={pt}", "!",
    ]
    if lossy:
        chain += ["netsim", "drop-probability=0.05", "delay-probability=0.1", "min-delay=5", "max-delay=40",
                  "allow-reordering=true", "!"]
    return chain + ["udpsink", "host=127.0.0.1", f"port={port}", "sync=false", "async=false"]


def gst_opus_receiver(port, wav_path, pt=111):
    """Receives Opus RTP on 127.0.0.1:port and writes 48 kHz mono 16-bit WAV; run it until SIGINT
    (-e turns that into EOS, so the WAV header is complete)."""
    caps = f"application/x-rtp,media=audio,clock-rate=48000,encoding-name=OPUS,payload={pt}"
    return [
        "gst-launch-1.0", "-e",
        "udpsrc", "address=127.0.0.1", f"port={port}", f"caps={caps}", "!",
        "rtpjitterbuffer", "latency=60", "do-lost=true", "!",
        "rtpopusdepay", "!", "opusdec", "plc=true", "use-inband-fec=true", "!",
        "audioconvert", "!", "audio/x-raw,format=S16LE,rate=48000,channels=1", "!",
        "wavenc", "!", "filesink", f"location={wav_path}",
    ]


FFMPEG = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error"]


def ffmpeg_g711_sender(port, codec, seconds, freq=440):
    """ffmpeg sending a sine (lavfi's amplitude 1/8, -18.06 dBFS peak) as PCMU or PCMA in 20 ms
    RTP packets (160 samples, 172 bytes) to 127.0.0.1:port, in real time (-re), RTCP to port + 1."""
    enc, pt = {"pcmu": ("pcm_mulaw", 0), "pcma": ("pcm_alaw", 8)}[codec]
    return FFMPEG + [
        "-re", "-f", "lavfi", "-i", f"sine=frequency={freq}:duration={seconds}:sample_rate=8000:samples_per_frame=160",
        "-ac", "1", "-c:a", enc, "-payload_type", str(pt), "-f", "rtp", f"rtp://127.0.0.1:{port}?pkt_size=172",
    ]


def write_g711_sdp(path, port, codec):
    pt, name = {"pcmu": (0, "PCMU"), "pcma": (8, "PCMA")}[codec]
    with open(path, "w") as f:
        f.write("\r\n".join(["v=0", "o=- 0 0 IN IP4 127.0.0.1", "s=chamade test peer", "c=IN IP4 127.0.0.1",
                             "t=0 0", f"m=audio {port} RTP/AVP {pt}", f"a=rtpmap:{pt} {name}/8000",
                             "a=ptime:20", "a=recvonly", ""]))


def ffmpeg_sdp_receiver(sdp_path, wav_path, seconds):
    """ffmpeg receiving the stream an SDP file describes (binds its port and port + 1), writing the
    first `seconds` of it to a 16-bit WAV (SIGINT earlier also finishes the file)."""
    return FFMPEG + ["-protocol_whitelist", "file,udp,rtp", "-i", sdp_path, "-t", str(seconds),
                     "-c:a", "pcm_s16le", "-y", wav_path]


def dumpcap(iface, capture_filter, pcap_path):
    """A loopback capture in pcap format; ready once it prints "Capturing on"; SIGINT ends it."""
    return ["dumpcap", "-i", iface, "-f", capture_filter, "-w", pcap_path, "-P"]


class RtpStreamStats(NamedTuple):
    src: str
    dst: str
    ssrc: int
    payload: str
    packets: int
    lost: int
    min_delta_ms: float
    mean_delta_ms: float
    max_delta_ms: float
    max_jitter_ms: float
    problems: bool


def tshark_rtp_streams(pcap_path, port):
    """tshark's `-z rtp,streams` table for a capture, with UDP `port` decoded as RTP. Its analysis
    starts a new talk spurt at a marker bit: a silence gap with the marker set adds nothing to the
    deltas; without it, the gap shows up as the max delta."""
    out = subprocess.run(["tshark", "-r", pcap_path, "-d", f"udp.port=={port},rtp", "-q", "-z", "rtp,streams"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    row = re.compile(
        r"^\s*[\d.]+\s+[\d.]+\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)\s+(0x[0-9A-Fa-f]+)\s+(\S+)\s+(\d+)\s+(-?\d+)\s+\([^)]*\)"
        r"\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)\s*(X?)\s*$")
    streams = []
    for line in out.stdout.splitlines():
        m = row.match(line)
        if m:
            g = m.groups()
            streams.append(RtpStreamStats(f"{g[0]}:{g[1]}", f"{g[2]}:{g[3]}", int(g[4], 16), g[5], int(g[6]), int(g[7]),
                                          float(g[8]), float(g[9]), float(g[10]), float(g[13]), g[14] == "X"))
    return streams, out.stdout


def tshark_rtp_packets(pcap_path, port):
    """Every RTP packet of a capture as (capture time, src port, dst port, RtpPacket), parsed by
    this module from the raw UDP payload that tshark extracts."""
    out = subprocess.run(["tshark", "-r", pcap_path, "-Y", f"udp.dstport=={port}", "-T", "fields", "-E", "separator=,",
                          "-e", "frame.time_epoch", "-e", "udp.srcport", "-e", "udp.dstport", "-e", "udp.payload"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    packets = []
    for line in out.stdout.splitlines():
        t, sport, dport, payload = line.split(",")
        p = parse_rtp(bytes.fromhex(payload.replace(":", "")))
        assert p is not None, f"not RTP: {payload[:80]}"
        packets.append((float(t), int(sport), int(dport), p))
    return packets


# ---------------------------------------------------------------------------------------------
# RTP, RTCP and RFC 4733 on the wire


class RtpPacket(NamedTuple):
    version: int
    padding: bool
    extension: bool
    csrc_count: int
    marker: bool
    pt: int
    seq: int
    ts: int
    ssrc: int
    payload: bytes


def rtp_packet(pt, seq, ts, ssrc, payload=b"", marker=False):
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def parse_rtp(data):
    """The packet, strictly checked (version 2, CSRCs, extension and padding inside it), or None."""
    if len(data) < 12:
        return None
    b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", data[:12])
    if b0 >> 6 != 2:
        return None
    cc, off = b0 & 0x0F, 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        if len(data) < off + 4:
            return None
        off += 4 + 4 * struct.unpack("!H", data[off + 2:off + 4])[0]
    end = len(data)
    if b0 & 0x20:
        if end == 0 or data[-1] == 0:
            return None
        end -= data[-1]
    if off > end:
        return None
    return RtpPacket(2, bool(b0 & 0x20), bool(b0 & 0x10), cc, bool(b1 & 0x80), b1 & 0x7F, seq, ts, ssrc, data[off:end])


DIGIT_EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14, "D": 15}
EVENT_DIGITS = {v: k for k, v in DIGIT_EVENTS.items()}


def telephone_event(event, end, duration, volume=10):
    """An RFC 4733 §2.3 payload: event, E bit, volume (-dBm0), 16-bit duration in clock units."""
    return struct.pack("!BBH", event, (0x80 if end else 0) | (volume & 0x3F), duration)


def parse_telephone_event(payload):
    """(event, end, volume, duration) of a 4-byte telephone-event payload."""
    assert len(payload) == 4, payload
    event, flags, duration = struct.unpack("!BBH", payload)
    return event, bool(flags & 0x80), flags & 0x3F, duration


def dtmf_packets(digit, ssrc, seq, ts, units_per_20ms, updates=5, final_units=None, ends=3, volume=10, pt=101):
    """One event as a sender emits it: `updates` packets 20 ms apart with growing duration (marker
    on the first), then `ends` copies of the end packet (E bit, duration `final_units`, default
    updates x 20 ms) 20 ms apart; every packet carries the event's start timestamp `ts`. With
    updates=0 only the end packets go (a receiver that lost the start; the first has the marker).
    Returns a list of (seconds after the first packet, datagram), and the next free seq."""
    out = []
    event = DIGIT_EVENTS[digit]
    final = updates * units_per_20ms if final_units is None else final_units
    for i in range(updates):
        payload = telephone_event(event, False, (i + 1) * units_per_20ms, volume)
        out.append((0.02 * i, rtp_packet(pt, seq, ts, ssrc, payload, marker=(i == 0))))
        seq += 1
    for j in range(ends):
        payload = telephone_event(event, True, final, volume)
        out.append((0.02 * (updates + j), rtp_packet(pt, seq, ts, ssrc, payload, marker=(updates == 0 and j == 0))))
        seq += 1
    return out, seq


def rtcp_receiver_report(ssrc, cname=b"peer@127.0.0.1"):
    """A compound RTCP packet: an empty receiver report and an SDES with a CNAME (RFC 3550 §6.1)."""
    rr = struct.pack("!BBHI", 0x80, 201, 1, ssrc)
    item = bytes([1, len(cname)]) + cname + b"\x00"
    item += b"\x00" * (-(4 + len(item)) % 4)
    sdes = struct.pack("!BBHI", 0x81, 202, (4 + len(item)) // 4, ssrc) + item
    return rr + sdes


# ---------------------------------------------------------------------------------------------
# G.711 (ITU-T G.711 tables; the decoded levels match Python's audioop exactly)


def _ulaw_table():
    out = np.empty(256, dtype=np.int16)
    for b in range(256):
        u = ~b & 0xFF
        mag = ((((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 7)) - 0x84
        out[b] = -mag if u & 0x80 else mag
    return out


def _alaw_table():
    out = np.empty(256, dtype=np.int16)
    for b in range(256):
        a = b ^ 0x55
        exp, mant = (a >> 4) & 7, a & 0x0F
        mag = (mant << 4) + 8 if exp == 0 else ((mant << 4) + 0x108) << (exp - 1)
        out[b] = mag if a & 0x80 else -mag
    return out


G711_DECODE = {"pcmu": _ulaw_table(), "pcma": _alaw_table()}
G711_LEVELS = {k: np.unique(v) for k, v in G711_DECODE.items()}
G711_PT = {"pcmu": 0, "pcma": 8}


def g711_encode(x, codec):
    """Nearest-level G.711 encoding of int16 samples: bytes."""
    table = G711_DECODE[codec]
    order = np.argsort(table, kind="stable")
    levels = table[order].astype(np.int32)
    x = np.asarray(x, dtype=np.int32)
    i = np.clip(np.searchsorted(levels, x), 1, len(levels) - 1)
    pick = np.where(x - levels[i - 1] <= levels[i] - x, i - 1, i)
    return order[pick].astype(np.uint8).tobytes()


def g711_decode(data, codec):
    return G711_DECODE[codec][np.frombuffer(data, dtype=np.uint8)]


def g711_level_fraction(x, codec):
    """Share of the samples that are exact decoded levels of `codec`."""
    return np.isin(np.asarray(x, dtype=np.int16), G711_LEVELS[codec]).mean()


def g711_tone_packets(codec, freq, seconds, dbfs, ssrc, seq=1000, ts=0, pt=None):
    """A G.711 RTP stream of a sine: a list of (send time in s, datagram), 20 ms apart, marker on the
    first; and the int16 signal it carries."""
    x = sine(freq, 8000, seconds, dbfs)
    payload = g711_encode(x, codec)
    pt = G711_PT[codec] if pt is None else pt
    out = [(0.02 * i, rtp_packet(pt, seq + i, ts + 160 * i, ssrc, payload[160 * i:160 * (i + 1)], marker=(i == 0)))
           for i in range(len(x) // 160)]
    return out, x


# ---------------------------------------------------------------------------------------------
# Hand-made peers: a paced sender and a collector


class PacedSender(threading.Thread):
    """Sends datagrams on a schedule from one socket: `schedule` is a list of (seconds after start,
    datagram) or (seconds, datagram, destination); the default destination is `dest`. `sent_at` holds
    the monotonic time of each send."""

    def __init__(self, sock, dest, schedule):
        super().__init__(daemon=True)
        self.sock, self.dest = sock, dest
        self.schedule = sorted(schedule, key=lambda e: e[0])
        self.sent_at = []
        self.error = None
        self._stop_event = threading.Event()

    def run(self):
        t0 = time.monotonic()
        try:
            for entry in self.schedule:
                at, data = entry[0], entry[1]
                dest = entry[2] if len(entry) > 2 else self.dest
                delay = t0 + at - time.monotonic()
                if delay > 0 and self._stop_event.wait(delay):
                    return
                self.sock.sendto(data, dest)
                self.sent_at.append(time.monotonic())
        except Exception as e:  # reported by finish()
            self.error = e

    def stop(self):
        self._stop_event.set()
        self.join(5)

    def finish(self, timeout):
        self.join(timeout)
        assert not self.is_alive(), "sender still running"
        if self.error:
            raise self.error


class UdpCollector(threading.Thread):
    """Receives every datagram on a socket bound to 127.0.0.1:port (0: any) until stopped:
    `packets` is a list of (monotonic time, data, source address)."""

    def __init__(self, port=0, sock=None):
        super().__init__(daemon=True)
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind(("127.0.0.1", port))
        self.sock = sock
        self.sock.settimeout(0.05)
        self.port = sock.getsockname()[1]
        self.packets = []
        self._stop_event = threading.Event()
        self.start()

    def run(self):
        while not self._stop_event.is_set():
            try:
                data, addr = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            except OSError:
                if self._stop_event.is_set():
                    return
                continue
            self.packets.append((time.monotonic(), data, addr))

    def rtp(self):
        """(time, RtpPacket, source) of the valid RTP packets received so far."""
        return [(t, p, a) for t, d, a in list(self.packets) for p in [parse_rtp(d)] if p is not None]

    def stop(self):
        self._stop_event.set()
        self.join(2)
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


# ---------------------------------------------------------------------------------------------
# Audio analysis

FULL_SCALE = 32768.0


def sine(freq, rate, seconds, dbfs=-6.0):
    """int16 sine whose peak is `dbfs` (its RMS is 3.01 dB lower)."""
    t = np.arange(int(round(rate * seconds))) / rate
    return np.round(10 ** (dbfs / 20) * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2")


def read_wav(path):
    with wave.open(path) as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1, (w.getsampwidth(), w.getnchannels())
        return w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def peak_frequency(x, rate):
    """Frequency of the largest spectral peak (Hann window, parabolic interpolation between bins)."""
    x = np.asarray(x, dtype=float)
    spec = np.abs(np.fft.rfft((x - x.mean()) * np.hanning(len(x))))
    k = int(np.argmax(spec[1:-1])) + 1
    a, b, c = np.log(spec[k - 1:k + 2] + 1e-12)
    shift = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) != 0 else 0.0
    return (k + shift) * rate / len(x)


def rms_dbfs(x):
    x = np.asarray(x, dtype=float)
    return 20 * np.log10(max(np.sqrt(np.mean(x ** 2)), 1e-9) / FULL_SCALE)


def frame_levels(x, rate, ms=20):
    """RMS level in dBFS of each whole `ms` frame."""
    n = rate * ms // 1000
    x = np.asarray(x[:len(x) // n * n], dtype=float).reshape(-1, n)
    return 20 * np.log10(np.maximum(np.sqrt((x ** 2).mean(axis=1)), 1e-9) / FULL_SCALE)


def playing_region(x, rate, threshold_dbfs=-40.0, trim_start_ms=200, trim_end_ms=100):
    """The samples from the first to the last 20 ms frame above `threshold_dbfs`, trimmed at both ends
    (start-up of codecs and jitter buffers, the concealed tail); raises when nothing plays."""
    levels = frame_levels(x, rate)
    loud = np.nonzero(levels > threshold_dbfs)[0]
    assert len(loud), f"no audio above {threshold_dbfs} dBFS (loudest frame {levels.max() if len(levels) else None:.1f})"
    n = rate // 50
    start = loud[0] * n + rate * trim_start_ms // 1000
    end = (loud[-1] + 1) * n - rate * trim_end_ms // 1000
    assert end > start, "too little audio"
    return np.asarray(x[start:end])


def longest_quiet_run(x, below=100):
    """Length in samples of the longest run of |x| < below."""
    quiet = np.concatenate(([0], (np.abs(np.asarray(x, dtype=np.int32)) < below).astype(np.int8), [0]))
    edges = np.diff(quiet)
    starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    return int((ends - starts).max()) if len(starts) else 0


def fitted_snr(x, freq, rate):
    """SNR in dB of a least-squares sine of `freq` (free phase and offset) against the rest."""
    x = np.asarray(x, dtype=float)
    t = np.arange(len(x)) / rate
    a = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t), np.ones_like(t)], axis=1)
    coef, *_ = np.linalg.lstsq(a, x, rcond=None)
    fit = a[:, :2] @ coef[:2]
    resid = x - fit - coef[2]
    return 10 * np.log10(max((fit ** 2).sum(), 1e-9) / max((resid ** 2).sum(), 1e-9))


def windowed_snr(x, freq, rate, window_ms=100):
    """fitted_snr of each whole window (a short burst of noise or a dropout shows up in its window)."""
    n = rate * window_ms // 1000
    return np.array([fitted_snr(x[i:i + n], freq, rate) for i in range(0, len(x) - n + 1, n)])
