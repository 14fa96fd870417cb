"""The agent client of the gateway's API reference, adapted to a self-hosted `chamade serve`.

Creates a call, opens its audio WebSocket, declares 24 kHz and asks for the meeting's mix-minus,
sends PCM (here a one-second tone standing in for TTS output) and reads mix-minus frames for a custom
STT pipeline. A second call in the same meeting plays the other side, so there is something to hear.

    CHAMADE_URL=http://127.0.0.1:8787 CHAMADE_API_KEY=chmd_... python3 examples/agent_client.py
"""
import asyncio
import json
import math
import os
import struct
import sys

import httpx
import websockets

BASE = os.environ.get("CHAMADE_URL", "http://127.0.0.1:8787")
API_KEY = os.environ.get("CHAMADE_API_KEY", "chmd_...")
MEETING = os.environ.get("CHAMADE_MEETING", "https://discord.com/channels/example/agent-client")


def tone(freq, rate, seconds, amplitude=8000):
    return b"".join(struct.pack("<h", int(amplitude * math.sin(2 * math.pi * freq * i / rate)))
                    for i in range(int(rate * seconds)))


async def create_call(http, name):
    r = await http.post(f"{BASE}/api/call/", headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
                        json={"platform": "discord", "meeting_url": MEETING, "agent_name": name, "transcripts": False})
    r.raise_for_status()
    return r.json()


async def main():
    # 1. Create the calls (BYO audio: the engine is pure transport).
    async with httpx.AsyncClient() as http:
        call = await create_call(http, "Example Agent")
        peer = await create_call(http, "Other Participant")
    print(f"call {call['call_id']}: room native rate {call['audio']['sample_rate']} Hz")

    # 2. Open the WebSockets.
    url = f"{BASE.replace('http', 'ws', 1)}/api/call/{call['call_id']}/stream?api_key={API_KEY}"
    peer_url = f"{BASE.replace('http', 'ws', 1)}/api/call/{peer['call_id']}/stream?api_key={API_KEY}"
    frames, config = [], {}
    async with websockets.connect(url) as ws, websockets.connect(peer_url) as peer_ws:
        # 3. Declare our sample rate and opt into receiving the meeting audio.
        await ws.send(json.dumps({"type": "audio_config", "sample_rate": 24000, "receive": True}))

        async def reader():
            async for msg in ws:
                if isinstance(msg, bytes):
                    # Raw PCM s16le mono @ 24 kHz, 20 ms frames, mix-minus: feed your STT here.
                    frames.append(msg)
                    if len(frames) >= 100:
                        return
                else:
                    event = json.loads(msg)
                    if event.get("type") == "audio_config":
                        config.update(event)
                        print(f"audio_config: {event}")
                    elif event.get("type") == "call_error":
                        print(f"call_error: {event}")
                        if event.get("code") == "bridge_disconnected":
                            return

        async def writer():
            # Your TTS would produce 24 kHz s16le PCM here: one second of a 440 Hz tone.
            await ws.send(tone(440, 24000, 1.0))
            # The other participant speaks too (at the room's native rate), so the mix-minus is not silent.
            await peer_ws.send(tone(660, 48000, 1.5))

        await asyncio.wait_for(asyncio.gather(reader(), writer()), 10)

    ok = config.get("sample_rate") == 24000 and config.get("resampling") is True and len(frames) == 100
    ok = ok and all(len(f) == config.get("frame_bytes") == 960 for f in frames)
    loud = sum(1 for f in frames if max(abs(s) for (s,) in struct.iter_unpack("<h", f)) > 1000)
    print(f"received {len(frames)} mix-minus frames of {len(frames[0]) if frames else 0} bytes; {loud} carry the other participant")
    return 0 if ok and loud >= 40 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
