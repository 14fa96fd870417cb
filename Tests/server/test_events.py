"""SPEC §3 account events: `GET /api/events` as a WebSocket, the key's calls' state changes only."""
import json
import time

import pytest
import websockets

from conftest import KEY1, KEY2, api, new_call, recv_json, run


def events_url(server, key=None):
    return f"{server.ws}/api/events" + (f"?api_key={key}" if key else "")


async def next_state(ws, timeout=5):
    m = await recv_json(ws, "call_state", timeout=timeout)
    assert isinstance(m.get("call_id"), str) and isinstance(m.get("state"), str), m
    return m["call_id"], m["state"]


def test_call_states_of_the_key_only(server):
    async def go():
        by_query = await websockets.connect(events_url(server, KEY1))
        by_header = await websockets.connect(events_url(server), additional_headers={"X-API-Key": KEY1})
        by_bearer = await websockets.connect(events_url(server), additional_headers={"Authorization": f"Bearer {KEY1}"})
        other = await websockets.connect(events_url(server), additional_headers={"X-API-Key": KEY2})
        mine = [by_query, by_header, by_bearer]

        c = new_call(server, platform="zoom")
        for ws in mine:
            assert await next_state(ws) == (c["call_id"], "active")
        assert api(server, "DELETE", f"/api/call/{c['call_id']}").status_code == 200
        for ws in mine:
            assert await next_state(ws) == (c["call_id"], "ended")

        # The other key's socket saw none of that: its first event is its own call's.
        d = new_call(server, platform="zoom", key=KEY2, meeting=c["meeting_url"])  # same room, other key
        assert await next_state(other) == (d["call_id"], "active")
        # ...and KEY1's sockets do not see KEY2's call: their next event is KEY1's next call.
        e = new_call(server, platform="zoom")
        for ws in mine:
            assert await next_state(ws) == (e["call_id"], "active")
        api(server, "DELETE", f"/api/call/{d['call_id']}", key=KEY2)
        assert await next_state(other) == (d["call_id"], "ended")
        api(server, "DELETE", f"/api/call/{e['call_id']}")
        for ws in mine:
            assert await next_state(ws) == (e["call_id"], "ended")
        for ws in mine + [other]:
            await ws.close()
    run(go())


def test_event_message_shape(server):
    async def go():
        async with websockets.connect(events_url(server, KEY1)) as ws:
            c = new_call(server, platform="discord")
            m = await recv_json(ws, "call_state")
            assert {k: m[k] for k in ("type", "call_id", "state")} == {"type": "call_state", "call_id": c["call_id"], "state": "active"}
            api(server, "DELETE", f"/api/call/{c['call_id']}")
            m = await recv_json(ws, "call_state")
            assert {k: m[k] for k in ("type", "call_id", "state")} == {"type": "call_state", "call_id": c["call_id"], "state": "ended"}
    run(go())


def test_events_refused_before_the_upgrade_without_a_good_key(server):
    async def go():
        for url, headers in [(events_url(server, "chmd_wrong"), None), (events_url(server), None),
                             (events_url(server), {"X-API-Key": "chmd_wrong"}),
                             (events_url(server), {"Authorization": "Bearer chmd_wrong"})]:
            with pytest.raises(websockets.InvalidStatus) as e:
                async with websockets.connect(url, additional_headers=headers):
                    pass
            assert e.value.response.status_code == 401, (url, headers)
            assert json.loads(e.value.response.body)["error"]["code"] == "unauthorized"
    run(go())


def test_events_socket_survives_many_calls(server):
    """Every state change arrives, in order, for a burst of calls."""
    async def go():
        async with websockets.connect(events_url(server, KEY1)) as ws:
            meeting = f"https://meet.example/burst/{time.time()}"
            calls = [new_call(server, platform="teams", meeting=meeting) for _ in range(20)]
            for c in calls:
                api(server, "DELETE", f"/api/call/{c['call_id']}")
            seen = [await next_state(ws) for _ in range(40)]
            for c in calls:
                mine = [s for cid, s in seen if cid == c["call_id"]]
                assert mine == ["active", "ended"], (c["call_id"], mine)
    run(go())
