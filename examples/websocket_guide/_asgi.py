"""Small raw-ASGI helpers shared by the guide's apps: paths under a mount, responses, lifespan, pages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Awaitable, Callable

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
# Loose on purpose: Starlette apps type their scope as MutableMapping.
ASGIApp = Callable[..., Awaitable[None]]

STATIC = Path(__file__).with_name("static")


def route_path(scope: Scope) -> str:
    """The path below the mount point: uvicorn and Starlette keep root_path inside path."""
    path: str = scope.get("path", "/")
    root = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        path = path[len(root):]
    return path or "/"


async def respond(send: Send, status: int, body: bytes, content_type: bytes = b"text/plain; charset=utf-8") -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [[b"content-type", content_type], [b"cache-control", b"no-store"]],
    })
    await send({"type": "http.response.body", "body": body})


async def respond_json(send: Send, status: int, data: Any) -> None:
    await respond(send, status, json.dumps(data).encode(), b"application/json")


async def respond_html(send: Send, html: str) -> None:
    await respond(send, 200, html.encode(), b"text/html; charset=utf-8")


async def handle_lifespan(receive: Receive, send: Send) -> None:
    while True:
        event = await receive()
        if event["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif event["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def js_literal(value: Any) -> str:
    """JSON that is safe inside a <script> element."""
    return (json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("&", "\\u0026").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def render_page(name: str, root_path: str, config: dict[str, Any] | None = None) -> str:
    """A page of static/ with ROOT (the mount path) and CONFIG filled in as JavaScript literals."""
    page = (STATIC / name).read_text(encoding="utf-8")
    return page.replace("__ROOT_PATH_JSON__", js_literal(root_path)).replace(
        "__CONFIG_JSON__", js_literal(config or {}))


def tester_page(root_path: str, title: str, intro: str, ws_path: str = "/ws", **options: Any) -> str:
    """The interactive WebSocket tester, set up for one endpoint of one section of the guide."""
    return render_page("tester.html", root_path, {"title": title, "intro": intro, "wsPath": ws_path, **options})
