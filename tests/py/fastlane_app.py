"""A room on the topic fan-out, for ``test_fastlane.py`` (not a test module).

``/ws``: every text a client sends is published to the room (every member gets it, the sender
too), except ``?lane``, answered to that client alone with ``{"fastlane": bool}`` (whether its
outbox writes frames straight to the transport), and ``stall N``, which publishes N frames of
4 KiB, one a millisecond (to fill a client that does not read).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hornbeam_channels import Fanout, Outbox, lag_skip, lifespan

room = Fanout(on_lag=lag_skip, name="fastlane test")


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] != "websocket":
        return
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    outbox = Outbox.for_asgi(send, name="fastlane client", max_chars=64 * 1024)
    room.join("fastlane:room", outbox)
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                continue
            if text == "?lane":
                outbox.offer(json.dumps({"fastlane": outbox.fastlane}))
            elif text.startswith("stall "):
                for i in range(int(text.split()[1])):
                    room.publish("fastlane:room", f"{i:08d}" + "x" * 4088)
                    await asyncio.sleep(0.001)  # paced: a reader that keeps up is never dropped
            else:
                room.publish("fastlane:room", text)
    finally:
        room.leave_all(outbox)
        outbox.cancel()
