"""Channels benchmark: fan-out to one topic beside the plain WebSocket chat, and a presence storm.

One uvicorn serves both apps (this module's ``app``): the channels endpoint at ``/channels``
(topic ``bench:*``, handlers on ``hornbeam_channels``) in front of the seed-000 WebSocket chat
(``examples.websocket_chat.app``, rooms at ``/ws/<room>``). In the same run:

1. channels fan-out: ``--clients`` Phoenix-protocol clients join one topic; ``--senders`` of them
   each send a message, and the next one as soon as their own came back (closed loop), for
   ``--seconds``; the handler ``broadcast``s each to the whole topic, sender included;
2. plain chat fan-out: the same numbers of clients and senders in one room of the seed-000 chat;
3. presence join storm: ``--clients`` new clients each join one fresh topic and ``track``
   themselves, all at once; measured: until every join is answered, and until every client's
   presence list (``presence_state`` + ``presence_diff``) holds all of them.

Reported: broadcasts per second, deliveries per second, p50/p99 send-to-receive latency, lost
deliveries, server CPU; the storm's two times.

Run from the repository root::

    .venv/bin/python benches/ws/channels_bench.py            # 500 clients, 10 s per fan-out
    .venv/bin/python benches/ws/channels_bench.py --quick    # 500 clients, 3 s: under a minute

The load generator is a minimal asyncio WebSocket client (no library framing), so that on a
small machine the client costs less than the server it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from array import array
from pathlib import Path
from typing import Any, Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _wsclient import Server, WsClient, percentile  # noqa: E402

HERE = Path(__file__).resolve().parent
CHANNEL_PATH = "/channels/websocket?vsn=2.0.0"
PLAIN_PATH = "/ws/benchroom"

# Payloads carry "<sender> <perf_counter_ns at send>" so each delivery yields a latency.
STAMP_RE = re.compile(rb'"b(\d+) (\d+)"')


# ---------------------------------------------------------------------------------- server app

_app: Any = None


def _build_app() -> Any:
    from examples.websocket_chat.app import application as plain_chat
    from hornbeam_channels import Socket, asgi_endpoint, broadcast, channel
    from hornbeam_presence import Presence

    bench = channel("bench:*")

    @bench.on_join
    def join(topic: str, topic_params: dict[str, str], params: dict[str, Any],
             socket: Socket) -> tuple[Any, ...]:
        if params.get("track"):
            Presence(topic).track(socket, str(params["name"]), {"name": params["name"]})
        return ("ok", {})

    @bench.on("msg")
    def msg(payload: dict[str, Any], socket: Socket) -> tuple[Any, ...]:
        broadcast(socket.topic, "msg", payload)
        return ("noreply", socket)

    return asgi_endpoint("/channels", app=plain_chat, heartbeat_timeout=None,
                         rate_limit=None)  # closed-loop senders go past 50 events/s on purpose


def __getattr__(name: str) -> Any:
    # uvicorn loads `channels_bench:app`; building it lazily keeps the load generator light.
    global _app
    if name == "app":
        if _app is None:
            _app = _build_app()
        return _app
    raise AttributeError(name)


# -------------------------------------------------------------------------------------- server

# -------------------------------------------------------------------------------------- client

class Client(WsClient):
    """A load client that hands each text frame to the benchmark's `on_text(client, payload)`."""

    def __init__(self, idx: int, host: str, path: str, on_text: Callable[["Client", bytes], None]):
        super().__init__(idx, host, path)
        self.handler = on_text
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.keys: set[str] = set()

    def on_text(self, payload: bytes) -> None:
        self.handler(self, payload)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        for fut in (self.opened, self.ready):
            if not fut.done():
                fut.cancel()


async def connect_all(port: int, n: int, path: str,
                      on_text: Callable[[Client, bytes], None]) -> list[Client]:
    loop = asyncio.get_running_loop()
    host = f"127.0.0.1:{port}"
    clients: list[Client] = []
    for i in range(n):
        def factory(i: int = i) -> Client:
            return Client(i, host, path, on_text)
        _, client = await loop.create_connection(factory, "127.0.0.1", port)
        clients.append(client)
    await asyncio.wait_for(asyncio.gather(*(c.opened for c in clients)), 60)
    return clients


# ------------------------------------------------------------------------------------- fan-out

class FanOut:
    """Closed-loop senders; every delivery of a stamped message is timed."""

    def __init__(self, send: Callable[[Client, str], None]) -> None:
        self.send = send
        self.sent = 0
        self.delivered = 0
        self.latencies: "array[int]" = array("q")
        self.senders: set[int] = set()
        self.running = False

    def fire(self, client: Client) -> None:
        self.sent += 1
        self.send(client, f"b{client.idx} {time.perf_counter_ns()}")

    def on_stamp(self, client: Client, payload: bytes) -> bool:
        match = STAMP_RE.search(payload)
        if match is None:
            return False
        self.delivered += 1
        self.latencies.append(time.perf_counter_ns() - int(match.group(2)))
        if self.running and int(match.group(1)) == client.idx and client.idx in self.senders:
            self.fire(client)
        return True


async def settle(counter: Callable[[], int], quiet: float = 0.3, limit: float = 20.0) -> None:
    """Waits until ``counter()`` stops moving for ``quiet`` seconds (at most ``limit``)."""
    deadline = time.monotonic() + limit
    last = -1
    while time.monotonic() < deadline:
        now = counter()
        if now == last:
            return
        last = now
        await asyncio.sleep(quiet)


async def run_fanout(server: Server, name: str, args: argparse.Namespace, channels: bool) -> dict[str, Any]:
    topic = "bench:fan"
    frames = 0

    def send_channels(c: Client, stamp: str) -> None:
        c.send_text(json.dumps(["1", "m", topic, "msg", {"s": stamp}]))

    def send_plain(c: Client, stamp: str) -> None:
        c.send_text(json.dumps({"type": "message", "text": stamp}))

    fan = FanOut(send_channels if channels else send_plain)

    def on_text(c: Client, payload: bytes) -> None:
        nonlocal frames
        frames += 1
        if fan.on_stamp(c, payload):
            return
        if not c.ready.done() and (b'"phx_reply"' in payload or b'"type": "joined"' in payload):
            c.ready.set_result(None)

    clients = await connect_all(server.port, args.clients, CHANNEL_PATH if channels else PLAIN_PATH,
                                on_text)
    try:
        for c in clients:
            if channels:
                c.send_text(json.dumps(["1", "1", topic, "phx_join", {}]))
            else:
                c.send_text(json.dumps({"type": "join", "username": f"b{c.idx}"}))
        await asyncio.wait_for(asyncio.gather(*(c.ready for c in clients)), 120)
        await settle(lambda: frames)
        step = max(1, len(clients) // args.senders)
        fan.senders = {c.idx for c in clients[::step][:args.senders]}
        fan.running = True
        cpu0, t0 = server.cpu_seconds(), time.perf_counter()
        for c in clients:
            if c.idx in fan.senders:
                fan.fire(c)
        await asyncio.sleep(args.seconds)
        fan.running = False
        elapsed = time.perf_counter() - t0
        cpu = (server.cpu_seconds() - cpu0) / elapsed
        sent_in_window = fan.sent
        deadline = time.monotonic() + 10
        while fan.delivered < fan.sent * len(clients) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return {
            "app": name, "clients": len(clients), "senders": len(fan.senders),
            "broadcasts": sent_in_window, "broadcasts_per_s": sent_in_window / elapsed,
            "deliveries_per_s": sent_in_window * len(clients) / elapsed,
            "lost": fan.sent * len(clients) - fan.delivered,
            "p50_ms": percentile(fan.latencies, 0.50), "p99_ms": percentile(fan.latencies, 0.99),
            "server_cpu_pct": 100 * cpu,
        }
    finally:
        for c in clients:
            c.close()


# ---------------------------------------------------------------------------- presence storm

async def run_storm(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    topic = f"bench:storm{os.getpid()}"
    n = args.clients
    complete = 0
    t_all_complete: Optional[float] = None
    joined = 0
    t_all_joined: Optional[float] = None

    def on_text(c: Client, payload: bytes) -> None:
        nonlocal complete, t_all_complete, joined, t_all_joined
        frame = json.loads(payload)
        event = frame[3]
        before = len(c.keys)
        if event == "phx_reply":
            joined += 1
            if joined == n:
                t_all_joined = time.perf_counter()
            return
        if event == "presence_state":
            c.keys.update(frame[4])
        elif event == "presence_diff":
            c.keys.update(frame[4]["joins"])
            c.keys.difference_update(frame[4]["leaves"])
        if before < n <= len(c.keys):
            complete += 1
            if complete == n:
                t_all_complete = time.perf_counter()

    clients = await connect_all(server.port, n, CHANNEL_PATH, on_text)
    try:
        cpu0, t0 = server.cpu_seconds(), time.perf_counter()
        for c in clients:
            c.send_text(json.dumps(["1", "1", topic, "phx_join", {"track": True, "name": f"c{c.idx}"}]))
        deadline = time.monotonic() + 120
        while t_all_complete is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        cpu = server.cpu_seconds() - cpu0
        return {
            "clients": n,
            "all_joined_s": (t_all_joined or float("nan")) - t0,
            "all_complete_s": (t_all_complete or float("nan")) - t0,
            "complete_clients": complete,
            "server_cpu_s": cpu,
        }
    finally:
        for c in clients:
            c.close()


# --------------------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s per fan-out phase (under a minute)")
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--senders", type=int, default=10, help="closed-loop senders per fan-out")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each fan-out phase")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    if args.quick:
        args.seconds = 3.0

    async def everything() -> dict[str, Any]:
        server = Server(["channels_bench:app", "--app-dir", str(HERE)])
        try:
            fan = [await run_fanout(server, "channels (hornbeam_channels)", args, channels=True),
                   await run_fanout(server, "plain WebSocket chat (seed 000)", args, channels=False)]
            storm = await run_storm(server, args)
            return {"fanout": fan, "storm": storm}
        finally:
            server.stop()

    started = time.monotonic()
    results = asyncio.run(everything())
    print("| app | clients | senders | broadcasts/s | deliveries/s | p50 ms | p99 ms | lost | server CPU "
          "| CPU µs per delivery | vs plain chat |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    plain = results["fanout"][1]
    per = {r["app"]: 1e4 * r["server_cpu_pct"] / max(r["deliveries_per_s"], 1) for r in results["fanout"]}
    for r in results["fanout"]:
        r["cpu_us_per_delivery"] = per[r["app"]]
        print(f"| {r['app']} | {r['clients']} | {r['senders']} | {r['broadcasts_per_s']:,.0f} "
              f"| {r['deliveries_per_s']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['lost']} "
              f"| {r['server_cpu_pct']:.0f}% | {per[r['app']]:.2f} | {per[r['app']] / per[plain['app']]:.2f}x |")
    s = results["storm"]
    print(f"\npresence join storm: {s['clients']} joins; all answered in {s['all_joined_s']:.2f} s, "
          f"every presence list complete in {s['all_complete_s']:.2f} s "
          f"({s['complete_clients']}/{s['clients']} clients complete; server CPU {s['server_cpu_s']:.1f} s)")
    print(f"\nuvicorn, one worker, {os.cpu_count()} CPUs; {time.monotonic() - started:.0f} s in all.")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
