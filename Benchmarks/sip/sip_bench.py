#!/usr/bin/env python3
"""SIP measurements of `chamade serve` (issue 10), against SIPp on 127.0.0.1, same sitting:

  setup       call set-up times: inbound INVITE -> 180 and accept -> 200 -> first RTP from the leg;
              outbound POST /api/call -> INVITE at the peer -> 200 -> active -> first RTP.
  cps R N     SIPp UAC at R calls/s, N calls (INVITE -> 180 -> accepted by a bot on /api/events ->
              200 -> ACK -> 200 ms -> BYE): failed calls, SIPp's rtd, the server's CPU.
  agents N S  the baseline of `concurrent`: n rooms of two agents, no SIP, same sitting.
  concurrent N S
              N outbound SIP calls to a SIPp UAS that echoes RTP, each with an agent streaming both
              ways (`chamade loadtest --platform sip`) for S seconds: lost frames, late ticks, round
              trip latency, the server's CPU per call.

Prints one JSON object per measurement. Needs a release build (`swift build -c release`)."""
import asyncio, json, os, re, signal, socket, statistics, subprocess, sys, tempfile, threading, time

import httpx
import websockets

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.path.join(ROOT, ".build/release/chamade")
HERE = os.path.dirname(os.path.abspath(__file__))
KEY = "chmd_bench_key"


def free_port(kind=socket.SOCK_DGRAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CPUSampler(threading.Thread):
    """A process's CPU over a run of `seconds`, from 3 s after its start (past the set-up) to 3 s
    before its end: `fraction()` of one core, once the run is over."""

    def __init__(self, pid, seconds):
        super().__init__(daemon=True)
        self.pid, self.seconds = pid, seconds
        self.start()

    def run(self):
        time.sleep(3)
        self.cpu0, self.t0 = cpu_seconds(self.pid), time.monotonic()
        time.sleep(self.seconds - 6)
        self.cpu1, self.t1 = cpu_seconds(self.pid), time.monotonic()

    def fraction(self):
        self.join()
        return (self.cpu1 - self.cpu0) / (self.t1 - self.t0)


class Server:
    def __init__(self, *extra):
        self.proc = subprocess.Popen(
            [BINARY, "serve", "--port", "0", "--api-key", KEY, "--sip", "127.0.0.1:0", "--sip-route", f"*={KEY}",
             "--rtp-ports", "30000-39999", *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.url = self.sip_port = None
        deadline = time.time() + 20
        while (self.url is None or self.sip_port is None) and time.time() < deadline:
            line = self.proc.stdout.readline()
            if m := re.search(r"listening on (http://\S+)", line):
                self.url = m.group(1)
            if m := re.search(r"sip listening on udp:[\d.]+:(\d+)", line):
                self.sip_port = int(m.group(1))
        assert self.url and self.sip_port, "server did not start"
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
        self.http = httpx.Client(base_url=self.url, headers={"X-API-Key": KEY}, timeout=10)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)


class AcceptBot(threading.Thread):
    """Accepts every ringing call of the key as soon as `call_ringing` arrives on /api/events
    (with `stream`, after opening the call's stream and talking into it); `accept_ms` holds each
    accept's HTTP round trip, `accepted_at` when each was sent."""

    def __init__(self, server, stream=False):
        super().__init__(daemon=True)
        self.server, self.stream = server, stream
        self.accepted_at = []
        self.accept_ms, self.errors = [], 0
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()

    def run(self):
        self.loop.run_until_complete(self.main())

    async def main(self):
        ws_url = self.server.url.replace("http", "ws") + f"/api/events?api_key={KEY}"
        async with httpx.AsyncClient(base_url=self.server.url, headers={"X-API-Key": KEY}, timeout=10) as http, \
                websockets.connect(ws_url, max_size=None) as ws:
            self.ready.set()
            async for text in ws:
                event = json.loads(text)
                if event.get("type") == "call_ringing":
                    call_id = event["call"]["call_id"]
                    if self.stream:
                        # The agent opens its stream while the call rings and talks from then on.
                        opened = threading.Event()
                        threading.Thread(target=stream_tone, args=(self.server, call_id, 2.0, opened), daemon=True).start()
                        await asyncio.to_thread(opened.wait, 5)
                    asyncio.create_task(self.accept(http, call_id))

    async def accept(self, http, call_id):
        t0 = time.monotonic()
        r = await http.post(f"/api/call/{call_id}/accept")
        if r.status_code != 200:
            self.errors += 1
            return
        self.accept_ms.append((time.monotonic() - t0) * 1000)
        self.accepted_at.append(t0)


def wait_bound(port, timeout=10):
    """Until something (SIPp) has bound UDP `port`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing bound port {port}")


def sipp(args, cwd, **kw):
    return subprocess.Popen(["sipp", *args, "-i", "127.0.0.1", "-nostdin", "-timeout", "120"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def percentiles(xs):
    xs = sorted(xs)
    if not xs:
        return {}
    pick = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]
    return {"p50": round(statistics.median(xs), 2), "p99": round(pick(0.99), 2), "max": round(xs[-1], 2), "n": len(xs)}


def first_packet(sock, timeout=5):
    sock.settimeout(timeout)
    sock.recvfrom(2048)
    return time.monotonic()


def measure_setup(n=30):
    """Inbound: a Python UAC in SIPp's place would be a hand-made SIP client, so SIPp sends the
    INVITEs (its rtd gives INVITE -> 180 and INVITE -> 200) while the bot accepts and a Python
    socket, the offer's media address, times the first RTP packet after the accept. Outbound: the
    API call, SIPp's UAS answering at once, the WebSocket's `active`, the first RTP."""
    server = Server()
    out = {}
    try:
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind(("127.0.0.1", 0))
        media_port = rtp.getsockname()[1]
        media_ms = []

        bot = AcceptBot(server, stream=True)
        bot.start()
        bot.ready.wait(10)
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(n):
                # One call at a time: an agent streams a tone into the call once it is active.
                p = sipp(["-sf", os.path.join(HERE, "uac_cps.xml"), f"127.0.0.1:{server.sip_port}", "-m", "1",
                          "-key", "service", "alice", "-key", "rtp_port", str(media_port),
                          "-p", str(free_port()), "-trace_rtt", "-rtt_freq", "1"], tmp)
                t_media = first_packet(rtp)
                t_accept = bot.accepted_at[i]
                media_ms.append((t_media - t_accept) * 1000)
                p.wait(30)
                rtp.settimeout(0.3)
                try:
                    while True:
                        rtp.recvfrom(2048)
                except socket.timeout:
                    pass
            rtt = parse_rtt(tmp)
        out["inbound"] = {"invite_to_180_ms": percentiles(rtt["ringing"]), "ringing_to_200_ms_with_bot": percentiles(rtt["answered"]),
                          "accept_http_ms": percentiles(bot.accept_ms), "accept_to_first_rtp_ms": percentiles(media_ms)}
        out["outbound"] = measure_outbound(server, n)
    finally:
        server.stop()
    return out


def stream_tone(server, call_id, seconds, opened=None):
    async def go():
        url = server.url.replace("http", "ws") + f"/api/call/{call_id}/stream?api_key={KEY}"
        async with websockets.connect(url, max_size=None) as ws:
            if opened:
                opened.set()
            tone = b"".join(int(8000 * (1 if (k // 4) % 2 else -1)).to_bytes(2, "little", signed=True) for k in range(160))
            for _ in range(int(seconds * 50)):
                await ws.send(tone)
                await asyncio.sleep(0.02)
    try:
        asyncio.run(go())
    except Exception as e:
        print("stream:", repr(e), file=sys.stderr)


def parse_rtt(folder):
    rtt = {"ringing": [], "answered": []}
    for name in os.listdir(folder):
        if name.endswith("_rtt.csv"):
            for line in open(os.path.join(folder, name)):
                parts = line.strip().split(";")
                # Date_ms;response_time_ms;rtd_no (SIPp 3.6.1: whole milliseconds).
                if len(parts) >= 3 and parts[2] in rtt:
                    rtt[parts[2]].append(float(parts[1]))
    return rtt


def measure_outbound(server, n):
    port = free_port()
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    with tempfile.TemporaryDirectory() as tmp:
        uas = sipp(["-sf", os.path.join(HERE, "uas_answer.xml"), "-p", str(port), "-key", "rtp_port", str(rtp.getsockname()[1])], tmp)
        wait_bound(port)
        to_active, to_media = [], []
        for i in range(n):
            t0 = time.monotonic()
            call = server.http.post("/api/call", json={"platform": "sip", "meeting_url": f"sip:svc{i}@127.0.0.1:{port}"}).json()

            async def until_active():
                url = server.url.replace("http", "ws") + f"/api/call/{call['call_id']}/stream?api_key={KEY}"
                async with websockets.connect(url, max_size=None) as ws:
                    while True:
                        m = json.loads(await ws.recv())
                        if m.get("type") == "call_error":
                            raise RuntimeError(f"outbound call failed: {m}")
                        if m.get("type") == "call_state" and m["state"] == "active":
                            t1 = time.monotonic()
                            tone = b"".join(int(8000 * (1 if (k // 4) % 2 else -1)).to_bytes(2, "little", signed=True) for k in range(160))
                            await ws.send(tone * 5)
                            return t1
            t1 = asyncio.run(until_active())
            t2 = first_packet(rtp)
            to_active.append((t1 - t0) * 1000)
            to_media.append((t2 - t1) * 1000)
            server.http.delete(f"/api/call/{call['call_id']}")
            # Drain the rest of this call's packets.
            rtp.settimeout(0.1)
            try:
                while True:
                    rtp.recvfrom(2048)
            except socket.timeout:
                pass
        uas.kill()
    return {"post_to_active_ms": percentiles(to_active), "active_to_first_rtp_ms": percentiles(to_media)}


def measure_cps(rate, count):
    server = Server()
    try:
        bot = AcceptBot(server)
        bot.start()
        bot.ready.wait(10)
        media = free_port()
        with tempfile.TemporaryDirectory() as tmp:
            cpu0, t0 = cpu_seconds(server.proc.pid), time.monotonic()
            p = sipp(["-sf", os.path.join(HERE, "uac_cps.xml"), f"127.0.0.1:{server.sip_port}", "-r", str(rate),
                      "-m", str(count), "-l", str(rate * 2), "-key", "service", "alice", "-key", "rtp_port", str(media),
                      "-p", str(free_port()), "-trace_stat", "-fd", "1", "-trace_rtt", "-rtt_freq", "50"], tmp)
            out, _ = p.communicate(timeout=count / rate + 120)
            cpu = cpu_seconds(server.proc.pid) - cpu0
            elapsed = time.monotonic() - t0
            stat = [f for f in os.listdir(tmp) if f.endswith("_.csv")]
            rtt = parse_rtt(tmp)
            failed = successful = None
            if stat:
                rows = [l.strip().split(";") for l in open(os.path.join(tmp, stat[0]))]
                header, last = rows[0], rows[-1]
                failed = int(last[header.index("FailedCall(C)")])
                successful = int(last[header.index("SuccessfulCall(C)")])
        metrics = server.http.get("/metrics").text
        return {"rate": rate, "calls": count, "successful": successful, "failed": failed, "sipp_exit": p.returncode,
                "accept_errors": bot.errors, "elapsed_s": round(elapsed, 1), "server_cpu_s": round(cpu, 2),
                "server_cpu_ms_per_call": round(cpu * 1000 / count, 2),
                "invite_to_180_ms": percentiles(rtt["ringing"]), "ringing_to_200_ms": percentiles(rtt["answered"]),
                "late_ticks": metric(metrics, "chamade_late_ticks_total")}
    finally:
        server.stop()


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    return None


def measure_agents_only(n, seconds):
    """The baseline of `concurrent`: the same number of participants (2n) without SIP, n rooms of two
    agents at 8 kHz streaming both ways."""
    server = Server()
    try:
        cpu = CPUSampler(server.proc.pid, seconds)
        lt = subprocess.run([BINARY, "loadtest", "--url", server.url, "--api-key", KEY, "--agents", str(2 * n),
                             "--rooms", str(n), "--rate", "8000", "--seconds", str(seconds), "--json"],
                            capture_output=True, text=True, timeout=seconds + 120)
        report = json.loads(lt.stdout)
        report["server_cpu_percent"] = round(100 * cpu.fraction(), 1)
        return report
    finally:
        server.stop()


def measure_concurrent(n, seconds):
    server = Server()
    port = free_port()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            uas = sipp(["-sn", "uas", "-p", str(port), "-mp", str(free_port()), "-rtp_echo"], tmp)
            wait_bound(port)
            cpu = CPUSampler(server.proc.pid, seconds)
            lt = subprocess.run([BINARY, "loadtest", "--url", server.url, "--api-key", KEY, "--agents", str(n),
                                 "--rooms", str(n), "--rate", "8000", "--seconds", str(seconds), "--platform", "sip",
                                 "--meeting-url", f"sip:echo{{room}}@127.0.0.1:{port}", "--json"],
                                capture_output=True, text=True, timeout=seconds + 120)
            uas_cpu = cpu_seconds(uas.pid)
            uas.kill()
        report = json.loads(lt.stdout)
        report["server_cpu_percent"] = round(100 * cpu.fraction(), 1)
        report["server_cpu_us_per_call_per_20ms"] = round(cpu.fraction() / n * 20_000, 1)
        report["sipp_cpu_s"] = round(uas_cpu, 1)
        return report
    finally:
        server.stop()


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "setup"
    if what == "setup":
        print(json.dumps(measure_setup(int(sys.argv[2]) if len(sys.argv) > 2 else 30)))
    elif what == "cps":
        print(json.dumps(measure_cps(int(sys.argv[2]), int(sys.argv[3]))))
    elif what == "agents":
        print(json.dumps(measure_agents_only(int(sys.argv[2]), float(sys.argv[3]))))
    elif what == "concurrent":
        print(json.dumps(measure_concurrent(int(sys.argv[2]), float(sys.argv[3]))))
