"""Guide section "Chat Room with Pub/Sub", made to work: ``/chat/<room>`` relays over the bus.

The seed checked its mailbox (`check_pubsub()`) only after a frame arrived from its own client, so
a quiet client never saw the others' messages. Here the handler waits on its socket and its mailbox
together (`asyncio.wait` on ``receive()`` and ``mb.recv()``), and once woken it empties the mailbox
with `check_pubsub()`, which reads the same task's mailbox that `subscribe()` returned.

Frames are JSON ``{"user", "text"}``; everyone in the room, the sender included, receives
``{"type": "message", "user", "text"}``. Invalid JSON closes with 1003. What goes to a socket
passes through a bounded outbox (``examples/_outbox.py``): a client that stops reading is closed
with 1008 once ``OUTBOX_MAX_CHARS`` characters wait for it, and never holds back the room.

Run alone: ``uvicorn examples.websocket_guide.pubsub_chat:application`` (tester page at ``/``).
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from hornbeam_erlang import HornbeamError, check_pubsub, publish, subscribe, unsubscribe

from hornbeam_channels import OriginGuard

from examples._outbox import Outbox, SlowConsumer

from ._asgi import Receive, Scope, Send, handle_lifespan, respond_html, route_path, tester_page

# Room names become topic segments: no ':' separators and no '*' or '>' wildcards.
ROOM_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_FRAME_CHARS = 16 * 1024


@OriginGuard  # foreign Origin -> 403 at the handshake (HORNBEAM_ALLOWED_ORIGINS)
async def application(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await receive()  # the handshake request, websocket.connect, comes first

        # Get room from path: /chat/room-name
        path = route_path(scope)
        room = path.split("/")[-1] or "default"
        if not ROOM_RE.match(room):
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "websocket.accept"})
        # The seed's topic is chat:<room>; prefixed so it cannot meet the chat example's rooms
        # when both run in one process (the demo).
        topic = f"guide:chat:{room}"

        # Subscribe to room
        mb = subscribe(topic)

        try:
            await handle_chat(scope, receive, send, topic, mb)
        finally:
            unsubscribe(topic)
            mb.close()
    elif scope["type"] == "http":
        await respond_html(send, tester_page(
            scope.get("root_path", ""), "Chat room with pub/sub",
            "Open this page twice: frames sent to /chat/<room> reach every socket of that room at once.",
            ws_path="/chat/lobby", binary=False,
            presets=[{"text": '{"user": "ada", "text": "hello room"}'}]))
    elif scope["type"] == "lifespan":
        await handle_lifespan(receive, send)


async def handle_chat(scope: Scope, receive: Receive, send: Send, topic: str, mb: Any) -> None:
    async def send_text(text: str) -> None:
        await send({"type": "websocket.send", "text": text})

    async def close(code: int, reason: str) -> None:
        await send({"type": "websocket.close", "code": code, "reason": reason})

    outbox = Outbox(send_text, close, name=f"guide chat {topic}")
    from_client = asyncio.ensure_future(receive())
    from_bus = asyncio.ensure_future(mb.recv())
    try:
        while True:
            done, _ = await asyncio.wait({from_client, from_bus}, return_when=asyncio.FIRST_COMPLETED)

            if from_bus in done:
                try:
                    first = from_bus.result()
                except HornbeamError:
                    return
                # Check for pub/sub messages: the one that woke us, then whatever else is queued
                pubsub_msg = first
                try:
                    while pubsub_msg is not None:
                        await forward(outbox, pubsub_msg)
                        pubsub_msg = check_pubsub()
                except (SlowConsumer, OSError):
                    return  # dropped by the outbox's policy (closed with 1008), or gone
                from_bus = asyncio.ensure_future(mb.recv())

            if from_client in done:
                message = from_client.result()
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text")
                data = parse(text) if text is not None and len(text) <= MAX_FRAME_CHARS else None
                if data is None:
                    await send({"type": "websocket.close", "code": 1003, "reason": "expected a JSON object"})
                    return

                # Broadcast to all subscribers
                publish(topic, {
                    "type": "message",
                    "user": str(data.get("user", "anonymous"))[:32],
                    "text": str(data.get("text", ""))[:2000],
                })
                from_client = asyncio.ensure_future(receive())
    finally:
        # A cancelled recv() neither consumes nor drops a message (the engine guarantees it).
        from_client.cancel()
        from_bus.cancel()
        outbox.cancel()


def parse(text: str) -> dict[str, Any] | None:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        return None
    return data if isinstance(data, dict) else None


async def forward(outbox: Outbox, msg: Any) -> None:
    if msg.lagged:
        payload: Any = {"type": "lagged", "dropped": msg.lagged}
    else:
        payload = msg.message
    await outbox.send(json.dumps(payload))
