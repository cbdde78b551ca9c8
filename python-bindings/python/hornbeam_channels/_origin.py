"""Origin checking for WebSocket handshakes (cross-site WebSocket hijacking protection).

Browsers send an ``Origin`` header with every WebSocket handshake and do not apply the same-origin
policy to WebSockets, so a page on any site could otherwise open a socket to our server with the
user's cookies. The rule, one place for every endpoint:

* a handshake without ``Origin`` (a non-browser client: websockets, curl, a bot) is allowed;
* an ``Origin`` whose host:port equals the ``Host`` header (same origin) is allowed;
* an ``Origin`` listed in ``HORNBEAM_ALLOWED_ORIGINS`` (comma-separated, e.g.
  ``https://chat.example.com,http://localhost:3000``; ``*`` allows any) is allowed;
* anything else is refused: the socket is closed before it is accepted, which ASGI servers
  answer with HTTP 403.

The variable is read at each handshake, so it can be set at any time before the server starts.
Wrap any ASGI app with :class:`OriginGuard` (``app = OriginGuard(app)``, or
``app.add_middleware(OriginGuard)`` in Starlette/FastAPI); :func:`origin_allowed` is the bare check.
"""

from __future__ import annotations

import os
from typing import Any, Awaitable, Callable, Optional
from urllib.parse import urlsplit

from .asgi import Receive, Scope, Send

ENV_VAR = "HORNBEAM_ALLOWED_ORIGINS"

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def _header(scope: Scope, name: bytes) -> Optional[str]:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _normalize_origin(origin: str) -> Optional[tuple[str, str, int]]:
    """``scheme://host[:port]`` -> (scheme, host, port); None when it is not such an origin."""
    try:
        parts = urlsplit(origin.strip())
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        return None
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    return scheme, host, port if port is not None else _DEFAULT_PORTS[scheme]


def _host_port(host_header: str, scheme: str) -> Optional[tuple[str, int]]:
    try:
        parts = urlsplit("//" + host_header.strip())
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        return None
    if not host:
        return None
    return host, port if port is not None else _DEFAULT_PORTS.get(scheme, 80)


def allowed_origins(value: Optional[str] = None) -> list[str]:
    """The configured allow-list (from ``HORNBEAM_ALLOWED_ORIGINS`` unless ``value`` is given)."""
    raw = os.environ.get(ENV_VAR, "") if value is None else value
    return [item.strip() for item in raw.split(",") if item.strip()]


def origin_allowed(scope: Scope, allowed: Optional[list[str]] = None) -> bool:
    """True when the WebSocket handshake in ``scope`` may be accepted (see the module docs)."""
    origin = _header(scope, b"origin")
    if origin is None:
        return True
    allow = allowed_origins() if allowed is None else allowed
    if "*" in allow:
        return True
    parsed = _normalize_origin(origin)
    if parsed is None:
        return False  # "null" (sandboxed frames, file://) and garbage: only "*" lets them in
    scheme, host, port = parsed
    for item in allow:
        if _normalize_origin(item) == parsed:
            return True
    host_header = _header(scope, b"host")
    if host_header is None:
        return False
    same = _host_port(host_header, "wss" if scope.get("scheme") in ("wss", "https") else "ws")
    return same == (host, port)


ASGIApp = Callable[..., Awaitable[None]]


async def refuse_handshake(receive: Receive, send: Send) -> None:
    """Refuse a WebSocket before accepting it: ASGI servers answer the handshake with HTTP 403."""
    message = await receive()  # websocket.connect
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close", "code": 1008})


class OriginGuard:
    """ASGI middleware: refuses WebSocket handshakes from foreign origins with a 403.

    HTTP and lifespan pass through untouched. ``allowed`` overrides the environment variable
    (a list of origins); by default ``HORNBEAM_ALLOWED_ORIGINS`` is read at each handshake.
    """

    def __init__(self, app: ASGIApp, allowed: Optional[list[str]] = None) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and not origin_allowed(scope, self.allowed):
            await refuse_handshake(receive, send)
            return
        await self.app(scope, receive, send)

    def __getattr__(self, name: str) -> Any:
        # Keep the wrapped app's attributes reachable (FastAPI's .routes, .state, ...).
        if name == "app":
            raise AttributeError(name)
        return getattr(self.app, name)
