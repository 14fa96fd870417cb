#!/usr/bin/env python3
"""Compare Chamade's RTP legs with Janus AudioBridge plain-RTP participants.

Same sitting, same senders, one target after the other (never concurrently):

  CPU   N Opus RTP participants in ONE room, modes
          talk  every participant sends speech (+ a low noise floor) all the time
          half  all participants talk 1 s, then send NOTHING for 1 s, in sync
                (RFC 3551 silence suppression: no packets, sequence numbers stay
                continuous, the timestamp jumps, marker bit on each talk spurt);
                so the audio each participant receives is silent half the time.
        CPU % of one core of each process = (utime+stime delta) / window, read
        from /proc/PID/stat after a warm-up; divided by N for "per participant".
  Delay participant 0 sends Opus frames of digital silence with a click every
        --click-interval s; the click is found in participant 1's decoded
        return stream; mouth-to-ear = ear time - mouth time (see README).

Processes (each its own PID, so each is measured on its own):
  sender   gst-launch-1.0: filesrc(speech loop) ! opusenc ! rtpopuspay ! udpsink -> relay
  relay    this file, `_relay`: one UDP socket per participant bound to P_i =
           PEERBASE + 2i; forwards every sender packet to every participant's
           target port (SSRC and seq rewritten per participant); drains and
           counts what comes back.
  probe    this file, `_probe`: the click-delay participants (libopus via ctypes).
  target   janus (AudioBridge) or `chamade bench --legs N`.

Run from the repository root:
  python3 Benchmarks/legs/compare_janus.py --n 10 50 100 --modes talk half \
      --seconds 30 --chamade .build/release/chamade --out results.json
"""

import argparse
import array
import ctypes
import json
import math
import os
import random
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import wave

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FIXTURE = os.path.join(REPO, "fixtures", "speech_48k.wav")
CLK_TCK = os.sysconf("SC_CLK_TCK")
FS = 48000
FRAME = 960  # 20 ms at 48 kHz
PT = 111
LOCAL = "127.0.0.1"
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux value; Python does not export it

JANUS_LIB = "/usr/lib/x86_64-linux-gnu/janus"
JANUS_ROOM = 1234


# --------------------------------------------------------------------------- libopus (ctypes)

class Opus:
    OPUS_APPLICATION_VOIP = 2048
    SET_BITRATE = 4002
    SET_COMPLEXITY = 4010
    SET_INBAND_FEC = 4012
    SET_PACKET_LOSS_PERC = 4014
    SET_DTX = 4016
    _lib = None

    @classmethod
    def lib(cls):
        if cls._lib is None:
            lib = ctypes.CDLL("libopus.so.0")
            lib.opus_encoder_create.restype = ctypes.c_void_p
            lib.opus_encoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
            lib.opus_encode.restype = ctypes.c_int32
            lib.opus_encode.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int32]
            lib.opus_decoder_create.restype = ctypes.c_void_p
            lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
            lib.opus_decode.restype = ctypes.c_int
            lib.opus_decode.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
            lib.opus_encoder_ctl.restype = ctypes.c_int
            cls._lib = lib
        return cls._lib


class OpusEncoder:
    def __init__(self, bitrate, complexity, fec=True, loss=5):
        lib = Opus.lib()
        err = ctypes.c_int(0)
        self.st = lib.opus_encoder_create(FS, 1, Opus.OPUS_APPLICATION_VOIP, ctypes.byref(err))
        if err.value != 0:
            raise RuntimeError("opus_encoder_create: %d" % err.value)
        for req, val in ((Opus.SET_BITRATE, bitrate), (Opus.SET_COMPLEXITY, complexity),
                         (Opus.SET_INBAND_FEC, 1 if fec else 0), (Opus.SET_PACKET_LOSS_PERC, loss),
                         (Opus.SET_DTX, 0)):
            lib.opus_encoder_ctl(ctypes.c_void_p(self.st), ctypes.c_int(req), ctypes.c_int(val))
        self.out = ctypes.create_string_buffer(1500)

    def encode(self, pcm):  # pcm: array('h') of FRAME samples
        addr, _ = pcm.buffer_info()
        n = Opus.lib().opus_encode(self.st, addr, FRAME, self.out, 1500)
        if n < 0:
            raise RuntimeError("opus_encode: %d" % n)
        return self.out.raw[:n]


class OpusDecoder:
    def __init__(self):
        err = ctypes.c_int(0)
        self.st = Opus.lib().opus_decoder_create(FS, 1, ctypes.byref(err))
        if err.value != 0:
            raise RuntimeError("opus_decoder_create: %d" % err.value)
        self.pcm = array.array("h", [0] * (FS // 10))

    def decode(self, payload):  # payload None: PLC for one 20 ms frame
        addr, _ = self.pcm.buffer_info()
        if payload is None:
            n = Opus.lib().opus_decode(self.st, None, 0, addr, FRAME, 0)
        else:
            buf = ctypes.create_string_buffer(payload, len(payload))
            n = Opus.lib().opus_decode(self.st, buf, len(payload), addr, FS // 10, 0)
        if n < 0:
            return array.array("h", [0] * FRAME)
        return self.pcm[:n]


# --------------------------------------------------------------------------- small helpers

def rtp_split(pkt):
    """(marker, seq, ts, ssrc, payload) of an RTP packet, or None."""
    if len(pkt) < 12 or (pkt[0] >> 6) != 2:
        return None
    cc = pkt[0] & 0x0F
    off = 12 + 4 * cc
    if pkt[0] & 0x10 and len(pkt) >= off + 4:  # header extension
        off += 4 + 4 * struct.unpack_from("!H", pkt, off + 2)[0]
    end = len(pkt)
    if pkt[0] & 0x20:  # padding
        end -= pkt[-1]
    seq, ts, ssrc = struct.unpack_from("!HII", pkt, 2)
    return (pkt[1] >> 7, seq, ts, ssrc, bytes(pkt[off:end]))


def proc_ticks(pid):
    """utime+stime (all threads, clock ticks) of a live process, or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)


def system_ticks():
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    vals = [int(x) for x in parts]
    idle = vals[3] + vals[4]
    return sum(vals[:8]), idle


def wait_until(t):
    while True:
        d = t - time.time()
        if d <= 0:
            return
        time.sleep(min(d, 0.5))


def stop_process(p, sig=signal.SIGTERM, timeout=10):
    """Stop one process we started (by its own PID only)."""
    if p is None or p.poll() is not None:
        return
    try:
        p.send_signal(sig)
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def bind_udp(port, rcvbuf=1 << 20):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((LOCAL, port))
    s.setblocking(False)
    return s


# --------------------------------------------------------------------------- sender signal + gst

def speech_peak():
    with wave.open(FIXTURE, "rb") as w:
        speech = array.array("h", w.readframes(w.getnframes()))
    return max(abs(min(speech)), abs(max(speech))) / 32768.0


def make_signal_wav(path, seconds, gain, seed=1):
    """The speech fixture scaled by `gain`, plus a +-4 LSB noise floor added after the gain so
    that no 20 ms frame is digital silence (speech pauses would otherwise be exact zeros), looped
    for `seconds`."""
    with wave.open(FIXTURE, "rb") as w:
        assert w.getframerate() == FS and w.getnchannels() == 1 and w.getsampwidth() == 2
        speech = array.array("h", w.readframes(w.getnframes()))
    rnd = random.Random(seed)
    one = array.array("h", (max(-32768, min(32767, int(round(s * gain)) + rnd.randint(-4, 4))) for s in speech))
    reps = int(math.ceil(seconds * FS / len(one)))
    sig = one * reps
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(FS)
        w.writeframes(sig.tobytes())


def gst_sender_cmd(wav, port, bitrate, complexity):
    return ["gst-launch-1.0", "-q",
            "filesrc", "location=" + wav, "!", "wavparse", "!", "audioconvert", "!",
            "audio/x-raw,format=S16LE,rate=48000,channels=1", "!",
            "opusenc", "bitrate=%d" % bitrate, "frame-size=20", "inband-fec=true",
            "packet-loss-percentage=5", "complexity=%d" % complexity, "audio-type=voice", "dtx=false", "!",
            "rtpopuspay", "pt=%d" % PT, "!",
            "udpsink", "host=" + LOCAL, "port=%d" % port, "sync=true", "async=false"]


# --------------------------------------------------------------------------- relay process

def relay_main(a):
    """Forward each sender packet to every participant's target; drain returns."""
    spec = json.load(open(a.spec))
    n = spec["n"]
    dests = [tuple(d) for d in spec["dests"]]
    socks = [bind_udp(spec["peer_base"] + 2 * i) for i in range(n)]
    src = bind_udp(spec["src_port"])
    t0, until = spec["t0"], spec["until"]
    w0, w1 = spec["window"]
    period = spec["half_period"]
    half = spec["mode"] == "half"
    watch = spec.get("watch", 1)
    ep = select.epoll()
    ep.register(src.fileno(), select.EPOLLIN)
    fd2i = {}
    for i, s in enumerate(socks):
        ep.register(s.fileno(), select.EPOLLIN)
        fd2i[s.fileno()] = i
    srcfd = src.fileno()
    seqs = [random.randrange(65536) for _ in range(n)]
    ssrcs = [0x10000000 + i for i in range(n)]
    rx = [0] * n
    rx_win = [0] * n
    rx_bytes_win = [0] * n
    tx = 0
    tx_win = 0
    send_err = 0
    spurt = True
    recorded = []
    pack = struct.pack_into
    while True:
        now = time.time()
        if now >= until:
            break
        for fd, _ in ep.poll(0.2):
            if fd == srcfd:
                while True:
                    try:
                        data = src.recv(2048)
                    except BlockingIOError:
                        break
                    now = time.time()
                    if half and int((now - t0) / period) % 2 == 1:
                        spurt = True
                        continue
                    hdr = bytearray(data)
                    hdr[1] = (hdr[1] & 0x7F) | (0x80 if spurt else 0)
                    spurt = False
                    for i in range(n):
                        pack("!H", hdr, 2, seqs[i])
                        pack("!I", hdr, 8, ssrcs[i])
                        seqs[i] = (seqs[i] + 1) & 0xFFFF
                        try:
                            socks[i].sendto(hdr, dests[i])
                        except OSError:
                            send_err += 1
                    tx += n
                    if w0 <= now < w1:
                        tx_win += n
            else:
                i = fd2i[fd]
                s = socks[i]
                while True:
                    try:
                        data = s.recv(2048)
                    except BlockingIOError:
                        break
                    except OSError:
                        continue
                    rx[i] += 1
                    now = time.time()
                    if w0 <= now < w1:
                        rx_win[i] += 1
                        rx_bytes_win[i] += len(data)
                        if i == watch:
                            recorded.append((now, data))
    with open(spec["record"], "wb") as f:
        for t, d in recorded:
            f.write(struct.pack("<dH", t, len(d)))
            f.write(d)
    json.dump({"rx": rx, "rx_window": rx_win, "rx_bytes_window": rx_bytes_win, "tx": tx,
               "tx_window": tx_win, "send_errors": send_err}, open(spec["stats"], "w"))


def read_record(path):
    out = []
    with open(path, "rb") as f:
        b = f.read()
    off = 0
    while off + 10 <= len(b):
        t, ln = struct.unpack_from("<dH", b, off)
        off += 10
        out.append((t, b[off:off + ln]))
        off += ln
    return out


def audio_check(records, mode, t0, period):
    """Decode the watched participant's return stream: how many packets, how many
    carry audible audio, split by the sender phase (talk/silent) they arrived in."""
    if not records:
        return {"packets": 0}
    dec = OpusDecoder()
    parsed = []
    for t, d in records:
        r = rtp_split(d)
        if r:
            parsed.append((r[1], t, r[4]))
    loud = 0
    nonzero = 0
    by_phase = {"talk": [0, 0], "silent": [0, 0]}  # [packets, loud packets]
    last_seq = None
    for seq, t, payload in parsed:  # arrival order
        if last_seq is not None:
            gap = (seq - last_seq - 1) & 0xFFFF
            if 0 < gap < 5:
                for _ in range(gap):
                    dec.decode(None)
        last_seq = seq
        pcm = dec.decode(payload)
        rms = math.sqrt(sum(x * x for x in pcm) / max(1, len(pcm)))
        is_loud = rms > 10.0  # about -70 dBFS
        loud += is_loud
        nonzero += any(pcm)
        # which phase was the sender in ~when this audio was sent (ignore the transit delay's blur
        # by using phase of arrival time minus 60 ms)
        ph = "talk" if (mode != "half" or int((t - 0.06 - t0) / period) % 2 == 0) else "silent"
        by_phase[ph][0] += 1
        by_phase[ph][1] += is_loud
    dur = records[-1][0] - records[0][0]
    return {"packets": len(parsed), "loud_packets": loud, "nonzero_packets": nonzero,
            "pps": round(len(parsed) / dur, 1) if dur > 0 else None,
            "by_sender_phase": {k: {"packets": v[0], "loud": v[1]} for k, v in by_phase.items()}}


# --------------------------------------------------------------------------- probe process (click delay)

def click_pcm(offset, amp=20000, freq=3000, length=96):
    pcm = array.array("h", [0] * FRAME)
    for k in range(length):
        if offset + k < FRAME:
            pcm[offset + k] = int(amp * math.sin(2 * math.pi * freq * (k + 0.25) / FS))
    return pcm


def first_above(pcm, thr):
    for k, x in enumerate(pcm):
        if x > thr or x < -thr:
            return k
    return None


def probe_main(a):
    spec = json.load(open(a.spec))
    n = spec["n"]
    dests = [tuple(d) for d in spec["dests"]]
    socks = [bind_udp(spec["peer_base"] + 2 * i) for i in range(n)]
    socks[1].setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    enc = OpusEncoder(spec["bitrate"], spec["complexity"])
    silence = array.array("h", [0] * FRAME)
    for _ in range(5):
        sil_pkt = enc.encode(silence)
    seqs = [random.randrange(65536) for _ in range(n)]
    ts0 = [random.randrange(1 << 32) for _ in range(n)]
    warm, interval, clicks = spec["warmup"], spec["click_interval"], spec["clicks"]
    interval_frames = int(round(interval / 0.02))
    first_click = int(round(warm / 0.02))
    total = first_click + clicks * interval_frames + int(round(1.0 / 0.02))
    rnd = random.Random(spec.get("seed", 7))
    sent_clicks = []
    rx = []
    cmsg_space = socket.CMSG_SPACE(16)
    T0 = time.time() + 0.2

    def drain():
        while True:
            try:
                data, anc, _, _ = socks[1].recvmsg(2048, cmsg_space)
            except BlockingIOError:
                break
            t = None
            for lvl, typ, cd in anc:
                if lvl == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", cd[:16])
                    t = sec + nsec * 1e-9
            rx.append((t if t is not None else time.time(), data))
        for i, s in enumerate(socks):
            if i == 1:
                continue
            while True:
                try:
                    s.recv(2048)
                except (BlockingIOError, OSError):
                    break

    for k in range(total):
        target = T0 + k * 0.02
        while True:
            d = target - time.time()
            if d <= 0:
                break
            drain()
            time.sleep(min(d, 0.004))
        is_click = k >= first_click and (k - first_click) % interval_frames == 0 and \
            len(sent_clicks) < clicks
        if is_click:
            off = rnd.randrange(0, FRAME - 100)
            pcm = click_pcm(off)
            on_s = off + first_above(pcm[off:], spec["thr_frac"] * 20000)
            payload = enc.encode(pcm)
        else:
            payload = enc.encode(silence)
        for i in range(n):
            pl = payload if i == 0 else sil_pkt
            hdr = struct.pack("!BBHII", 0x80, PT | (0x80 if k == 0 else 0), seqs[i],
                              (ts0[i] + k * FRAME) & 0xFFFFFFFF, 0x20000000 + i)
            seqs[i] = (seqs[i] + 1) & 0xFFFF
            t_send = time.time()
            try:
                socks[i].sendto(hdr + pl, dests[i])
            except OSError:
                pass
            if i == 0 and is_click:
                # mouth time: the frame covers [send - 20 ms, send); the onset is on_s into it
                sent_clicks.append({"send": t_send, "onset_sample": on_s,
                                    "mouth": t_send - 0.020 + on_s / FS})
    end = time.time() + 1.0
    while time.time() < end:
        drain()
        time.sleep(0.005)
    with open(spec["record"], "wb") as f:
        for t, d in rx:
            f.write(struct.pack("<dH", t, len(d)))
            f.write(d)
    json.dump({"clicks": sent_clicks}, open(spec["stats"], "w"))


def analyse_clicks(records, clicks, thr_frac, interval):
    """Decode participant 1's stream in order and find each click's onset."""
    dec = OpusDecoder()
    frames = []  # (arrival, pcm)
    last_seq = None
    for t, d in records:
        r = rtp_split(d)
        if not r:
            continue
        seq = r[1]
        if last_seq is not None:
            gap = (seq - last_seq - 1) & 0xFFFF
            if 0 < gap < 5:
                for _ in range(gap):
                    dec.decode(None)
            elif gap >= 0x8000:  # late/duplicate: skip
                continue
        last_seq = seq
        frames.append((t, dec.decode(r[4])))
    delays, transits = [], []
    for c in clicks:
        lo, hi = c["send"] - 0.005, c["send"] + min(0.5, interval * 0.8)
        win = [(t, pcm) for t, pcm in frames if lo <= t < hi]
        if not win:
            continue
        peak = max(max(abs(min(p)), abs(max(p))) for _, p in win)
        if peak < 500:
            continue
        thr = thr_frac * peak
        for t, pcm in win:
            k = first_above(pcm, thr)
            if k is not None:
                delays.append((t + k / FS - c["mouth"]) * 1000.0)
                transits.append((t - c["send"]) * 1000.0)
                break
    return delays, transits


# --------------------------------------------------------------------------- Janus

def janus_write_config(d, http_port, rtp_range):
    def dis(kind, keep):
        names = sorted(f for f in os.listdir(os.path.join(JANUS_LIB, kind)) if f.endswith(".so") and f != keep)
        return ",".join(names)
    with open(os.path.join(d, "janus.jcfg"), "w") as f:
        f.write("""general: {
	configs_folder = "%s"
	plugins_folder = "%s/plugins"
	transports_folder = "%s/transports"
	events_folder = "%s/events"
	loggers_folder = "%s/loggers"
	debug_level = 4
	session_timeout = 0
}
certificates: {
}
media: {
}
nat: {
	nice_debug = false
}
plugins: {
	disable = "%s"
}
transports: {
	disable = "%s"
}
loggers: {
	disable = "%s"
}
events: {
	broadcast = false
	disable = "%s"
}
""" % (d, JANUS_LIB, JANUS_LIB, JANUS_LIB, JANUS_LIB,
            dis("plugins", "libjanus_audiobridge.so"), dis("transports", "libjanus_http.so"),
            dis("loggers", ""), dis("events", "")))
    with open(os.path.join(d, "janus.transport.http.jcfg"), "w") as f:
        f.write("""general: {
	json = "plain"
	base_path = "/janus"
	http = true
	ip = "127.0.0.1"
	port = %d
	https = false
}
admin: {
	admin_http = false
	admin_https = false
}
""" % http_port)
    with open(os.path.join(d, "janus.plugin.audiobridge.jcfg"), "w") as f:
        f.write("""general: {
	local_ip = "127.0.0.1"
	rtp_port_range = "%s"
	events = false
}
""" % rtp_range)


class Janus:
    """One janus process with one AudioBridge room of N plain-RTP participants."""

    def __init__(self, args, workdir, tag="janus"):
        self.args = args
        self.tag = tag
        self.dir = os.path.join(workdir, "janus")
        os.makedirs(self.dir, exist_ok=True)
        janus_write_config(self.dir, args.janus_http_port, args.janus_rtp_range)
        self.base = "http://127.0.0.1:%d/janus" % args.janus_http_port
        self.proc = None
        self.session = None
        self.events = {}
        self.cond = threading.Condition()
        self.poller = None
        self.stop_poll = False

    def _post(self, path, body):
        body = dict(body)
        body["transaction"] = "t%08x" % random.randrange(1 << 32)
        req = urllib.request.Request(self.base + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def start(self):
        self.log = open(os.path.join(self.dir, self.tag + ".log"), "w")
        self.proc = subprocess.Popen(["janus", "-F", self.dir, "-C", os.path.join(self.dir, "janus.jcfg"), "-o"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while True:
            try:
                r = self._post("", {"janus": "create"})
                self.session = r["data"]["id"]
                break
            except Exception:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("janus did not come up; see %s" % self.log.name)
                time.sleep(0.3)
        self.poller = threading.Thread(target=self._poll, daemon=True)
        self.poller.start()

    def _poll(self):
        while not self.stop_poll:
            try:
                with urllib.request.urlopen("%s/%d?maxev=100" % (self.base, self.session), timeout=40) as r:
                    evs = json.loads(r.read())
            except Exception:
                if self.stop_poll:
                    return
                time.sleep(0.2)
                continue
            if isinstance(evs, dict):
                evs = [evs]
            with self.cond:
                for e in evs:
                    data = e.get("plugindata", {}).get("data", {})
                    if e.get("janus") == "event" and data.get("audiobridge") == "joined" and "rtp" in data:
                        self.events[e["sender"]] = data
                    elif e.get("janus") == "event" and "error" in data:
                        self.events[e["sender"]] = data
                self.cond.notify_all()

    def create_room(self, n):
        h = self._post("/%d" % self.session, {"janus": "attach", "plugin": "janus.plugin.audiobridge"})["data"]["id"]
        self.admin = h
        body = {"request": "create", "room": JANUS_ROOM, "description": "bench",
                "sampling_rate": FS, "allow_rtp_participants": True, "audiolevel_event": False,
                "default_bitrate": self.args.bitrate, "default_expectedloss": 5}
        if self.args.janus_prebuffer is not None:
            body["default_prebuffering"] = self.args.janus_prebuffer
        r = self._post("/%d/%d" % (self.session, h), {"janus": "message", "body": body})
        data = r.get("plugindata", {}).get("data", {})
        if data.get("audiobridge") != "created":
            raise RuntimeError("room create failed: %s" % r)

    def join(self, n, peer_base):
        """Join n plain-RTP participants; returns Janus's RTP port for each."""
        handles = []
        for i in range(n):
            h = self._post("/%d" % self.session, {"janus": "attach", "plugin": "janus.plugin.audiobridge"})["data"]["id"]
            handles.append(h)
            body = {"request": "join", "room": JANUS_ROOM, "id": i + 1, "display": "p%d" % i,
                    "bitrate": self.args.bitrate, "quality": self.args.complexity, "expected_loss": 5,
                    "rtp": {"ip": LOCAL, "port": peer_base + 2 * i, "payload_type": PT, "fec": True}}
            if self.args.janus_prebuffer is not None:
                body["prebuffer"] = self.args.janus_prebuffer
            r = self._post("/%d/%d" % (self.session, h), {"janus": "message", "body": body})
            if r.get("janus") == "event":
                data = r.get("plugindata", {}).get("data", {})
                with self.cond:
                    self.events[h] = data
        ports = []
        deadline = time.time() + 60
        with self.cond:
            while not all(h in self.events for h in handles):
                if time.time() > deadline:
                    raise RuntimeError("janus: only %d of %d joined" % (sum(h in self.events for h in handles), n))
                self.cond.wait(1.0)
        for h in handles:
            d = self.events[h]
            if "rtp" not in d:
                raise RuntimeError("janus join failed: %s" % d)
            ports.append(d["rtp"]["port"])
        return ports

    def stop(self):
        self.stop_poll = True
        stop_process(self.proc, signal.SIGINT, timeout=15)
        self.log.close()


def janus_version():
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "janus"], capture_output=True, text=True,
                             timeout=10).stdout
        return out.strip() or None
    except Exception:
        return None


# --------------------------------------------------------------------------- Chamade

def chamade_supports_legs(path):
    if not path or not os.path.exists(path):
        return False
    try:
        out = subprocess.run([path, "bench", "--help"], capture_output=True, text=True, timeout=30)
        return "--legs" in (out.stdout + out.stderr)
    except Exception:
        return False


def chamade_cmd(args, n, seconds):
    cmd = [args.chamade, "bench", "--legs", str(n), "--codec", "opus",
           "--leg-ports", "%d-%d" % (args.leg_low, args.leg_low + max(2 * n + 1, 999)),
           "--leg-peer", "%s:%d" % (LOCAL, args.peer_base), "--seconds", "%g" % seconds, "--json"]
    if args.complexity is not None:
        cmd += ["--opus-complexity", str(args.complexity)]
    return cmd


def last_json_object(text):
    end = text.rfind("}")
    while end >= 0:
        start = text.rfind("{", 0, end)
        while start >= 0:
            try:
                return json.loads(text[start:end + 1])
            except ValueError:
                start = text.rfind("{", 0, start)
        end = text.rfind("}", 0, end)
    return None


# --------------------------------------------------------------------------- one CPU run

def run_cpu(args, target, n, mode, workdir, sigwavs):
    tag = "%s-%d-%s" % (target, n, mode)
    print("== %s" % tag, flush=True)
    peer_base = args.peer_base
    janus = None
    tproc = None
    tout = None
    if target == "janus":
        janus = Janus(args, workdir, tag)
        janus.start()
        janus.create_room(n)
        ports = janus.join(n, peer_base)
        tpid = janus.proc.pid
        dests = [(LOCAL, p) for p in ports]
    else:
        dests = [(LOCAL, args.leg_low + 2 * i) for i in range(n)]
    setup = 3.0
    t_start = time.time() + setup
    w0 = t_start + args.warmup
    w1 = w0 + args.seconds
    until = w1 + 1.0
    spec = {"n": n, "dests": dests, "peer_base": peer_base, "src_port": args.src_port,
            "t0": t_start, "until": until, "window": [w0, w1], "half_period": args.half_period,
            "mode": mode, "watch": 1 if n > 1 else 0,
            "record": os.path.join(workdir, tag + ".rec"), "stats": os.path.join(workdir, tag + ".relay.json")}
    json.dump(spec, open(os.path.join(workdir, tag + ".spec.json"), "w"))
    relay = subprocess.Popen([sys.executable, os.path.abspath(__file__), "_relay", "--spec",
                              os.path.join(workdir, tag + ".spec.json")])
    time.sleep(0.5)  # sockets bound
    if target == "chamade":
        tout = open(os.path.join(workdir, tag + ".chamade.out"), "w")
        cham_seconds = (until - time.time()) + 1.0
        tproc = subprocess.Popen(chamade_cmd(args, n, cham_seconds), stdout=tout,
                                 stderr=open(os.path.join(workdir, tag + ".chamade.err"), "w"))
        tpid = tproc.pid
    sigwav, gain = sigwavs[n]
    wait_until(t_start)
    sender = subprocess.Popen(gst_sender_cmd(sigwav, args.src_port, args.bitrate, args.complexity),
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(workdir, tag + ".gst.err"), "w"))
    pids = {"target": tpid, "relay": relay.pid, "sender": sender.pid}
    wait_until(w0)
    a0 = {k: proc_ticks(p) for k, p in pids.items()}
    s0 = system_ticks()
    tw0 = time.time()
    wait_until(w1)
    a1 = {k: proc_ticks(p) for k, p in pids.items()}
    s1 = system_ticks()
    tw1 = time.time()
    relay.wait(timeout=60)
    stop_process(sender)
    cham_json = None
    if tproc is not None:
        try:
            tproc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            stop_process(tproc)
        tout.close()
        cham_json = last_json_object(open(tout.name).read())
    if janus is not None:
        janus.stop()
    win = tw1 - tw0
    cpu = {}
    for k in pids:
        if a0[k] is None or a1[k] is None:
            cpu[k] = None
            continue
        pct = (a1[k] - a0[k]) / CLK_TCK / win * 100.0
        cpu[k] = {"total_pct_of_core": round(pct, 2), "per_participant_pct_of_core": round(pct / n, 4)}
    tot = s1[0] - s0[0]
    busy = 100.0 * (1 - (s1[1] - s0[1]) / tot) if tot else None
    rs = json.load(open(spec["stats"]))
    rxw = rs["rx_window"]
    pps = [x / win for x in rxw]
    kbps = [b * 8 / win / 1000 for b in rs["rx_bytes_window"]]
    res = {"target": target, "n": n, "mode": mode, "window_s": round(win, 2), "cpu": cpu,
           "machine_busy_pct_of_all_cores": round(busy, 1) if busy is not None else None,
           "cores": os.cpu_count(),
           "other_load_pct_of_core": (round(busy * os.cpu_count() - sum(v["total_pct_of_core"] for v in cpu.values() if v), 1)
                                      if busy is not None else None),
           "sent_pps_per_participant": round(rs["tx_window"] / win / n, 1),
           "received_pps_per_participant": {"mean": round(statistics.mean(pps), 1),
                                            "min": round(min(pps), 1), "max": round(max(pps), 1)},
           "received_kbps_per_participant_incl_rtp_header": round(statistics.mean(kbps), 1),
           "relay_send_errors": rs["send_errors"],
           "watched_participant_audio": audio_check(read_record(spec["record"]), mode, t_start, args.half_period),
           "sender_gain": round(gain, 5)}
    if cham_json is not None:
        res["chamade_json"] = cham_json
    c = cpu["target"]
    print("   %s N=%d %s: target %.2f%% total, %.4f%%/participant; relay %.1f%%; sender %.1f%%; rx %.1f pps/participant"
          % (target, n, mode, c["total_pct_of_core"] if c else -1, c["per_participant_pct_of_core"] if c else -1,
             cpu["relay"]["total_pct_of_core"] if cpu["relay"] else -1,
             cpu["sender"]["total_pct_of_core"] if cpu["sender"] else -1, statistics.mean(pps)), flush=True)
    if res["other_load_pct_of_core"] is not None and res["other_load_pct_of_core"] > 15:
        print("   !! other processes used %.0f%% of a core during the window" % res["other_load_pct_of_core"], flush=True)
    time.sleep(1.0)
    return res


# --------------------------------------------------------------------------- one delay run

def run_delay(args, target, n, workdir, rep):
    tag = "%s-delay-%d-%d" % (target, n, rep)
    print("== %s" % tag, flush=True)
    peer_base = args.peer_base
    janus = None
    tproc = None
    if target == "janus":
        janus = Janus(args, workdir, tag)
        janus.start()
        janus.create_room(n)
        ports = janus.join(n, peer_base)
        dests = [(LOCAL, p) for p in ports]
    else:
        dests = [(LOCAL, args.leg_low + 2 * i) for i in range(n)]
    spec = {"n": n, "dests": dests, "peer_base": peer_base, "bitrate": args.bitrate,
            "complexity": args.complexity if args.complexity is not None else 5,
            "warmup": 2.0, "click_interval": args.click_interval, "clicks": args.clicks,
            "thr_frac": 0.2, "seed": 1000 + rep,
            "record": os.path.join(workdir, tag + ".rec"), "stats": os.path.join(workdir, tag + ".json")}
    json.dump(spec, open(os.path.join(workdir, tag + ".spec.json"), "w"))
    if target == "chamade":
        dur = 2.0 + args.clicks * args.click_interval + 6.0
        tproc = subprocess.Popen(chamade_cmd(args, n, dur),
                                 stdout=open(os.path.join(workdir, tag + ".chamade.out"), "w"),
                                 stderr=open(os.path.join(workdir, tag + ".chamade.err"), "w"))
        time.sleep(1.0)
    probe = subprocess.Popen([sys.executable, os.path.abspath(__file__), "_probe", "--spec",
                              os.path.join(workdir, tag + ".spec.json")])
    probe.wait()
    if tproc is not None:
        stop_process(tproc)
    if janus is not None:
        janus.stop()
    st = json.load(open(spec["stats"]))
    delays, transits = analyse_clicks(read_record(spec["record"]), st["clicks"], spec["thr_frac"], args.click_interval)
    print("   %s N=%d run %d: %d/%d clicks, median %.1f ms" %
          (target, n, rep, len(delays), len(st["clicks"]), statistics.median(delays) if delays else float("nan")),
          flush=True)
    time.sleep(1.0)
    return delays, transits, len(st["clicks"])


def run_direct(args, workdir):
    """Calibration: participant 0's packets go straight to participant 1's socket (no bridge).
    Expected: 20 ms packetization + 6.5 ms Opus algorithmic delay = 26.5 ms."""
    spec = {"n": 2, "dests": [(LOCAL, args.peer_base + 2), (LOCAL, args.peer_base + 1)],
            "peer_base": args.peer_base, "bitrate": args.bitrate,
            "complexity": args.complexity if args.complexity is not None else 5,
            "warmup": 1.0, "click_interval": 0.3, "clicks": 10, "thr_frac": 0.2, "seed": 999,
            "record": os.path.join(workdir, "direct.rec"), "stats": os.path.join(workdir, "direct.json")}
    json.dump(spec, open(os.path.join(workdir, "direct.spec.json"), "w"))
    subprocess.run([sys.executable, os.path.abspath(__file__), "_probe", "--spec",
                    os.path.join(workdir, "direct.spec.json")], check=True)
    st = json.load(open(spec["stats"]))
    d, t = analyse_clicks(read_record(spec["record"]), st["clicks"], spec["thr_frac"], 0.3)
    return summarise_delays("direct (no bridge)", 2, [(d, t, len(st["clicks"]))])


def summarise_delays(target, n, runs):
    alld = [d for r in runs for d in r[0]]
    allt = [t for r in runs for t in r[1]]
    out = {"target": target, "n": n, "runs": len(runs), "clicks_sent": sum(r[2] for r in runs),
           "clicks_found": len(alld)}
    if alld:
        s = sorted(alld)
        out.update({"median_ms": round(statistics.median(s), 1), "min_ms": round(s[0], 1),
                    "max_ms": round(s[-1], 1),
                    "p90_ms": round(s[min(len(s) - 1, int(0.9 * len(s)))], 1),
                    "per_run_median_ms": [round(statistics.median(r[0]), 1) if r[0] else None for r in runs],
                    "median_packet_transit_ms": round(statistics.median(allt), 1)})
    return out


# --------------------------------------------------------------------------- main

def marginal(cpu):
    """Slope of the target's total CPU between consecutive N (fixed overhead removed)."""
    out = []
    keys = sorted({(r["target"], r["mode"]) for r in cpu})
    for t, m in keys:
        rs = sorted((r for r in cpu if r["target"] == t and r["mode"] == m and r["cpu"].get("target")),
                    key=lambda r: r["n"])
        for a, b in zip(rs, rs[1:]):
            out.append({"target": t, "mode": m, "from_n": a["n"], "to_n": b["n"],
                        "pct_of_core_per_participant": round(
                            (b["cpu"]["target"]["total_pct_of_core"] - a["cpu"]["target"]["total_pct_of_core"])
                            / (b["n"] - a["n"]), 4)})
    return out


def print_table(results):
    cpu = results.get("cpu", [])
    if cpu:
        print("\nCPU, %% of one core (window %gs after %gs warm-up)" % (results["meta"]["seconds"], results["meta"]["warmup_s"]))
        print("%-8s %4s %-5s %10s %10s %8s %8s %9s" % ("target", "N", "mode", "total%", "per-part%", "relay%", "sender%", "rx pps/p"))
        for r in cpu:
            c = r["cpu"]
            f = lambda k, key: ("%.2f" % c[k][key]) if c.get(k) else "-"
            print("%-8s %4d %-5s %10s %10s %8s %8s %9.1f" % (
                r["target"], r["n"], r["mode"], f("target", "total_pct_of_core"),
                ("%.4f" % c["target"]["per_participant_pct_of_core"]) if c.get("target") else "-",
                f("relay", "total_pct_of_core"), f("sender", "total_pct_of_core"),
                r["received_pps_per_participant"]["mean"]))
    for m in marginal(cpu):
        print("marginal %-8s %-5s N %d->%d: %.4f%% of a core per added participant" % (
            m["target"], m["mode"], m["from_n"], m["to_n"], m["pct_of_core_per_participant"]))
    for d in results.get("delay", []):
        print("delay %-8s N=%d: median %s ms (min %s, p90 %s, max %s; %d/%d clicks; per-run medians %s)" % (
            d["target"], d["n"], d.get("median_ms"), d.get("min_ms"), d.get("p90_ms"), d.get("max_ms"),
            d["clicks_found"], d["clicks_sent"], d.get("per_run_median_ms")))


def main():
    if len(sys.argv) > 1 and sys.argv[1] in ("_relay", "_probe"):
        p = argparse.ArgumentParser()
        p.add_argument("mode")
        p.add_argument("--spec", required=True)
        a = p.parse_args()
        (relay_main if a.mode == "_relay" else probe_main)(a)
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[10, 50, 100], help="participants per room")
    p.add_argument("--modes", nargs="+", default=["talk", "half"], choices=["talk", "half"])
    p.add_argument("--seconds", type=float, default=30.0, help="measured window per run")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds of traffic before the window")
    p.add_argument("--targets", nargs="+", default=["janus", "chamade"], choices=["janus", "chamade"])
    p.add_argument("--chamade", default=os.path.join(REPO, ".build", "release", "chamade"))
    p.add_argument("--complexity", type=int, default=5,
                   help="Opus encoder complexity for both bridges and the senders (Janus join 'quality'; "
                        "chamade --opus-complexity). Janus's own default is 4, Chamade's 5.")
    p.add_argument("--bitrate", type=int, default=32000, help="Opus bit rate, both bridges and the senders")
    p.add_argument("--janus-prebuffer", type=int, default=None,
                   help="Janus per-participant prebuffer in packets (default: Janus's own, 6)")
    p.add_argument("--half-period", type=float, default=1.0, help="talk/silence period of mode half, seconds")
    p.add_argument("--delay-n", type=int, default=10, help="participants in the click-delay runs (0: skip)")
    p.add_argument("--delay-runs", type=int, default=3, help="fresh bridge sessions per target for the delay")
    p.add_argument("--delay-only", action="store_true", help="skip the CPU runs")
    p.add_argument("--clicks", type=int, default=10, help="clicks per delay run")
    p.add_argument("--click-interval", type=float, default=0.6)
    p.add_argument("--peer-base", type=int, default=30000, help="participant i is 127.0.0.1:(PEERBASE+2i)")
    p.add_argument("--leg-low", type=int, default=21000, help="chamade leg i receives on LOW+2i")
    p.add_argument("--src-port", type=int, default=29990, help="relay port the gst sender sends to")
    p.add_argument("--janus-http-port", type=int, default=18088)
    p.add_argument("--janus-rtp-range", default="40000-40999")
    p.add_argument("--max-other", type=float, default=30.0,
                   help="a CPU run during which other processes used more than this %% of a core is repeated")
    p.add_argument("--retries", type=int, default=2, help="repeats of a disturbed CPU run")
    p.add_argument("--out", default="results.json")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs, recordings)")
    args = p.parse_args()

    for tool in ("gst-launch-1.0",) + (("janus",) if "janus" in args.targets else ()):
        if shutil.which(tool) is None:
            sys.exit("missing %s" % tool)
    targets = list(args.targets)
    if "chamade" in targets and not chamade_supports_legs(args.chamade):
        print("!! %s has no `bench --legs`: skipping the Chamade half" % args.chamade, flush=True)
        targets.remove("chamade")

    workdir = tempfile.mkdtemp(prefix="chamade-legs-")
    print("work dir: %s" % workdir, flush=True)
    length = 3.0 + args.warmup + args.seconds + 15.0
    sigwavs = {}
    peak = speech_peak()
    for n in args.n:
        gain = min(1.0, 0.5 / peak / max(1, n - 1))
        sigwavs[n] = (os.path.join(workdir, "signal-%d.wav" % n), gain)
        make_signal_wav(sigwavs[n][0], length, gain)

    results = {"meta": {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cores": os.cpu_count(),
                        "cpu_model": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                                           if l.startswith("model name")), None),
                        "janus": janus_version(), "chamade": args.chamade if "chamade" in targets else None,
                        "seconds": args.seconds, "warmup_s": args.warmup, "complexity": args.complexity,
                        "bitrate": args.bitrate, "janus_prebuffer": args.janus_prebuffer,
                        "half_period_s": args.half_period,
                        "silence": "sender sends nothing during silence (no DTX): sequence continuous, "
                                   "timestamp jumps, marker on each talk spurt; same for both targets",
                        "signal": "fixtures/speech_48k.wav x gain 0.5/peak/(N-1) (the mix-minus of N-1 identical "
                                  "streams peaks near -6 dBFS) + uniform +-4 LSB noise, looped"},
               "cpu": [], "delay": []}

    def save():
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)

    try:
        for n in ([] if args.delay_only else args.n):
            for mode in args.modes:
                for target in targets:
                    tries = []
                    for attempt in range(args.retries + 1):
                        r = run_cpu(args, target, n, mode, workdir, sigwavs)
                        tries.append(r)
                        other = r["other_load_pct_of_core"]
                        if other is None or other <= args.max_other:
                            break
                        print("   (disturbed: other load %.0f%% > %g%%; %s)" % (
                            other, args.max_other, "again" if attempt < args.retries else "keeping the least disturbed"),
                            flush=True)
                    best = min(tries, key=lambda r: r["other_load_pct_of_core"] or 0)
                    best["attempts"] = len(tries)
                    results["cpu"].append(best)
                    save()
        if args.delay_n > 1:
            results["delay"].append(run_direct(args, workdir))
            save()
            for target in targets:
                runs = [run_delay(args, target, args.delay_n, workdir, r) for r in range(args.delay_runs)]
                results["delay"].append(summarise_delays(target, args.delay_n, runs))
                save()
    finally:
        results["marginal"] = marginal(results["cpu"])
        save()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print_table(results)
    print("\nwrote %s" % args.out)


if __name__ == "__main__":
    main()
