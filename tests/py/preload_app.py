"""A tiny ASGI app for the gunicorn `--preload` test: importing it touches the engine (so with
`--preload` the master opens it before forking its workers); each request counts in the shared
store and answers the count and the worker's pid."""

from __future__ import annotations

import json
import os

import hornbeam_erlang as hb
from hornbeam_channels.routing import lifespan

IMPORTED_BY = os.getpid()
hb.state_incr("preload:imports")


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    body = json.dumps({
        "count": hb.state_incr("preload:hits"),
        "pid": os.getpid(),
        "imported_by": IMPORTED_BY,
        "imports": hb.state_get("preload:imports"),
        "backend": hb.backend(),
    }).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
