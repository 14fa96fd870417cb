"""SPEC §10: three `chamade serve` nodes and one real Redis server on 127.0.0.1 (free ports), started
here. Calls created through any node land on the room's owner; agents of one room connected through
different nodes hear each other; concurrent creates of one room through three nodes give one owner;
`GET /api/calls` and `/api/events` cover every node; a SIGKILLed node's calls end with
`bridge_disconnected` on the key's events within the lease and the room is re-created on a live
node; Redis stopped and restarted: existing calls carry on, new rooms get 503 and then work again;
an inbound SIP call on one node rings, is listed and is refused through the others.
"""
import asyncio
import concurrent.futures
import hashlib
import json
import os
import signal
import socket
import subprocess
import time

import pytest
import websockets

from conftest import KEY1, KEY2, Server, api, new_meeting, record, recv_json, run
from rtp_peers import UdpCollector
from sip_peers import Sipp, sip_address
from test_websocket import band_amplitude, sine

LEASE_S = 3.0  # ClusterConfiguration.leaseMilliseconds
HEARTBEAT_S = 1.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    """A redis-server of its own (no persistence: a restart loses everything, the hard case)."""

    def __init__(self):
        self.port = free_port()
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            if subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True).stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)

    def __call__(self, *args):
        out = subprocess.run(["redis-cli", "-p", str(self.port), "--raw", *args], capture_output=True, text=True, check=True)
        return out.stdout.rstrip("\n")

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"


class Cluster:
    def __init__(self, redis, ids=("na", "nb", "nc"), extra=None):
        self.redis = redis
        self.nodes = {}
        try:
            for i in ids:
                self.nodes[i] = Server("--api-key", KEY1, "--api-key", KEY2, "--cluster", redis.url, "--node-id", i,
                                       *((extra or {}).get(i, [])))
            self.wait_alive(set(ids))
        except BaseException:
            self.stop()
            raise

    def __getitem__(self, i):
        return self.nodes[i]

    def alive(self, via):
        r = api(self.nodes[via], "GET", "/api/cluster")
        assert r.status_code == 200, r.text
        return {n["id"] for n in r.json()["nodes"] if n["alive"]}

    def wait_alive(self, ids, timeout=10):
        # Every node knows every other (each learns the others at its heartbeat).
        deadline = time.time() + timeout
        while time.time() < deadline:
            if all(ids <= self.alive(i) for i in ids) and all(ids <= self.known(i) for i in ids):
                return
            time.sleep(0.1)
        raise TimeoutError(f"nodes {ids} not all alive")

    def known(self, via):
        # The nodes `via` saw at its last heartbeat: the calls it lists come from them.
        r = api(self.nodes[via], "GET", "/metrics")
        return {l.split('node="')[1].split('"')[0] for l in r.text.splitlines()
                if l.startswith("chamade_cluster_node_alive{") and float(l.split()[-1]) == 1}

    def stop(self):
        # Every node is stopped even if one's sanitizer report fails the test (then raised).
        errors = []
        for s in self.nodes.values():
            try:
                s.stop()
            except AssertionError as e:
                errors.append(e)
        if errors:
            raise errors[0]


def owner_of(call):
    # Call ids name their node: call_{node}_{random}.
    return call["call_id"].split("_")[1]


def create(node, meeting, key=KEY1, platform="discord", name="AI Agent"):
    return api(node, "POST", "/api/call", key=key, json={"platform": platform, "meeting_url": meeting, "agent_name": name})


def room_key(platform, meeting):
    return "chamade:room:" + hashlib.sha256(f"{platform}\n{meeting}".encode()).hexdigest()


@pytest.fixture(scope="module")
def redis():
    r = Redis()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def cluster(redis):
    c = Cluster(redis)
    yield c
    c.stop()


def test_calls_through_every_node_land_on_the_owner(cluster):
    """One room, a call created through each node: every call is on one node (its id says so, its
    text_ws_url is that node's), Redis names that node as the room's owner, and every route of the
    call answers the same through any node."""
    meeting = new_meeting()
    calls = []
    for via in ("na", "nb", "nc"):
        r = create(cluster[via], meeting)
        assert r.status_code == 200, r.text
        calls.append(r.json())
    owners = {owner_of(c) for c in calls}
    assert len(owners) == 1, calls
    owner = owners.pop()
    assert cluster.redis("GET", room_key("discord", meeting)) == owner
    for c in calls:
        assert c["text_ws_url"].startswith(cluster[owner].ws + "/api/call/"), c["text_ws_url"]
        assert c["room_id"] == calls[0]["room_id"]
    for via in ("na", "nb", "nc"):
        for c in calls:
            r = api(cluster[via], "GET", f"/api/call/{c['call_id']}")
            assert r.status_code == 200 and r.json()["call_id"] == c["call_id"], r.text
            assert api(cluster[via], "GET", f"/api/call/{c['call_id']}", key=KEY2).status_code == 404
        # Another route, forwarded with its body: chat (200) and a wrong body (400 from the owner).
        assert api(cluster[via], "POST", f"/api/call/{calls[0]['call_id']}/chat", json={"text": "hi"}).status_code == 200
        r = api(cluster[via], "POST", f"/api/call/{calls[0]['call_id']}/chat", json={"text": ""})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_text", r.text
        r = api(cluster[via], "POST", f"/api/call/{calls[0]['call_id']}/dtmf", json={"digits": "1"})
        assert r.status_code == 409 and r.json()["error"]["code"] == "no_leg", r.text
    # A call id naming an unknown node, and one of a live node that has no such call: 404.
    for via in ("na", "nb"):
        assert api(cluster[via], "GET", "/api/call/call_nowhere_0123456789abcdef01234567").status_code == 404
        assert api(cluster[via], "GET", f"/api/call/call_{owner}_0123456789abcdef01234567").status_code == 404
    # A stream opened on another node than the call's: 404 naming the node (text_ws_url is the way).
    other = next(i for i in ("na", "nb", "nc") if i != owner)

    async def stray():
        with pytest.raises(websockets.InvalidStatus) as e:
            await websockets.connect(f"{cluster[other].ws}/api/call/{calls[0]['call_id']}/stream?api_key={KEY1}")
        return e.value.response

    refused = run(stray())
    assert refused.status_code == 404 and f"node {owner}" in refused.body.decode(), refused.body
    # Ending through a node that does not own the call.
    r = api(cluster[other], "DELETE", f"/api/call/{calls[2]['call_id']}")
    assert r.status_code == 200 and r.json()["state"] == "ended", r.text
    assert api(cluster[owner], "GET", f"/api/call/{calls[2]['call_id']}").json()["state"] == "ended"
    for c in calls[:2]:
        api(cluster[owner], "DELETE", f"/api/call/{c['call_id']}")


def test_rooms_spread_over_the_least_loaded_nodes(cluster):
    """Nine new rooms through one node: each node gets some (the least-loaded node takes each, and
    rooms placed in the last two heartbeats count, as the nodes' reports lag)."""
    time.sleep(2.5 * HEARTBEAT_S)  # the reports no longer count the calls of the tests before
    calls = []
    for _ in range(9):
        r = create(cluster["na"], new_meeting())
        assert r.status_code == 200, r.text
        calls.append(r.json())
    per = {i: sum(owner_of(c) == i for c in calls) for i in ("na", "nb", "nc")}
    assert all(n >= 2 for n in per.values()), per
    time.sleep(HEARTBEAT_S * 1.5)
    nodes = {n["id"]: n for n in api(cluster["nb"], "GET", "/api/cluster").json()["nodes"]}
    for i in ("na", "nb", "nc"):
        assert nodes[i]["alive"] and nodes[i]["url"] == cluster[i].base, nodes[i]
        assert nodes[i]["rooms"] >= per[i] and nodes[i]["participants"] >= per[i], nodes
        assert {"id", "url", "alive", "rooms", "participants", "late_ticks"} <= set(nodes[i])
    for c in calls:
        assert api(cluster["nc"], "DELETE", f"/api/call/{c['call_id']}").status_code == 200


def test_agents_through_different_nodes_hear_each_other(cluster):
    """Two agents of one room whose calls were created through two different nodes: each opens its
    text_ws_url (the owner's), one speaks a 1 kHz tone and the other hears it."""
    meeting = new_meeting()
    a = create(cluster["na"], meeting).json()
    b = create(cluster["nc"], meeting).json()
    assert owner_of(a) == owner_of(b)

    async def go():
        wa = await websockets.connect(a["text_ws_url"] + f"?api_key={KEY1}", max_size=None)
        wb = await websockets.connect(b["text_ws_url"] + f"?api_key={KEY1}", max_size=None)
        # The speaker does not read, so it asks for no audio (its unread frames would hold up its close).
        for ws, receive in ((wa, False), (wb, True)):
            await recv_json(ws, "call_state")
            await ws.send(json.dumps({"type": "audio_config", "sample_rate": 16000, "receive": receive}))
            await recv_json(ws, "audio_config")
        # Sent at once: the owner's playout queue plays it in real time.
        await wa.send(sine(1000, 16000, 1.5).tobytes())
        heard, _ = await record(wb, 2.0)
        await wa.close()
        await wb.close()
        return heard

    heard = run(go())
    assert len(heard) > 16000, len(heard)
    assert band_amplitude(heard, 1000, 16000) > 0.2 * 32767, band_amplitude(heard, 1000, 16000)
    for c in (a, b):
        api(cluster["nb"], "DELETE", f"/api/call/{c['call_id']}")


def test_concurrent_creates_of_one_room_give_one_owner(cluster):
    """Three creates of one new room at once, one through each node, twenty times over: every time
    one owner, the one Redis names."""
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        for _ in range(20):
            meeting = new_meeting()
            results = list(pool.map(lambda via: create(cluster[via], meeting), ("na", "nb", "nc")))
            assert all(r.status_code == 200 for r in results), [r.text for r in results]
            calls = [r.json() for r in results]
            owners = {owner_of(c) for c in calls}
            assert len(owners) == 1, calls
            assert cluster.redis("GET", room_key("discord", meeting)) == owners.pop()
            assert len({c["room_id"] for c in calls}) == 1
            for c in calls:
                api(cluster["na"], "DELETE", f"/api/call/{c['call_id']}")


def test_calls_and_events_across_nodes(cluster):
    """KEY1's account events through one node see the states of calls on every node; `GET
    /api/calls` through any node lists every node's calls of the key, and none of another key's."""
    async def go():
        events = await websockets.connect(f"{cluster['na'].ws}/api/events?api_key={KEY1}")
        others = await websockets.connect(f"{cluster['nb'].ws}/api/events?api_key={KEY2}")
        calls = []
        # New rooms through the nodes in turn until every node owns one (placement follows load).
        vias = ["nb", "nc", "na"] * 6
        while {owner_of(c) for c in calls} != {"na", "nb", "nc"}:
            r = await asyncio.to_thread(create, cluster[vias.pop()], new_meeting())
            assert r.status_code == 200, r.text
            calls.append(r.json())
        mine = (await asyncio.to_thread(create, cluster["nc"], new_meeting(), KEY2)).json()
        seen = {}
        while len(seen) < len(calls):
            e = await recv_json(events, "call_state", timeout=5)
            seen.setdefault(e["call_id"], []).append(e["state"])
        assert set(seen) == {c["call_id"] for c in calls}
        assert all(s == ["active"] for s in seen.values()), seen
        for via in ("na", "nb", "nc"):
            listed = await asyncio.to_thread(api, cluster[via], "GET", "/api/calls")
            ids = {c["call_id"] for c in listed.json()["calls"]}
            assert {c["call_id"] for c in calls} <= ids, (via, ids)
            assert mine["call_id"] not in ids
        for c in calls:
            r = await asyncio.to_thread(api, cluster["na"], "DELETE", f"/api/call/{c['call_id']}")
            assert r.status_code == 200
        ended = set()
        while len(ended) < len(calls):
            e = await recv_json(events, "call_state", timeout=5)
            assert e["state"] == "ended", e
            ended.add(e["call_id"])
        # The other key heard only its own call.
        e = await recv_json(others, "call_state", timeout=5)
        assert e["call_id"] == mine["call_id"], e
        with pytest.raises(TimeoutError):
            await recv_json(others, "call_state", timeout=0.5)
        await asyncio.to_thread(api, cluster["nc"], "DELETE", f"/api/call/{mine['call_id']}", KEY2)
        await events.close()
        await others.close()

    run(go())


def test_killed_node_calls_end_and_rooms_come_back():
    """SIGKILL of the node that owns a room: within the lease (and a heartbeat) the key's account
    events on a surviving node get `call_error` `bridge_disconnected` and `call_state` ended for each
    of its calls; `GET` of such a call through a survivor says ended; a new create with the same
    meeting_url lands on a live node at once; the dead node leaves `GET /api/cluster`."""
    redis = Redis()
    c = Cluster(redis, ids=("ka", "kb", "kc"))
    try:
        meeting = new_meeting()
        first = create(c["ka"], meeting).json()
        victim = owner_of(first)
        survivors = [i for i in ("ka", "kb", "kc") if i != victim]
        second = create(c[survivors[0]], meeting).json()
        watcher = c[survivors[1]]

        async def go():
            events = await websockets.connect(f"{watcher.ws}/api/events?api_key={KEY1}")
            killed = time.monotonic()
            c[victim].proc.send_signal(signal.SIGKILL)
            got = {}
            while len(got) < 4:
                e = await recv_json(events, timeout=LEASE_S + 2 * HEARTBEAT_S + 2)
                got[(e["call_id"], e["type"])] = (e, time.monotonic() - killed)
            await events.close()
            return got

        got = run(go())
        for call in (first, second):
            err, t_err = got[(call["call_id"], "call_error")]
            state, _ = got[(call["call_id"], "call_state")]
            assert err["code"] == "bridge_disconnected" and err["message"], err
            assert state["state"] == "ended", state
            assert t_err <= LEASE_S + 2 * HEARTBEAT_S, t_err
        print(f"SIGKILL → bridge_disconnected: {t_err:.2f} s")
        t0 = time.monotonic()
        r = create(c[survivors[1]], meeting)
        took = time.monotonic() - t0
        assert r.status_code == 200, r.text
        assert owner_of(r.json()) in survivors
        print(f"re-create after the loss: {took * 1000:.0f} ms")
        for via in survivors:
            g = api(c[via], "GET", f"/api/call/{first['call_id']}")
            assert g.status_code == 200 and g.json()["state"] == "ended" and g.json()["ended_at"], g.text
            assert api(c[via], "GET", f"/api/call/{first['call_id']}", key=KEY2).status_code == 404
            assert api(c[via], "DELETE", f"/api/call/{first['call_id']}").status_code == 409
        assert victim not in {n["id"] for n in api(c[survivors[0]], "GET", "/api/cluster").json()["nodes"]}
        api(c[survivors[0]], "DELETE", f"/api/call/{r.json()['call_id']}")
    finally:
        c.nodes[victim].proc.wait(5)
        try:
            c.stop()
        finally:
            redis.stop()


def test_redis_lost_and_back():
    """Redis stops: a call's audio carries on, its routes answer through its node, a new room is
    503 `cluster_unavailable` (at once), a new call in a room the node holds is taken. Redis starts
    again empty: the nodes write their state again (leases, rooms, calls), new rooms work, and the
    call placed before is still the owner's and still in Redis's index."""
    redis = Redis()
    c = Cluster(redis, ids=("ra", "rb"))
    try:
        meeting = new_meeting()
        call = create(c["ra"], meeting).json()
        owner = owner_of(call)
        other = "rb" if owner == "ra" else "ra"

        async def hear_while(action):
            ws = await websockets.connect(call["text_ws_url"] + f"?api_key={KEY1}", max_size=None)
            await recv_json(ws, "call_state")
            await ws.send(json.dumps({"type": "audio_config", "sample_rate": 16000, "receive": True}))
            await recv_json(ws, "audio_config")
            await asyncio.to_thread(action)
            pcm, messages = await record(ws, 1.5)
            await ws.close()
            return pcm, messages

        def lose_redis():
            redis.stop()
            time.sleep(0.2)

        pcm, messages = run(hear_while(lose_redis))
        # Every 20 ms block kept coming (silence: nobody talks) and nothing ended the call.
        assert len(pcm) >= 16000 * 1.3, len(pcm)
        assert not [m for m in messages if m.get("type") in ("call_error", "call_state")], messages
        t0 = time.monotonic()
        r = create(c[other], new_meeting())
        assert r.status_code == 503 and r.json()["error"]["code"] == "cluster_unavailable", r.text
        assert time.monotonic() - t0 < 1.0
        r = create(c[owner], meeting)
        assert r.status_code == 200 and owner_of(r.json()) == owner, r.text
        late = r.json()
        assert api(c[owner], "GET", f"/api/call/{call['call_id']}").json()["state"] == "active"
        time.sleep(LEASE_S + HEARTBEAT_S)  # longer than a lease: nobody may be declared dead for it
        redis.start()
        deadline = time.monotonic() + 10
        while (r := create(c[other], new_meeting())).status_code != 200:
            assert r.status_code == 503, r.text
            assert time.monotonic() < deadline, r.text
            time.sleep(0.1)
        print(f"new rooms again {10 - (deadline - time.monotonic()):.2f} s after Redis came back")
        api(c[other], "DELETE", f"/api/call/{r.json()['call_id']}")
        c.wait_alive({"ra", "rb"})
        assert redis("GET", room_key("discord", meeting)) == owner
        indexed = redis("HKEYS", f"chamade:calls:{owner}").split("\n")
        assert call["call_id"] in indexed and late["call_id"] in indexed, indexed
        for x in (call, late):
            g = api(c[other], "GET", f"/api/call/{x['call_id']}")
            assert g.status_code == 200 and g.json()["state"] == "active", g.text
        # A create through the other node still finds the room on its owner.
        r = create(c[other], meeting)
        assert r.status_code == 200 and owner_of(r.json()) == owner, r.text
        for x in (call, late, r.json()):
            assert api(c[other], "DELETE", f"/api/call/{x['call_id']}").status_code == 200
    finally:
        try:
            c.stop()
        finally:
            if redis.proc.poll() is None:
                redis.stop()


def test_inbound_sip_rings_on_its_node_and_is_seen_everywhere(tmp_path):
    """Each node runs its own SIP user agent: SIPp calls the one node that has SIP on; the key's
    events on another node get `call_ringing`; a third node lists the ringing call and refuses it
    (sent on to its node): SIPp gets 603 (its scenario checks it)."""
    redis = Redis()
    c = Cluster(redis, ids=("sa", "sb", "sc"),
                extra={"sb": ["--sip", "127.0.0.1:0", "--sip-route", f"alice={KEY1}", "--sip-ring-timeout", "10"]})
    try:
        _, sip_port = sip_address(c["sb"])
        with UdpCollector() as peer:
            async def go():
                events = await websockets.connect(f"{c['sa'].ws}/api/events?api_key={KEY1}")
                from_user = f"caller{os.getpid()}cluster"
                with Sipp("inbound_refuse", str(tmp_path), remote=f"127.0.0.1:{sip_port}",
                          keys={"to_user": "alice", "from_user": from_user, "from_name": "",
                                "peer_rtp_port": peer.port, "te_pt": 101, "ptime": 20}) as sipp:
                    # Generous: SIPp's start and an ASan server on a loaded machine can take seconds.
                    ringing = await recv_json(events, "call_ringing", timeout=15)
                    call = ringing["call"]
                    assert owner_of(call) == "sb" and call["state"] == "ringing", call
                    assert call["direction"] == "inbound"
                    listed = await asyncio.to_thread(api, c["sc"], "GET", "/api/calls")
                    assert call["call_id"] in {x["call_id"] for x in listed.json()["calls"]}
                    r = await asyncio.to_thread(api, c["sc"], "POST", f"/api/call/{call['call_id']}/refuse")
                    assert r.status_code == 200 and r.json()["state"] == "refused", r.text
                    state = await recv_json(events, "call_state", timeout=10)
                    while state["call_id"] != call["call_id"] or state["state"] == "ringing":
                        state = await recv_json(events, "call_state", timeout=10)
                    assert state["state"] == "refused", state
                    await asyncio.to_thread(sipp.finish, 10)
                await events.close()

            run(go(), timeout=60)
    finally:
        try:
            c.stop()
        finally:
            redis.stop()
