"""SPEC §3: `GET /openapi.json` is the OpenAPI 3.1 description of the API, and the server conforms to it.

The document's source of truth is Sources/ChamadeServer/Resources/openapi.json. These tests check that
the server serves exactly that file, that it is a valid OpenAPI 3.1 document covering every route of
§3, and then let Schemathesis (property-based testing from the document) loose on a live server:
no 5xx ever, every status code, content type and body as documented, schema-violating input
rejected, undocumented methods answered 405, auth enforced. Settings and the disabled checks (each
with its reason) are in schemathesis.toml beside this file; schemathesis_hooks.py keeps generated
RTP/SIP targets on the loopback.

Knobs (environment): CHAMADE_FUZZ_EXAMPLES (test cases per operation and phase, default 25),
CHAMADE_FUZZ_SEED (default 1; "random" for a fresh seed each run).
"""
import json
import os
import random
import subprocess
import sys
import time

import httpx
import pytest

from conftest import KEY1, ROOT, Server

HERE = os.path.dirname(os.path.abspath(__file__))
DOCUMENT = os.path.join(ROOT, "Sources", "ChamadeServer", "Resources", "openapi.json")
CONFIG = os.path.join(HERE, "schemathesis.toml")
# Hard bound of the Schemathesis run; the whole test stays under 2 minutes on the 2-core machine.
RUN_TIMEOUT = 100


def load_document():
    with open(DOCUMENT, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def fuzz_server():
    # SIP off (CHAMADE_SIP, the variable of --sip): a generated `sip` call must never dial out.
    s = Server("--api-key", KEY1, env={**os.environ, "CHAMADE_SIP": "off"})
    yield s
    s.stop()


def test_document_is_valid_openapi_31():
    from openapi_spec_validator import validate
    doc = load_document()
    assert doc["openapi"] == "3.1.0"
    validate(doc)


def test_document_describes_every_route_of_the_contract():
    doc = load_document()
    routes = {(m.upper(), p) for p, item in doc["paths"].items() for m in item if m in ("get", "post", "delete")}
    expected = {
        ("POST", "/api/call"), ("GET", "/api/call/{id}"), ("DELETE", "/api/call/{id}"), ("GET", "/api/calls"),
        ("POST", "/api/call/{id}/chat"), ("POST", "/api/call/{id}/say"), ("POST", "/api/call/{id}/stop-speaking"),
        ("POST", "/api/call/{id}/dtmf"), ("POST", "/api/call/{id}/typing"), ("POST", "/api/call/{id}/accept"),
        ("POST", "/api/call/{id}/refuse"), ("GET", "/api/call/{id}/stream"), ("GET", "/api/account"),
        ("GET", "/api/voice-configs"), ("GET", "/api/events"), ("GET", "/healthz"), ("GET", "/metrics"),
        ("GET", "/openapi.json"), ("GET", "/api/cluster"),
    }
    assert routes == expected
    public = {("GET", "/healthz"), ("GET", "/openapi.json")}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            where = (method.upper(), path)
            responses = op["responses"]
            assert "431" in responses, where
            if where in public:
                assert op["security"] == [], where
            else:
                assert "security" not in op or {"apiKey": []} in op["security"], where
                assert "401" in responses, where
            if "requestBody" in op:
                assert "413" in responses, where
            for status, response in responses.items():
                if status.startswith(("4", "5")) and where != ("GET", "/healthz"):
                    ref = response.get("$ref") or response["content"]["application/json"]["schema"]["$ref"]
                    assert ref.rsplit("/", 1)[-1] in ("Error", "Unauthorized", "CallNotFound", "BodyTooLarge",
                                                      "HeadersTooLarge"), (where, status)


def test_served_document_is_the_repository_file(fuzz_server):
    want = load_document()
    for path in ["/openapi.json", "/openapi.json/"]:
        # No key needed.
        r = httpx.get(fuzz_server.base + path, timeout=10)
        assert r.status_code == 200, (path, r.status_code, r.text[:200])
        assert r.headers["content-type"].split(";")[0].strip() == "application/json", path
        assert r.json() == want, path


def test_schemathesis_finds_no_deviation_from_the_document(fuzz_server, tmp_path):
    examples = os.environ.get("CHAMADE_FUZZ_EXAMPLES", "25")
    seed = os.environ.get("CHAMADE_FUZZ_SEED", "1")
    if seed == "random":
        seed = str(random.randrange(1 << 31))
    cmd = [
        sys.executable, "-m", "schemathesis.cli", "--no-color", "--config-file", CONFIG,
        "run", DOCUMENT, "--url", fuzz_server.base,
        "--max-examples", examples, "--seed", seed,
        # Report every failing operation in one run, not just the first failure of each.
        "--continue-on-failure",
    ]
    env = {
        **os.environ,
        "CHAMADE_FUZZ_KEY": KEY1,
        "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
        "PYTHONPATH": os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")])),
    }
    started = time.monotonic()
    try:
        # In a scratch directory, so nothing it writes lands in the work tree.
        run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        pytest.fail(f"schemathesis ran past {RUN_TIMEOUT} s (seed {seed}):\n{out[-20000:]}")
    elapsed = time.monotonic() - started
    assert fuzz_server.proc.poll() is None, "the server died under the fuzzer:\n" + "\n".join(fuzz_server.lines[-50:])
    if run.returncode != 0:
        pytest.fail(
            f"schemathesis exit {run.returncode} after {elapsed:.0f} s (seed {seed}, {examples} examples; "
            f"replay with CHAMADE_FUZZ_SEED={seed}):\n{run.stdout[-30000:]}\n{run.stderr[-5000:]}", pytrace=False)
