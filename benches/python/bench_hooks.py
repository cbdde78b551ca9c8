"""Hooks and hornbeam_ml beside their baselines, each ratio from one run:

1. ``execute`` of a hook registered in this process vs calling the handler's method directly;
2. ``execute`` across two processes on Redis vs a hand-written redis-py request/reply
   (LPUSH a request, BRPOP the reply from a per-caller list) on the same redis-server (p50, p99);
3. a ``cached_inference`` hit vs calling a 1 ms stand-in model (embedded, and on Redis).

    python benches/python/bench_hooks.py [--quick]

Parts 2 and 3 on Redis run in child processes (each gets HORNBEAM_URL before it starts its
engine); every child is stopped by its PID.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


from bench_state import per_call  # noqa: E402


class Service:
    def add(self, a, b):
        return a + b


def model_1ms(x: Any) -> list[float]:
    """The stand-in model: 1 ms of work (a sleep, so it does not compete for the CPU)."""
    time.sleep(0.001)
    return [0.5] * 64


# -- children --------------------------------------------------------------------------------


def hook_server() -> None:
    import hornbeam_erlang as hb

    hb.register_hook("bench.svc", Service)
    print("READY", flush=True)
    sys.stdin.read()


def hook_client(n: int) -> None:
    import hornbeam_erlang as hb

    for _ in range(200):
        hb.execute("bench.svc", "add", 1, 2)
    lat = []
    for i in range(n):
        t = time.perf_counter()
        hb.execute("bench.svc", "add", i, 2)
        lat.append(time.perf_counter() - t)
    print(json.dumps(lat), flush=True)


def redis_py_server(port: int) -> None:
    import msgpack
    import redis

    r = redis.Redis(host="127.0.0.1", port=port)
    print("READY", flush=True)
    # Bounded by the benchmark: the parent kills this process by its PID.
    while True:
        _, raw = r.brpop(["bench:req"])
        req = msgpack.unpackb(raw)
        r.lpush(req["reply"], msgpack.packb({"id": req["id"], "v": req["a"][0] + req["a"][1]}))


def redis_py_client(port: int, n: int) -> None:
    import msgpack
    import redis

    r = redis.Redis(host="127.0.0.1", port=port)
    reply = f"bench:reply:{os.getpid()}"

    def call(i: int) -> Any:
        r.lpush("bench:req", msgpack.packb({"id": i, "reply": reply, "a": [i, 2]}))
        _, raw = r.brpop([reply], timeout=5)
        return msgpack.unpackb(raw)["v"]

    for i in range(200):
        call(i)
    lat = []
    for i in range(n):
        t = time.perf_counter()
        call(i)
        lat.append(time.perf_counter() - t)
    print(json.dumps(lat), flush=True)


def ml_child(n: int) -> None:
    print(json.dumps(ml_figures(n)), flush=True)


def ml_figures(n: int) -> dict[str, float]:
    import hornbeam_erlang as hb
    from hornbeam_ml import cached_inference

    hb.state_delete("ml_cache_hits")
    cached_inference(model_1ms, "the same text")
    hit = per_call(lambda: cached_inference(model_1ms, "the same text"), n, 3)
    model = per_call(lambda: model_1ms("the same text"), max(50, n // 20), 3)
    return {"hit": hit, "model": model}


# -- parent ----------------------------------------------------------------------------------


def child(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)


def stop(p: subprocess.Popen[str]) -> None:
    if p.poll() is None:
        p.kill()
    p.wait(timeout=30)
    for f in (p.stdin, p.stdout):
        if f is not None:
            try:
                f.close()
            except OSError:
                pass


def pct(lat: list[float], q: float) -> float:
    s = sorted(lat)
    return s[min(len(s) - 1, int(q * len(s)))] * 1e6


def hooks_only(url: str, n: int) -> list[float]:
    """`execute` latencies between two processes on the backend `url`."""
    env = dict(os.environ, HORNBEAM_URL=url)
    server = child(["--role", "hook-server"], env)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "READY"
        client = child(["--role", "hook-client", "--n", str(n)], env)
        assert client.stdout is not None
        lat: list[float] = json.loads(client.stdout.readline())
        stop(client)
    finally:
        stop(server)
    return lat


def cross_process(port: int, n: int) -> dict[str, list[float]]:
    env = dict(os.environ, HORNBEAM_URL=f"redis://127.0.0.1:{port}/0")
    out: dict[str, list[float]] = {}
    server = child(["--role", "hook-server"], env)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "READY"
        client = child(["--role", "hook-client", "--n", str(n)], env)
        assert client.stdout is not None
        out["execute"] = json.loads(client.stdout.readline())
        stop(client)
    finally:
        stop(server)
    server = child(["--role", "redis-py-server", "--port", str(port)], env)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "READY"
        client = child(["--role", "redis-py-client", "--port", str(port), "--n", str(n)], env)
        assert client.stdout is not None
        out["redis-py"] = json.loads(client.stdout.readline())
        stop(client)
    finally:
        stop(server)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--role")
    ap.add_argument("--n", type=int, default=0)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    roles: dict[str, Callable[[], None]] = {
        "hook-server": hook_server,
        "hook-client": lambda: hook_client(args.n),
        "redis-py-server": lambda: redis_py_server(args.port),
        "redis-py-client": lambda: redis_py_client(args.port, args.n),
        "ml": lambda: ml_child(args.n),
    }
    if args.role:
        roles[args.role]()
        return

    import hornbeam_erlang as hb
    from _redis import redis_server

    n = 20_000 if args.quick else 200_000
    svc = Service()
    hb.register_hook("bench.local", svc)
    direct = per_call(lambda: svc.add(1, 2), n, 5)
    execute = per_call(lambda: hb.execute("bench.local", "add", 1, 2), n, 5)
    print("### execute in one process (µs per call, best of 5)\n")
    print("| call | µs | ratio |\n| --- | ---: | ---: |")
    print(f"| `svc.add(1, 2)` (direct) | {direct:.3f} | 1 |")
    print(f"| `execute('bench.local', 'add', 1, 2)` | {execute:.3f} | {execute / direct:.2f}x |\n")

    ml_n = 2_000 if args.quick else 20_000
    embedded = ml_figures(ml_n)
    with redis_server() as port:
        if port is None:
            sys.exit("redis-server is not installed: apt-get install redis-server")
        calls = 2_000 if args.quick else 10_000
        cross = cross_process(port, calls)
        env = dict(os.environ, HORNBEAM_URL=f"redis://127.0.0.1:{port}/0")
        ml = child(["--role", "ml", "--n", str(ml_n // 4)], env)
        assert ml.stdout is not None
        on_redis = json.loads(ml.stdout.readline())
        stop(ml)

    print(f"### execute across two processes on Redis ({calls} sequential calls, µs)\n")
    print("| request/reply | p50 | p99 | mean |\n| --- | ---: | ---: | ---: |")
    for name, lat in (("`execute` (hook in the other process)", cross["execute"]),
                      ("redis-py LPUSH + BRPOP (hand-written)", cross["redis-py"])):
        print(f"| {name} | {pct(lat, 0.5):.0f} | {pct(lat, 0.99):.0f} | {statistics.mean(lat) * 1e6:.0f} |")
    print(f"\np50 ratio (redis-py / execute): {pct(cross['redis-py'], 0.5) / pct(cross['execute'], 0.5):.2f}x, "
          f"p99 ratio: {pct(cross['redis-py'], 0.99) / pct(cross['execute'], 0.99):.2f}x\n")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="hb-bench-local-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as d:
        local = hooks_only(f"local://{d}", calls)
    print(f"`execute` across two processes on local:// ({calls} sequential calls): p50 {pct(local, 0.5):.0f} µs, "
          f"p99 {pct(local, 0.99):.0f} µs, mean {statistics.mean(local) * 1e6:.0f} µs\n")

    print("### cached_inference hit vs a 1 ms model (µs per call, best of 3)\n")
    print("| backend | hit | model call | ratio |\n| --- | ---: | ---: | ---: |")
    for name, f in (("embedded", embedded), ("Redis", on_redis)):
        print(f"| {name} | {f['hit']:.2f} | {f['model']:.0f} | {f['model'] / f['hit']:.0f}x |")


if __name__ == "__main__":
    main()
