"""Velithon's WebSocket chat (seed 004) on FastAPI, with its state in the Hornbeam store and its
fan-out on the Hornbeam bus, plus the four enhancements the seed lists.

Seed protocol, unchanged: connect to ``/ws/{room}/{username}``, get the room's last 50 messages,
send ``{"type": "message", "content": ...}``; events are ``message``, ``user_joined`` and
``user_left`` objects keyed by ``message_type``, each with a ``timestamp`` (ISO 8601, UTC). REST:
``GET /api/rooms``, ``/api/rooms/{room}/users``, ``/api/rooms/{room}/messages?limit=`` (1..1000).

Enhancements:

1. tokens: ``POST /api/token`` ``{"username": ...}`` returns ``{"token": ...}`` (HMAC-signed, see
   ``auth.py``); the socket needs ``?token=`` for its own username (else: accepted, then closed with
   1008) and the REST calls ``Authorization: Bearer <token>`` (else 401);
2. persistence: every message is appended to a JSON-lines file replayed at start (``history.py``);
3. rate limiting: at most ``VELITHON_RATE_LIMIT`` (default 10) messages per user per
   ``VELITHON_RATE_WINDOW`` seconds (default 60); the counter is a store key with a TTL, so all
   workers sharing the store count together; the rest get an ``error`` frame ``rate_limited``;
4. private messages: ``{"type": "private_message", "to": ..., "content": ...}`` reaches every
   connection of the addressee and of the sender, nobody else.

Store keys (names percent-encoded): ``velithon:room:<room>:<user>:<conn>`` while a connection is in a
room, ``velithon:online:<user>:<conn>`` while a user is connected anywhere, ``velithon:rate:<user>``
(the rate counter), and the history keys of ``history.py``. Topics: ``velithon:room:<room>`` (room
events) and ``velithon:user:<user>`` (private messages). Each connection joins the groups of its
two topics in the process's topic fan-out (``hornbeam_channels.Fanout``: one mailbox and one task
per topic, each event encoded once by its publisher and written to every member's outbox), so
fan-out works across processes; replies meant for one connection go straight to its outbox.

A user may connect several times to a room (two tabs): ``user_joined`` is announced for the first
connection and ``user_left`` after the last one. History is kept when a room empties (the seed
dropped it, which persistence would contradict); ``/api/rooms`` lists rooms with someone in them.

Run alone: ``uvicorn examples.velithon_chat.app:app`` and open http://127.0.0.1:8000/.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import threading
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Optional
from urllib.parse import quote, unquote

import hornbeam_erlang as hb
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, WebSocket
from fastapi.responses import HTMLResponse
from hornbeam_channels import Fanout, Frame, OriginGuard, Outbox, lag_skip
from pydantic import BaseModel, Field, field_validator

from . import history
from .auth import signer_from_env

from examples._tasks import EXPECTED_ENDINGS, run_until_first_ends, text_frames

log = logging.getLogger("velithon_chat")

HISTORY_ON_CONNECT = 50
MAX_NAME = 64
MAX_CONTENT = 2000
# No frame of this protocol needs more; larger ones are refused before parsing (uvicorn alone
# would accept up to 16 MiB, --ws-max-size).
MAX_FRAME_CHARS = 64 * 1024
POLICY_VIOLATION = 1008


def _env_number(name: str, default: float, kind: type) -> Any:
    text = os.environ.get(name)
    try:
        value = kind(text) if text else default
    except ValueError:
        raise ValueError(f"{name} must be a {kind.__name__}, not {text!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive, not {value!r}")
    return value


RATE_LIMIT: int = _env_number("VELITHON_RATE_LIMIT", 10, int)
RATE_WINDOW: float = _env_number("VELITHON_RATE_WINDOW", 60.0, float)

signer = signer_from_env()
history_file = history.history_file_from_env()
PAGE = (Path(__file__).parent / "index.html").read_text(encoding="utf-8")


def _enc(name: str) -> str:
    return quote(name, safe="")


def is_clean_name(name: str) -> bool:
    """A room or username fit for a URL segment, a key and a page: no slash or control character."""
    return (
        0 < len(name) <= MAX_NAME
        and name == name.strip()
        and name not in (".", "..")
        and "/" not in name
        and all(ch.isprintable() for ch in name)
        and is_encodable(name)
    )


def is_encodable(text: str) -> bool:
    """False for strings with lone surrogates (valid JSON escapes that UTF-8 cannot carry)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def room_topic(room: str) -> str:
    return f"velithon:room:{_enc(room)}"


def user_topic(username: str) -> str:
    return f"velithon:user:{_enc(username)}"


def room_users(room: str) -> list[str]:
    """Users with at least one connection in the room, sorted, each once."""
    prefix = f"velithon:room:{_enc(room)}:"
    users = {key[len(prefix):].partition(":")[0] for key in hb.state_keys(prefix)}
    return sorted(unquote(u) for u in users)


def active_rooms() -> list[str]:
    """Rooms with at least one connection, sorted."""
    prefix = "velithon:room:"
    rooms = {key[len(prefix):].partition(":")[0] for key in hb.state_keys(prefix)}
    return sorted(unquote(r) for r in rooms)


def is_online(username: str) -> bool:
    return bool(hb.state_keys(f"velithon:online:{_enc(username)}:"))


def rate_check(username: str) -> Optional[float]:
    """Counts one message for the user; ``None`` when allowed, else seconds until allowed again.

    The window starts with the user's first message: the counter is created by ``state_incr`` and
    given the window as TTL, so the store forgets it when the window ends. A counter found over
    the limit without a TTL (a worker died between the two calls) gets its TTL then.
    """
    key = f"velithon:rate:{_enc(username)}"
    count = hb.state_incr(key)
    if count == 1:
        hb.state_expire(key, RATE_WINDOW)
        return None
    if count <= RATE_LIMIT:
        return None
    ttl = hb.state_ttl(key)
    if ttl is None:
        hb.state_expire(key, RATE_WINDOW)
        ttl = RATE_WINDOW
    return ttl


_ready_lock = threading.Lock()
_ready_pid: Optional[int] = None


def ensure_ready() -> None:
    """Replays the history file into the store, once per process (lazily: no engine at import,
    and mounted sub-apps get no lifespan of their own)."""
    global _ready_pid
    if _ready_pid == os.getpid():
        return
    with _ready_lock:
        if _ready_pid != os.getpid():
            loaded = history.replay(history_file)
            if loaded:
                log.info("replayed %d messages from %s", loaded, history_file.path)
            _ready_pid = os.getpid()


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    ensure_ready()
    yield
    history_file.close()


app = FastAPI(title="Velithon chat on Hornbeam", lifespan=lifespan)
app.add_middleware(OriginGuard)  # foreign Origin -> 403 at the handshake (HORNBEAM_ALLOWED_ORIGINS)


def _envelope(event: dict[str, Any], exclude: Optional[str] = None, seq: Optional[int] = None) -> list[Any]:
    """What goes on the bus: the JSON text (made once for all receivers) and delivery hints."""
    return [json.dumps(event), exclude, seq]


def _render(data: Any) -> Optional[Frame]:
    """A bus envelope as the fan-out's frame: text, the username it skips, its history seq."""
    if isinstance(data, list) and len(data) == 3 and isinstance(data[0], str):
        return Frame(data[0], data[1], data[2])
    return None


# The room and user topics of this process: one mailbox and one sending task per topic. As in the
# seed, what a connection missed while it fell far behind is skipped (and logged).
topics = Fanout(on_lag=lag_skip, render=_render, name="velithon topics")


def publish(topic: str, envelope: list[Any]) -> None:
    topics.publish(topic, envelope)


def error_event(code: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"message_type": "error", "error": code, "detail": detail, **extra, "timestamp": now_iso()}


class ChatConnection:
    """One socket of one user in one room: presence keys, frame handlers, cleanup."""

    def __init__(self, websocket: WebSocket, room: str, username: str, conn_id: str):
        self.websocket = websocket
        self.room = room
        self.username = username
        self.conn_id = conn_id
        self.presence_key = f"velithon:room:{_enc(room)}:{_enc(username)}:{conn_id}"
        self.online_key = f"velithon:online:{_enc(username)}:{conn_id}"
        self.user_prefix = f"velithon:room:{_enc(room)}:{_enc(username)}:"
        # The last history message sent on connect: live messages up to it are skipped (they may
        # still be on their way from another process).
        self.history_seq = 0
        self.entered = False
        # What waits for the client, bounded: a client that stops reading is dropped (1008).
        # (Not bound to self: the outbox must not tie the connection into a reference cycle.)
        self.outbox = Outbox(websocket.send_text,
                             lambda code, reason: websocket.close(code=code, reason=reason),
                             name=f"velithon connection {conn_id}")

    def enter(self) -> bool:
        """Registers the connection; True when it is the user's first one in the room."""
        hb.state_set(self.presence_key, 1)
        hb.state_set(self.online_key, self.room)
        self.entered = True
        return hb.state_keys(self.user_prefix) == [self.presence_key]

    def leave(self) -> None:
        """Leaves its topics and removes the connection's keys; announces the user's last leave."""
        topics.leave_all(self.outbox)
        self.outbox.cancel()
        if not self.entered:
            return
        self.entered = False
        hb.state_delete(self.presence_key)
        hb.state_delete(self.online_key)
        if not hb.state_keys(self.user_prefix):
            publish(room_topic(self.room), _envelope(
                {"username": self.username, "message_type": "user_left", "timestamp": now_iso()}))

    def reply(self, event: dict[str, Any]) -> None:
        """Sends ``event`` to this connection only (never waits: through its outbox)."""
        self.outbox.offer(json.dumps(event))

    def join_topics(self) -> None:
        """Joins the room's and the user's topics, then sends the history; both in one step, so
        no message falls between the two, and one already in the history is not sent again."""
        recent = history.recent(self.room, HISTORY_ON_CONNECT)
        self.history_seq = recent[-1][0] if recent else 0
        topics.join(room_topic(self.room), self.outbox, self.username, skip=self._in_history)
        topics.join(user_topic(self.username), self.outbox)
        for _seq, message in recent:
            self.outbox.offer(json.dumps(message))

    def _in_history(self, frame: Frame) -> bool:
        return frame.tag is not None and frame.tag <= self.history_seq

    async def read_socket(self) -> None:
        async for raw in text_frames(self.websocket):
            self.handle_text(raw)

    def handle_text(self, raw: str) -> None:
        if len(raw) > MAX_FRAME_CHARS:
            self.reply(error_event("frame_too_large", f"frames are limited to {MAX_FRAME_CHARS} characters"))
            return
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nested too deeply
            data = None
        if not isinstance(data, dict):
            self.reply(error_event("invalid_json", "frames must be JSON objects"))
            return
        kind = data.get("type")
        if kind not in ("message", "private_message"):
            self.reply(error_event("unknown_type", f"unknown frame type: {kind!r}"[:200]))
            return
        content = data.get("content", "")
        content = content.strip() if isinstance(content, str) else ""
        if not content:
            self.reply(error_event("empty_message", "content must be a non-empty string"))
            return
        if len(content) > MAX_CONTENT or not is_encodable(content):
            self.reply(error_event("invalid_message", f"content must be text of at most {MAX_CONTENT} characters"))
            return
        to = data.get("to")
        if kind == "private_message" and not (isinstance(to, str) and is_clean_name(to)):
            self.reply(error_event("invalid_recipient", "to must be a username"))
            return
        wait = rate_check(self.username)
        if wait is not None:
            self.reply(error_event(
                "rate_limited", f"at most {RATE_LIMIT} messages per {RATE_WINDOW:g} seconds",
                retry_after=math.ceil(wait)))
            return
        if kind == "message":
            self.send_message(content)
        else:
            self.send_private(str(to), content)

    def send_message(self, content: str) -> None:
        stamp = datetime.now(timezone.utc)
        seq = history.next_seq(self.room)
        message = {
            # The seed's "<user>_<unix seconds>", made unique by the room's sequence number.
            "id": f"{self.username}_{int(stamp.timestamp())}_{seq}",
            "username": self.username,
            "content": content,
            "timestamp": stamp.isoformat(timespec="milliseconds"),
            "message_type": "message",
        }
        history.store_message(self.room, seq, message)
        history_file.append(self.room, message)
        publish(room_topic(self.room), _envelope(message, seq=seq))

    def send_private(self, to: str, content: str) -> None:
        if not is_online(to):
            self.reply(error_event("unknown_user", f"{to} is not connected"))
            return
        envelope = _envelope({
            "message_type": "private_message",
            "from": self.username,
            "to": to,
            "content": content,
            "timestamp": now_iso(),
        })
        publish(user_topic(to), envelope)
        if to != self.username:
            publish(user_topic(self.username), envelope)


@app.websocket("/ws/{room}/{username}")
async def websocket_endpoint(websocket: WebSocket, room: str, username: str,
                             token: Optional[str] = None) -> None:
    """The seed's endpoint, behind a token: history, then live events of the room and private ones."""
    # Accept first, so that a refused browser sees the 1008 close code and its reason.
    await websocket.accept()
    ensure_ready()
    if signer.verify(token) != username:
        await websocket.close(code=POLICY_VIOLATION, reason="missing, invalid or someone else's token")
        return
    if not is_clean_name(room):
        await websocket.close(code=POLICY_VIOLATION, reason="invalid room name")
        return
    conn_id = f"{hb.state_incr('velithon:next_conn'):012d}"
    conn = ChatConnection(websocket, room, username, conn_id)
    try:
        first = conn.enter()
        conn.join_topics()
        if first:
            publish(room_topic(room), _envelope(
                {"username": username, "message_type": "user_joined", "timestamp": now_iso()},
                exclude=username))
        # Ends when the client leaves, or when its outbox dropped it for not reading.
        await run_until_first_ends(conn.read_socket(), conn.outbox.wait_ended())
    except EXPECTED_ENDINGS:
        pass
    finally:
        conn.leave()


def require_user(authorization: Optional[str] = Header(default=None)) -> str:
    """The username of a valid ``Authorization: Bearer`` token, or a 401."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    username = signer.verify(token.strip())
    if username is None:
        raise HTTPException(401, "invalid or expired token",
                            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return username


class TokenRequest(BaseModel):
    username: str = Field(min_length=1, max_length=MAX_NAME)

    @field_validator("username")
    @classmethod
    def clean(cls, value: str) -> str:
        if not is_clean_name(value):
            raise ValueError("username must be printable, without '/' or surrounding spaces")
        return value


@app.post("/api/token")
async def issue_token(body: TokenRequest) -> dict[str, str]:
    """A signed token for the username (this demo trusts the caller: put your login in front)."""
    return {"token": signer.issue(body.username)}


@app.get("/api/rooms", tags=["chat"])
async def get_active_rooms(_user: str = Depends(require_user)) -> dict[str, Any]:
    """Rooms with at least one user connected."""
    ensure_ready()
    return {"rooms": active_rooms()}


@app.get("/api/rooms/{room}/users", tags=["chat"])
async def get_room_users(room: str, _user: str = Depends(require_user)) -> dict[str, Any]:
    """Users connected to a room."""
    ensure_ready()
    return {"room": room, "users": room_users(room)}


@app.get("/api/rooms/{room}/messages", tags=["chat"])
async def get_room_messages(room: str, limit: int = Query(default=50, ge=1, le=history.HISTORY_KEEP),
                            _user: str = Depends(require_user)) -> dict[str, Any]:
    """A room's newest ``limit`` messages (1..1000), oldest first."""
    ensure_ready()
    return {"room": room, "messages": [m for _, m in history.recent(room, limit)]}


@app.get("/", response_class=HTMLResponse)
async def chat_page(request: Request) -> HTMLResponse:
    """The chat page; its socket and API URLs start with the ASGI root_path (mount prefix)."""
    root_path = request.scope.get("root_path", "")
    return HTMLResponse(PAGE.replace("{{ROOT_PATH}}", html.escape(root_path, quote=True)))
