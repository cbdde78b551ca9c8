"""Guide section "Live Dashboard Example": push the store's metrics to each dashboard every second.

The numbers come from the store (``metrics:requests``, ``metrics:errors``, ``metrics:latency_p99``,
and the guide's ``ws:active_connections``). `metrics_middleware` writes them: it wraps an ASGI app,
counts its HTTP requests and 5xx answers, and keeps the p99 of the last `LATENCY_WINDOW` request
latencies (milliseconds) of this process. The page at ``/`` shows them live; ``/work`` and ``/fail``
are requests to watch them move (a short random delay, and an error 500).

Run alone: ``uvicorn examples.websocket_guide.dashboard:application`` (WebSocket at any path, e.g.
``/ws``; the page at ``/``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
from collections import deque
from typing import Any

from hornbeam_channels import OriginGuard
from hornbeam_erlang import state_get_multi, state_incr, state_set

from ._asgi import ASGIApp, Receive, Scope, Send, handle_lifespan, render_page, respond, respond_html, respond_json, route_path

PUSH_INTERVAL = 1.0
LATENCY_WINDOW = 1000
METRIC_KEYS = {
    "requests": "metrics:requests",
    "errors": "metrics:errors",
    "latency_p99": "metrics:latency_p99",
    "active_connections": "ws:active_connections",
}
_MARK = "hornbeam.metrics"


def read_metrics() -> dict[str, Any]:
    values = state_get_multi(list(METRIC_KEYS.values()))
    metrics = {name: values.get(key) or 0 for name, key in METRIC_KEYS.items()}
    metrics["time"] = time.time()
    return metrics


def metrics_middleware(app: ASGIApp) -> ASGIApp:
    """Wrap `app` so its HTTP requests feed the dashboard's metrics; nested wrappers count once."""
    latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get(_MARK):
            await app(scope, receive, send)
            return
        scope[_MARK] = True
        started = time.perf_counter()
        status = 500

        async def watching_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, watching_send)
        finally:
            latencies.append((time.perf_counter() - started) * 1000)
            state_incr("metrics:requests")
            if status >= 500:
                state_incr("metrics:errors")
            ordered = sorted(latencies)
            p99 = ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]
            state_set("metrics:latency_p99", round(p99, 3))

    return wrapped


async def push_metrics(send: Send) -> None:
    # Ticks on the loop's clock so the period does not drift by the time each push takes.
    loop = asyncio.get_running_loop()
    next_tick = loop.time()
    with contextlib.suppress(OSError):
        while True:
            # Get metrics from the store
            await send({"type": "websocket.send", "text": json.dumps(read_metrics())})
            next_tick += PUSH_INTERVAL
            await asyncio.sleep(max(0.0, next_tick - loop.time()))


async def _application(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await receive()  # the handshake request, websocket.connect, comes first
        await send({"type": "websocket.accept"})

        # Start background task to push updates
        push_task = asyncio.create_task(push_metrics(send))

        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    break
        finally:
            push_task.cancel()
    elif scope["type"] == "http":
        path = route_path(scope)
        if path == "/":
            await respond_html(send, render_page("dashboard.html", scope.get("root_path", "")))
        elif path == "/metrics":
            await respond_json(send, 200, read_metrics())
        elif path == "/work":
            await asyncio.sleep(random.uniform(0.001, 0.05))
            await respond_json(send, 200, {"ok": True})
        elif path == "/fail":
            await respond_json(send, 500, {"error": "failed on purpose"})
        else:
            await respond(send, 404, b"Not Found")
    elif scope["type"] == "lifespan":
        await handle_lifespan(receive, send)


application = metrics_middleware(OriginGuard(_application))
