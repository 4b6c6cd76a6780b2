#!/usr/bin/env python3
"""A real WebSocket client, Python's `websockets` (no code shared with pushbench), against a running
`pushbench serve ws` (or `serve all`): it checks what a subscriber's session must answer while the
topic's fan-out writes its events and its framing state is put away between inputs.

    pip install websockets
    target/release/pushbench serve ws --keepalive 1s      # prints listening on http://ADDR
    python3 scripts/ws-client-check.py http://ADDR

In order: the hello frame; three events published over HTTP arrive in order; the client idles past several of the
server's keep-alive pings (answered by the library) and its own pings, then gets the next event;
a whole text frame and a text message in three fragments are published upstream and come back as
events; a binary frame gets the JSON error frame; a last event arrives; the client closes, and the
server must answer its Close (code 1000, not 1006). Exits non-zero on the first thing that fails.
"""
import asyncio
import json
import sys
import urllib.request

import websockets

TOPIC = "ws-client-check"


def publish(base, payload):
    req = urllib.request.Request(f"{base}/publish?topic={TOPIC}", data=payload.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.read()


async def main(base):
    loop = asyncio.get_running_loop()
    url = base.replace("http://", "ws://", 1) + f"/ws?topic={TOPIC}"

    async def recv(ws):
        return json.loads(await asyncio.wait_for(ws.recv(), 5))

    async with websockets.connect(url, ping_interval=0.3, ping_timeout=2) as ws:
        # First the hello: the server's life (epoch) and the id the subscription starts after.
        hello = await recv(ws)
        assert set(hello) == {"epoch", "after"}, hello
        got = []
        for i in range(3):
            await loop.run_in_executor(None, publish, base, f"event {i}")
            got.append(await recv(ws))
        await asyncio.sleep(3.5)
        await loop.run_in_executor(None, publish, base, "after idle")
        got.append(await recv(ws))
        await ws.send("upstream whole")
        got.append(await recv(ws))
        await ws.send(["upstream ", "frag", "mented"])
        got.append(await recv(ws))
        await ws.send(b"\x00binary")
        error = await recv(ws)
        assert "error" in error, error
        await loop.run_in_executor(None, publish, base, "last")
        got.append(await recv(ws))
        data = [g["data"] for g in got]
        assert data == ["event 0", "event 1", "event 2", "after idle", "upstream whole",
                        "upstream fragmented", "last"], data
        ids = [g["id"] for g in got]
        assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
    assert ws.close_code == 1000, f"the server did not answer the Close: code {ws.close_code}"
    print(f"ok: {len(got)} events in order, binary refused ({error['error']}), closed with 1000")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: ws-client-check.py http://HOST:PORT")
    asyncio.run(main(sys.argv[1].rstrip("/")))
