"""The `local://` backend (LMDB, every process on the machine) beside the embedded engine and the
Redis backend, measured in one run, alternating, each figure the median of `--rounds` runs:

1. per call from Python: `state_get` of a 5-field dict, `state_set` of it, `state_incr`;
2. `state_incr` of one key from 4 processes at once against 1 process alone (total calls/s);
3. fan-out across processes: 4 subscriber processes x 250 mailbox tasks, deliveries/s, on
   `local://` and on Redis (benches/python/bench_fanout_redis.py's harness);
4. publish -> receive in another process at light load (one message every 2 ms): p50/p99;
5. `keys(prefix)` with 100 matches among 10,000 and among 1,000,000 keys.

    python benches/python/bench_local.py [--quick] [--rounds 3]

Every process started is stopped by its PID; directories are temporary and removed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _redis import redis_server  # noqa: E402

USER = {"username": "ann", "joined_at": "2026-11-23T19:00:00", "room": "lobby", "messages": 42,
        "admin": False}

PER_CALL = r'''
import json, sys, time
import hornbeam_erlang as hb
USER = %r
n, repeat = int(sys.argv[1]), int(sys.argv[2])
def best(fn):
    b = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        b = min(b, (time.perf_counter() - t) / n)
    return b * 1e6
hb.state_set("user:1", USER)
out = {"backend": hb.backend(),
       "get": best(lambda: hb.state_get("user:1")),
       "set": best(lambda: hb.state_set("user:1", USER)),
       "incr": best(lambda: hb.state_incr("hits"))}
print(json.dumps(out))
''' % (USER,)

INCR = r'''
import sys, time
import hornbeam_erlang as hb
n = int(sys.argv[1])
hb.state_get("warm")
print("ready", flush=True)
sys.stdin.readline()
t = time.perf_counter()
for _ in range(n):
    hb.state_incr("contended")
print(time.perf_counter() - t, flush=True)
'''

KEYS = r'''
import json, sys, time
import hornbeam_erlang as hb
filler = int(sys.argv[1])
batch = {}
for i in range(filler):
    batch[f"filler:{i:08d}"] = 0
    if len(batch) == 10_000:
        hb.state_set_multi(batch)
        batch = {}
if batch:
    hb.state_set_multi(batch)
hb.state_set_multi({f"room:42:user:{i:03d}": 0 for i in range(100)})
best = float("inf")
for _ in range(30):
    t = time.perf_counter()
    assert len(hb.state_keys("room:42:")) == 100
    best = min(best, time.perf_counter() - t)
print(json.dumps({"us": best * 1e6}))
'''


def py(code: str, args: list[str], url: str | None, **kw) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("HORNBEAM_URL", None)
    if url:
        env["HORNBEAM_URL"] = url
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, text=True,
                            stdout=subprocess.PIPE, **kw)


def run_json(code: str, args: list[str], url: str | None, timeout: float = 600) -> dict:
    p = py(code, args, url)
    try:
        out, _ = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)
    if p.returncode != 0:
        raise RuntimeError(f"benchmark process failed ({p.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def incr_rate(url: str, procs: int, n: int) -> float:
    """Total `state_incr` calls per second with `procs` processes on one key."""
    ps = [py(INCR, [str(n)], url, stdin=subprocess.PIPE) for _ in range(procs)]
    try:
        for p in ps:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        t = time.perf_counter()
        for p in ps:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in ps:
            assert p.stdout is not None
            p.stdout.readline()
        wall = time.perf_counter() - t
    finally:
        for p in ps:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
    return procs * n / wall


def fanout(port: int, url: str | None, procs: int, subs: int, msgs: int, batch: int,
           pace: float = 0.0) -> dict:
    code = ("import json, sys; sys.path.insert(0, %r); import bench_fanout_redis as fr; "
            "print(json.dumps(fr.run('hornbeam', %d, %d, %d, %d, %d, url=%r, pace=%r)))"
            % (str(HERE), port, procs, subs, msgs, batch, url, pace))
    return run_json(code, [], url)


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    n_call = 20_000 if args.quick else 100_000
    n_incr = 20_000 if args.quick else 100_000
    subs, msgs = (50, 50) if args.quick else (250, 200)
    big = 100_000 if args.quick else 1_000_000
    tmp = Path(tempfile.mkdtemp(prefix="hb-bench-local-"))
    try:
        with redis_server() as port:
            if port is None:
                raise SystemExit("redis-server is not installed: apt-get install redis-server")
            redis_url = f"redis://127.0.0.1:{port}/0?prefix=benchlocal:"
            local_url = f"local://{tmp / 'store'}"
            calls: dict[str, list[dict]] = {"embedded": [], "local": [], "redis": []}
            incr1: list[float] = []
            incr4: list[float] = []
            fan: dict[str, list[dict]] = {"local": [], "redis": []}
            # The same fan-out with fewer tasks per process, where the transport, not the
            # Python consumers, sets the pace.
            sweep_sizes = ((1, 2000), (10, 500)) if args.quick else ((1, 20_000), (10, 5000))
            sweep: dict[tuple[int, str], list[float]] = {}
            light: list[dict] = []
            for r in range(args.rounds):
                for name, url in (("embedded", None), ("local", local_url), ("redis", redis_url)):
                    n = n_call if name != "redis" else max(2000, n_call // 20)
                    res = run_json(PER_CALL, [str(n), "3"], url)
                    assert res["backend"] == name, res
                    calls[name].append(res)
                incr1.append(incr_rate(local_url, 1, n_incr))
                incr4.append(incr_rate(local_url, 4, n_incr // 4 * 4 // 4))
                for name, url in (("local", f"local://{tmp / f'fan{r}'}"), ("redis", redis_url)):
                    fan[name].append(fanout(port, url, 4, subs, msgs, 10))
                for n_subs, n_msgs in sweep_sizes:
                    for name, url in (("local", f"local://{tmp / f'sw{n_subs}-{r}'}"),
                                      ("redis", redis_url)):
                        got = fanout(port, url, 4, n_subs, n_msgs, 10)["deliveries_per_s"]
                        sweep.setdefault((n_subs, name), []).append(got)
                light.append(fanout(port, f"local://{tmp / f'light{r}'}", 1, 1, 300, 1, 0.002))
            keys_small = [run_json(KEYS, ["10000"], f"local://{tmp / f'k10k{r}'}")["us"]
                          for r in range(args.rounds)]
            keys_big = [run_json(KEYS, [str(big)], f"local://{tmp / f'kbig{r}'}")["us"]
                        for r in range(args.rounds)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"Medians of {args.rounds} rounds (each round runs every contender once, in turn).\n")
    print("| per call (µs) | embedded | local:// | Redis backend | local / embedded | Redis / local |")
    print("|---|---:|---:|---:|---:|---:|")
    for op, label in (("get", "`state_get` (5-field dict)"), ("set", "`state_set` (5-field dict)"),
                      ("incr", "`state_incr`")):
        e, l, rd = (med([c[op] for c in calls[k]]) for k in ("embedded", "local", "redis"))
        print(f"| {label} | {e:.3f} | {l:.3f} | {rd:.1f} | {l / e:.2f}x | {rd / l:.0f}x |")
    one, four = med(incr1), med(incr4)
    print(f"\n`state_incr` of one key on local://: 1 process {one:,.0f}/s, 4 processes at once "
          f"{four:,.0f}/s in total (**{four / one:.2f}x** one alone).\n")
    print("| fan-out, 4 processes x %d mailbox tasks, %d messages | deliveries/s | lost | p50 ms | p99 ms |"
          % (subs, msgs))
    print("|---|---:|---:|---:|---:|")
    for k in ("local", "redis"):
        rs = fan[k]
        print(f"| hornbeam_erlang on {k} | {med([x['deliveries_per_s'] for x in rs]):,.0f} | "
              f"{med([x['lost'] for x in rs]):,.0f} | {med([x['p50_ms'] for x in rs]):.2f} | "
              f"{med([x['p99_ms'] for x in rs]):.2f} |")
    ratio = med([x["deliveries_per_s"] for x in fan["local"]]) / med(
        [x["deliveries_per_s"] for x in fan["redis"]])
    print(f"\nlocal:// / Redis deliveries per second: **{ratio:.1f}x**.\n")
    print("| fan-out, 4 processes x N mailbox tasks | messages | local:// deliveries/s | "
          "Redis deliveries/s | local / Redis |")
    print("|---|---:|---:|---:|---:|")
    for n_subs, n_msgs in sweep_sizes:
        lo, rd = med(sweep[(n_subs, "local")]), med(sweep[(n_subs, "redis")])
        print(f"| N = {n_subs} | {n_msgs:,} | {lo:,.0f} | {rd:,.0f} | {lo / rd:.2f}x |")
    print()
    print(f"publish -> receive in another process on local://, one message every 2 ms: p50 "
          f"**{1000 * med([x['p50_ms'] for x in light]):.0f} µs**, p99 "
          f"{1000 * med([x['p99_ms'] for x in light]):.0f} µs.\n")
    a, b = med(keys_small), med(keys_big)
    print(f"`state_keys` with 100 matches on local://: among 10,000 keys {a:.1f} µs, among "
          f"{big:,} keys {b:.1f} µs (**{b / a:.2f}x**).")


if __name__ == "__main__":
    main()
