"""Guide section "Subprotocols": pick one of the client's subprotocols and speak it.

Preference order: ``graphql-ws``, then ``json``, then none.

- ``graphql-ws`` speaks the message flow of Apollo's legacy ``subscriptions-transport-ws`` protocol
  (``connection_init`` -> ``connection_ack``; ``start`` -> ``data`` + ``complete``; ``stop``;
  ``connection_terminate``) over a toy schema whose top-level fields are `RESOLVERS`.
- ``json`` answers each JSON text frame with ``{"protocol": "json", "received": <value>}``.
- Without a subprotocol, frames are echoed (text as ``Echo: <text>``).

Run alone: ``uvicorn examples.websocket_guide.subprotocols:application`` (tester page at ``/``).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, Callable, Optional

from hornbeam_erlang import state_get

from hornbeam_channels import OriginGuard

from ._asgi import Receive, Scope, Send, handle_lifespan, respond_html, tester_page

SUPPORTED = ("graphql-ws", "json")

RESOLVERS: dict[str, Callable[[], Any]] = {
    "hello": lambda: "world",
    "time": lambda: time.time(),
    "activeConnections": lambda: state_get("ws:active_connections") or 0,
}

# A selection set of plain field names, e.g. "{ hello time }" or "query { hello }".
QUERY_RE = re.compile(r"^\s*(?:query\s*\w*\s*)?\{\s*([A-Za-z_][A-Za-z0-9_\s,]*)\}\s*$")


def choose_subprotocol(requested: list[str]) -> Optional[str]:
    for protocol in SUPPORTED:
        if protocol in requested:
            return protocol
    return None


@OriginGuard  # foreign Origin -> 403 at the handshake (HORNBEAM_ALLOWED_ORIGINS)
async def application(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        # Check requested subprotocols and choose one we support
        subprotocol = choose_subprotocol(scope.get("subprotocols", []))

        await receive()  # the handshake request, websocket.connect, comes first
        await send({"type": "websocket.accept", "subprotocol": subprotocol})

        # Handle based on protocol
        if subprotocol == "graphql-ws":
            await handle_graphql(scope, receive, send)
        elif subprotocol == "json":
            await handle_json(scope, receive, send)
        else:
            await handle_generic(scope, receive, send)
    elif scope["type"] == "http":
        await respond_html(send, tester_page(
            scope.get("root_path", ""), "Subprotocols",
            "The server picks graphql-ws, then json, then none, from the subprotocols you offer.",
            protocols=["graphql-ws", "json"],
            presets=[
                {"label": "connection_init", "text": '{"type": "connection_init"}'},
                {"label": "start { hello time }",
                 "text": '{"type": "start", "id": "1", "payload": {"query": "{ hello time }"}}'},
                {"label": "json value", "text": '{"numbers": [1, 2, 3]}'},
            ]))
    elif scope["type"] == "lifespan":
        await handle_lifespan(receive, send)


async def send_json(send: Send, data: Any) -> None:
    await send({"type": "websocket.send", "text": json.dumps(data)})


def run_query(query: Any) -> dict[str, Any]:
    """Resolve a selection of top-level fields; a GraphQL-style result with data or errors."""
    match = QUERY_RE.match(query) if isinstance(query, str) else None
    if not match:
        return {"errors": [{"message": "only a selection of top-level fields is supported"}]}
    fields = [f for f in re.split(r"[\s,]+", match.group(1)) if f]
    unknown = [f for f in fields if f not in RESOLVERS]
    if unknown:
        return {"errors": [{"message": f"unknown field {name!r}"} for name in unknown]}
    return {"data": {name: RESOLVERS[name]() for name in fields}}


async def handle_graphql(scope: Scope, receive: Receive, send: Send) -> None:
    initialised = False
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        try:
            op = json.loads(message.get("text") or "")
        except (ValueError, RecursionError):  # RecursionError: nested too deeply
            op = None
        if not isinstance(op, dict):
            await send_json(send, {"type": "connection_error", "payload": {"message": "expected a JSON object"}})
            continue
        kind, op_id = op.get("type"), op.get("id")
        if kind == "connection_init":
            initialised = True
            await send_json(send, {"type": "connection_ack"})
        elif kind == "connection_terminate":
            await send({"type": "websocket.close", "code": 1000})
            return
        elif not initialised:
            # The protocol requires connection_init first; 4400 is what its successor uses for this.
            await send({"type": "websocket.close", "code": 4400, "reason": "connection_init expected"})
            return
        elif kind == "start":
            payload = op.get("payload")
            payload = payload if isinstance(payload, dict) else {}
            await send_json(send, {"type": "data", "id": op_id, "payload": run_query(payload.get("query"))})
            await send_json(send, {"type": "complete", "id": op_id})
        elif kind == "stop":
            await send_json(send, {"type": "complete", "id": op_id})
        else:
            await send_json(send, {"type": "error", "id": op_id, "payload": {"message": f"unknown type {kind!r}"}})


async def handle_json(scope: Scope, receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        try:
            value = json.loads(message.get("text") or message.get("bytes") or b"")
        except (ValueError, RecursionError):  # RecursionError: nested too deeply
            await send_json(send, {"protocol": "json", "error": "invalid JSON"})
            continue
        await send_json(send, {"protocol": "json", "received": value})


async def handle_generic(scope: Scope, receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": f"Echo: {message['text']}"})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
