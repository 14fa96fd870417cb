"""Start-up and shutdown of `chamade serve`: key handling, SIGTERM ending every call cleanly."""
import asyncio
import os
import signal

import pytest
import websockets

from conftest import Server, api, new_call, recv_json, run


def test_generated_key_printed_once_and_env_keys():
    s = Server()
    try:
        keys = [l.split()[-1] for l in s.lines if l.startswith("api key: ")]
        assert len(keys) == 1 and keys[0].startswith("chmd_")
        assert api(s, "GET", "/api/calls", key=keys[0]).status_code == 200
        assert api(s, "GET", "/api/calls", key="chmd_other").status_code == 401
    finally:
        s.stop()
    env = dict(os.environ, CHAMADE_API_KEYS="chmd_a, chmd_b")
    s = Server(env=env)
    try:
        assert not any(l.startswith("api key: ") for l in s.lines)
        assert api(s, "GET", "/api/calls", key="chmd_b").status_code == 200
    finally:
        s.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_ends_calls_cleanly(sig):
    s = Server("--api-key", "chmd_k")
    c = new_call(s, key="chmd_k")

    async def go():
        ws = await websockets.connect(f"{s.ws}/api/call/{c['call_id']}/stream?api_key=chmd_k")
        assert (await recv_json(ws, "call_state"))["state"] == "active"
        s.proc.send_signal(sig)
        assert (await recv_json(ws, "call_state", timeout=5))["state"] == "ended"
        with pytest.raises(websockets.ConnectionClosed) as e:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert e.value.rcvd is not None and e.value.rcvd.code == 1000
    try:
        run(go())
        assert s.proc.wait(10) == 0
    finally:
        s.stop()


def test_bad_usage_exits_two():
    import subprocess
    from conftest import BINARY
    r = subprocess.run([BINARY, "serve", "--port", "99999"], capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
