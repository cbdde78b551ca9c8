"""Guide section "Live Dashboard Example": push the store's metrics to each dashboard every second.

The numbers come from the store (``metrics:requests``, ``metrics:errors``, ``metrics:latency_p99``,
and the guide's ``ws:active_connections``). `metrics_middleware` writes them: it wraps an ASGI app,
counts its HTTP requests and 5xx answers, and keeps the p99 of the last `LATENCY_WINDOW` request
latencies (milliseconds) of this process. The page at ``/`` shows them live; ``/work`` and ``/fail``
are requests to watch them move (a short random delay, and an error 500).

Pushes go through a bounded outbox (``hornbeam_channels.Outbox``): a dashboard that stops reading is
closed with 1008 once `OUTBOX_MAX_CHARS` characters of snapshots wait for it (about two minutes of
them at the default interval), instead of holding memory. ``HORNBEAM_DASHBOARD_INTERVAL`` sets the
push interval in seconds (default 1).

Run alone: ``uvicorn examples.websocket_guide.dashboard:application`` (WebSocket at any path, e.g.
``/ws``; the page at ``/``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import time
from collections import deque
from typing import Any

from hornbeam_channels import OriginGuard
from hornbeam_erlang import state_get_multi, state_incr, state_set

from hornbeam_channels import Outbox, SlowConsumer

from ._asgi import ASGIApp, Receive, Scope, Send, handle_lifespan, render_page, respond, respond_html, respond_json, route_path



def _push_interval() -> float:
    text = os.environ.get("HORNBEAM_DASHBOARD_INTERVAL")
    try:
        value = float(text) if text else 1.0
    except ValueError:
        raise ValueError(f"HORNBEAM_DASHBOARD_INTERVAL must be a number, not {text!r}") from None
    if not value > 0:
        raise ValueError(f"HORNBEAM_DASHBOARD_INTERVAL must be positive, not {value!r}")
    return value


PUSH_INTERVAL = _push_interval()
# A snapshot is about 150 characters: the bound holds roughly 100 of them. Older snapshots are
# worthless to a dashboard, so it is far smaller than the chats' bound.
OUTBOX_MAX_CHARS = 16 * 1024
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
    outbox = Outbox.for_asgi(send, name="dashboard", max_chars=OUTBOX_MAX_CHARS)
    # Ticks on the loop's clock so the period does not drift by the time each push takes.
    loop = asyncio.get_running_loop()
    next_tick = loop.time()
    try:
        with contextlib.suppress(OSError, SlowConsumer):
            while True:
                # Get metrics from the store
                await outbox.send(json.dumps(read_metrics()))
                next_tick += PUSH_INTERVAL
                await asyncio.sleep(max(0.0, next_tick - loop.time()))
    finally:
        outbox.cancel()


async def wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return


async def _application(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await receive()  # the handshake request, websocket.connect, comes first
        await send({"type": "websocket.accept"})

        # Start background task to push updates
        push_task = asyncio.create_task(push_metrics(send))
        # Until the client leaves, or the pushes end (a client dropped for not reading).
        reading = asyncio.create_task(wait_for_disconnect(receive))

        try:
            await asyncio.wait([push_task, reading], return_when=asyncio.FIRST_COMPLETED)
        finally:
            push_task.cancel()
            reading.cancel()
            await asyncio.wait([push_task, reading])
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
