#!/usr/bin/env python3
"""A WebSocket subscriber that survives server restarts, written with Python's `websockets` (no code
shared with pushbench), as an application would write one against docs/PROTOCOL.md.

    pip install websockets        # or: apt-get install python3-websockets
    python3 scripts/ws-resume-client.py http://ADDR TOPIC EVENTS [SECONDS]

It subscribes from the oldest event kept (`after=0`) and prints every frame it receives as one JSON
line on stdout: the hello `{"epoch":..,"after":..}`, events `{"id":..,"data":..}`, gaps, and resets
`{"epoch":..,"after":0,"reset":true}`. When the connection breaks (a server killed and started
again), it reconnects every 100 ms and resumes with `after=EPOCH-ID`, its last id in the life the
server last named, so a restarted server answers with a reset instead of mistaking the id for one
of its own. It exits 0 once it has printed EVENTS events in all, and 1 if SECONDS (default 60) pass
first. tests/restart.rs runs it across two restarts.
"""
import asyncio
import json
import sys

import websockets


async def main(base, topic, want, seconds):
    epoch, last_id, events = None, 0, 0
    ws_base = base.replace("http://", "ws://", 1)
    while events < want:
        cursor = f"{epoch}-{last_id}" if epoch else str(last_id)
        try:
            async with websockets.connect(f"{ws_base}/ws?topic={topic}&after={cursor}") as ws:
                async for text in ws:
                    print(text, flush=True)
                    m = json.loads(text)
                    if "epoch" in m:
                        # The hello, or a reset: either way the life the ids are of from now on.
                        epoch = m["epoch"]
                        if m.get("reset"):
                            last_id = m["after"]
                    elif "gap" in m:
                        last_id = max(last_id, m["gap"]["to"])
                    elif "id" in m:
                        last_id = m["id"]
                        events += 1
                        if events >= want:
                            return
        except (OSError, websockets.exceptions.WebSocketException):
            pass
        await asyncio.sleep(0.1)


if __name__ == "__main__":
    base, topic, want = sys.argv[1], sys.argv[2], int(sys.argv[3])
    seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 60.0
    try:
        asyncio.run(asyncio.wait_for(main(base, topic, want, seconds), seconds))
    except asyncio.TimeoutError:
        print(f"timed out after {seconds} s", file=sys.stderr)
        sys.exit(1)
