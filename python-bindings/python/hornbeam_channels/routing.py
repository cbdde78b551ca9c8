"""Routing and responses for plain ASGI apps: the path below the mount point, small HTTP
responses, and the lifespan protocol."""

from __future__ import annotations

import json
from typing import Any, Iterable, Optional

from .asgi import Receive, Scope, Send

__all__ = ["lifespan", "respond", "respond_json", "route_path"]


def route_path(scope: Scope) -> str:
    """The request path below the app's mount point.

    ASGI servers and Starlette's ``Mount`` keep ``root_path`` inside ``path``; it is removed only
    on a segment boundary (``/chat`` is not below a mount at ``/ch``). Never empty: ``"/"`` at
    the mount point itself.
    """
    path: str = scope.get("path", "/") or "/"
    root: str = scope.get("root_path", "") or ""
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        path = path[len(root):]
    return path or "/"


async def respond(send: Send, status: int, body: bytes,
                  content_type: str = "text/plain; charset=utf-8", *,
                  length: Optional[int] = None, cache: str = "no-store",
                  headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Sends a whole HTTP response: ``status``, ``body`` with its type and length.

    ``length`` overrides the ``content-length`` (a HEAD response announces the GET body's length
    and sends none); ``cache`` is the ``cache-control`` value; ``headers`` are added as given.
    """
    all_headers = [(b"content-type", content_type.encode("latin-1")),
                   (b"content-length", str(len(body) if length is None else length).encode()),
                   (b"cache-control", cache.encode("latin-1")), *headers]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


async def respond_json(send: Send, status: int, data: Any) -> None:
    """Sends ``data`` as an ``application/json`` response."""
    await respond(send, status, json.dumps(data).encode(), "application/json")


async def lifespan(receive: Receive, send: Send) -> None:
    """Answers the ASGI lifespan protocol (startup, then shutdown) with nothing to set up."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
