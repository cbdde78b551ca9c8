"""Guide section "Starlette WebSocket": ``/ws`` echoes, ``/ws/{room}`` counts its users.

The seed's echo handler at ``/ws``, plus the room counter of the FastAPI section written with
Starlette's routing (count in ``starlette:room:{room}:users``, read with ``GET /rooms/{room}``).
The tester page is at ``/``.

Run alone: ``uvicorn examples.websocket_guide.starlette_app:app``.
"""

from __future__ import annotations

import re

from hornbeam_channels import OriginGuard
from hornbeam_erlang import state_get, state_incr
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ._asgi import tester_page

ROOM_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def users_key(room: str) -> str:
    return f"starlette:room:{room}:users"


async def websocket_handler(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            if text is None:
                # receive_text() would raise on a binary frame; refuse it with the proper code.
                await websocket.close(code=1003, reason="text frames only")
                break
            await websocket.send_text(f"Echo: {text}")
    except WebSocketDisconnect:
        pass


async def room_handler(websocket: WebSocket) -> None:
    room = websocket.path_params["room"]
    if not ROOM_RE.match(room):
        await websocket.close(code=1008, reason="bad room name")
        return
    await websocket.accept()
    state_incr(users_key(room))
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            if text is None:
                await websocket.close(code=1003, reason="text frames only")
                break
            await websocket.send_text(f"Room {room}: {text}")
    except WebSocketDisconnect:
        pass
    finally:
        state_incr(users_key(room), -1)


async def room_users(request: Request) -> JSONResponse:
    room = request.path_params["room"]
    return JSONResponse({"room": room, "users": state_get(users_key(room)) or 0})


async def index(request: Request) -> HTMLResponse:
    return HTMLResponse(tester_page(
        request.scope.get("root_path", ""), "Starlette WebSocket",
        "/ws echoes text frames as 'Echo: <text>'; /ws/{room} answers 'Room {room}: <text>' and counts "
        "its users (GET rooms/{room}).",
        binary=False, presets=[{"text": "hello"}]))


app = Starlette(routes=[
    Route("/", index),
    Route("/rooms/{room}", room_users),
    WebSocketRoute("/ws", websocket_handler),
    WebSocketRoute("/ws/{room}", room_handler),
], middleware=[Middleware(OriginGuard)])  # foreign Origin -> 403 at the handshake
