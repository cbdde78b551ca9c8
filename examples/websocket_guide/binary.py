"""Guide section "Binary Data": binary frames are processed and answered in binary, text is echoed.

`process_binary` answers a frame with its SHA-256 digest (32 bytes), standing in for the seed's
"process binary (e.g., image, protobuf)". Frames are limited to `MAX_FRAME_BYTES`; a bigger one is
closed with 1009.

Run alone: ``uvicorn examples.websocket_guide.binary:application`` (tester page at ``/``).
"""

from __future__ import annotations

import hashlib

from hornbeam_channels import OriginGuard

from ._asgi import Receive, Scope, Send, handle_lifespan, respond_html, tester_page

MAX_FRAME_BYTES = 1024 * 1024


def process_binary(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@OriginGuard  # foreign Origin -> 403 at the handshake (HORNBEAM_ALLOWED_ORIGINS)
async def application(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await receive()  # the handshake request, websocket.connect, comes first
        await send({"type": "websocket.accept"})

        while True:
            message = await receive()

            if message["type"] == "websocket.disconnect":
                break

            if message["type"] == "websocket.receive":
                data = message.get("bytes")
                text = message.get("text")
                if data is not None:
                    if len(data) > MAX_FRAME_BYTES:
                        await send({"type": "websocket.close", "code": 1009, "reason": "frame too big"})
                        break
                    await send({"type": "websocket.send", "bytes": process_binary(data)})
                elif text is not None:
                    await send({"type": "websocket.send", "text": text})
    elif scope["type"] == "http":
        await respond_html(send, tester_page(
            scope.get("root_path", ""), "Binary frames",
            "A binary frame is answered with its SHA-256 digest (32 bytes); a text frame is echoed."))
    elif scope["type"] == "lifespan":
        await handle_lifespan(receive, send)
