"""Guide section "Live Dashboard Example": push the store's metrics to each dashboard, every second
(polling, as the seed) or whenever they change (watching the store).

The numbers come from the store (``metrics:requests``, ``metrics:errors``, ``metrics:latency_p99``,
and the guide's ``ws:active_connections``). `metrics_middleware` writes them: it wraps an ASGI app,
counts its HTTP requests and 5xx answers, and keeps the p99 of the last `LATENCY_WINDOW` request
latencies (milliseconds) of this process. The page at ``/`` shows them live; ``/work`` and ``/fail``
are requests to watch them move (a short random delay, and an error 500).

Pushes go through a bounded outbox (``hornbeam_channels.Outbox``): a dashboard that stops reading is
closed with 1008 once `OUTBOX_MAX_CHARS` characters of snapshots wait for it (about two minutes of
them at the default interval), instead of holding memory. ``HORNBEAM_DASHBOARD_INTERVAL`` sets the
push interval in seconds (default 1).

Two modes, chosen per connection with ``?mode=poll`` or ``?mode=push`` on the WebSocket URL (and
on the page's: ``/?mode=push``); ``HORNBEAM_DASHBOARD_MODE`` sets the default (``poll``, the seed's):

* **poll**: each dashboard reads the store every ``HORNBEAM_DASHBOARD_INTERVAL`` seconds and
  pushes what it read, changed or not (the seed's loop);
* **push**: the store's changes are watched (``Mailbox.watch``, see `MetricsWatch`) and a snapshot
  goes out when a metric changes, at once after a quiet spell and at most one per
  `PUSH_MIN_GAP` seconds during a burst; nothing is sent while nothing changes. Changes made by
  any process sharing the store (other workers on ``local://`` or Redis, a script) count.

Run alone: ``uvicorn examples.websocket_guide.dashboard:application`` (WebSocket at any path, e.g.
``/ws``; the page at ``/``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import random
import time
from collections import deque
from typing import Any, Optional
from urllib.parse import parse_qs

import hornbeam_erlang as hb
from hornbeam_channels import OriginGuard, Outbox, SlowConsumer, Wire, next_batch
from hornbeam_erlang import state_get_multi, state_incr, state_set

from ._asgi import ASGIApp, Receive, Scope, Send, handle_lifespan, render_page, respond, respond_html, respond_json, route_path

log = logging.getLogger(__name__)


def _push_interval() -> float:
    text = os.environ.get("HORNBEAM_DASHBOARD_INTERVAL")
    try:
        value = float(text) if text else 1.0
    except ValueError:
        raise ValueError(f"HORNBEAM_DASHBOARD_INTERVAL must be a number, not {text!r}") from None
    if not value > 0:
        raise ValueError(f"HORNBEAM_DASHBOARD_INTERVAL must be positive, not {value!r}")
    return value


MODES = ("poll", "push")


def _default_mode() -> str:
    mode = os.environ.get("HORNBEAM_DASHBOARD_MODE") or "poll"
    if mode not in MODES:
        raise ValueError(f"HORNBEAM_DASHBOARD_MODE must be 'poll' or 'push', not {mode!r}")
    return mode


PUSH_INTERVAL = _push_interval()
DEFAULT_MODE = _default_mode()
# Push mode: during a burst of changes (every HTTP request writes two metrics) at most one snapshot
# per this many seconds; the first change after a quiet spell goes out at once.
PUSH_MIN_GAP = 0.1
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
# What push mode watches: every key starting with one of these (the metric keys' prefixes).
WATCH_PREFIXES = ("metrics:", "ws:active_connections")
_NAME_OF_KEY = {key: name for name, key in METRIC_KEYS.items()}
_MARK = "hornbeam.metrics"


def read_values() -> dict[str, Any]:
    values = state_get_multi(list(METRIC_KEYS.values()))
    return {name: values.get(key) or 0 for name, key in METRIC_KEYS.items()}


def read_metrics() -> dict[str, Any]:
    metrics = read_values()
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


class _Watcher:
    """Push mode in one event loop: the mailbox watching the metrics, its task, the dashboards."""

    __slots__ = ("mailbox", "members", "values", "text", "task", "lags")

    def __init__(self, mailbox: hb.Mailbox) -> None:
        self.mailbox = mailbox
        self.members: dict[Outbox, None] = {}  # insertion-ordered set
        self.values = read_values()  # read after the watches are in place: no change falls between
        self.text = self.snapshot()
        self.task: Optional[asyncio.Task[None]] = None
        self.lags = 0

    def snapshot(self) -> str:
        return json.dumps({**self.values, "time": time.time()})


class MetricsWatch:
    """Push mode: the metrics' changes, watched once per process and fanned out to its dashboards.

    One mailbox watching `WATCH_PREFIXES` and one task per process (per event loop), not one per
    dashboard: a change then costs one wake-up, one snapshot and one JSON encoding per process,
    and one non-blocking send per dashboard (the topic fan-out's rule, "one mailbox and one
    sending task per topic per process"; a task per connection would wake once per dashboard for
    every change). And the watch exists only while a dashboard in push mode is connected: on
    ``local://`` and Redis a watched write also logs its change for the watchers, which unwatched
    writes skip.

    The task keeps the metrics from the events themselves: a ``set`` or ``incr`` carries the new
    value, a ``delete``, ``expire`` or ``clear`` puts the metric back to 0. A lag notice (the
    mailbox dropped events: the task fell behind by its capacity) re-reads the metrics from the
    store. Each wake-up takes every event waiting (a burst of changes is one snapshot), and a
    snapshot is sent only when a metric changed. A new dashboard gets the current snapshot at
    once, then every later one.
    """

    def __init__(self, *, capacity: Optional[int] = None, min_gap: float = PUSH_MIN_GAP) -> None:
        self.capacity = capacity
        self.min_gap = min_gap
        self._watchers: dict[asyncio.AbstractEventLoop, _Watcher] = {}

    def watcher(self) -> Optional[_Watcher]:
        """This loop's watcher, None while no dashboard in push mode is connected."""
        return self._watchers.get(asyncio.get_running_loop())

    def join(self, member: Outbox) -> None:
        """Adds a dashboard, which gets the current snapshot at once."""
        loop = asyncio.get_running_loop()
        watcher = self._watchers.get(loop)
        if watcher is None:
            mailbox = hb.Mailbox(self.capacity)
            for prefix in WATCH_PREFIXES:
                mailbox.watch(prefix)
            watcher = _Watcher(mailbox)
            watcher.task = loop.create_task(self._run(watcher), name="dashboard metrics watch")
            self._watchers[loop] = watcher
        watcher.members[member] = None
        member.offer(watcher.text)

    def leave(self, member: Outbox) -> None:
        """Removes a dashboard; the last one out ends the watch (mailbox and task)."""
        loop = asyncio.get_running_loop()
        watcher = self._watchers.get(loop)
        if watcher is None or watcher.members.pop(member, _MISSING) is _MISSING or watcher.members:
            return
        del self._watchers[loop]
        watcher.mailbox.close()
        task, watcher.task = watcher.task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _run(self, watcher: _Watcher) -> None:
        while (batch := await next_batch(watcher.mailbox)) is not None:
            before = dict(watcher.values)
            dropped = sum(msg.lagged for msg in batch)
            if dropped:
                log.warning("dashboard metrics watch fell behind, %d changes dropped: re-reading",
                            dropped)
                await self.reread(watcher)
            else:
                self.apply(watcher, batch)
            if watcher.values != before:
                watcher.text = watcher.snapshot()
                wire = Wire(watcher.text)  # encoded once for every dashboard
                for member in tuple(watcher.members):
                    # False: the dashboard is gone or was dropped for not reading; its own
                    # connection handler sees its outbox end and leaves.
                    member.offer(wire)
                # Coalescing: what changes meanwhile waits in the mailbox for the next snapshot.
                await asyncio.sleep(self.min_gap)

    @staticmethod
    def apply(watcher: _Watcher, batch: list[hb.Message]) -> None:
        """Applies a batch of change events (no lag notice among them) to the watcher's metrics."""
        values = watcher.values
        for msg in batch:
            if msg.op == "clear":
                values.update(dict.fromkeys(METRIC_KEYS, 0))
            elif msg.op is not None:
                name = _NAME_OF_KEY.get(msg.key)
                if name is not None:  # not another key under a watched prefix
                    values[name] = (msg.value or 0) if msg.op in ("set", "incr") else 0

    @staticmethod
    async def reread(watcher: _Watcher) -> None:
        """After a lag notice: the metrics from the store. The read comes after the batch was
        taken, so the store already holds every change the batch carries (its events are
        skipped). While the store cannot be reached (Redis restarting), it retries every second."""
        watcher.lags += 1
        while True:
            try:
                watcher.values.update(read_values())
                return
            except hb.BackendError as exc:
                log.warning("dashboard metrics: cannot read the store (%s), retrying", exc)
                await asyncio.sleep(1.0)


metrics_watch = MetricsWatch()
_MISSING = object()


async def watch_metrics(send: Send) -> None:
    """Push mode for one dashboard: its outbox joins the process's `metrics_watch` until it ends."""
    outbox = Outbox.for_asgi(send, name="dashboard", max_chars=OUTBOX_MAX_CHARS)
    metrics_watch.join(outbox)
    try:
        await outbox.wait_ended()  # the dashboard was dropped for not reading, or is gone
    finally:
        metrics_watch.leave(outbox)
        outbox.cancel()


def requested_mode(scope: Scope) -> Optional[str]:
    """``?mode=poll|push``, `DEFAULT_MODE` when absent, None when it is neither."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    mode = query.get("mode", [DEFAULT_MODE])[-1]
    return mode if mode in MODES else None


async def wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return


async def _application(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await receive()  # the handshake request, websocket.connect, comes first
        mode = requested_mode(scope)
        if mode is None:
            # Closing before accepting refuses the handshake (HTTP 403).
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "websocket.accept"})

        # Start background task to push updates: the seed's polling loop, or the watch.
        push_task = asyncio.create_task(push_metrics(send) if mode == "poll" else watch_metrics(send))
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
            mode = requested_mode(scope)
            if mode is None:
                await respond(send, 400, b"mode must be poll or push")
                return
            await respond_html(send, render_page("dashboard.html", scope.get("root_path", ""),
                                                 {"mode": mode, "interval": PUSH_INTERVAL}))
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
