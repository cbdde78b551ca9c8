"""The guide's page helpers; paths, responses and lifespan come from `hornbeam_channels`'s toolkit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hornbeam_channels.asgi import ASGIApp, Receive, Scope, Send
from hornbeam_channels.routing import lifespan as handle_lifespan
from hornbeam_channels.routing import respond, respond_json, route_path

__all__ = ["ASGIApp", "Receive", "Scope", "Send", "handle_lifespan", "js_literal", "render_page",
           "respond", "respond_html", "respond_json", "route_path", "tester_page"]

STATIC = Path(__file__).with_name("static")


async def respond_html(send: Send, html: str) -> None:
    await respond(send, 200, html.encode(), "text/html; charset=utf-8")


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
