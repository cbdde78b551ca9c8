"""Hornbeam's WebSocket chat (seed 000) on the `hornbeam_erlang` engine.

Run alone from the repository root::

    uvicorn examples.websocket_chat.app:application --host 127.0.0.1 --port 8000

Users and the last `HISTORY_KEPT` messages of each room live in the store; messages and typing
notices go over the bus on topic ``chat:<room>``. Unlike the seed, a message reaches every user of
the room as soon as it is published: each connection joins its room's group in the process's topic
fan-out (`hornbeam_channels.fanout`), which holds one mailbox and one task per room and writes
each message, encoded once by its publisher, to every connection's outbox.

The user list is driven by the store itself: `UserWatch` watches each room's user keys
(``room:<room>:user:``) once per process and turns their changes into the ``user_joined`` and
``user_left`` events, so the list every client keeps (the ``joined`` reply's ``users``, then those
events) follows the store, whichever process (worker, script) wrote it, on every backend.

Store keys (all of a user's are removed however the connection ends):

- ``chat:rooms:<room>``            the room index, for ``/api/rooms``
- ``room:<room>:user:<user_id>``   one per joined connection: ``{user_id, username, joined_at}``
- ``room:<room>:user_count``       joined connections (a counter)
- ``room:<room>:msg_seq``          the last message id (a counter)
- ``room:<room>:msg:<id>``         the last `HISTORY_KEPT` messages; older ones are deleted
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import unicodedata
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs

import hornbeam_erlang as hb
from hornbeam_channels import (Fanout, OriginGuard, Outbox, SlowConsumer, Wire, lag_notice,
                               next_batch)
from hornbeam_channels.asgi import Receive, Scope, Send
from hornbeam_channels.outbox import CLOSE_TOO_SLOW
from hornbeam_channels.routing import lifespan, respond, respond_json, route_path
from hornbeam_erlang import (
    state_delete,
    state_get,
    state_get_multi,
    state_incr,
    state_keys,
    state_set,
)

HISTORY_KEPT = 100
HISTORY_ON_JOIN = 50
# uvicorn accepts frames up to 16 MiB (--ws-max-size); a chat line never needs more than this.
MAX_FRAME_CHARS = 64 * 1024
MAX_TEXT_CHARS = 2000
MAX_USERNAME_CHARS = 32
DEFAULT_ROOM = "general"
# Room names become topic segments, so ':' (separator), '*' and '>' (wildcards) must not appear.
ROOM_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

CLOSE_UNSUPPORTED_DATA = 1003  # a binary frame: this endpoint speaks JSON text only
# Slow consumers: what waits to be written to one client, beyond what the transport buffers. A
# client that lets more than this pile up (it stopped reading, or its link is far too slow) is
# disconnected with CLOSE_TOO_SLOW, so one stalled client costs at most this much memory and
# never holds back the others. About 1,000 ordinary chat messages.
OUTBOX_MAX_CHARS = 256 * 1024
CLOSE_INVALID_PAYLOAD = 1007  # text that is not a JSON object
CLOSE_POLICY_VIOLATION = 1008  # a room name that is not allowed
CLOSE_TOO_BIG = 1009  # a frame over MAX_FRAME_CHARS
CLOSE_INTERNAL_ERROR = 1011  # a bug or an engine error while handling a frame

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")


# The rooms of this process: one mailbox and one sending task per room, whatever its users. A
# member that fell behind so far that its room's mailbox dropped messages gets a lag notice.
rooms = Fanout(on_lag=lag_notice(lambda n: json.dumps({"type": "lagged", "dropped": n})),
               name="chat rooms")


class _RoomUsers:
    """One room's users as this process last saw them, and its local connections."""

    __slots__ = ("room_id", "prefix", "mailbox", "members", "users", "task")

    def __init__(self, room_id: str, mailbox: hb.Mailbox) -> None:
        self.room_id = room_id
        self.prefix = user_prefix(room_id)
        self.mailbox = mailbox
        self.members: dict[Outbox, None] = {}  # insertion-ordered set
        self.users = read_users(self.prefix)  # after the watch is in place: nothing falls between
        self.task: Optional[asyncio.Task[None]] = None


class UserWatch:
    """The rooms' user lists, driven by a watch on their user keys: one mailbox and one task per
    room and process (event loop), whatever the number of its connections.

    A room's mailbox watches ``room:<room>:user:``; its task turns the changes into the protocol's
    events, made once and written to every local connection of the room: a ``set`` of a key it did
    not know is ``user_joined``, a ``delete`` or ``expire`` of a key it knew is ``user_left`` (with
    the name it knew), a ``clear`` or a lag notice (the mailbox dropped changes) re-reads the
    room's users and announces the difference. So the list is right in every worker on
    ``local://`` and Redis, also for keys written by another process, and a process never
    announces a user twice or one it never saw. A room's watch starts with its first connection
    here (before that connection joins, so its own join is announced to it) and ends with its
    last.
    """

    def __init__(self, *, capacity: Optional[int] = None) -> None:
        self.capacity = capacity
        self._rooms: dict[tuple[asyncio.AbstractEventLoop, str], _RoomUsers] = {}

    def join(self, room_id: str, member: Outbox) -> None:
        loop = asyncio.get_running_loop()
        rk = (loop, room_id)
        room = self._rooms.get(rk)
        if room is None:
            mailbox = hb.Mailbox(self.capacity)
            mailbox.watch(user_prefix(room_id))
            room = _RoomUsers(room_id, mailbox)
            room.task = loop.create_task(self._run(room), name=f"chat users {room_id}")
            self._rooms[rk] = room
        room.members[member] = None

    def leave(self, room_id: str, member: Outbox) -> None:
        loop = asyncio.get_running_loop()
        room = self._rooms.get((loop, room_id))
        if room is None or room.members.pop(member, _MISSING) is _MISSING or room.members:
            return
        del self._rooms[(loop, room_id)]
        room.mailbox.close()
        task, room.task = room.task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def users(self, room_id: str) -> Optional[dict[str, dict[str, Any]]]:
        """The users of ``room_id`` as this loop's watch knows them (None: no watch here)."""
        room = self._rooms.get((asyncio.get_running_loop(), room_id))
        return None if room is None else dict(room.users)

    async def _run(self, room: _RoomUsers) -> None:
        while (batch := await next_batch(room.mailbox)) is not None:
            dropped = sum(msg.lagged for msg in batch)
            if dropped or any(msg.op == "clear" for msg in batch):
                if dropped:
                    log.warning("user list of room %r fell behind, %d changes dropped: re-reading",
                                room.room_id, dropped)
                frames = await self.reread(room)
            else:
                frames = self.apply(room, batch)
            for text in frames:
                wire = Wire(text)  # encoded once for every member
                for member in tuple(room.members):
                    # False: that client is gone or dropped; its handler leaves the room.
                    member.offer(wire)

    @staticmethod
    def apply(room: _RoomUsers, batch: list[hb.Message]) -> list[str]:
        """The frames a batch of changes (no lag notice, no clear) makes, in order; updates
        ``room.users``."""
        users = room.users
        frames = []
        for msg in batch:
            key = msg.key
            if msg.op == "set" and isinstance(msg.value, dict):
                if key not in users:
                    frames.append(user_event("user_joined", msg.value))
                users[key] = msg.value
            elif msg.op in ("delete", "expire") and key in users:
                frames.append(user_event("user_left", users.pop(key)))
        return frames

    @staticmethod
    async def reread(room: _RoomUsers) -> list[str]:
        """After a lag notice or a clear: the room's users from the store, and the frames that
        tell the difference. The read comes after the batch was taken, so the store holds every
        change the batch carries (its events are skipped). While the store cannot be reached
        (Redis restarting), it retries every second."""
        while True:
            try:
                fresh = read_users(room.prefix)
                break
            except hb.BackendError as exc:
                log.warning("user list of room %r: cannot read the store (%s), retrying",
                            room.room_id, exc)
                await asyncio.sleep(1.0)
        old = room.users
        frames = [user_event("user_left", u) for k, u in old.items() if k not in fresh]
        frames += [user_event("user_joined", u) for k, u in fresh.items() if k not in old]
        room.users = fresh
        return frames


_MISSING = object()


def user_prefix(room_id: str) -> str:
    return f"room:{room_id}:user:"


def read_users(prefix: str) -> dict[str, dict[str, Any]]:
    found = state_get_multi(state_keys(prefix))
    return {key: user for key, user in found.items() if isinstance(user, dict)}


def user_event(kind: str, user: dict[str, Any]) -> str:
    return json.dumps({"type": kind, "data": {"user_id": user.get("user_id"),
                                              "username": user.get("username")}})


user_lists = UserWatch()


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class ChatRoom:
    """One room: its users and recent messages in the store, its events on topic ``chat:<room>``."""

    def __init__(self, room_id: str):
        self.room_id = room_id
        self.topic = f"chat:{room_id}"

    def add_user(self, user_id: str, username: str) -> None:
        state_set(f"chat:rooms:{self.room_id}", self.room_id)
        state_set(f"room:{self.room_id}:user:{user_id}", {
            "user_id": user_id,
            "username": username,
            "joined_at": now_iso(),
        })
        state_incr(f"room:{self.room_id}:user_count")

    def remove_user(self, user_id: str) -> None:
        state_delete(f"room:{self.room_id}:user:{user_id}")
        state_incr(f"room:{self.room_id}:user_count", -1)

    def get_users(self) -> list[dict[str, Any]]:
        keys = state_keys(f"room:{self.room_id}:user:")
        users = [u for u in state_get_multi(keys).values() if u]
        users.sort(key=lambda u: (u.get("joined_at", ""), u.get("user_id", "")))
        return users

    def user_count(self) -> int:
        return int(state_get(f"room:{self.room_id}:user_count") or 0)

    def add_message(self, user_id: str, username: str, text: str) -> dict[str, Any]:
        msg_id = state_incr(f"room:{self.room_id}:msg_seq")
        message = {
            "id": msg_id,
            "user_id": user_id,
            "username": username,
            "text": text,
            "timestamp": now_iso(),
        }
        state_set(f"room:{self.room_id}:msg:{msg_id}", message)
        # Keep the last HISTORY_KEPT: each id is unique, so each writer deletes exactly the one
        # its id pushed out. A writer that stored its message after a newer writer's delete
        # already ran sees the sequence past it and deletes its own.
        if msg_id > HISTORY_KEPT:
            state_delete(f"room:{self.room_id}:msg:{msg_id - HISTORY_KEPT}")
        if (state_get(f"room:{self.room_id}:msg_seq") or 0) - msg_id >= HISTORY_KEPT:
            state_delete(f"room:{self.room_id}:msg:{msg_id}")

        publish_event(self.topic, "message", message)
        return message

    def get_recent_messages(self, limit: int = HISTORY_ON_JOIN) -> list[dict[str, Any]]:
        limit = max(0, min(limit, HISTORY_KEPT))
        seq = state_get(f"room:{self.room_id}:msg_seq") or 0
        keys = [f"room:{self.room_id}:msg:{i}" for i in range(max(1, seq - limit + 1), seq + 1)]
        found = state_get_multi(keys)
        return [found[k] for k in keys if found.get(k)]

    def stored_message_count(self) -> int:
        return len(state_keys(f"room:{self.room_id}:msg:"))

    def summary(self) -> dict[str, Any]:
        return {"id": self.room_id, "users": self.user_count(), "messages": self.stored_message_count()}


def publish_event(topic: str, kind: str, data: dict[str, Any]) -> int:
    # Published as JSON text: encoded once here rather than once per receiving connection. The
    # room's members in this process get it at once, from here; other processes through the bus.
    return rooms.publish(topic, json.dumps({"type": kind, "data": data}))


def known_rooms() -> list[ChatRoom]:
    return [ChatRoom(key[len("chat:rooms:"):]) for key in state_keys("chat:rooms:")]


def room_from_path(path: str) -> Optional[str]:
    """``/ws`` and ``/ws/`` mean the default room, ``/ws/<room>`` that room; anything else None."""
    if path in ("/ws", "/ws/"):
        return DEFAULT_ROOM
    if not path.startswith("/ws/"):
        return None
    room = path[len("/ws/"):]
    return room if ROOM_RE.match(room) else None


def clean_username(value: Any, user_id: str) -> str:
    name = value if isinstance(value, str) else ""
    # Control characters would garble the user list; markup is harmless (pages use textContent).
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    return name[:MAX_USERNAME_CHARS] or f"user_{user_id[:8]}"


@OriginGuard  # foreign Origin -> 403 at the handshake (HORNBEAM_ALLOWED_ORIGINS)
async def application(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await handle_http(scope, receive, send)
    elif scope["type"] == "websocket":
        await handle_websocket(scope, receive, send)
    elif scope["type"] == "lifespan":
        await lifespan(receive, send)


async def handle_http(scope: Scope, receive: Receive, send: Send) -> None:
    path = route_path(scope)
    if scope.get("method", "GET") not in ("GET", "HEAD"):
        await respond(send, 405, b"Method Not Allowed")
    elif path == "/":
        await respond(send, 200, get_chat_html(scope.get("root_path", "")).encode(),
                      "text/html; charset=utf-8")
    elif path == "/api/rooms":
        await respond_json(send, 200, [room.summary() for room in known_rooms()])
    elif path.startswith("/api/rooms/"):
        room_id = path[len("/api/rooms/"):]
        if not ROOM_RE.match(room_id) or state_get(f"chat:rooms:{room_id}") is None:
            await respond_json(send, 404, {"error": "room not found"})
            return
        room = ChatRoom(room_id)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        try:
            limit = int(query.get("limit", [HISTORY_ON_JOIN])[0])
        except ValueError:
            await respond_json(send, 400, {"error": "limit must be an integer"})
            return
        await respond_json(send, 200, {
            **room.summary(),
            "user_list": room.get_users(),
            "recent_messages": room.get_recent_messages(limit),
        })
    else:
        await respond(send, 404, b"Not Found")


class Connection:
    """One WebSocket of a room: its handlers, and its outbox (the only writer of the socket)."""

    def __init__(self, room: ChatRoom, send: Send):
        self.room = room
        self.user_id = str(uuid.uuid4())
        self.username: Optional[str] = None
        # Sends go straight to the socket while the client keeps up; past OUTBOX_MAX_CHARS
        # waiting characters the client is closed with 1008 and the outbox ends.
        self.outbox = Outbox.for_asgi(send, name=f"client {self.user_id} in room {room.room_id!r}",
                                      max_chars=OUTBOX_MAX_CHARS)

    async def send_json(self, data: dict[str, Any]) -> None:
        await self.outbox.send(json.dumps(data))

    async def read(self, receive: Receive) -> Optional[tuple[int, str]]:
        """Handle frames until the client leaves (None) or sends something that ends it (a close)."""
        while True:
            event = await receive()
            if event["type"] == "websocket.disconnect":
                return None
            if event["type"] != "websocket.receive":
                continue
            text = event.get("text")
            if text is None:
                return CLOSE_UNSUPPORTED_DATA, "binary frames are not accepted"
            if len(text) > MAX_FRAME_CHARS:
                return CLOSE_TOO_BIG, "message too big"
            try:
                data = json.loads(text)
            except (ValueError, RecursionError):  # RecursionError: nested too deeply
                return CLOSE_INVALID_PAYLOAD, "invalid JSON"
            if not isinstance(data, dict):
                return CLOSE_INVALID_PAYLOAD, "expected a JSON object"
            await self.handle(data)

    async def handle(self, data: dict[str, Any]) -> None:
        msg_type = data.get("type")
        if msg_type == "join":
            await self.join(data)
        elif msg_type == "message":
            if self.username is None:
                await self.send_json({"type": "error", "reason": "join first"})
                return
            text = data.get("text")
            text = text.strip() if isinstance(text, str) else ""
            if len(text) > MAX_TEXT_CHARS:
                await self.send_json({"type": "error", "reason": f"message over {MAX_TEXT_CHARS} characters"})
            elif text:
                self.room.add_message(self.user_id, self.username, text)
        elif msg_type == "typing":
            if self.username is not None:
                publish_event(self.room.topic, "typing", {
                    "user_id": self.user_id,
                    "username": self.username,
                    "is_typing": data.get("is_typing", True) is not False,
                })
        else:
            await self.send_json({"type": "error", "reason": "unknown message type"})

    async def join(self, data: dict[str, Any]) -> None:
        if self.username is not None:
            await self.send_json({"type": "error", "reason": "already joined"})
            return
        username = clean_username(data.get("username"), self.user_id)
        self.room.add_user(self.user_id, username)
        # Set only once stored, so leave() undoes exactly what was done.
        self.username = username
        # Read from the store: it holds this user already. Then the room's watch announces the
        # join (user_joined, to this connection too) and every later change of the list.
        await self.send_json({
            "type": "joined",
            "user_id": self.user_id,
            "username": self.username,
            "room": self.room.room_id,
            "users": self.room.get_users(),
            "recent_messages": self.room.get_recent_messages(),
        })

    def leave(self) -> None:
        if self.username is not None:
            # The room's watch, in every process, announces it (user_left).
            self.room.remove_user(self.user_id)
            self.username = None


async def handle_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    room_id = room_from_path(route_path(scope))
    first = await receive()
    if first["type"] != "websocket.connect":
        return
    if room_id is None:
        # Closing before accepting refuses the handshake (HTTP 403).
        await send({"type": "websocket.close", "code": CLOSE_POLICY_VIOLATION})
        return

    room = ChatRoom(room_id)
    conn = Connection(room, send)
    await send({"type": "websocket.accept"})

    rooms.join(room.topic, conn.outbox)
    user_lists.join(room_id, conn.outbox)
    reading = asyncio.create_task(conn.read(receive))
    dropped = asyncio.create_task(conn.outbox.wait_ended())
    try:
        # The outbox ends first only when it dropped a client too slow to read (or the client is
        # gone): then the connection ends here, without waiting for the client.
        await asyncio.wait([reading, dropped], return_when=asyncio.FIRST_COMPLETED)
        close: Optional[tuple[int, str]] = None
        if reading.done():
            try:
                close = reading.result()
            except (OSError, SlowConsumer):
                pass  # the client went away (or was dropped) while being answered
            except Exception:
                log.exception("chat connection in room %r failed", room_id)
                close = (CLOSE_INTERNAL_ERROR, "internal error")
        if close is not None and not conn.outbox.ended:
            conn.outbox.cancel()  # the close goes out now, after what was sent already
            code, reason = close
            with contextlib.suppress(OSError):
                await send({"type": "websocket.close", "code": code, "reason": reason})
    finally:
        # Runs however the connection ends: client close, lost network, bad input, server shutdown.
        reading.cancel()
        dropped.cancel()
        # wait() rather than await: the tasks' CancelledError is not ours to raise.
        await asyncio.wait([reading, dropped])
        rooms.leave_all(conn.outbox)
        user_lists.leave(room_id, conn.outbox)
        conn.outbox.cancel()
        conn.leave()


_PAGE = (STATIC / "index.html").read_text(encoding="utf-8")


def get_chat_html(root_path: str = "") -> str:
    # The page builds its URLs from ROOT, so it works when mounted under a prefix.
    root_js = json.dumps(root_path).replace("<", "\\u003c").replace(">", "\\u003e")
    return _PAGE.replace("__ROOT_PATH_JSON__", root_js)
