"""Hornbeam's WebSocket chat (seed 000) on the `hornbeam_erlang` engine.

Run alone from the repository root::

    uvicorn examples.websocket_chat.app:application --host 127.0.0.1 --port 8000

Users and the last `HISTORY_KEPT` messages of each room live in the store; messages, joins, leaves
and typing notices go over the bus on topic ``chat:<room>``. Unlike the seed, each connection waits
on its socket *and* its mailbox at once (a pump task forwards the mailbox while the handler reads
the socket), so a message reaches every user of the room as soon as it is published.

Store keys (all of a user's are removed however the connection ends):

- ``chat:rooms:<room>``            the room index, for ``/api/rooms``
- ``room:<room>:user:<user_id>``   one per joined connection: ``{user_id, username, joined_at}``
- ``room:<room>:user_count``       joined connections (a counter)
- ``room:<room>:msg_seq``          the last message id (a counter)
- ``room:<room>:msg:<id>``         the last `HISTORY_KEPT` messages; older ones are deleted
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import re
import types
import unicodedata
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Coroutine, Generator, Optional, cast
from urllib.parse import parse_qs

from hornbeam_channels import OriginGuard
from hornbeam_erlang import (
    HornbeamError,
    Mailbox,
    Message,
    publish,
    state_delete,
    state_get,
    state_get_multi,
    state_incr,
    state_keys,
    state_set,
    subscribe,
    unsubscribe,
)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

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
CLOSE_TOO_SLOW = 1008  # a client that does not read what it is sent (see OUTBOX_MAX_CHARS)
CLOSE_INTERNAL_ERROR = 1011  # a bug or an engine error while handling a frame

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")


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
    # Published as JSON text: encoded once here rather than once per receiving connection.
    return publish(topic, json.dumps({"type": kind, "data": data}))


def known_rooms() -> list[ChatRoom]:
    return [ChatRoom(key[len("chat:rooms:"):]) for key in state_keys("chat:rooms:")]


def route_path(scope: Scope) -> str:
    """The path below the mount point: uvicorn and Starlette keep root_path inside path."""
    path: str = scope.get("path", "/")
    root = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        path = path[len(root):]
    return path or "/"


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
        await handle_lifespan(receive, send)


async def handle_lifespan(receive: Receive, send: Send) -> None:
    while True:
        event = await receive()
        if event["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif event["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def respond(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [[b"content-type", content_type], [b"cache-control", b"no-store"]],
    })
    await send({"type": "http.response.body", "body": body})


async def respond_json(send: Send, status: int, data: Any) -> None:
    await respond(send, status, json.dumps(data).encode(), b"application/json")


async def handle_http(scope: Scope, receive: Receive, send: Send) -> None:
    path = route_path(scope)
    if scope.get("method", "GET") not in ("GET", "HEAD"):
        await respond(send, 405, b"Method Not Allowed", b"text/plain")
    elif path == "/":
        await respond(send, 200, get_chat_html(scope.get("root_path", "")).encode(),
                      b"text/html; charset=utf-8")
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
        await respond(send, 404, b"Not Found", b"text/plain")


class Connection:
    """One WebSocket of a room: reads the socket while `pump` forwards the mailbox."""

    def __init__(self, room: ChatRoom, send: Send):
        self.room = room
        self.send = send
        self.user_id = str(uuid.uuid4())
        self.username: Optional[str] = None
        # Messages waiting behind a send that had to wait (see `pump`); `queued` counts their
        # characters and those of that send.
        self.outbox: collections.deque[str] = collections.deque()
        self.queued = 0
        self.writer: Optional[asyncio.Task[None]] = None  # set while a send is waiting

    async def send_json(self, data: dict[str, Any]) -> None:
        await self.send({"type": "websocket.send", "text": json.dumps(data)})

    async def pump(self, mb: Mailbox) -> None:
        """Forward every message of the mailbox to the socket, a batch per wake-up.

        While the client keeps up, uvicorn's `send` completes without waiting, so each message is
        sent from here at once: no task switch per delivery. A send that has to wait (the client's
        TCP window and the transport's buffer are full) is finished by a writer task, and what
        arrives meanwhile goes to the outbox behind it; the pump itself never waits on the client.
        Once the outbox holds more than `OUTBOX_MAX_CHARS` the client is disconnected
        (CLOSE_TOO_SLOW) instead of letting memory grow. When the writer empties the outbox, the
        pump sends directly again.
        """
        # An ASGI server's `send` is an async function: calling it makes a coroutine to step.
        send = cast(Callable[[dict[str, Any]], Coroutine[Any, Any, None]], self.send)
        outbox = self.outbox
        try:
            with contextlib.suppress(OSError, HornbeamError):
                while True:
                    first = await mb.recv()
                    for msg in [first, *mb.drain()]:
                        text = frame_text(msg)
                        if self.writer is None:
                            # Run the send up to its first wait, as an eager task would (Python
                            # 3.12's eager_task_factory, without the task): a send that does not
                            # wait is done when `coro.send` raises StopIteration.
                            coro = send({"type": "websocket.send", "text": text})
                            try:
                                waiting_on = coro.send(None)
                            except StopIteration:
                                continue
                            self.queued += len(text)
                            self.writer = asyncio.create_task(
                                self._write(_resume(coro, waiting_on), len(text)))
                        else:
                            outbox.append(text)
                            self.queued += len(text)
                    if self.queued > OUTBOX_MAX_CHARS:
                        await self._drop_too_slow()
                        return
                    if self.writer is not None and self.writer.done():
                        return  # the client went away while the writer was sending
        finally:
            # Dropped, not only cancelled: a cancelled writer's traceback holds this connection,
            # and that cycle would keep the mailbox (and its descriptor) until the next GC pass.
            writer, self.writer = self.writer, None
            if writer is not None:
                writer.cancel()

    async def _write(self, rest: Awaitable[None], chars: int) -> None:
        """Finish the send that had to wait, then send the outbox; then hand back to the pump."""
        with contextlib.suppress(OSError):
            await rest
            self.queued -= chars
            while self.outbox:
                text = self.outbox.popleft()
                await self.send({"type": "websocket.send", "text": text})
                self.queued -= len(text)
            self.writer = None  # nothing waits: the pump sends directly again

    async def _drop_too_slow(self) -> None:
        log.warning("client %s in room %r is not reading (%d characters queued): disconnecting it",
                    self.user_id, self.room.room_id, self.queued)
        if self.writer is not None:
            self.writer.cancel()
            await asyncio.wait([self.writer])
        self.outbox.clear()
        self.queued = 0
        # The close frame waits behind what the client does not read: try briefly. Returning ends
        # the connection (handle_websocket) either way.
        with contextlib.suppress(asyncio.TimeoutError, OSError):
            await asyncio.wait_for(self.send({
                "type": "websocket.close", "code": CLOSE_TOO_SLOW,
                "reason": "too slow: messages were piling up"}), 1.0)

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
        await self.send_json({
            "type": "joined",
            "user_id": self.user_id,
            "username": self.username,
            "room": self.room.room_id,
            "users": self.room.get_users(),
            "recent_messages": self.room.get_recent_messages(),
        })
        publish_event(self.room.topic, "user_joined", {"user_id": self.user_id, "username": self.username})

    def leave(self) -> None:
        if self.username is not None:
            self.room.remove_user(self.user_id)
            publish_event(self.room.topic, "user_left", {"user_id": self.user_id, "username": self.username})
            self.username = None


@types.coroutine
def _resume(coro: Coroutine[Any, Any, None], waiting_on: Any) -> Generator[Any, Any, None]:
    """The rest of `coro`, whose first step (run by `Connection.pump`) yielded `waiting_on`: the
    task that awaits this gets what `coro` yields, and `coro` gets what the task sends or throws
    (a cancellation included), as `yield from coro` would have done from the start."""
    while True:
        try:
            value = yield waiting_on
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                waiting_on = coro.throw(exc)
            except StopIteration:
                return
        else:
            try:
                waiting_on = coro.send(value)
            except StopIteration:
                return


def frame_text(msg: Message) -> str:
    if msg.lagged:
        return json.dumps({"type": "lagged", "dropped": msg.lagged})
    payload = msg.message
    return payload if isinstance(payload, str) else json.dumps(payload)


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

    mb = subscribe(room.topic)
    pump = asyncio.create_task(conn.pump(mb))
    reading = asyncio.create_task(conn.read(receive))
    try:
        # The pump ends first only when it dropped a client too slow to read (or the client is
        # gone): then the connection ends here, without waiting for the client.
        await asyncio.wait([reading, pump], return_when=asyncio.FIRST_COMPLETED)
        close: Optional[tuple[int, str]] = None
        if reading.done():
            try:
                close = reading.result()
            except OSError:
                pass  # the client went away while being answered: nothing to close
            except Exception:
                log.exception("chat connection in room %r failed", room_id)
                close = (CLOSE_INTERNAL_ERROR, "internal error")
        reading.cancel()
        pump.cancel()
        # wait() rather than await: the tasks' CancelledError is not ours to raise.
        await asyncio.wait([reading, pump])
        if close is not None:
            code, reason = close
            with contextlib.suppress(OSError):
                await send({"type": "websocket.close", "code": code, "reason": reason})
    finally:
        # Runs however the connection ends: client close, lost network, bad input, server shutdown.
        reading.cancel()
        pump.cancel()
        conn.leave()
        unsubscribe(room.topic)
        mb.close()


_PAGE = (STATIC / "index.html").read_text(encoding="utf-8")


def get_chat_html(root_path: str = "") -> str:
    # The page builds its URLs from ROOT, so it works when mounted under a prefix.
    root_js = json.dumps(root_path).replace("<", "\\u003c").replace(">", "\\u003e")
    return _PAGE.replace("__ROOT_PATH_JSON__", root_js)
