#!/usr/bin/env python3
"""Speech measurements of `chamade serve` (SPEC §7: built-in STT and TTS), through its public API
on 127.0.0.1, timed as an agent sees them. Every time is time.monotonic() in this process.

  latency [--utterances 24]
      Transcript latency. One talker streams the clean 16 kHz fixtures (01, 02, ... cycled) into a
      room at the pace of real time: 20 ms pieces on a monotonic schedule, sent 0.2 s ahead of it.
      A listener of the room collects its events. A fixture's speech ends with its last 20 ms
      frame above -40 dBFS (RMS); the wall time of that end is the stream's start + its sample
      offset / rate, i.e. when the server plays it into the room. An utterance's latency is the
      arrival of the listener's `call_transcript` for it minus that speech end: it holds the
      0.6 s of silence that ends an utterance, what the recognizer has left to do, and delivery.
      Lines are matched to fixtures in order: the first line not yet matched that arrives after
      the speech end and before the next fixture's speech end + 3 s. Also `call_speaking` false
      (last of the utterance) after the speech end (0.3 s hang-over + delivery), and `call_speaking`
      true after the speech start.

  tts [--says 20]
      Say latency. A speaker call (it sends no audio) says short sentences of sentences.txt, one at
      a time, each waited out (first heard + queued_ms + 0.5 s); a listener receives the room at
      16 kHz. Per say: the HTTP answer time, the time from the request to the listener's first
      frame above -45 dBFS (first audio heard through the room: synthesis, playout, the next tick,
      delivery), and the server's own chamade_tts_first_audio_seconds read after it (request -> first
      audio queued). Then one say of 5,000 characters: HTTP answer time and first heard audio
      (then stop-speaking drops the rest).

  load [--talkers 1,2,4,8,12,16,20] [--seconds 30]
      Capacity of recognition. For each N a fresh server (counters at 0) with N rooms, each of one
      talker (16 kHz, clean fixtures cycled from a different one per room, real time, starts spread
      at random over 1 s) and one listener that wants transcripts (the default). Over the steady
      window (every talker talking, past a warm-up of up to 2 s) the server's CPU time
      (utime + stime of /proc/PID/stat); every second chamade_stt_lag_ms (audio waiting for a
      recognizer), its maximum kept; at the end chamade_late_ticks_total,
      chamade_stt_dropped_ms_total, chamade_stt_utterances_total, and the lines the listeners got
      of their talker against the fixtures spoken (expected); also the largest resident memory of
      the server and of chamade_stt_recognizers (decoders alive). A row is sustained when
      late_ticks == 0, dropped_ms == 0, lag_ms_max < 3000 and lines >= 90 % of expected. A
      baseline row at the largest N with `--stt none` gives the CPU of the same audio and calls
      without recognition; stt_cpu_ratio = CPU with STT / CPU without. The CPU of this process (the
      load generator) and of the whole host over the same window are reported too: the machine
      may be shared.

Each prints a readable summary; with --json, one JSON object on stdout instead (progress goes to
stderr). The server is Tests/server/conftest.py's Server (`serve --port 0 --sip off`), run from
--binary (default .build/release/chamade if it exists, else .build/debug/chamade).
"""
import argparse
import asyncio
import bisect
import itertools
import json
import math
import os
import random
import subprocess
import sys
import time

import httpx
import numpy as np
import websockets

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "Tests", "server"))
import conftest  # noqa: E402  (the server under test: Server, KEY1, api, open_stream)
from speech_tools import fixture_path, load_wav, sentences, word_accuracy  # noqa: E402

RATE = 16000
FRAME = RATE // 50          # samples in 20 ms
LEAD_S = 0.2                # audio is sent this far ahead of its schedule
SPEECH_DBFS = -40.0         # a fixture frame above this is speech
HEARD_DBFS = -45.0          # a listener frame above this is heard audio
MATCH_HORIZON_S = 3.0       # a line may come up to the next fixture's speech end + this
FIXTURES = 12


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Numbers


def percentiles(xs, qs=(0.5, 0.9, 0.99)):
    """Nearest-rank percentiles of `xs` (ms), its max and count; {"n": 0} when empty."""
    xs = sorted(xs)
    if not xs:
        return {"n": 0}
    out = {f"p{round(q * 100)}": round(xs[max(0, math.ceil(q * len(xs)) - 1)], 1) for q in qs}
    out.update(max=round(xs[-1], 1), n=len(xs))
    return out


def frame_dbfs(x):
    """The RMS level in dBFS of each whole 20 ms frame of int16 samples `x`."""
    f = x[: len(x) // FRAME * FRAME].astype(np.float64).reshape(-1, FRAME) / 32768
    return 10 * np.log10(np.maximum((f * f).mean(axis=1), 1e-12))


def block_dbfs(data):
    """The RMS level in dBFS of one block of s16le bytes."""
    x = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float64) / 32768
    return 10 * math.log10(max(float(np.mean(x * x)) if len(x) else 0.0, 1e-12))


# ---------------------------------------------------------------------------------------------
# Fixtures and what a talker says


class Clip:
    """One clean 16 kHz fixture: samples, reference text, and where its speech starts and ends (s,
    from its first and last 20 ms frames above -40 dBFS)."""

    def __init__(self, n):
        self.n = n
        self.pcm, rate = load_wav(fixture_path("clean16k", n))
        assert rate == RATE, (n, rate)
        loud = np.nonzero(frame_dbfs(self.pcm) > SPEECH_DBFS)[0]
        self.speech_start = loud[0] * FRAME / RATE
        self.speech_end = (loud[-1] + 1) * FRAME / RATE
        self.text = sentences()[n - 1]

    @property
    def seconds(self):
        return len(self.pcm) / RATE


_clips = {}


def clip(n):
    if n not in _clips:
        _clips[n] = Clip(n)
    return _clips[n]


class Program:
    """What one talker says: fixtures from number `first` on, cycled, `count` of them or the fewest
    that last `seconds`; `pcm` all of them end to end, `starts`/`ends` the speech start and end of
    each in seconds from the beginning."""

    def __init__(self, first=1, count=None, seconds=None):
        self.clips, offset, self.starts, self.ends = [], 0.0, [], []
        for k in itertools.count():
            if (count is not None and k >= count) or (seconds is not None and offset >= seconds):
                break
            c = clip((first - 1 + k) % FIXTURES + 1)
            self.clips.append(c)
            self.starts.append(offset + c.speech_start)
            self.ends.append(offset + c.speech_end)
            offset += c.seconds
        self.pcm = np.concatenate([c.pcm for c in self.clips])
        self.seconds = offset


# ---------------------------------------------------------------------------------------------
# The server, calls and their sockets


def default_binary():
    release = os.path.join(ROOT, ".build", "release", "chamade")
    return release if os.path.exists(release) else os.path.join(ROOT, ".build", "debug", "chamade")


def warn_if_stale(binary):
    """Says so when `binary` is older than a file of Sources/ (a benchmark of an old build)."""
    paths = [os.path.join(d, f) for d, _, files in os.walk(os.path.join(ROOT, "Sources")) for f in files]
    newest = max(paths, key=os.path.getmtime, default=None)
    if newest and os.path.getmtime(binary) < os.path.getmtime(newest):
        log(f"warning: {binary} is older than {os.path.relpath(newest, ROOT)}: rebuild it if that file is part of it")


def commit():
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def start_server(args, stt="pocketsphinx"):
    conftest.BINARY = args.binary
    extra = ["--api-key", conftest.KEY1, "--stt", stt, "--tts", "espeak"]
    if args.stt_workers is not None and stt != "none":
        extra += ["--stt-workers", str(args.stt_workers)]
    return conftest.Server(*extra)


def server_trouble(server):
    """None while the server runs; else its exit code and last lines of output."""
    if server.proc.poll() is None:
        return None
    return {"exit": server.proc.returncode, "output": server.lines[-10:]}


def meeting_url(label):
    return f"https://meet.example/bench/{label}/{os.getpid()}/{time.time()}"


def join(server, meeting, name):
    """A call named `name` in the room of `meeting` (transcripts: the server's default, true with STT)."""
    r = conftest.api(server, "POST", "/api/call",
                     json={"platform": "discord", "meeting_url": meeting, "agent_name": name})
    r.raise_for_status()
    return r.json()


def hang_up(server, calls):
    for c in calls:
        try:
            conftest.api(server, "DELETE", f"/api/call/{c['call_id']}")
        except httpx.HTTPError:
            pass


def http_client(server):
    return httpx.AsyncClient(base_url=server.base, headers={"X-API-Key": conftest.KEY1}, timeout=60)


async def scrape(http):
    """/metrics as {family: sum of its samples} (a counter not yet moved may be absent: read as 0)."""
    out = {}
    for line in (await http.get("/metrics")).text.splitlines():
        if line and not line.startswith("#"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            out[name] = out.get(name, 0.0) + float(line.rsplit(None, 1)[-1])
    return out


class Stream:
    """A call's WebSocket at 16 kHz, read in the background: text messages kept with their arrival
    time; of the audio frames (when `receive`), the arrival times of those above -45 dBFS."""

    def __init__(self, ws, call):
        self.ws, self.call = ws, call
        self.messages = []   # (time, message)
        self.loud = []       # arrival times of loud frames, in order
        self.task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, server, call, receive=False):
        ws, state = await conftest.open_stream(server, call, rate=RATE, receive=receive)
        assert state == "active", state
        return cls(ws, call)

    async def _read(self):
        try:
            async for m in self.ws:
                t = time.monotonic()
                if isinstance(m, bytes):
                    if block_dbfs(m) > HEARD_DBFS:
                        self.loud.append(t)
                else:
                    self.messages.append((t, json.loads(m)))
        except websockets.ConnectionClosed:
            pass

    def timed(self, kind, **match):
        """(time, message) of each message of type `kind` whose fields equal `match`."""
        return [(t, m) for t, m in self.messages
                if m.get("type") == kind and all(m.get(k) == v for k, v in match.items())]

    def first_loud_after(self, t0):
        i = bisect.bisect_right(self.loud, t0)
        return self.loud[i] if i < len(self.loud) else None

    async def send_paced(self, pcm, start, chunk_ms=20):
        """Sends `pcm` in `chunk_ms` pieces, piece k at start + k·chunk − LEAD_S (so sample i plays
        at about start + i / RATE)."""
        step = RATE * chunk_ms // 1000
        for k, i in enumerate(range(0, len(pcm), step)):
            if (wait := start + k * chunk_ms / 1000 - LEAD_S - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            await self.ws.send(pcm[i:i + step].astype("<i2").tobytes())

    async def played(self, timeout=60):
        """Returns once the server has played all audio sent so far (a mark comes back), or after
        `timeout` s; True if it did."""
        name = f"played-{time.monotonic()}"
        await self.ws.send(json.dumps({"type": "mark", "name": name}))
        return bool(await until(lambda: self.timed("mark", name=name), timeout))

    async def close(self):
        try:
            await self.ws.close()
            await asyncio.wait_for(self.task, 5)
        except (asyncio.TimeoutError, websockets.WebSocketException):
            self.task.cancel()


async def until(condition, timeout, step=0.01):
    """condition()'s first true value, polled every `step` s, or its last value after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (value := condition()) and time.monotonic() < deadline:
        await asyncio.sleep(step)
    return value


async def sleep_until(t):
    if (wait := t - time.monotonic()) > 0:
        await asyncio.sleep(wait)


async def settle(count, quiet, cap):
    """Waits until count() has not changed for `quiet` s, `cap` s at most."""
    start = changed = time.monotonic()
    last = count()
    while (now := time.monotonic()) - start < cap and now - changed < quiet:
        await asyncio.sleep(0.1)
        if (c := count()) != last:
            last, changed = c, time.monotonic()


# ---------------------------------------------------------------------------------------------
# latency


def match_in_order(ends, times, horizon=MATCH_HORIZON_S):
    """For each speech end (sorted), the index in `times` (sorted) of the first time not yet taken
    after it and before the next end + `horizon` (the last end: no bound); None when there is none."""
    out, j = [], 0
    for i, end in enumerate(ends):
        bound = ends[i + 1] + horizon if i + 1 < len(ends) else math.inf
        while j < len(times) and times[j] <= end:
            j += 1
        if j < len(times) and times[j] < bound:
            out.append(j)
            j += 1
        else:
            out.append(None)
    return out


def speaking_times(events, starts, ends):
    """Per utterance: (its first `speaking` true in [speech start − 0.3 s, speech end), its last
    `speaking` false in [speech start, next speech start)), from (time, message) events; None where
    there is none."""
    on, off = [], []
    for i, (s, e) in enumerate(zip(starts, ends)):
        nxt = starts[i + 1] if i + 1 < len(starts) else math.inf
        trues = [t for t, m in events if m["speaking"] and s - 0.3 <= t < e]
        falses = [t for t, m in events if not m["speaking"] and s <= t < nxt]
        on.append(trues[0] if trues else None)
        off.append(falses[-1] if falses else None)
    return on, off


async def bench_latency(args):
    prog = Program(first=1, count=args.utterances)
    server = start_server(args)
    calls = []
    try:
        meeting = meeting_url("latency")
        calls = [join(server, meeting, "Alice"), join(server, meeting, "Bob")]
        alice = calls[0]
        talker = await Stream.open(server, calls[0])
        listener = await Stream.open(server, calls[1], receive=True)
        await asyncio.sleep(0.5)
        log(f"latency: streaming {len(prog.clips)} utterances ({prog.seconds:.1f} s)")
        start = time.monotonic()
        await talker.send_paced(prog.pcm, start, chunk_ms=20)
        played = await talker.played(timeout=30)
        pid = alice["participant_id"]
        await settle(lambda: len(listener.timed("call_transcript", participant_id=pid)), quiet=4, cap=20)
        await talker.close()
        await listener.close()
        trouble = server_trouble(server)
    finally:
        hang_up(server, calls)
        server.stop()

    ends = [start + e for e in prog.ends]
    starts = [start + s for s in prog.starts]
    lines = listener.timed("call_transcript", participant_id=pid)
    matched = match_in_order(ends, [t for t, _ in lines])
    on, off = speaking_times(listener.timed("call_speaking", participant_id=pid), starts, ends)
    per = []
    for i, c in enumerate(prog.clips):
        j = matched[i]
        per.append({"fixture": c.n, "reference": c.text,
                    "latency_ms": None if j is None else round((lines[j][0] - ends[i]) * 1000, 1),
                    "text": None if j is None else lines[j][1]["text"],
                    "speaking_on_ms": None if on[i] is None else round((on[i] - starts[i]) * 1000, 1),
                    "speaking_off_ms": None if off[i] is None else round((off[i] - ends[i]) * 1000, 1)})
    got = [p["latency_ms"] for p in per if p["latency_ms"] is not None]
    return {
        "bench": "latency", "binary": args.binary, "commit": commit(), "stt_workers": args.stt_workers,
        "utterances": len(prog.clips), "with_line": len(got), "lines": len(lines),
        "unmatched_lines": len(lines) - len(got), "all_audio_played": played,
        "latency_ms": percentiles(got, (0.5, 0.9, 0.99)),
        "first_latency_ms": per[0]["latency_ms"],
        "speaking_off_ms": percentiles([p["speaking_off_ms"] for p in per if p["speaking_off_ms"] is not None], (0.5, 0.99)),
        "speaking_on_ms": percentiles([p["speaking_on_ms"] for p in per if p["speaking_on_ms"] is not None], (0.5, 0.99)),
        "word_accuracy": round(word_accuracy([" ".join(c.text for c in prog.clips)], [" ".join(m["text"] for _, m in lines)]), 3),
        "server_trouble": trouble,
        "per_utterance": per,
    }


def print_latency(r):
    print(f"transcript latency after speech end ({r['binary']}, stt workers {r['stt_workers'] or 'default'})")
    print(f"  utterances {r['utterances']}, with a line {r['with_line']}, lines {r['lines']} "
          f"({r['unmatched_lines']} unmatched), word accuracy {r['word_accuracy']}")
    print(f"  call_transcript   {fmt(r['latency_ms'])}   (first utterance {r['first_latency_ms']} ms)")
    print(f"  speaking false    {fmt(r['speaking_off_ms'])}")
    print(f"  speaking true     {fmt(r['speaking_on_ms'])}   (after speech start)")
    for p in r["per_utterance"]:
        print(f"    {p['fixture']:2d} {str(p['latency_ms']):>8} ms  {p['text']!r}")
    trouble_line(r)


def fmt(p):
    if not p.get("n"):
        return "(none)"
    return "  ".join(f"{k} {v}" for k, v in p.items() if k != "n") + f"  (n {p['n']}, ms)"


def trouble_line(r):
    if r.get("server_trouble"):
        print(f"  SERVER EXITED: {r['server_trouble']}")


# ---------------------------------------------------------------------------------------------
# tts


def long_text(chars=5000):
    """Sentences of sentences.txt, cycled, joined into about `chars` characters (cut at a word)."""
    text = ""
    for s in itertools.cycle(sentences()):
        if len(text) >= chars:
            break
        text += s + ". "
    return text[:chars].rsplit(" ", 1)[0]


async def say(http, call, listener, text, timeout):
    """One say: (HTTP answer ms, first heard ms or None, queued_ms, the time playing started)."""
    t0 = time.monotonic()
    r = await http.post(f"/api/call/{call['call_id']}/say", json={"text": text})
    t1 = time.monotonic()
    r.raise_for_status()
    queued_ms = r.json()["queued_ms"]
    heard = await until(lambda: listener.first_loud_after(t0), timeout)
    return (t1 - t0) * 1000, None if heard is None else (heard - t0) * 1000, queued_ms, heard or t1


async def bench_tts(args):
    texts = sentences()
    server = start_server(args)
    calls, says = [], []
    try:
        meeting = meeting_url("tts")
        calls = [join(server, meeting, "Speaker"), join(server, meeting, "Listener")]
        speaker = await Stream.open(server, calls[0])
        listener = await Stream.open(server, calls[1], receive=True)
        await asyncio.sleep(0.5)
        async with http_client(server) as http:
            for i in range(args.says):
                text = texts[i % len(texts)]
                http_ms, heard_ms, queued_ms, playing = await say(http, calls[0], listener, text, timeout=10)
                await sleep_until(playing + queued_ms / 1000 + 0.5)
                gauge = (lambda v: None if v is None else v * 1000)((await scrape(http)).get("chamade_tts_first_audio_seconds"))
                says.append({"text": text, "http_ms": round(http_ms, 1),
                             "heard_ms": None if heard_ms is None else round(heard_ms, 1),
                             "first_audio_ms": gauge, "queued_ms": queued_ms})
                log(f"tts: say {i + 1}/{args.says}: http {says[-1]['http_ms']} ms, heard {says[-1]['heard_ms']} ms, gauge {gauge} ms")
            text = long_text()
            http_ms, heard_ms, queued_ms, _ = await say(http, calls[0], listener, text, timeout=30)
            gauge = (lambda v: None if v is None else v * 1000)((await scrape(http)).get("chamade_tts_first_audio_seconds"))
            stop = (await http.post(f"/api/call/{calls[0]['call_id']}/stop-speaking")).json()
            long = {"chars": len(text), "http_ms": round(http_ms, 1),
                    "heard_ms": None if heard_ms is None else round(heard_ms, 1), "first_audio_ms": gauge,
                    "queued_ms": queued_ms, "stop_dropped_ms": stop.get("dropped_ms"),
                    "stop_spoken_chars": len(stop.get("spoken_text", ""))}
            log(f"tts: long say: {long}")
            says_total = (await scrape(http)).get("chamade_tts_says_total")
        await speaker.close()
        await listener.close()
        trouble = server_trouble(server)
    finally:
        hang_up(server, calls)
        server.stop()
    return {
        "bench": "tts", "binary": args.binary, "commit": commit(), "says": len(says),
        "http_ms": percentiles([s["http_ms"] for s in says], (0.5, 0.99)),
        "heard_ms": percentiles([s["heard_ms"] for s in says if s["heard_ms"] is not None], (0.5, 0.99)),
        "not_heard": sum(s["heard_ms"] is None for s in says),
        "first_audio_ms": percentiles([s["first_audio_ms"] for s in says if s["first_audio_ms"] is not None], (0.5, 0.99)),
        "long": long, "says_total_metric": says_total, "server_trouble": trouble, "per_say": says,
    }


def print_tts(r):
    print(f"say latency, {r['says']} short says ({r['binary']})")
    print(f"  HTTP answer               {fmt(r['http_ms'])}")
    print(f"  request -> first heard    {fmt(r['heard_ms'])}   (not heard: {r['not_heard']})")
    print(f"  chamade_tts_first_audio   {fmt(r['first_audio_ms'])}")
    lg = r["long"]
    print(f"  long say ({lg['chars']} chars): HTTP answer {lg['http_ms']} ms, first heard {lg['heard_ms']} ms, "
          f"gauge {lg['first_audio_ms']} ms, queued_ms {lg['queued_ms']}, stop dropped {lg['stop_dropped_ms']} ms")
    print(f"  chamade_tts_says_total {r['says_total_metric']}")
    trouble_line(r)


# ---------------------------------------------------------------------------------------------
# load


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def host_jiffies():
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    total = sum(v[:8])
    return total - idle, total


def snapshot(pid):
    return {"t": time.monotonic(), "server": cpu_seconds(pid), "client": time.process_time(), "host": host_jiffies()}


async def cpu_window(pid, t0, t1):
    """Snapshots at t0 and t1 (monotonic): the server's CPU in % of one core, this process's, and
    the whole host's (% of all its cores), over that window."""
    await sleep_until(t0)
    a = snapshot(pid)
    await sleep_until(t1)
    b = snapshot(pid)
    dt = b["t"] - a["t"]
    busy, total = (b["host"][0] - a["host"][0]), (b["host"][1] - a["host"][1])
    return {"window_s": round(dt, 2), "server_cpu_s": b["server"] - a["server"],
            "client_cpu_percent": round(100 * (b["client"] - a["client"]) / dt, 1),
            "host_cpu_percent": round(100 * busy / total, 1) if total else None}


async def poll_gauges(server, http, state, stop):
    """Every second until `stop` is set: the max of chamade_stt_lag_ms, of chamade_stt_recognizers
    and of the server's resident memory."""
    while not stop.is_set():
        try:
            m = await scrape(http)
            state["lag_ms_max"] = max(state["lag_ms_max"], m.get("chamade_stt_lag_ms", 0))
            state["recognizers_max"] = max(state["recognizers_max"], m.get("chamade_stt_recognizers", 0))
            state["rss_mb_max"] = max(state["rss_mb_max"], server.rss_mb())
        except (httpx.HTTPError, OSError, RuntimeError) as e:
            state["poll_errors"] += 1
            state["last_error"] = repr(e)
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            pass


async def load_row(args, n, stt):
    rng = random.Random(args.seed * 1000 + n)
    server = start_server(args, stt)
    calls, talkers, listeners = [], [], []
    try:
        for k in range(n):
            meeting = meeting_url(f"load-{n}-{k}")
            talker, listener = join(server, meeting, f"Talker {k + 1}"), join(server, meeting, f"Listener {k + 1}")
            calls += [talker, listener]
            talkers.append(await Stream.open(server, talker))
            listeners.append(await Stream.open(server, listener))
        programs = [Program(first=k % FIXTURES + 1, seconds=args.seconds) for k in range(n)]
        expected = sum(len(p.clips) for p in programs)
        offsets = [rng.uniform(0, 1) for _ in range(n)]
        base = time.monotonic() + 0.5
        # Every talker talks from base + 1 s at the latest until base + seconds at the earliest.
        window = (base + 1 + min(2.0, 0.1 * args.seconds), base + args.seconds)

        def lines():
            return sum(len(l.timed("call_transcript", participant_id=t.call["participant_id"]))
                       for t, l in zip(talkers, listeners))

        async with http_client(server) as http:
            gauges = {"lag_ms_max": 0.0, "recognizers_max": 0.0, "rss_mb_max": 0.0, "poll_errors": 0}
            stop = asyncio.Event()
            poller = asyncio.create_task(poll_gauges(server, http, gauges, stop))
            cpu = asyncio.create_task(cpu_window(server.proc.pid, *window))
            await asyncio.gather(*(t.send_paced(p.pcm, base + o, chunk_ms=args.chunk_ms)
                                   for t, p, o in zip(talkers, programs, offsets)))
            played = all(await asyncio.gather(*(t.played(timeout=60) for t in talkers)))
            if stt != "none":
                await settle(lines, quiet=4, cap=20)
            stop.set()
            await poller
            cpu = await cpu
            final = await scrape(http)
        for s in talkers + listeners:
            await s.close()
        trouble = server_trouble(server)
    finally:
        hang_up(server, calls)
        server.stop()

    got = lines()
    row = {
        "talkers": n, "stt": stt, **{k: v for k, v in cpu.items() if k != "server_cpu_s"},
        "cpu_percent": round(100 * cpu["server_cpu_s"] / cpu["window_s"], 1),
        "cpu_ms_per_talker_s": round(1000 * cpu["server_cpu_s"] / cpu["window_s"] / n, 2),
        "late_ticks": int(final.get("chamade_late_ticks_total", 0)),
        "dropped_ms": int(final.get("chamade_stt_dropped_ms_total", 0)),
        "lag_ms_max": int(gauges["lag_ms_max"]), "recognizers_max": int(gauges["recognizers_max"]),
        "rss_mb_max": round(gauges["rss_mb_max"]),
        "lines": got, "expected": expected, "utterances": int(final.get("chamade_stt_utterances_total", 0)),
        "stt_audio_s": round(final.get("chamade_stt_audio_ms_total", 0) / 1000, 1),
        "all_audio_played": played, "metric_poll_errors": gauges["poll_errors"], "server_trouble": trouble,
    }
    if stt != "none":
        row["sustained"] = (row["late_ticks"] == 0 and row["dropped_ms"] == 0 and row["lag_ms_max"] < 3000
                            and got >= 0.9 * expected and trouble is None)
    return row


async def guarded_row(args, n, stt):
    """load_row, or a row that says what went wrong (the other rows still run)."""
    try:
        return await load_row(args, n, stt)
    except Exception as e:  # noqa: BLE001  (a benchmark of many rows reports a failed one)
        log(f"load: {n} talker(s), --stt {stt}: failed: {e!r}")
        return {"talkers": n, "stt": stt, "error": repr(e), "sustained": False if stt != "none" else None}


async def bench_load(args):
    rows = []
    for n in args.talkers:
        log(f"load: {n} talker(s), {args.seconds} s ...")
        rows.append(await guarded_row(args, n, "pocketsphinx"))
        log("load:", json.dumps(rows[-1]))
        await asyncio.sleep(1)
    baseline = None
    if not args.no_baseline:
        n = max(args.talkers)
        log(f"load: baseline, {n} talker(s), --stt none ...")
        baseline = await guarded_row(args, n, "none")
        log("load:", json.dumps(baseline))
    sustained = [r["talkers"] for r in rows if r["sustained"]]
    at_n = next((r for r in rows if baseline and r["talkers"] == baseline["talkers"]), None)
    ratio = (round(at_n["cpu_percent"] / baseline["cpu_percent"], 2)
             if at_n and baseline and at_n.get("cpu_percent") and baseline.get("cpu_percent") else None)
    return {"bench": "load", "binary": args.binary, "commit": commit(), "stt_workers": args.stt_workers,
            "seconds": args.seconds, "chunk_ms": args.chunk_ms, "seed": args.seed, "cores": os.cpu_count(),
            "rows": rows, "largest_sustained": max(sustained) if sustained else None,
            "baseline": baseline, "stt_cpu_ratio": ratio}


def print_load(r):
    print(f"recognition load, {r['seconds']} s per row ({r['binary']}, stt workers {r['stt_workers'] or 'default'}, "
          f"{r['cores']} cores)")
    print(f"  {'N':>3} {'cpu%':>6} {'ms/talker/s':>11} {'late':>5} {'dropped_ms':>10} {'lag_max_ms':>10} "
          f"{'lines/exp':>10} {'utt':>5} {'rss_mb':>6} {'client%':>7} {'host%':>6}  sustained")
    for row in r["rows"] + ([r["baseline"]] if r["baseline"] else []):
        if "error" in row:
            print(f"  {row['talkers']:>3} --stt {row['stt']}: FAILED: {row['error']}")
            continue
        verdict = {True: "yes", False: "NO"}.get(row.get("sustained"), "(baseline, --stt none)")
        print(f"  {row['talkers']:>3} {row['cpu_percent']:>6} {row['cpu_ms_per_talker_s']:>11} {row['late_ticks']:>5} "
              f"{row['dropped_ms']:>10} {row['lag_ms_max']:>10} {row['lines']:>4}/{row['expected']:<5} "
              f"{row['utterances']:>5} {row['rss_mb_max']:>6} {row['client_cpu_percent']:>7} {row['host_cpu_percent']:>6}  {verdict}")
        if row["server_trouble"]:
            print(f"      SERVER EXITED: {row['server_trouble']}")
    print(f"  largest sustained N: {r['largest_sustained']}")
    if r["stt_cpu_ratio"] is not None:
        print(f"  CPU with STT / without at N={r['baseline']['talkers']}: {r['stt_cpu_ratio']}")


# ---------------------------------------------------------------------------------------------


def talker_list(text):
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("talker counts are 1 or more")
    return values


def main():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--binary", default=default_binary(), help="chamade binary (default: release if built, else debug)")
    common.add_argument("--stt-workers", type=int, help="passed to serve as --stt-workers (default: the server's)")
    common.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="bench", required=True)
    p = sub.add_parser("latency", parents=[common], help="transcript latency after the end of speech")
    p.add_argument("--utterances", type=int, default=24, help="fixtures streamed, cycled (default 24)")
    p = sub.add_parser("tts", parents=[common], help="say: HTTP answer and first audio heard")
    p.add_argument("--says", type=int, default=20, help="short says, one at a time (default 20)")
    p = sub.add_parser("load", parents=[common], help="talkers recognized in real time")
    p.add_argument("--talkers", type=talker_list, default=[1, 2, 4, 8, 12, 16, 20],
                   help="comma-separated talker counts, one fresh server each (default 1,2,4,8,12,16,20)")
    p.add_argument("--seconds", type=float, default=30, help="audio each talker streams per row (whole fixtures)")
    p.add_argument("--chunk-ms", type=int, default=20, help="piece of audio a talker sends at a time")
    p.add_argument("--seed", type=int, default=1, help="of the talkers' start offsets")
    p.add_argument("--no-baseline", action="store_true", help="skip the --stt none row")
    args = parser.parse_args()

    args.binary = os.path.abspath(args.binary)
    if not os.access(args.binary, os.X_OK):
        parser.error(f"no executable {args.binary}")
    warn_if_stale(args.binary)
    bench, show = {"latency": (bench_latency, print_latency), "tts": (bench_tts, print_tts),
                   "load": (bench_load, print_load)}[args.bench]
    result = asyncio.run(bench(args))
    if args.json:
        print(json.dumps(result))
    else:
        show(result)


if __name__ == "__main__":
    main()
