"""SPEC §9 TLS: `--tls-cert/--tls-key` serve HTTPS and WSS only, checked with Python's `ssl` against a
self-signed certificate made by `openssl` here."""
import asyncio
import json
import socket
import ssl
import subprocess
import time

import httpx
import numpy as np
import pytest
import websockets

from conftest import KEY1, Server, api, new_call, recv_json, run
from test_websocket import band_amplitude, collect, sine


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    key, cert = d / "k.pem", d / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture(scope="module")
def tls_server(tls_files):
    cert, key = tls_files
    s = Server("--api-key", KEY1, "--tls-cert", str(cert), "--tls-key", str(key))
    s.context = ssl.create_default_context(cafile=str(cert))
    s.verify = s.context
    s.cert_path = cert
    yield s
    s.stop()


def test_listening_line_and_https_routes(tls_server):
    s = tls_server
    assert s.tls and s.base == f"https://127.0.0.1:{s.port}" and s.ws.startswith("wss://")
    r = httpx.get(s.base + "/healthz", verify=s.context, timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "ok"
    c = new_call(s, platform="discord")
    assert c["text_ws_url"] == f"wss://127.0.0.1:{s.port}/api/call/{c['call_id']}/stream"
    assert api(s, "GET", f"/api/call/{c['call_id']}").json()["state"] == "active"
    assert api(s, "GET", "/api/calls", key="chmd_wrong").status_code == 401
    # The certificate is the one given.
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as raw:
        with s.context.wrap_socket(raw, server_hostname="127.0.0.1") as t:
            der = t.getpeercert(binary_form=True)
    assert der == ssl.PEM_cert_to_DER_cert(s.cert_path.read_text())
    api(s, "DELETE", f"/api/call/{c['call_id']}")


def test_wss_audio_round_trip(tls_server):
    s = tls_server
    meeting = f"https://meet.example/tls/{time.time()}"
    a, b = (new_call(s, platform="discord", meeting=meeting) for _ in range(2))

    async def go():
        wa = await websockets.connect(a["text_ws_url"] + f"?api_key={KEY1}", ssl=s.context, max_size=None)
        wb = await websockets.connect(b["text_ws_url"], ssl=s.context, max_size=None, additional_headers={"X-API-Key": KEY1})
        for w in (wa, wb):
            assert (await recv_json(w, "call_state"))["state"] == "active"
        await wb.send(json.dumps({"type": "audio_config", "receive": True}))
        assert (await recv_json(wb, "audio_config"))["frame_bytes"] == 1920
        await wa.send(sine(1000, 48000, 2.0).tobytes())
        await wa.send(json.dumps({"type": "mark", "name": "done"}))
        frames, _ = await collect(wb, 1.8, frame_bytes=1920)
        assert len(frames) >= 80, len(frames)
        x = np.frombuffer(b"".join(frames[-50:]), dtype="<i2")
        full = 10 ** (-6 / 20) * 32767
        assert 20 * np.log10(band_amplitude(x, 1000, 48000) / full) > -1.5
        assert (await recv_json(wa, "mark", timeout=2))["name"] == "done"
        await wa.close()
        await wb.close()
    run(go())


def test_plain_http_and_ws_are_refused(tls_server):
    s = tls_server
    plain = f"http://127.0.0.1:{s.port}"
    try:
        r = httpx.get(plain + "/api/calls", headers={"X-API-Key": KEY1}, timeout=5)
    except httpx.TransportError:
        pass
    else:
        assert r.status_code >= 400 and "calls" not in r.text, (r.status_code, r.text[:200])

    c = new_call(s)

    async def go():
        with pytest.raises((websockets.InvalidHandshake, websockets.ConnectionClosed, OSError, asyncio.TimeoutError)):
            async with websockets.connect(f"ws://127.0.0.1:{s.port}/api/call/{c['call_id']}/stream?api_key={KEY1}",
                                          open_timeout=5):
                pass
    run(go())
    # A TLS client that does not trust the certificate is refused by the handshake.
    with pytest.raises(httpx.ConnectError):
        httpx.get(s.base + "/healthz", timeout=5, verify=ssl.create_default_context())
    # And the server is still fine.
    assert api(s, "GET", "/api/calls").status_code == 200
