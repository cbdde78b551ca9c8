"""Per-call cost of the state functions beside (a) a dict behind a threading.Lock holding
msgpack bytes (the same copy-out semantics) and (b) redis-py against a local redis-server.

    python benches/python/bench_state.py [--quick]

Prints a markdown table of microseconds per call and ratios (baseline / ours: >1 means faster).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _redis import redis_server  # noqa: E402

import hornbeam_erlang as hb  # noqa: E402

USER = {"username": "ann", "joined_at": "2026-11-23T19:00:00", "room": "lobby", "messages": 42, "admin": False}


def per_call(fn: Callable[[], object], n: int, repeat: int) -> float:
    """Best-of-`repeat` microseconds per call over `n` calls."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e6


class LockedDict:
    """The pure-Python baseline: msgpack bytes in a dict, every access under one lock."""

    def __init__(self) -> None:
        self.d: dict[str, object] = {}
        self.lock = threading.Lock()

    def get(self, k: str) -> object:
        with self.lock:
            b = self.d.get(k)
            return None if b is None else msgpack.unpackb(b)

    def set(self, k: str, v: object) -> None:
        b = msgpack.packb(v)
        with self.lock:
            self.d[k] = b

    def incr(self, k: str) -> int:
        with self.lock:
            n = self.d.get(k, 0) + 1  # type: ignore[operator]
            self.d[k] = n
            return n

    def keys(self, prefix: str) -> list[str]:
        with self.lock:
            return sorted(k for k in self.d if k.startswith(prefix))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n, repeat = (20_000, 3) if args.quick else (200_000, 5)
    n_redis = 2_000 if args.quick else 20_000
    n_keys = 50 if args.quick else 500

    hb.state_clear()
    ld = LockedDict()
    hb.state_set("user:1", USER)
    ld.set("user:1", USER)
    for i in range(10_000):
        hb.state_set(f"filler:{i}", i)
        ld.set(f"filler:{i}", i)
    for i in range(100):
        hb.state_set(f"room:42:user:{i}", i)
        ld.set(f"room:42:user:{i}", i)

    rows: list[tuple[str, float, float, float | None]] = []
    ops = [
        ("state_get (5-field dict)", lambda: hb.state_get("user:1"), lambda: ld.get("user:1")),
        ("state_set (5-field dict)", lambda: hb.state_set("user:2", USER), lambda: ld.set("user:2", USER)),
        ("state_incr", lambda: hb.state_incr("hits"), lambda: ld.incr("hits")),
        ("state_keys (100 of 10,100 keys)", lambda: hb.state_keys("room:42:"), lambda: ld.keys("room:42:")),
    ]
    with redis_server() as port:
        r = None
        if port is not None:
            import redis

            r = redis.Redis(host="127.0.0.1", port=port)
            r.set("user:1", msgpack.packb(USER))
            pipe = r.pipeline()
            for i in range(10_000):
                pipe.set(f"filler:{i}", i)
            for i in range(100):
                pipe.set(f"room:42:user:{i}", i)
            pipe.execute()
        redis_ops = [
            lambda: msgpack.unpackb(r.get("user:1")),
            lambda: r.set("user:2", msgpack.packb(USER)),
            lambda: r.incr("hits"),
            lambda: sorted(r.keys("room:42:*")),
        ]
        for (name, ours, base), rop in zip(ops, redis_ops):
            count = n_keys * 20 if "keys" in name else n
            t_ours = per_call(ours, count, repeat)
            t_base = per_call(base, n_keys if "keys" in name else count, repeat)
            t_redis = per_call(rop, n_keys if "keys" in name else n_redis, 3) if r is not None else None
            rows.append((name, t_ours, t_base, t_redis))
        if r is not None:
            r.close()

    print("| operation | hornbeam_erlang µs | locked dict + msgpack µs | ratio | redis-py µs | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, t_ours, t_base, t_redis in rows:
        redis_cols = f"{t_redis:.2f} | {t_redis / t_ours:.0f}x" if t_redis is not None else "n/a | n/a"
        print(f"| {name} | {t_ours:.3f} | {t_base:.3f} | {t_base / t_ours:.2f}x | {redis_cols} |")


if __name__ == "__main__":
    main()
