"""The ASGI endpoint: the channel socket at ``<path>/websocket`` and the client at
``<path>/hornbeam.js``, alone or in front of another ASGI app."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

from ._connection import Connection
from ._options import ConnectHook, Options
from ._origin import origin_allowed, refuse_handshake
from .asgi import Receive, Scope, Send
from .outbox import DEFAULT_MAX_CHARS
from .routing import lifespan, respond, route_path

log = logging.getLogger("hornbeam_channels")

# Loose on purpose: frameworks type scope/receive/send each their own way.
ASGIApp = Callable[..., Awaitable[None]]

CLIENT_JS = Path(__file__).with_name("static") / "hornbeam.js"


class ChannelsEndpoint:
    """An ASGI app serving channel sockets; see :func:`asgi_endpoint`."""

    def __init__(self, path: str = "/ws", app: Optional[ASGIApp] = None, *,
                 heartbeat_timeout: Optional[float] = 60.0,
                 max_frame_bytes: int = 1024 * 1024,
                 on_connect: Optional[ConnectHook] = None,
                 serve_client: bool = True,
                 allowed_origins: Optional[list[str]] = None,
                 rate_limit: Optional[float] = 50.0,
                 rate_burst: int = 100,
                 max_channels: Optional[int] = 100,
                 max_outbox_chars: Optional[int] = DEFAULT_MAX_CHARS) -> None:
        base = "/" + path.strip("/") if path.strip("/") else ""
        self.path = base or "/"
        self.socket_paths = {base + "/websocket", base or "/"}
        self.client_path = base + "/hornbeam.js" if serve_client else None
        self.app = app
        if max_frame_bytes < 64:
            raise ValueError("max_frame_bytes must be at least 64")
        if rate_limit is not None and not rate_limit > 0:
            raise ValueError("rate_limit must be a positive number of events per second, or None")
        if rate_burst < 1:
            raise ValueError("rate_burst must be at least 1")
        if max_channels is not None and (isinstance(max_channels, bool) or not isinstance(max_channels, int)
                                         or max_channels < 1):
            raise ValueError("max_channels must be a positive int, or None")
        if max_outbox_chars is not None and (isinstance(max_outbox_chars, bool)
                                             or not isinstance(max_outbox_chars, int)
                                             or max_outbox_chars < 1):
            raise ValueError("max_outbox_chars must be a positive int, or None")
        self.options = Options(heartbeat_timeout, max_frame_bytes, on_connect, rate_limit,
                               rate_burst, max_channels, max_outbox_chars)
        self._client: Optional[bytes] = None
        self.allowed_origins = allowed_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket" and route_path(scope) in self.socket_paths:
            if not origin_allowed(scope, self.allowed_origins):
                await refuse_handshake(receive, send)
                return
            await Connection(scope, receive, send, self.options).run()
        elif kind == "http" and self.client_path and route_path(scope) == self.client_path:
            await self._serve_client(scope, send)
        elif self.app is not None:
            await self.app(scope, receive, send)
        elif kind == "lifespan":
            await lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        elif kind == "http":
            await respond(send, 404, b"Not Found", cache="no-cache")

    async def _serve_client(self, scope: Scope, send: Send) -> None:
        if scope.get("method") not in ("GET", "HEAD"):
            await respond(send, 405, b"Method Not Allowed", cache="no-cache")
            return
        if self._client is None:
            self._client = CLIENT_JS.read_bytes()
        body = b"" if scope.get("method") == "HEAD" else self._client
        await respond(send, 200, body, "application/javascript; charset=utf-8",
                      length=len(self._client), cache="no-cache")


def asgi_endpoint(path: str = "/ws", app: Optional[ASGIApp] = None, *,
                  heartbeat_timeout: Optional[float] = 60.0,
                  max_frame_bytes: int = 1024 * 1024,
                  on_connect: Optional[ConnectHook] = None,
                  serve_client: bool = True,
                  allowed_origins: Optional[list[str]] = None,
                  rate_limit: Optional[float] = 50.0,
                  rate_burst: int = 100,
                  max_channels: Optional[int] = 100,
                  max_outbox_chars: Optional[int] = DEFAULT_MAX_CHARS) -> ChannelsEndpoint:
    """An ASGI app serving the channels defined with :func:`channel`.

    * WebSocket at ``<path>/websocket`` (where both JavaScript clients connect when given
      ``path``) and at ``<path>`` itself;
    * the JavaScript client at ``<path>/hornbeam.js`` (unless ``serve_client=False``);
    * everything else goes to ``app`` when given (so ``asgi_endpoint("/ws", app=my_app)`` wraps
      an app), or gets a 404.

    To mount it in Starlette or FastAPI instead: ``Mount("/ws", app=asgi_endpoint(""))``.

    ``heartbeat_timeout``: a connection that sends nothing (not even a heartbeat) for this many
    seconds is closed and its presences removed; None disables it. ``max_frame_bytes``: larger
    frames are answered with an error and dropped. ``on_connect(params, scope)`` (plain or
    async) sees the connect parameters before the socket is accepted: False refuses it, a dict
    becomes the initial assigns of every channel socket of the connection.

    Origins: a handshake from a foreign ``Origin`` is refused with HTTP 403; same-origin, no
    ``Origin`` (non-browser clients) and the origins in ``allowed_origins`` (default: the
    ``HORNBEAM_ALLOWED_ORIGINS`` environment variable, comma-separated) are accepted.

    Rate limit: each connection may send ``rate_limit`` events per second on average, ``rate_burst``
    at once (a token bucket; None disables it). Joins, leaves and channel events count; heartbeats
    never do. An event over the limit is not handled: it gets an error reply
    ``{"reason": "rate_limited"}`` and the connection keeps serving.

    Channel cap: one connection may have at most ``max_channels`` channels joined at once (None: no
    cap). A join of one more topic is not handled: it gets an error reply ``{"reason": "too many
    channels"}`` and the connection keeps serving the channels it has; a leave frees a slot, and
    joining a topic again (which replaces the old join) needs none.

    Slow consumers: no connection ever waits for its client. What the client's transport cannot
    take yet waits in the connection's outbox; once more than ``max_outbox_chars`` characters
    (256 Ki by default) wait, the client is dropped: one warning is logged, a close 1008 ("too
    slow") is attempted, and the connection ends as if the client had left (leave handlers run,
    presences are removed, the mailbox is closed). So a client that stops reading costs a bounded
    amount of memory and never holds back the others. None never drops a client: what waits for
    it is then unbounded (for trusted clients only).

    Fan-out: a broadcast (and a presence diff) reaches the connections of each process through
    that process's topic fan-out (:mod:`hornbeam_channels.fanout`): one mailbox and one task per
    topic, encoded once by the sender, written to every member's outbox. When that task falls
    behind far enough for its mailbox to drop messages, every member gets a fresh
    ``presence_state`` of the topic (the diffs it lost may have been presence changes).
    """
    return ChannelsEndpoint(path, app, heartbeat_timeout=heartbeat_timeout,
                            max_frame_bytes=max_frame_bytes, on_connect=on_connect,
                            serve_client=serve_client, allowed_origins=allowed_origins,
                            rate_limit=rate_limit, rate_burst=rate_burst,
                            max_channels=max_channels, max_outbox_chars=max_outbox_chars)
