"""Fan-out across processes through Redis: one publisher process, 3 subscriber processes with N
mailbox tasks each, 64-byte messages. Deliveries per second and p50/p99 publish-to-receive
latency for hornbeam_erlang on its Redis backend (one subscription connection per process,
local fan-out), beside redis.asyncio pub/sub (one connection per subscriber, as channels_redis
and most Python apps do), both against the same private redis-server.

    python benches/python/bench_fanout_redis.py [--quick] [--processes 3] [--subscribers N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _redis import redis_server  # noqa: E402

PAD = "x" * 40  # with the timestamp and framing, about 64 bytes per message
TOPIC = "bench:fanout"


async def sub_hornbeam(n_subs: int, n_msgs: int) -> dict:
    import hornbeam_erlang as hb

    lat: list[float] = []
    lost = 0
    last = 0.0

    async def sub(mb) -> None:
        nonlocal lost, last
        got = 0
        while got + lost < n_msgs:
            msg = await mb.recv()
            if msg.lagged:
                lost += msg.lagged
                continue
            now = time.time()
            lat.append(now - msg.message[0])
            last = max(last, now)
            got += 1
        mb.close()

    mailboxes = []
    for _ in range(n_subs):
        mb = hb.Mailbox()
        mb.subscribe(TOPIC)
        mailboxes.append(mb)
    tasks = [asyncio.create_task(sub(mb)) for mb in mailboxes]
    print("ready", flush=True)
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    return {"lat": lat, "lost": lost, "last": last}


async def sub_redis_py(port: int, n_subs: int, n_msgs: int) -> dict:
    import msgpack
    import redis.asyncio as aioredis

    lat: list[float] = []
    last = 0.0
    pool = aioredis.ConnectionPool(host="127.0.0.1", port=port, max_connections=n_subs + 8)
    client = aioredis.Redis(connection_pool=pool)
    subs = []
    for _ in range(n_subs):
        ps = client.pubsub()
        await ps.subscribe(TOPIC)
        await ps.get_message(timeout=1)  # the subscribe confirmation
        subs.append(ps)

    async def sub(ps) -> None:
        nonlocal last
        got = 0
        deadline = time.monotonic() + 120
        while got < n_msgs and time.monotonic() < deadline:
            m = await ps.get_message(ignore_subscribe_messages=True, timeout=10)
            if m is None:
                continue
            now = time.time()
            lat.append(now - msgpack.unpackb(m["data"])[0])
            last = max(last, now)
            got += 1

    tasks = [asyncio.create_task(sub(ps)) for ps in subs]
    print("ready", flush=True)
    await asyncio.gather(*tasks)
    for ps in subs:
        await ps.aclose()
    await client.aclose()
    await pool.aclose()
    return {"lat": lat, "lost": 0, "last": last}


def subscriber_main(args: argparse.Namespace) -> None:
    if args.kind == "hornbeam":
        result = asyncio.run(sub_hornbeam(args.subscribers, args.messages))
    else:
        result = asyncio.run(sub_redis_py(args.port, args.subscribers, args.messages))
    print(json.dumps(result), flush=True)


async def publish_hornbeam(n_msgs: int, batch: int, pace: float = 0.0) -> float:
    import hornbeam_erlang as hb

    t0 = time.time()
    for i in range(n_msgs):
        hb.publish(TOPIC, (time.time(), PAD))
        if i % batch == batch - 1:
            await asyncio.sleep(pace)
    return t0


async def publish_redis_py(port: int, n_msgs: int, batch: int) -> float:
    import msgpack
    import redis.asyncio as aioredis

    client = aioredis.Redis(host="127.0.0.1", port=port)
    t0 = time.time()
    for i in range(n_msgs):
        await client.publish(TOPIC, msgpack.packb((time.time(), PAD)))
        if i % batch == batch - 1:
            await asyncio.sleep(0)
    await client.aclose()
    return t0


def run(kind: str, port: int, n_procs: int, n_subs: int, n_msgs: int, batch: int,
        url: str | None = None, pace: float = 0.0) -> dict:
    """One measurement; `url` puts hornbeam_erlang on another backend (default: the Redis at
    `port`), `pace` sleeps that long between batches (a light load, for latency)."""
    env = dict(os.environ, HORNBEAM_URL=url or f"redis://127.0.0.1:{port}/0?prefix=bench:")
    os.environ["HORNBEAM_URL"] = env["HORNBEAM_URL"]
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--role", "sub", "--kind", kind, "--port", str(port),
             "--subscribers", str(n_subs), "--messages", str(n_msgs)],
            stdout=subprocess.PIPE, env=env, text=True)
        for _ in range(n_procs)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"subscriber process did not start: {line!r}")
        time.sleep(0.2)
        if kind == "hornbeam":
            t0 = asyncio.run(publish_hornbeam(n_msgs, batch, pace))
        else:
            t0 = asyncio.run(publish_redis_py(port, n_msgs, batch))
        results = []
        for p in procs:
            out, _ = p.communicate(timeout=300)
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    lat = sorted(x for r in results for x in r["lat"])
    elapsed = max(r["last"] for r in results) - t0
    return {
        "name": (f"hornbeam_erlang on {env['HORNBEAM_URL'].split(':', 1)[0]}" if kind == "hornbeam"
                 else "redis.asyncio pub/sub (1 connection per subscriber)"),
        "deliveries": len(lat),
        "lost": sum(r["lost"] for r in results),
        "deliveries_per_s": len(lat) / elapsed if elapsed > 0 else float("nan"),
        "p50_ms": 1e3 * statistics.median(lat) if lat else float("nan"),
        "p99_ms": 1e3 * lat[int(len(lat) * 0.99)] if lat else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", default="main", choices=["main", "sub"])
    ap.add_argument("--kind", default="hornbeam", choices=["hornbeam", "redis-py"])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--subscribers", type=int, default=None, help="subscribers per process")
    ap.add_argument("--messages", type=int, default=None)
    ap.add_argument("--batch", type=int, default=10, help="messages published between yields")
    args = ap.parse_args()
    if args.role == "sub":
        subscriber_main(args)
        return
    n_subs = args.subscribers or (100 if args.quick else 300)
    n_msgs = args.messages or (50 if args.quick else 300)
    with redis_server() as port:
        if port is None:
            print("redis-server is not installed: nothing to measure")
            return
        results = [run(kind, port, args.processes, n_subs, n_msgs, args.batch)
                   for kind in ("hornbeam", "redis-py")]
    total = args.processes * n_subs
    print(f"{args.processes} processes x {n_subs} subscribers = {total}, {n_msgs} messages, "
          f"publisher yields every {args.batch}\n")
    print("| fan-out across processes | deliveries | lost (lag) | deliveries/s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['name']} | {r['deliveries']:,} | {r['lost']:,} | {r['deliveries_per_s']:,.0f} | "
              f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")


if __name__ == "__main__":
    main()
