"""Guide section "Error Handling": every close code of the seed's table, each for its reason.

The endpoint speaks a tiny JSON protocol, ``{"action": ...}`` text frames:

| code | when |
| --- | --- |
| 1000 | ``{"action": "close"}``: normal closure |
| 1001 | no frame for `IDLE_TIMEOUT` seconds (``?idle=<seconds>`` sets it, 0.1 to 3600): going away |
| 1002 | a text frame that is not a JSON object with a string ``action``: protocol error |
| 1003 | a binary frame: unsupported data |
| 1008 | a frame over `MAX_FRAME_CHARS`, or an unknown action: policy violation |
| 1011 | ``{"action": "crash"}`` raises inside the handler: internal error |

``{"action": "echo", "text": ...}`` is answered with ``{"echo": ...}``.

Run alone: ``uvicorn examples.websocket_guide.errors:application`` (tester page at ``/``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any
from urllib.parse import parse_qs

from hornbeam_channels import OriginGuard

from ._asgi import Receive, Scope, Send, handle_lifespan, respond_html, tester_page

log = logging.getLogger(__name__)

IDLE_TIMEOUT = float(os.environ.get("GUIDE_IDLE_TIMEOUT", "60"))
MAX_FRAME_CHARS = 4096


class CloseConnection(Exception):
    """Raised by a handler to end the connection with a given close code."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


@OriginGuard  # foreign Origin -> 403 at the handshake (HORNBEAM_ALLOWED_ORIGINS)
async def application(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        accepted = False
        try:
            await receive()  # the handshake request, websocket.connect, comes first
            await send({"type": "websocket.accept"})
            accepted = True
            await handle_websocket(scope, receive, send)
        except CloseConnection as e:
            await send({"type": "websocket.close", "code": e.code, "reason": e.reason})
        except OSError:
            # The client is gone: there is no one to send a close frame to.
            pass
        except Exception:
            log.exception("websocket handler failed")
            if accepted:
                # Close with error code
                await send({"type": "websocket.close", "code": 1011, "reason": "Internal server error"})
    elif scope["type"] == "http":
        await respond_html(send, tester_page(
            scope.get("root_path", ""), "Error handling and close codes",
            "Each button ends the connection with one close code of the guide's table; "
            "stay idle and the server closes with 1001.",
            ws_path="/ws?idle=30",
            presets=[
                {"label": "echo", "text": '{"action": "echo", "text": "hello"}'},
                {"label": "1000 close", "text": '{"action": "close"}'},
                {"label": "1002 not JSON", "text": "not json"},
                {"label": "1008 too big", "text": "x", "repeat": MAX_FRAME_CHARS + 1},
                {"label": "1008 unknown action", "text": '{"action": "launch"}'},
                {"label": "1011 crash", "text": '{"action": "crash"}'},
            ]))
    elif scope["type"] == "lifespan":
        await handle_lifespan(receive, send)


def idle_timeout(scope: Scope) -> float:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    try:
        return min(3600.0, max(0.1, float(query["idle"][0])))
    except (KeyError, ValueError):
        return IDLE_TIMEOUT


def parse_action(text: str) -> dict[str, Any]:
    if len(text) > MAX_FRAME_CHARS:
        raise CloseConnection(1008, f"frames are limited to {MAX_FRAME_CHARS} characters")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        raise CloseConnection(1002, "expected JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("action"), str):
        raise CloseConnection(1002, 'expected {"action": ...}')
    return data


async def handle_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    timeout = idle_timeout(scope)
    while True:
        try:
            message = await asyncio.wait_for(receive(), timeout)
        except asyncio.TimeoutError:
            raise CloseConnection(1001, "idle timeout") from None
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is None:
            raise CloseConnection(1003, "binary frames are not supported")
        data = parse_action(message["text"])
        action = data["action"]
        if action == "echo":
            await send({"type": "websocket.send", "text": json.dumps({"echo": data.get("text")})})
        elif action == "close":
            raise CloseConnection(1000, "goodbye")
        elif action == "crash":
            raise RuntimeError("crash requested by the client")
        else:
            raise CloseConnection(1008, f"unknown action {action[:50]!r}")
