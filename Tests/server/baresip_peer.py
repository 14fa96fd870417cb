"""baresip 1.0.0 (Debian `baresip`) as a real softphone peer for the SIP tests, driven from Python.

One `Baresip` is one baresip process with its own generated config folder (`baresip -f DIR`); every
statement below was checked on this machine (two instances calling each other on 127.0.0.1, SIPp,
dumpcap/tshark on lo) or read in the v1.0.0 sources.

- SIP on 127.0.0.1:`sip_port`, UDP for our calls (the account says `;transport=udp`); baresip 1.0.0
  always also listens on TCP `sip_port` and TLS `sip_port + 1` (main.c enables all three; no config
  turns them off). No registration (`;regint=0`). Media on 127.0.0.1 (`net_interface 127.0.0.1`;
  `lo` fails with "could not get IPv4 address"), RTP ports from `rtp_ports`, no STUN/ICE, no
  video, no sound card, no terminal UI (the `stdio` module is not loaded; stdin is /dev/null).
- Incoming INVITEs are matched on the request-URI user: call `peer.uri` (sip:<user>@127.0.0.1:P);
  another user gets 404. Auto-answer sends 180 then "200 Answering" at once.
- The offer (PCMU, PCMA, Opus): `m=audio P RTP/AVP 0 8 96 101`, `a=rtpmap:96 opus/48000/2`,
  `a=fmtp:96 stereo=1;sprop-stereo=1;maxaveragebitrate=32000`, `a=rtpmap:101 telephone-event/8000`,
  `a=fmtp:101 0-15`, `a=sendrecv`, `a=rtcp-rsize`, `a=ssrc:… cname:…`, `a=minptime:20`,
  `a=ptime:20` (ptime= follows the `ptime` argument). RTCP on RTP port + 1 (no rtcp-mux); the
  first RTCP packets are APP "PING".
- What it sends: the `aufile` source playing a 16-bit mono WAV, or the `ausine` source (an endless
  sine at -6 dBFS, `tone_hz=`). aufile needs the file's rate and channels to equal `ausrc_srate` /
  `ausrc_channels` (set here from the file) and baresip resamples to the codec: 8000, 16000,
  24000 and 48000 Hz files work with G.711 and Opus; 44100 Hz (and 32000 Hz with Opus) do not:
  the call closes at once with CALL_CLOSED "Operation not supported". With a WAV, baresip ends the
  call by itself about a second after the file's end (AUDIO_ERROR, then CALL_CLOSED "end of
  file", and a BYE): give it a file longer than the call.
- What it receives: Debian's baresip 1.0.0 has no recording audio player (aufile is a source
  only); the `sndfile` audio filter writes every decoded frame to `<dir>/rec/dump-<date-time>-dec.wav`
  (and what it encodes to `...-enc.wav`) at the codec's rate and channels: 8000 Hz mono for
  PCMU/PCMA, 48000 Hz *stereo* for Opus. `recording()` reads the last one as mono int16; the file
  is complete once the call has closed. Frames are written as they are decoded: a lost packet is
  missing from the file, not silence (tone checks: use peak_frequency or windowed SNR; a
  whole-file sine fit of an Opus recording gives only ~17 dB while 100 ms windows give 30-50 dB).
  No audio player module is loaded at all (baresip then starts none; the filter still runs).
- Control and events: the `ctrl_tcp` module (JSON in netstrings, "LEN:{...},", one TCP connection).
  Commands are `menu`'s long commands: `dial <uri>`, `accept`, `hangup`, `sndcode <digits>`,
  `callstat`, and core `quit`; a response is {"response": true, "ok": …, "data": …, "token": …}.
  Events: {"event": true, "class": "call", "type": …, "param": …, "direction":
  "incoming"|"outgoing", "peeruri": …, "id": <SIP Call-ID>, "accountaor": …}. Types seen:
  CALL_LOCAL_SDP / CALL_REMOTE_SDP ("offer"/"answer"), CALL_INCOMING (only when answermode is
  manual: auto-answer reports none), CALL_RINGING, CALL_ESTABLISHED, CALL_RTPESTAB (first RTP in),
  CALL_RTCP, CALL_DTMF_START (param: the digit), CALL_DTMF_END (no param), AUDIO_ERROR,
  CALL_CLOSED (param: the reason), SHUTDOWN, EXIT.
- DTMF out: RFC 4733 only (no SIP INFO sending), and only when the answer/offer of the other side
  lists telephone-event (else `sndcode` still answers ok and nothing goes out). `sndcode 123`
  queues the digits and a release: each digit is 9 packets of growing duration (marker on the
  first, one per ptime: 180 ms at 20 ms) then 3 end packets with the same timestamp, the next
  digit right after (240 ms per digit), interleaved with the audio packets (audio keeps flowing).
  With Opus the durations and timestamps count 48 kHz units (960 per 20 ms) although the rtpmap
  says telephone-event/8000; with G.711, 160 per 20 ms. baresip only offers telephone-event/8000.
- DTMF in (libre 1.1.0 telev_recv): timestamps are ignored; a non-end packet whose event differs
  from the current one is a new digit (CALL_DTMF_START), the first end packet gives CALL_DTMF_END,
  later end packets are dropped. So a digit whose non-end packets are all lost is never reported,
  and a repeated digit is only seen as two if an end packet arrived in between.
"""
import json
import os
import re
import socket
import threading
import time
import wave

import numpy as np

from rtp_peers import Proc, free_udp_port, sine

BARESIP = "/usr/bin/baresip"
MODULE_PATH = "/usr/lib/baresip/modules"
CODEC_NAMES = {"pcmu": "pcmu", "pcma": "pcma", "opus": "opus/48000/2"}


def write_tone_wav(path, freq=1000, seconds=60.0, rate=8000, dbfs=-6.0):
    """A 16-bit mono WAV of a sine (what `aufile` plays); `freq=None` writes silence."""
    x = sine(freq, rate, seconds, dbfs) if freq else np.zeros(int(rate * seconds), dtype="<i2")
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(x.astype("<i2").tobytes())
    return path


def _tcp_port_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_sip_port():
    """A port P with UDP P, TCP P and TCP P + 1 free (baresip 1.0.0 binds all three)."""
    for _ in range(200):
        p = free_udp_port()
        if p < 65535 and _tcp_port_free(p) and _tcp_port_free(p + 1):
            return p
    raise RuntimeError("no free SIP port")


def free_tcp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_mono_wav(path):
    """(rate, int16 mono samples) of a 16-bit WAV; stereo is averaged (baresip's Opus is 2 channels)."""
    with wave.open(path) as w:
        assert w.getsampwidth() == 2, w.getsampwidth()
        ch, rate = w.getnchannels(), w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    if ch > 1:
        x = x[:len(x) // ch * ch].reshape(-1, ch).astype(np.int32).mean(axis=1).astype("<i2")
    return rate, x


class BaresipError(RuntimeError):
    pass


class Baresip:
    """A baresip softphone on 127.0.0.1. Use as a context manager (or call `stop()`).

    workdir:     a folder of its own (created); holds config, accounts, rec/ and baresip.log.
    tone_wav:    16-bit mono WAV that `aufile` sends (the call ends ~1 s after the file does);
    tone_hz:     instead, `ausine` sends an endless sine of this frequency (-6 dBFS, 48 kHz);
                 with neither, it sends 300 s of silence (a generated WAV).
    user:        the account's user: baresip 1.0.0 answers only INVITEs whose request-URI user is
                 this one (else 404), so call `peer.uri`.
    auto_answer: answermode=auto (no CALL_INCOMING event then) or manual (call `answer()`).
    codecs:      offer order, from "pcmu", "pcma", "opus".
    ptime:       packet time in ms (the account's ptime=).
    rtp_ports:   range baresip picks its RTP/RTCP ports from (kept out of the server's ranges).
    sip_port:    a fixed SIP port (UDP and TCP P, TLS P + 1 must be free); default: a free one.
    sip_trace:   `-s`: every SIP message, with its SDP, goes to the log (`self.proc.lines`).
    verbose:     `-v`: debug logging.
    """

    def __init__(self, workdir, tone_wav=None, tone_hz=None, user="peer", auto_answer=True,
                 codecs=("pcmu", "pcma", "opus"), ptime=20, rtp_ports=(40000, 49999), sip_port=None,
                 sip_trace=False, verbose=False, start_timeout=10.0):
        self.dir = os.path.abspath(workdir)
        self.rec_dir = os.path.join(self.dir, "rec")
        os.makedirs(self.rec_dir, exist_ok=True)
        self.user = user
        self.events = []
        self.responses = {}
        self._cond = threading.Condition()
        self._token = 0
        self._sock = None
        self._closed = False
        self.proc = None

        if tone_hz is not None:
            source, srate, channels = f"ausine,{int(tone_hz)}", 48000, 2
        else:
            if tone_wav is None:
                tone_wav = write_tone_wav(os.path.join(self.dir, "silence.wav"), None, 300.0, 8000)
            with wave.open(tone_wav) as w:
                assert w.getsampwidth() == 2 and w.getnchannels() == 1, "aufile needs 16-bit mono"
                srate, channels = w.getframerate(), 1
            source = f"aufile,{os.path.abspath(tone_wav)}"

        codec_list = ",".join(CODEC_NAMES[c.lower()] for c in codecs)
        attempts = 1 if sip_port else 3
        for attempt in range(attempts):
            self.sip_port = sip_port or free_sip_port()
            self.ctrl_port = free_tcp_port()
            self.uri = f"sip:{user}@127.0.0.1:{self.sip_port}"
            self._write_config(source, srate, channels, rtp_ports)
            with open(os.path.join(self.dir, "accounts"), "w") as f:
                f.write(f"<sip:{user}@127.0.0.1:{self.sip_port};transport=udp>;regint=0"
                        f";answermode={'auto' if auto_answer else 'manual'}"
                        f";audio_codecs={codec_list};ptime={ptime}\n")
            argv = ["stdbuf", "-oL", "-eL", BARESIP, "-f", self.dir]
            if sip_trace:
                argv.append("-s")
            if verbose:
                argv.append("-v")
            self.proc = Proc(argv, cwd=self.dir)
            try:
                self._connect(start_timeout)
                return
            except BaresipError:
                out = self.proc.output()
                self.proc.kill()
                if attempt == attempts - 1 or not re.search(r"[Aa]ddress already in use|failed to listen|Transport failed", out):
                    raise
        raise AssertionError("unreachable")

    # -- set-up ---------------------------------------------------------------------------------

    def _write_config(self, source, srate, channels, rtp_ports):
        lines = [
            "poll_method\tepoll",
            f"sip_listen\t127.0.0.1:{self.sip_port}",
            "net_interface\t127.0.0.1",          # media (RTP, SDP c=) on loopback; "lo" fails here
            "call_local_timeout\t120",
            "call_max_calls\t4",
            f"audio_source\t{source}",
            f"ausrc_srate\t{srate}",
            f"ausrc_channels\t{channels}",
            "audio_buffer\t20-160",
            f"rtp_ports\t{rtp_ports[0]}-{rtp_ports[1]}",
            "rtcp_mux\tno",
            "jitter_buffer_delay\t5-10",
            "rtp_stats\tno",
            f"module_path\t{MODULE_PATH}",
            "module\tg711.so",
            "module\topus.so",
            "module\tsndfile.so",                # audio filter: dump-*-dec.wav / dump-*-enc.wav
            "module\taufile.so",
            "module\tausine.so",
            "module_tmp\taccount.so",
            "module_app\tmenu.so",               # the dial/accept/hangup/sndcode commands
            "module_app\tctrl_tcp.so",
            f"ctrl_tcp_listen\t127.0.0.1:{self.ctrl_port}",
            f"snd_path\t{self.rec_dir}",
            "opus_bitrate\t32000",
            "statmode_default\toff",            # no "[0:00:01] audio=..." status line per 100 ms
            "",
        ]
        with open(os.path.join(self.dir, "config"), "w") as f:
            f.write("\n".join(lines))

    def _connect(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise BaresipError(f"baresip exited ({self.proc.returncode}):\n{self.proc.output()}")
            try:
                self._sock = socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise BaresipError(f"ctrl_tcp not listening:\n{self.proc.output()}") from None
                time.sleep(0.05)
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        # baresip prints this once every module and the account are up
        self.proc.wait_line(r"baresip is ready", max(0.1, deadline - time.monotonic()))

    def _read_loop(self):
        buf = b""
        try:
            while True:
                data = self._sock.recv(65536)
                if not data:
                    break
                buf += data
                while True:
                    colon = buf.find(b":")
                    if colon < 0:
                        break
                    n = int(buf[:colon])
                    if len(buf) < colon + 1 + n + 1:
                        break
                    payload, buf = buf[colon + 1:colon + 1 + n], buf[colon + 2 + n:]
                    if not payload:
                        continue
                    msg = json.loads(payload)
                    with self._cond:
                        if msg.get("response"):
                            self.responses[msg.get("token")] = msg
                        elif msg.get("event"):
                            msg["at"] = time.monotonic()
                            self.events.append(msg)
                        self._cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    # -- commands -------------------------------------------------------------------------------

    def command(self, command, params=None, timeout=5.0, check=True):
        """Runs one long command through ctrl_tcp; its response {"response", "ok", "data", "token"}."""
        with self._cond:
            self._token += 1
            token = str(self._token)
        msg = {"command": command, "token": token}
        if params is not None:
            msg["params"] = str(params)
        body = json.dumps(msg).encode()
        self._sock.sendall(b"%d:%s," % (len(body), body))
        deadline = time.monotonic() + timeout
        with self._cond:
            while token not in self.responses:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise TimeoutError(f"no response to {command} {params or ''}:\n{self.proc.output()}")
                self._cond.wait(left)
            resp = self.responses.pop(token)
        if check and not resp.get("ok"):
            raise BaresipError(f"{command} {params or ''} failed: {resp}\n{self.proc.output()}")
        return resp

    def dial(self, uri):
        """Calls `uri` (e.g. sip:alice@127.0.0.1:5070); follow with wait_established()."""
        return self.command("dial", uri)

    def answer(self):
        """Answers the incoming call (answermode manual)."""
        return self.command("accept")

    def hangup(self):
        return self.command("hangup")

    def send_dtmf(self, digits, gap=None):
        """Sends RFC 4733 events for `digits` (0-9 * # A-D) on the current call. With `gap` (s),
        one `sndcode` per digit, `gap` apart; otherwise one `sndcode` with all of them."""
        if gap is None:
            return self.command("sndcode", digits)
        for d in digits:
            self.command("sndcode", d)
            time.sleep(gap)

    # -- events ---------------------------------------------------------------------------------

    def mark(self):
        """An index into `self.events`: pass it as `start=` to wait only for later events."""
        with self._cond:
            return len(self.events)

    def wait_event(self, type_, timeout=10.0, start=0, **match):
        """The first event of `type_` at index >= `start` of `self.events` whose fields equal `match`
        (e.g. direction="incoming", id=<Call-ID>)."""
        deadline = time.monotonic() + timeout
        i = start
        with self._cond:
            while True:
                while i < len(self.events):
                    e = self.events[i]
                    i += 1
                    if e.get("type") == type_ and all(e.get(k) == v for k, v in match.items()):
                        return e
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    seen = [(e.get("type"), e.get("param")) for e in self.events[start:]]
                    raise TimeoutError(f"{self.user}: no {type_} {match or ''} (events: {seen}):\n{self.proc.output()}")
                self._cond.wait(min(left, 0.5))

    def wait_incoming(self, timeout=10.0, start=0, **match):
        """CALL_INCOMING: only with auto_answer=False (auto-answer reports no incoming event)."""
        return self.wait_event("CALL_INCOMING", timeout, start, **match)

    def wait_established(self, timeout=10.0, start=0, **match):
        return self.wait_event("CALL_ESTABLISHED", timeout, start, **match)

    def wait_rtp(self, timeout=10.0, start=0, **match):
        """CALL_RTPESTAB: the first RTP packet of the call has arrived."""
        return self.wait_event("CALL_RTPESTAB", timeout, start, **match)

    def wait_closed(self, timeout=10.0, start=0, **match):
        """CALL_CLOSED; its "param" is the reason ("Connection reset by peer" on a BYE from the
        other side, "Connection reset by user" after our hangup, "end of file" when the WAV ran
        out, "404 Not Found" and the like for a failed dial)."""
        return self.wait_event("CALL_CLOSED", timeout, start, **match)

    def received_dtmf(self, start=0, call_id=None):
        """The digits reported at or after event index `start` (one per CALL_DTMF_START), as a string."""
        with self._cond:
            return "".join(e.get("param", "") for e in self.events[start:]
                           if e.get("type") == "CALL_DTMF_START" and call_id in (None, e.get("id")))

    def wait_dtmf(self, count, timeout=10.0, start=0, call_id=None):
        """Waits until `count` digits have been reported (see received_dtmf); the digits."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = self.received_dtmf(start, call_id)
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise TimeoutError(f"{self.user}: {count} DTMF digits expected, got {got!r}:\n{self.proc.output()}")
                self._cond.wait(min(left, 0.5))

    def call_status(self):
        """baresip's `callstat` text for the current call: both SDPs' formats (the chosen one marked
        with *), ptime, ssrc."""
        return self.command("callstat")["data"]

    # -- recordings -----------------------------------------------------------------------------

    def recordings(self, kind="dec"):
        """The sndfile dumps of `kind` ("dec": received, "enc": sent), oldest first. One pair per
        call; the name has a one-second timestamp, so two calls in one second share a file."""
        names = [n for n in os.listdir(self.rec_dir) if n.endswith(f"-{kind}.wav")]
        return sorted((os.path.join(self.rec_dir, n) for n in names), key=os.path.getmtime)

    def recording(self, kind="dec"):
        """(rate, mono int16 samples) of the last call's received audio (complete once it closed)."""
        files = self.recordings(kind)
        assert files, f"no {kind} recording in {self.rec_dir}:\n{self.proc.output()}"
        return read_mono_wav(files[-1])

    # -- shutdown -------------------------------------------------------------------------------

    def stop(self, timeout=5.0):
        """`quit` (hangs up every call, sends BYE), then SIGINT, then SIGKILL. Its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None and self._sock is not None and not self._closed:
            try:
                body = b'{"command":"quit"}'
                self._sock.sendall(b"%d:%s," % (len(body), body))
                self.proc.wait(timeout)
            except (OSError, TimeoutError):
                pass
        rc = self.proc.stop(timeout=timeout) if self.proc.poll() is None else self.proc.returncode
        if self._sock is not None:
            self._sock.close()
        self.proc.kill()
        with open(os.path.join(self.dir, "baresip.log"), "w") as f:
            f.write("\n".join(self.proc.lines) + "\n")
        return rc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


if __name__ == "__main__":
    # Self-check: A calls B, A plays 1 kHz, B plays 600 Hz; DTMF both ways; both recordings checked.
    import sys
    import tempfile

    from rtp_peers import peak_frequency, playing_region

    codec = sys.argv[1] if len(sys.argv) > 1 else "pcmu"
    with tempfile.TemporaryDirectory() as tmp:
        tone = write_tone_wav(os.path.join(tmp, "tone.wav"), 1000, 30, 8000)
        with Baresip(os.path.join(tmp, "a"), tone_wav=tone, user="alice", codecs=(codec,)) as a, \
                Baresip(os.path.join(tmp, "b"), tone_hz=600, user="bob", codecs=(codec,)) as b:
            a.dial(b.uri)
            call_id = a.wait_established()["id"]
            b.wait_established(id=call_id)
            b.wait_rtp()
            a.send_dtmf("123")
            assert b.wait_dtmf(3) == "123"
            b.send_dtmf("#9*")
            assert a.wait_dtmf(3) == "#9*"
            a.hangup()
            b.wait_closed()
            a.wait_closed()
            for peer, freq in ((b, 1000), (a, 600)):
                rate, x = peer.recording()
                f = peak_frequency(playing_region(x, rate), rate)
                assert abs(f - freq) < 5, (peer.user, f)
                print(f"{peer.user}: {len(x) / rate:.2f} s at {rate} Hz, peak {f:.1f} Hz, DTMF {peer.received_dtmf()!r}")
    print("ok")
