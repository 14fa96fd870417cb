"""`chamade mcp` (SPEC §8) driven by a real MCP client, the Python `mcp` package, over stdio against a
live `chamade serve`: the tools and their schemas, join / say / status with since / chat reaching
another call / dtmf without a leg / hang-up / an unknown call, the transcript resource read and
subscribed (notified when a line is added), the prompts, a dead server, and exit on stdin EOF."""
import asyncio
import json
import subprocess
import time

import jsonschema
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from conftest import BINARY, KEY1, Server, api, open_stream, recv_json, run

TOOLS = {"chamade_call_join", "chamade_call_status", "chamade_call_say", "chamade_call_stop_speaking",
         "chamade_call_chat", "chamade_call_typing", "chamade_call_dtmf", "chamade_call_accept",
         "chamade_call_refuse", "chamade_call_hangup", "chamade_call_list", "chamade_account"}


@pytest.fixture(scope="module")
def server():
    s = Server("--api-key", KEY1, "--tts", "espeak")
    yield s
    s.stop()


def params(url, key=KEY1):
    return StdioServerParameters(command=BINARY, args=["mcp", "--url", url, "--api-key", key])


class Notifications:
    """The `notifications/resources/updated` the client got, by URI."""

    def __init__(self):
        self.updated = []

    async def __call__(self, message):
        root = getattr(message, "root", message)
        if getattr(root, "method", None) == "notifications/resources/updated":
            self.updated.append(str(root.params.uri))


async def session_of(url, notes=None):
    """An initialized client session (an async context manager pair)."""
    client = stdio_client(params(url))
    read, write = await client.__aenter__()
    session = ClientSession(read, write, message_handler=notes or Notifications())
    await session.__aenter__()
    await session.initialize()
    return client, session


async def close(client, session):
    await session.__aexit__(None, None, None)
    await client.__aexit__(None, None, None)


def f(obj, name):
    """A field of an `mcp` model by its snake_case name (mcp 2.x), or camelCase (1.x)."""
    if hasattr(obj, name):
        return getattr(obj, name)
    head, *rest = name.split("_")
    return getattr(obj, head + "".join(w.title() for w in rest))


def text(result):
    return "".join(c.text for c in result.content if getattr(c, "type", "") == "text")


def test_tools_are_listed_with_schemas(server):
    async def go():
        client, s = await session_of(server.base)
        try:
            tools = (await s.list_tools()).tools
            prompts = (await s.list_prompts()).prompts
            prompt = await s.get_prompt("join_meeting_and_answer", {"platform": "discord", "meeting_url": "https://x"})
            return tools, prompts, prompt
        finally:
            await close(client, s)
    tools, prompts, prompt = run(go())
    by_name = {t.name: t for t in tools}
    assert set(by_name) == TOOLS
    for t in tools:
        schema = f(t, 'input_schema')
        assert schema["type"] == "object" and isinstance(schema["properties"], dict), t.name
        assert t.description and len(t.description) > 20, t.name
        assert set(schema.get("required", [])) <= set(schema["properties"]), t.name
        # A valid JSON Schema (2020-12, MCP's dialect), and it accepts what the tool documents.
        jsonschema.Draft202012Validator.check_schema(schema)
    join = f(by_name["chamade_call_join"], "input_schema")
    assert set(join["required"]) == {"platform", "meeting_url"}
    valid = jsonschema.Draft202012Validator(join)
    assert valid.is_valid({"platform": "sip", "meeting_url": "sip:conf@pbx"})
    assert not valid.is_valid({"platform": "skype", "meeting_url": "x"})
    assert not valid.is_valid({"platform": "discord"})
    dtmf = jsonschema.Draft202012Validator(f(by_name["chamade_call_dtmf"], "input_schema"))
    assert dtmf.is_valid({"call_id": "c", "digits": "12#*A"}) and not dtmf.is_valid({"call_id": "c", "digits": "12x"})
    assert "sip" in join["properties"]["platform"]["enum"] and "discord" in join["properties"]["platform"]["enum"]
    assert f(by_name["chamade_call_say"], "input_schema")["properties"]["text"]["maxLength"] == 10000
    assert f(by_name["chamade_call_dtmf"], "input_schema")["properties"]["digits"]["maxLength"] == 64
    assert {"join_meeting_and_answer", "dial_in_with_pin"} <= {p.name for p in prompts}
    assert "chamade_call_join" in prompt.messages[0].content.text


def test_a_text_agent_takes_part_in_a_call(server):
    """join, say (its line reaches the transcript: the subscription is notified), status with since,
    chat reaching another call, dtmf without a leg (error result), an unknown call (error result),
    the resource list and read, hang-up."""
    meeting = f"https://meet.example/mcp/{time.time()}"

    async def go():
        notes = Notifications()
        client, s = await session_of(server.base, notes)
        try:
            joined = await s.call_tool("chamade_call_join", {"platform": "discord", "meeting_url": meeting, "agent_name": "Model"})
            assert not f(joined, "is_error"), text(joined)
            call = f(joined, "structured_content")
            cid = call["call_id"]
            assert call["state"] == "active" and cid in text(joined)
            # Another agent in the room, on a WebSocket: it gets the chat.
            other = api(server, "POST", "/api/call", json={"platform": "discord", "meeting_url": meeting, "agent_name": "Human"}).json()
            ws, _ = await open_stream(server, other, rate=16000, receive=False)

            uri = f"chamade://calls/{cid}/transcript"
            listed = (await s.list_resources()).resources
            assert uri in [str(r.uri) for r in listed]
            await s.subscribe_resource(uri)
            await asyncio.sleep(0.3)

            said = await s.call_tool("chamade_call_say", {"call_id": cid, "text": "Hello from the model."})
            assert not f(said, "is_error") and f(said, "structured_content")["queued_ms"] > 300, text(said)
            deadline = time.monotonic() + 10
            while uri not in notes.updated and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert uri in notes.updated, notes.updated
            read = await s.read_resource(uri)
            assert read.contents[0].text == "[Model] Hello from the model."

            status = await s.call_tool("chamade_call_status", {"call_id": cid, "since": 0})
            assert f(status, "structured_content")["transcript"] == ["[Model] Hello from the model."]
            assert f(status, "structured_content")["transcript_length"] == 1
            later = await s.call_tool("chamade_call_status", {"call_id": cid, "since": 1})
            assert f(later, "structured_content")["transcript"] == [] and "state: active" in text(later)

            chat = await s.call_tool("chamade_call_chat", {"call_id": cid, "text": "see the agenda"})
            assert not f(chat, "is_error")
            got = await recv_json(ws, "call_chat", timeout=5)
            assert got["text"] == "see the agenda" and got["sender"] == "Model"

            dtmf = await s.call_tool("chamade_call_dtmf", {"call_id": cid, "digits": "123#"})
            assert f(dtmf, "is_error") and f(dtmf, "structured_content")["error"]["code"] == "no_leg", text(dtmf)
            unknown = await s.call_tool("chamade_call_status", {"call_id": "call_nope"})
            assert f(unknown, "is_error") and f(unknown, "structured_content")["error"]["code"] == "not_found", text(unknown)
            missing = await s.call_tool("chamade_call_say", {"call_id": cid})
            assert f(missing, "is_error") and "text" in text(missing)

            listed_calls = await s.call_tool("chamade_call_list", {})
            assert cid in [c["call_id"] for c in f(listed_calls, "structured_content")["calls"]]
            account = await s.call_tool("chamade_account", {})
            assert f(account, "structured_content")["features"]["hosted_tts"] == "ready"

            hung = await s.call_tool("chamade_call_hangup", {"call_id": cid})
            assert not f(hung, "is_error") and f(hung, "structured_content")["state"] == "ended"
            await ws.close()
        finally:
            await close(client, s)
    run(go(), timeout=60)


def test_a_dead_server_is_a_tool_error_not_a_crash():
    async def go():
        client, s = await session_of("http://127.0.0.1:9")
        try:
            r = await s.call_tool("chamade_call_list", {})
            again = await s.call_tool("chamade_account", {})
            return r, again
        finally:
            await close(client, s)
    r, again = run(go())
    assert f(r, "is_error") and f(r, "structured_content")["error"]["code"] == "server_unreachable", text(r)
    assert f(again, "is_error")


def test_stdout_is_protocol_only_and_eof_exits(server):
    """Raw stdio: initialize, then stdin closed: the process exits 0 at once, and every line it
    wrote on stdout is a JSON-RPC message."""
    proc = subprocess.Popen([BINARY, "mcp", "--url", server.base, "--api-key", KEY1],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    proc.stdin.write(json.dumps(init) + "\n")
    proc.stdin.flush()
    first = proc.stdout.readline()
    start = time.monotonic()
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert time.monotonic() - start < 3
    lines = [l for l in (first + out).splitlines() if l.strip()]
    assert lines and all(json.loads(l)["jsonrpc"] == "2.0" for l in lines), first + out
    answer = json.loads(lines[0])
    assert answer["id"] == 1 and answer["result"]["capabilities"]["resources"]["subscribe"] is True


def test_idle_costs_nothing(server):
    """Waiting for the client, `chamade mcp` sleeps in a blocking read: over 3 s idle it uses
    almost no CPU (the SDK's own stdio transport polls every 10 ms)."""
    proc = subprocess.Popen([BINARY, "mcp", "--url", server.base, "--api-key", KEY1],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
        proc.stdin.write(json.dumps(init) + "\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["id"] == 1

        def cpu_ticks():
            with open(f"/proc/{proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])
        time.sleep(0.5)
        before = cpu_ticks()
        time.sleep(3)
        used = cpu_ticks() - before
        assert used <= 2, f"{used} clock ticks of CPU in 3 s idle"
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
