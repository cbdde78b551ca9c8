"""Guide section "Connection with ETS State": every open WebSocket is registered in the store.

Each connection has ``ws:client:<id>`` (``{connected_at, path}``) and counts in
``ws:active_connections``; both are undone in a ``finally``, so the count stays exact whether the
client closes, the network drops or the server shuts down. ``GET /connections`` reports them.
Frames are answered with ``{"client_id", "active"}``.

Run alone: ``uvicorn examples.websocket_guide.tracking:application`` (tester page at ``/``).
"""

from __future__ import annotations

import json
import time
import uuid

from hornbeam_erlang import state_delete, state_get, state_get_multi, state_incr, state_keys, state_set

from hornbeam_channels import OriginGuard

from ._asgi import Receive, Scope, Send, handle_lifespan, respond, respond_html, respond_json, route_path, tester_page


def connections_report() -> dict[str, object]:
    keys = state_keys("ws:client:")
    clients = [
        {"id": key[len("ws:client:"):], **value}
        for key, value in state_get_multi(keys).items() if value
    ]
    return {"active": state_get("ws:active_connections") or 0, "clients": clients}


@OriginGuard  # foreign Origin -> 403 at the handshake (HORNBEAM_ALLOWED_ORIGINS)
async def application(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        # Generate unique client ID
        client_id = str(uuid.uuid4())

        await receive()  # the handshake request, websocket.connect, comes first
        await send({"type": "websocket.accept"})

        # Register client
        state_set(f"ws:client:{client_id}", {
            "connected_at": time.time(),
            "path": route_path(scope),
        })
        state_incr("ws:active_connections")

        try:
            await handle_connection(scope, receive, send, client_id)
        finally:
            # Cleanup on disconnect, however the connection ended
            state_delete(f"ws:client:{client_id}")
            state_incr("ws:active_connections", -1)
    elif scope["type"] == "http":
        path = route_path(scope)
        if path == "/connections":
            await respond_json(send, 200, connections_report())
        elif path == "/":
            await respond_html(send, tester_page(
                scope.get("root_path", ""), "Connection tracking",
                "Each open WebSocket is registered in the store; any frame answers with your id and "
                "the number of open connections. GET connections lists them.",
                binary=False, presets=[{"text": "who am I?"}]))
        else:
            await respond(send, 404, b"Not Found")
    elif scope["type"] == "lifespan":
        await handle_lifespan(receive, send)


async def handle_connection(scope: Scope, receive: Receive, send: Send, client_id: str) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            break
        await send({"type": "websocket.send", "text": json.dumps({
            "client_id": client_id,
            "active": state_get("ws:active_connections") or 0,
        })})
