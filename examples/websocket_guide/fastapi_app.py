"""Guide section "FastAPI WebSocket": ``/ws/{room}`` counts its users in ``room:{room}:users``.

The seed decremented the count only on `WebSocketDisconnect`; here a ``finally`` does it, so the count
stays exact however the socket ends. ``GET /rooms/{room}`` reads it; the tester page is at ``/``.

Run alone: ``uvicorn examples.websocket_guide.fastapi_app:app``.
"""

from __future__ import annotations

import re

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse
from hornbeam_channels import OriginGuard
from hornbeam_erlang import state_get, state_incr

from ._asgi import tester_page

ROOM_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

app = FastAPI(title="Hornbeam guide: FastAPI WebSocket")
app.add_middleware(OriginGuard)  # foreign Origin -> 403 at the handshake


@app.websocket("/ws/{room}")
async def websocket_endpoint(websocket: WebSocket, room: str) -> None:
    if not ROOM_RE.match(room):
        await websocket.close(code=1008, reason="bad room name")
        return
    await websocket.accept()
    state_incr(f"room:{room}:users")

    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("text")
            if data is None:
                await websocket.close(code=1003, reason="text frames only")
                break
            await websocket.send_text(f"Room {room}: {data}")
    except WebSocketDisconnect:
        pass
    finally:
        state_incr(f"room:{room}:users", -1)


@app.get("/rooms/{room}")
async def room_users(room: str) -> dict[str, object]:
    return {"room": room, "users": state_get(f"room:{room}:users") or 0}


@app.get("/", response_class=HTMLResponse)
async def index(request: Request) -> str:
    return tester_page(
        request.scope.get("root_path", ""), "FastAPI WebSocket",
        "Each connection to /ws/{room} counts in room:{room}:users; GET rooms/{room} reads the count.",
        ws_path="/ws/lobby", binary=False, presets=[{"text": "hello room"}])
