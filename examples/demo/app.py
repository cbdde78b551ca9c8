"""The `make run` demo: every example app of the repository behind one uvicorn, with a home page.

Run from the repository root::

    uvicorn examples.demo.app:app --host 127.0.0.1 --port 8000

and open http://127.0.0.1:8000/. Each example is mounted under its prefix (its ASGI ``root_path``),
so its pages build their URLs, WebSocket ones included, from that prefix. To add an example, add
one line to `EXAMPLES`. An example that fails to import is listed with its error and answers 503;
the others keep working. Each mounted app also gets its own lifespan startup and shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import importlib
import logging
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Optional

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse
from starlette.routing import Mount, Route

from examples.websocket_guide.dashboard import metrics_middleware

log = logging.getLogger(__name__)

# (path prefix, "module:attribute" of the ASGI app, title shown on the home page)
EXAMPLES: list[tuple[str, str, str]] = [
    ("/chat", "examples.websocket_chat.app:application", "WebSocket chat (seed 000)"),
    ("/guide", "examples.websocket_guide.app:app", "WebSocket guide (seed 001)"),
    ("/zenith", "examples.zenith_chat.app:app", "Zenith chat (seed 003)"),
    ("/velithon", "examples.velithon_chat.app:app", "Velithon chat with tokens, persistence, rate limits, private messages (seed 004)"),
    ("/channels", "examples.channels_chat.app:app", "Channels chat with presence, typing and history (seed 002)"),
]


@dataclass
class Example:
    prefix: str
    target: str
    title: str
    app: Any = None
    error: Optional[str] = None
    lifespan: Optional["SubLifespan"] = field(default=None, repr=False)


def load(prefix: str, target: str, title: str) -> Example:
    module_name, _, attr = target.partition(":")
    try:
        app = getattr(importlib.import_module(module_name), attr or "app")
    except Exception as e:
        log.exception("example %s (%s) failed to import", prefix, target)
        return Example(prefix, target, title, error=f"{type(e).__name__}: {e}")
    return Example(prefix, target, title, app=app)


def unavailable(example: Example) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await PlainTextResponse(f"{example.target} failed to import: {example.error}", 503)(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1011})
    return app


class SubLifespan:
    """Drives one mounted app's ASGI lifespan, which Starlette does not forward to mounts."""

    def __init__(self, app: Any):
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.started = asyncio.get_running_loop().create_future()
        self.stopped = asyncio.get_running_loop().create_future()
        self.task: Optional[asyncio.Task[None]] = None

    async def receive(self) -> dict[str, Any]:
        return await self.inbox.get()

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind.startswith("lifespan.startup") and not self.started.done():
            self.started.set_result(kind == "lifespan.startup.complete")
        elif kind.startswith("lifespan.shutdown") and not self.stopped.done():
            self.stopped.set_result(kind == "lifespan.shutdown.complete")

    async def run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
        try:
            await self.app(scope, self.receive, self.send)
        except Exception:
            # An app without lifespan support may raise on the unknown scope type: that is allowed.
            log.debug("lifespan not supported by %r", self.app, exc_info=True)
        for fut in (self.started, self.stopped):
            if not fut.done():
                fut.set_result(False)

    async def startup(self) -> bool:
        self.task = asyncio.create_task(self.run())
        await self.inbox.put({"type": "lifespan.startup"})
        return await self.started

    async def shutdown(self) -> None:
        if self.task is None or self.task.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.stopped), 10)
        self.task.cancel()


EXAMPLE_APPS = [load(*entry) for entry in EXAMPLES]


@contextlib.asynccontextmanager
async def lifespan(_: Starlette) -> AsyncIterator[None]:
    for example in EXAMPLE_APPS:
        if example.app is not None:
            example.lifespan = SubLifespan(example.app)
            await example.lifespan.startup()
    try:
        yield
    finally:
        for example in reversed(EXAMPLE_APPS):
            if example.lifespan is not None:
                await example.lifespan.shutdown()


async def home(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    rows = []
    for example in EXAMPLE_APPS:
        title = html.escape(example.title)
        if example.error is None:
            rows.append(f'<li><a href="{html.escape(root + example.prefix)}/">{title}</a> '
                        f"<code>{html.escape(example.prefix)}/</code></li>")
        else:
            rows.append(f'<li>{title} <span class="err">unavailable: {html.escape(example.error)}</span></li>')
    return HTMLResponse(f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Hornbeam engine demo</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 760px; margin: 2rem auto; padding: 0 1rem; color: #222; }}
li {{ margin: 0.6rem 0; font-size: 1.1rem; }} code {{ color: #666; font-size: 0.9rem; margin-left: 0.4rem; }}
.err {{ color: #b71c1c; font-size: 0.9rem; }}
</style></head>
<body>
<h1>Hornbeam engine demo</h1>
<p>The seed apps rebuilt on <code>hornbeam_erlang</code>: store and pub/sub from one embedded Rust
engine, served by uvicorn. Open an example in two windows to watch messages travel.</p>
<ul id="examples">
{"".join(rows)}
</ul>
</body></html>""")


app = metrics_middleware(Starlette(
    routes=[
        Route("/", home),
        *(Mount(e.prefix, app=e.app if e.error is None else unavailable(e)) for e in EXAMPLE_APPS),
    ],
    lifespan=lifespan,
))
