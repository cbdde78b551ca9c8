"""Zenith's WebSocket chat (seed 003) on FastAPI, with its rooms and users in the Hornbeam store.

The seed kept ``rooms`` and ``user_names`` in Python dicts of one process and looped over sockets to
broadcast. Here every connection is a key in the store and a member of its room's group in the
process's topic fan-out (``hornbeam_channels.Fanout``):

* ``zenith:room:<room>:<conn>`` holds the username of connection ``<conn>`` while it is in
  ``<room>`` (``<conn>`` comes from a store counter, so keys sort in join order); the REST endpoints
  read the rooms and users back with ``state_keys``;
* events of a room are published on the topic ``zenith:room:<room>``, encoded once; each process
  holds one mailbox and one task per room and writes every event to the sockets of the room it
  serves (the publisher's own process at once, in the publisher's step), so fan-out works across
  processes once the store and bus are shared (``HORNBEAM_URL``); what is meant for one connection
  only (``users_list``, errors) goes straight to its outbox, after the room events it caused.

Room names and usernames are percent-encoded inside keys and topics, so a ``:`` or ``*`` in a name
can never split a key or act as a wildcard.

Wire protocol (the seed's, unchanged): the client sends ``{"type": "join", "username": ...}``,
``{"type": "message", "message": ...}`` and ``{"type": "typing", "is_typing": ...}``; the server
sends ``user_joined``, ``users_list``, ``message``, ``typing`` and ``user_left`` events. Where the seed
dropped the connection or ignored a bad frame, the server answers ``{"type": "error", "error":
<code>, "message": <text>}`` and keeps the connection (clients that ignore unknown types, like the
seed's page, are unaffected).

Run alone: ``uvicorn examples.zenith_chat.app:app`` and open http://127.0.0.1:8000/.
"""

from __future__ import annotations

import html
import json
import logging
import time
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote, unquote

import hornbeam_erlang as hb
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import HTMLResponse, JSONResponse
from hornbeam_channels import Fanout, OriginGuard, Outbox, lag_skip

from examples._tasks import run_until_first_ends, text_frames

log = logging.getLogger("zenith_chat")

MAX_USERNAME = 64
MAX_MESSAGE = 2000
# No frame of this protocol needs more; larger ones are refused before parsing (uvicorn alone
# would accept up to 16 MiB, --ws-max-size).
MAX_FRAME_CHARS = 64 * 1024

PAGE = (Path(__file__).parent / "index.html").read_text(encoding="utf-8")

app = FastAPI(title="Zenith chat on Hornbeam")
app.add_middleware(OriginGuard)  # foreign Origin -> 403 at the handshake (HORNBEAM_ALLOWED_ORIGINS)


def _enc(name: str) -> str:
    """Percent-encodes a room or username so it is one safe key/topic segment."""
    return quote(name, safe="")


def room_topic(room_id: str) -> str:
    return f"zenith:room:{_enc(room_id)}"


def user_key(room_id: str, conn_id: str) -> str:
    return f"zenith:room:{_enc(room_id)}:{conn_id}"


def room_users(room_id: str) -> list[str]:
    """Usernames in a room, in join order (one per connection, as the seed listed them)."""
    keys = hb.state_keys(f"zenith:room:{_enc(room_id)}:")
    values = hb.state_get_multi(keys)
    return [values[k] for k in keys if isinstance(values[k], str)]


def active_rooms() -> dict[str, list[str]]:
    """Every room that has at least one user, with its users; rooms sorted by name."""
    rooms: dict[str, list[str]] = {}
    keys = hb.state_keys("zenith:room:")
    values = hb.state_get_multi(keys)
    for key in keys:
        username = values[key]
        if not isinstance(username, str):
            continue
        encoded_room = key[len("zenith:room:"):].rpartition(":")[0]
        rooms.setdefault(unquote(encoded_room), []).append(username)
    return dict(sorted(rooms.items()))


# The rooms of this process: one mailbox and one sending task per room, whatever its users. As in
# the seed, what a connection missed while it fell far behind is skipped (and logged).
rooms = Fanout(on_lag=lag_skip, name="zenith rooms")


def broadcast_to_room(room_id: str, event: dict[str, Any]) -> None:
    """Sends ``event`` to everyone in the room, in every process; encoded once, here."""
    rooms.publish(room_topic(room_id), json.dumps(event))


class ChatConnection:
    """One socket in one room: its handlers for the seed's three frame types, and its cleanup."""

    def __init__(self, websocket: WebSocket, room_id: str, conn_id: str):
        self.websocket = websocket
        self.room_id = room_id
        self.conn_id = conn_id
        self.username: Optional[str] = None
        # What waits for the client, bounded: a client that stops reading is dropped (1008).
        # (Not bound to self: the outbox must not tie the connection into a reference cycle.)
        self.outbox = Outbox(websocket.send_text,
                             lambda code, reason: websocket.close(code=code, reason=reason),
                             name=f"zenith connection {conn_id}")

    def send(self, event: dict[str, Any]) -> None:
        """Sends ``event`` to this connection only (never waits: through its outbox)."""
        self.outbox.offer(json.dumps(event))

    def send_error(self, code: str, message: str) -> None:
        self.send({"type": "error", "error": code, "message": message})

    async def read_socket(self) -> None:
        """Handles client frames until the client goes away."""
        async for raw in text_frames(self.websocket):
            self.handle_text(raw)

    def handle_text(self, raw: str) -> None:
        if len(raw) > MAX_FRAME_CHARS:
            self.send_error("frame_too_large", f"frames are limited to {MAX_FRAME_CHARS} characters")
            return
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nested too deeply
            self.send_error("invalid_json", "frames must be JSON objects")
            return
        if not isinstance(data, dict):
            self.send_error("invalid_json", "frames must be JSON objects")
            return
        kind = data.get("type")
        if kind == "join":
            self.join(data)
        elif kind == "message":
            self.message(data)
        elif kind == "typing":
            self.typing(data)
        else:
            self.send_error("unknown_type", f"unknown frame type: {kind!r}"[:200])

    def join(self, data: dict[str, Any]) -> None:
        username = data.get("username")
        if not isinstance(username, str) or not username.strip() or len(username) > MAX_USERNAME:
            self.send_error("invalid_username",
                       f"username must be a non-empty string of at most {MAX_USERNAME} characters")
            return
        if self.username is None:
            rooms.join(room_topic(self.room_id), self.outbox)
        # A second join renames the connection, as the seed's dict assignment did.
        self.username = username
        hb.state_set(user_key(self.room_id, self.conn_id), username)
        broadcast_to_room(self.room_id, {
            "type": "user_joined",
            "username": username,
            "message": f"{username} joined the room",
        })
        self.send({"type": "users_list", "users": room_users(self.room_id)})

    def message(self, data: dict[str, Any]) -> None:
        if self.username is None:
            self.send_error("not_joined", "send a join frame first")
            return
        text = data.get("message")
        if not isinstance(text, str) or not text.strip():
            self.send_error("empty_message", "message must be a non-empty string")
            return
        if len(text) > MAX_MESSAGE:
            self.send_error("message_too_long",
                       f"message must be at most {MAX_MESSAGE} characters")
            return
        broadcast_to_room(self.room_id, {
            "type": "message",
            "username": self.username,
            "message": text,
            # Wall-clock seconds: the seed's event-loop clock means nothing in another process.
            "timestamp": time.time(),
        })

    def typing(self, data: dict[str, Any]) -> None:
        if self.username is None:
            self.send_error("not_joined", "send a join frame first")
            return
        broadcast_to_room(self.room_id, {
            "type": "typing",
            "username": self.username,
            "is_typing": bool(data.get("is_typing", False)),
        })

    def leave(self) -> None:
        """Removes the connection's key and tells the room; safe to call however the socket ended."""
        rooms.leave_all(self.outbox)
        self.outbox.cancel()
        if self.username is not None:
            hb.state_delete(user_key(self.room_id, self.conn_id))
            broadcast_to_room(self.room_id, {
                "type": "user_left",
                "username": self.username,
                "message": f"{self.username} left the room",
            })
            self.username = None


@app.websocket("/ws/chat/{room_id}")
async def websocket_chat(websocket: WebSocket, room_id: str) -> None:
    """The seed's endpoint: join, then chat and type; events come from the room's topic."""
    await websocket.accept()
    conn_id = f"{hb.state_incr('zenith:next_conn'):012d}"
    conn = ChatConnection(websocket, room_id, conn_id)
    try:
        # Ends when the client leaves, or when its outbox dropped it for not reading.
        await run_until_first_ends(conn.read_socket(), conn.outbox.wait_ended())
    finally:
        conn.leave()


@app.get("/api/rooms")
async def get_active_rooms() -> dict[str, Any]:
    """Active rooms (those with at least one user), with their user counts and users."""
    return {"rooms": [
        {"room_id": room_id, "user_count": len(users), "users": users}
        for room_id, users in active_rooms().items()
    ]}


@app.get("/api/rooms/{room_id}")
async def get_room_info(room_id: str) -> Any:
    """One room's users; a 404 with ``{"error": "Room not found"}`` when nobody is in it."""
    users = room_users(room_id)
    if not users:
        return JSONResponse({"error": "Room not found"}, status_code=404)
    return {"room_id": room_id, "user_count": len(users), "users": users}


@app.get("/", response_class=HTMLResponse)
async def chat_interface(request: Request) -> HTMLResponse:
    """The chat page; its socket and API URLs start with the ASGI root_path (mount prefix)."""
    root_path = request.scope.get("root_path", "")
    return HTMLResponse(PAGE.replace("{{ROOT_PATH}}", html.escape(root_path, quote=True)))
