"""Chat fan-out benchmark: our WebSocket chat beside the Zenith way, on the same uvicorn, in one run.

For each app: start uvicorn (same version, same options), connect `--clients` users to one room,
then

1. paced: every client sends one message per second for `--paced` seconds;
2. max: every client sends its next message as soon as its previous one came back to it (a closed
   loop with `--window` messages in flight per client), for `--max` seconds.

Each message reaches every client of the room, sender included. Reported per phase: messages sent,
deliveries, lost deliveries, deliveries per second, p50 and p99 send-to-receive latency, and the
server's CPU use (and per delivery), and each app against the Zenith way in the same round. The apps are ``examples.websocket_chat.app:application`` (store + bus) and
``benches/ws/zenith_style.py`` (a dict of sockets and a loop of sends).

Run from the repository root::

    .venv/bin/python benches/ws/chat_bench.py            # 200 clients, 30 s paced, 10 s max
    .venv/bin/python benches/ws/chat_bench.py --quick    # 200 clients, 5 s + 4 s: under a minute
    .venv/bin/python benches/ws/chat_bench.py --rounds 3 # apps in turn, 3 times; medians at the end
    .venv/bin/python benches/ws/chat_bench.py --rounds 3 --before cb3c0ee  # plus the chat as of cb3c0ee

The load generator is a minimal WebSocket client on asyncio (no library frame machinery), so that on
a small machine the client costs less than the server it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import re
import statistics
import sys
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _wsclient import Server, WsClient, percentile  # noqa: E402

HERE = Path(__file__).resolve().parent

APPS = {
    "hornbeam (store + bus)": ("examples.websocket_chat.app:application", []),
    "zenith way (dict of sockets)": ("zenith_style:application", ["--app-dir", str(HERE)]),
}

# Message texts are "b<client> <phase> <perf_counter_ns at send>"; both apps echo them in the same JSON.
TEXT_RE = re.compile(rb'"text": "b(\d+) (\d+) (\d+)"')
PHASES = ("paced", "max")


# ---------------------------------------------------------------------------------------- server

# ---------------------------------------------------------------------------------------- client

@dataclass
class PhaseStats:
    sent: int = 0
    delivered: int = 0
    delivered_in_window: int = 0
    latencies_ns: array = field(default_factory=lambda: array("q"))
    window_end_ns: int = 1 << 62


class Bench:
    """The state shared by all clients of one run."""

    def __init__(self, clients: int):
        self.clients: list[ChatClient] = []
        self.stats = {name: PhaseStats() for name in PHASES}
        self.closed_loop = False
        self.stop_sending = False
        self.frames = 0


class ChatClient(WsClient):
    """A load client of the chat protocol: records deliveries and latencies in the `Bench`."""

    def __init__(self, bench: Bench, idx: int, host: str, path: str):
        super().__init__(idx, host, path)
        self.bench = bench
        self.joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        for fut in (self.opened, self.joined):
            if not fut.done():
                fut.set_exception(ConnectionError(f"client {self.idx} lost its connection"))

    def send_json(self, data: dict[str, Any]) -> None:
        self.send_frame(1, json.dumps(data).encode())

    def send_chat(self, phase: int) -> None:
        self.bench.stats[PHASES[phase]].sent += 1
        text = f"b{self.idx} {phase} {time.perf_counter_ns()}"
        self.send_frame(1, b'{"type": "message", "text": "' + text.encode() + b'"}')

    def on_text(self, payload: bytes) -> None:
        self.bench.frames += 1
        if payload.startswith(b'{"type": "message"'):
            match = TEXT_RE.search(payload)
            if match is None:
                return
            now = time.perf_counter_ns()
            sender, phase = int(match.group(1)), int(match.group(2))
            stats = self.bench.stats[PHASES[phase]]
            stats.delivered += 1
            stats.latencies_ns.append(now - int(match.group(3)))
            if now <= stats.window_end_ns:
                stats.delivered_in_window += 1
            if phase == 1 and self.bench.closed_loop and sender == self.idx and not self.bench.stop_sending:
                self.send_chat(phase)
        elif payload.startswith(b'{"type": "joined"') and not self.joined.done():
            self.joined.set_result(None)


# ------------------------------------------------------------------------------------------- run

async def wait_quiet(bench: Bench, quiet: float = 0.5, limit: float = 20.0) -> None:
    """Wait until no frame has arrived for `quiet` seconds (join notices settle), at most `limit`."""
    deadline = time.monotonic() + limit
    last = -1
    while time.monotonic() < deadline:
        if bench.frames == last:
            return
        last = bench.frames
        await asyncio.sleep(quiet)


async def wait_delivered(bench: Bench, stats: PhaseStats, n: int, grace: float = 10.0) -> None:
    deadline = time.monotonic() + grace
    while stats.delivered < stats.sent * n and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def run_app(name: str, app: str, extra: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    server = Server([app, *extra])
    try:
        loop = asyncio.get_running_loop()
        bench = Bench(args.clients)
        host = f"127.0.0.1:{server.port}"
        for i in range(args.clients):
            _, client = await loop.create_connection(
                functools.partial(ChatClient, bench, i, host, "/ws/bench"), "127.0.0.1", server.port)
            bench.clients.append(client)
        await asyncio.wait_for(asyncio.gather(*(c.opened for c in bench.clients)), 30)
        for c in bench.clients:
            c.send_json({"type": "join", "username": f"b{c.idx}"})
        await asyncio.wait_for(asyncio.gather(*(c.joined for c in bench.clients)), 60)
        await wait_quiet(bench)
        n = len(bench.clients)
        rows = []

        # Phase 1: one message per client per second, spread evenly over the second.
        stats = bench.stats["paced"]
        cpu0, own0, t0 = server.cpu_seconds(), time.process_time(), time.perf_counter_ns()
        stats.window_end_ns = t0 + int(args.paced * 1e9)

        async def paced(c: ChatClient) -> None:
            start = t0 + int(c.idx / n * 1e9)
            for k in range(int(args.paced)):
                delay = (start + k * 1_000_000_000 - time.perf_counter_ns()) / 1e9
                if delay > 0:
                    await asyncio.sleep(delay)
                c.send_chat(0)

        await asyncio.gather(*(paced(c) for c in bench.clients))
        await wait_delivered(bench, stats, n)
        elapsed = (time.perf_counter_ns() - t0) / 1e9
        rows.append(row(name, "paced 1/s", n, stats, args.paced, (server.cpu_seconds() - cpu0) / elapsed,
                        (time.process_time() - own0) / elapsed))
        await wait_quiet(bench, limit=5)

        # Phase 2: closed loop, as fast as the round trip allows.
        stats = bench.stats["max"]
        bench.closed_loop = True
        cpu0, own0, t0 = server.cpu_seconds(), time.process_time(), time.perf_counter_ns()
        stats.window_end_ns = t0 + int(args.max * 1e9)
        for c in bench.clients:
            for _ in range(args.window):
                c.send_chat(1)
        await asyncio.sleep(args.max)
        cpu1, own1 = server.cpu_seconds(), time.process_time()
        bench.stop_sending = True
        await wait_delivered(bench, stats, n)
        rows.append(row(name, "max (closed loop)", n, stats, args.max, (cpu1 - cpu0) / args.max,
                        (own1 - own0) / args.max))
        for c in bench.clients:
            if c.transport is not None:
                c.transport.close()
        return rows
    finally:
        server.stop()


def row(app: str, phase: str, n: int, stats: PhaseStats, seconds: float, cpu: float,
        client_cpu: float) -> dict[str, Any]:
    return {
        "app": app,
        "phase": phase,
        "clients": n,
        "sent": stats.sent,
        "deliveries": stats.delivered,
        "lost": stats.sent * n - stats.delivered,
        "deliveries_per_s": stats.delivered_in_window / seconds,
        "p50_ms": percentile(stats.latencies_ns, 0.50),
        "p99_ms": percentile(stats.latencies_ns, 0.99),
        "server_cpu_pct": 100 * cpu,
        "client_cpu_pct": 100 * client_cpu,
        # Server CPU time per delivery, in microseconds (the phase's CPU share over its rate).
        "cpu_us_per_delivery": 1e6 * cpu / max(stats.delivered_in_window / seconds, 1.0),
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| app | phase | clients | sent | deliveries | lost | deliveries/s | p50 ms | p99 ms | server CPU "
        "| client CPU | server CPU µs per delivery |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['app']} | {r['phase']} | {r['clients']} | {r['sent']:.0f} | {r['deliveries']:.0f} | {r['lost']:.0f} "
            f"| {r['deliveries_per_s']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['server_cpu_pct']:.0f}% "
            f"| {r['client_cpu_pct']:.0f}% | {r['cpu_us_per_delivery']:.2f} |")
    return "\n".join(lines)


BASELINE = "zenith way (dict of sockets)"


def ratios(rows: list[dict[str, Any]]) -> str:
    """Each app against the Zenith way, per round (rows come in rounds of len(APPS) apps x 2
    phases): server CPU per delivery (paced), p99 (paced), deliveries/s (max)."""
    lines = ["| app | round | CPU per delivery, paced | p99, paced | throughput, max |",
             "| --- | ---: | ---: | ---: | ---: |"]
    per_round = len(APPS) * 2
    for start in range(0, len(rows), per_round):
        chunk = {(r["app"], r["phase"]): r for r in rows[start:start + per_round]}
        base_p = chunk.get((BASELINE, "paced 1/s"))
        base_m = chunk.get((BASELINE, "max (closed loop)"))
        if base_p is None or base_m is None:
            continue
        for app in APPS:
            if app == BASELINE:
                continue
            p, m = chunk[(app, "paced 1/s")], chunk[(app, "max (closed loop)")]
            lines.append(
                f"| {app} | {start // per_round + 1} "
                f"| {p['cpu_us_per_delivery'] / base_p['cpu_us_per_delivery']:.2f}x "
                f"| {p['p99_ms']:.1f} / {base_p['p99_ms']:.1f} ms "
                f"| {m['deliveries_per_s'] / max(base_m['deliveries_per_s'], 1):.2f}x |")
    return "\n".join(lines)


def add_before(rev: str) -> None:
    """Adds the chat app of git revision ``rev`` as a third app (copied into a temporary
    package), so a change is measured beside what it replaces, in the same run."""
    import subprocess
    import tempfile

    root = HERE.parent.parent
    pkg = Path(tempfile.mkdtemp(prefix="chat-before-")) / "chat_before"
    (pkg / "static").mkdir(parents=True)
    for name in ("app.py", "static/index.html"):
        text = subprocess.run(["git", "show", f"{rev}:examples/websocket_chat/{name}"], cwd=root,
                              check=True, capture_output=True).stdout
        (pkg / name).write_bytes(text)
    (pkg / "__init__.py").write_text("")
    APPS[f"hornbeam before ({rev})"] = ("chat_before.app:application", ["--app-dir", str(pkg.parent)])


def medians(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["app"], r["phase"]), []).append(r)
    out = []
    for group in groups.values():
        merged = dict(group[0])
        for key, value in merged.items():
            if isinstance(value, (int, float)) and key != "clients":
                merged[key] = statistics.median(r[key] for r in group)
        out.append(merged)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 s paced + 4 s max per app (under a minute)")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--paced", type=int, default=30, help="seconds of one message per client per second")
    parser.add_argument("--max", type=float, default=10.0, help="seconds of the closed-loop phase")
    parser.add_argument("--window", type=int, default=1, help="messages in flight per client in the max phase")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the apps in turn this many times; the summary takes medians")
    parser.add_argument("--json", type=Path, help="also write the rows of every round to this file")
    parser.add_argument("--before", metavar="REV",
                        help="also run examples/websocket_chat as of git revision REV")
    args = parser.parse_args()
    if args.before:
        add_before(args.before)
    if args.quick:
        args.paced, args.max = 5, 4.0

    async def everything() -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for round_no in range(args.rounds):
            # Alternate the order, so neither app always runs first on a machine that warms up.
            order = list(APPS.items())
            if round_no % 2:
                order.reverse()
            for name, (app, extra) in order:
                rows += await run_app(name, app, extra, args)
        return rows

    started = time.monotonic()
    rows = asyncio.run(everything())
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    print("Against the Zenith way, same round:\n")
    print(ratios(rows))
    print()
    if args.rounds > 1:
        print(f"Every round ({args.rounds}):\n")
        print(table(rows))
        print(f"\nMedian of {args.rounds} rounds:\n")
        rows = medians(rows)
    print(table(rows))
    print(f"\n{args.clients} clients in one room; uvicorn, {os.cpu_count()} CPUs; "
          f"{time.monotonic() - started:.0f} s in all.")


if __name__ == "__main__":
    main()
