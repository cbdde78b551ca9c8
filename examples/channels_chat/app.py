"""Channels chat (seed 002): rooms over channels, presence, typing indicator and history.

The handlers are the seed's, on ``hornbeam_channels`` and ``hornbeam_presence``; history is real:
the last 100 messages of each room live in the engine's store, one key per message, so every
process sharing the engine (``HORNBEAM_URL``) sees the same history.

Run alone: ``uvicorn examples.channels_chat.app:app`` and open http://127.0.0.1:8000/ in two
windows. The page loads the JavaScript client from ``ws/hornbeam.js`` and connects to ``ws``
next to itself, so the app also works mounted under a prefix.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from hornbeam_erlang import state_delete, state_get_multi, state_incr, state_keys, state_set
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from hornbeam_channels import Socket, asgi_endpoint, broadcast_from, channel
from hornbeam_presence import Presence

log = logging.getLogger(__name__)

HISTORY_SIZE = 100
MAX_BODY = 2000
MAX_USERNAME = 32

room = channel("room:*")


def _room_prefix(room_id: str) -> str:
    # The length makes the prefix of one room never a prefix of another room's keys.
    return f"channels_chat:room:{len(room_id)}:{room_id}:"


def save_message(room_id: str, username: str, body: str) -> dict[str, Any]:
    """Appends a message to the room's history and drops what falls out of the last 100."""
    prefix = _room_prefix(room_id)
    seq = state_incr(prefix + "seq")
    message = {"username": username, "body": body, "at": time.time()}
    state_set(f"{prefix}msg:{seq:012d}", message)
    if seq > HISTORY_SIZE:
        state_delete(f"{prefix}msg:{seq - HISTORY_SIZE:012d}")
    return message


def history(room_id: str) -> list[dict[str, Any]]:
    """The room's last 100 messages, oldest first."""
    keys = state_keys(_room_prefix(room_id) + "msg:")[-HISTORY_SIZE:]
    values = state_get_multi(keys) if keys else {}
    return [values[k] for k in keys if values.get(k) is not None]


@room.on_join
def join_room(topic: str, topic_params: dict[str, str], params: dict[str, Any],
              socket: Socket) -> tuple[Any, ...]:
    """Handle joining a chat room."""
    room_id = topic_params.get("room_id", "unknown")
    username = params.get("username", "anonymous")

    if not isinstance(username, str) or not username.strip() or username == "anonymous":
        return ("error", {"reason": "username required"})
    username = username.strip()
    if len(username) > MAX_USERNAME:
        return ("error", {"reason": f"username too long (at most {MAX_USERNAME} characters)"})

    socket = socket.assign("room_id", room_id)
    socket = socket.assign("username", username)

    Presence(topic).track(socket, f"user:{username}", {
        "username": username,
        "joined_at": time.time(),
    })

    return ("ok", {
        "room_id": room_id,
        "message": f"Welcome to {room_id}!",
    }, socket)


@room.on_leave
def leave_room(topic: str, socket: Socket) -> None:
    """Handle leaving a chat room (presence goes by itself)."""
    log.info("user %s left %s", socket.assigns.get("username", "unknown"), topic)


@room.on("new_msg")
def handle_new_message(payload: dict[str, Any], socket: Socket) -> tuple[Any, ...]:
    """Handle a new chat message: keep it in the history, send it to the others."""
    body = payload.get("body", "")
    username = socket.assigns.get("username", "anonymous")

    if not isinstance(body, str) or not body.strip():
        return ("reply", ("error", {"reason": "empty message"}), socket)
    if len(body) > MAX_BODY:
        return ("reply", ("error", {"reason": f"message too long (at most {MAX_BODY})"}), socket)

    save_message(socket.assigns["room_id"], username, body)
    broadcast_from(socket, "new_msg", {"username": username, "body": body})
    return ("reply", {"status": "ok"}, socket)


@room.on("typing")
def handle_typing(payload: dict[str, Any], socket: Socket) -> tuple[Any, ...]:
    """Handle typing indicator."""
    broadcast_from(socket, "typing", {
        "username": socket.assigns.get("username", "anonymous"),
        "typing": bool(payload.get("typing", False)),
    })
    return ("noreply", socket)


@room.on("get_history")
def handle_get_history(payload: dict[str, Any], socket: Socket) -> tuple[Any, ...]:
    """Recent message history of the room (the last 100)."""
    return ("reply", {"messages": history(socket.assigns["room_id"])}, socket)


INDEX = Path(__file__).with_name("index.html")


async def index(request: Request) -> HTMLResponse:
    """The chat page."""
    return HTMLResponse(INDEX.read_text(encoding="utf-8"))


pages = Starlette(routes=[Route("/", index), Route("/index.html", index)])

#: The ASGI app: the channel socket and client under /ws, the page at /.
app = asgi_endpoint("/ws", app=pages)
