"""All sections of the WebSocket guide (seed 001) in one app, each mounted under its own prefix.

Run: ``uvicorn examples.websocket_guide.app:app`` and open ``/``. Every section also runs alone
(see `SECTIONS` for the modules). HTTP requests to any section feed the live dashboard's metrics.
"""

from __future__ import annotations

import html
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route

from . import binary, dashboard, echo, errors, fastapi_app, pubsub_chat, starlette_app, subprotocols, tracking

# (prefix, ASGI app, title, what it shows)
SECTIONS: list[tuple[str, Any, str, str]] = [
    ("/echo", echo.application, "Basic handler: echo", "Text frames come back as 'Echo: <text>'."),
    ("/pubsub", pubsub_chat.application, "Chat room with pub/sub",
     "One mailbox and one sending task per room (the topic fan-out); handlers only publish."),
    ("/binary", binary.application, "Binary data", "Binary frames answered with their SHA-256."),
    ("/subprotocols", subprotocols.application, "Subprotocols", "graphql-ws, json or none."),
    ("/tracking", tracking.application, "Connection tracking in the store",
     "ws:client:<id> and ws:active_connections, exact however sockets end."),
    ("/dashboard", dashboard.application, "Live dashboard", "Metrics from the store pushed every second."),
    ("/errors", errors.application, "Error handling", "Close codes 1000, 1001, 1002, 1003, 1008, 1011."),
    ("/fastapi", fastapi_app.app, "FastAPI", "/ws/{room} counting users in the store."),
    ("/starlette", starlette_app.app, "Starlette", "/ws echo and /ws/{room} counting users."),
]


async def index(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    items = "\n".join(
        f'<li><a href="{html.escape(root + prefix)}/">{html.escape(title)}</a> '
        f"<span>{html.escape(about)}</span></li>"
        for prefix, _, title, about in SECTIONS
    )
    return HTMLResponse(f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>WebSocket guide</title>
<style>body {{ font-family: system-ui, sans-serif; max-width: 760px; margin: 2rem auto; padding: 0 1rem; }}
li {{ margin: 0.5rem 0; }} li span {{ color: #666; }}</style></head>
<body><h1>WebSocket guide</h1>
<p>One app per section of Hornbeam's WebSocket guide, running on the hornbeam_erlang engine.</p>
<ul>
{items}
</ul></body></html>""")


app = dashboard.metrics_middleware(Starlette(routes=[
    Route("/", index),
    *(Mount(prefix, app=section_app) for prefix, section_app, _, _ in SECTIONS),
]))
