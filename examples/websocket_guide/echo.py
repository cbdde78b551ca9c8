"""Guide section "Basic WebSocket Handler": echo every text frame as ``Echo: <text>``.

Run alone: ``uvicorn examples.websocket_guide.echo:application`` (WebSocket at any path, e.g. ``/ws``;
the tester page at ``/``).
"""

from __future__ import annotations

from hornbeam_channels import OriginGuard

from ._asgi import Receive, Scope, Send, handle_lifespan, respond_html, tester_page


@OriginGuard  # foreign Origin -> 403 at the handshake (HORNBEAM_ALLOWED_ORIGINS)
async def application(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await receive()  # the handshake request, websocket.connect, comes first
        # Accept the connection
        await send({"type": "websocket.accept"})

        while True:
            message = await receive()

            if message["type"] == "websocket.disconnect":
                break

            if message["type"] == "websocket.receive":
                text = message.get("text")
                if text is not None:
                    await send({"type": "websocket.send", "text": f"Echo: {text}"})
                else:
                    # The seed echoes only text; a binary frame comes back unchanged.
                    await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
    elif scope["type"] == "http":
        await respond_html(send, tester_page(
            scope.get("root_path", ""), "Echo",
            "Every text frame comes back as 'Echo: <text>'.",
            presets=[{"text": "Hello!"}]))
    elif scope["type"] == "lifespan":
        await handle_lifespan(receive, send)
