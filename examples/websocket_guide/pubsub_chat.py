"""Guide section "Chat Room with Pub/Sub", made to work: ``/chat/<room>`` relays over the bus.

The seed checked its mailbox (`check_pubsub()`) only after a frame arrived from its own client, so
a quiet client never saw the others' messages. Here each socket joins its room's group in the
process's topic fan-out (`hornbeam_channels.fanout`): one mailbox and one task per room, which
writes every message published on the room's topic to every socket of the room as soon as it is
published, while the handler only reads its own socket and publishes.

Frames are JSON ``{"user", "text"}``; everyone in the room, the sender included, receives
``{"type": "message", "user", "text"}``. Invalid JSON closes with 1003. What goes to a socket
passes through a bounded outbox (``hornbeam_channels.Outbox``): a client that stops reading is
closed with 1008 once its bound of characters wait for it, and never holds back the room. A room
that fell behind far enough to lose messages sends ``{"type": "lagged", "dropped": n}``.

Run alone: ``uvicorn examples.websocket_guide.pubsub_chat:application`` (tester page at ``/``).
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from hornbeam_erlang import publish

from hornbeam_channels import Fanout, OriginGuard, Outbox, lag_notice

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

        await handle_chat(receive, send, topic)
    elif scope["type"] == "http":
        await respond_html(send, tester_page(
            scope.get("root_path", ""), "Chat room with pub/sub",
            "Open this page twice: frames sent to /chat/<room> reach every socket of that room at once.",
            ws_path="/chat/lobby", binary=False,
            presets=[{"text": '{"user": "ada", "text": "hello room"}'}]))
    elif scope["type"] == "lifespan":
        await handle_lifespan(receive, send)


# The rooms of this process: one mailbox and one sending task per room. Publishers encode once.
rooms = Fanout(on_lag=lag_notice(lambda n: json.dumps({"type": "lagged", "dropped": n})),
               name="guide chat rooms")


async def handle_chat(receive: Receive, send: Send, topic: str) -> None:
    outbox = Outbox.for_asgi(send, name=f"guide chat {topic}")
    # Subscribe to room
    rooms.join(topic, outbox)
    dropped = asyncio.ensure_future(outbox.wait_ended())
    try:
        while True:
            from_client = asyncio.ensure_future(receive())
            done, _ = await asyncio.wait({from_client, dropped}, return_when=asyncio.FIRST_COMPLETED)
            if dropped in done:  # dropped by the outbox's policy (closed with 1008), or gone
                from_client.cancel()
                return
            message = from_client.result()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            data = parse(text) if text is not None and len(text) <= MAX_FRAME_CHARS else None
            if data is None:
                outbox.cancel()
                await send({"type": "websocket.close", "code": 1003, "reason": "expected a JSON object"})
                return

            # Broadcast to all subscribers (encoded once, here)
            publish(topic, json.dumps({
                "type": "message",
                "user": str(data.get("user", "anonymous"))[:32],
                "text": str(data.get("text", ""))[:2000],
            }))
    finally:
        dropped.cancel()
        rooms.leave_all(outbox)
        outbox.cancel()


def parse(text: str) -> dict[str, Any] | None:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        return None
    return data if isinstance(data, dict) else None
