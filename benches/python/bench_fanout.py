"""Fan-out in asyncio: one publisher, N subscriber tasks, 64-byte messages. Deliveries per second
and p50/p99 publish-to-receive latency for hornbeam_erlang mailboxes (received with
``await mb.recv()`` and with ``async for msg in mb``), beside an asyncio.Queue per subscriber in
pure Python and beside redis.asyncio pub/sub against a local redis-server.

    python benches/python/bench_fanout.py [--quick] [--subscribers N] [--messages M] [--rounds R]

With ``--rounds R`` the mailbox and queue runs alternate R times and the table shows medians
(Redis runs once).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _redis import redis_server  # noqa: E402

import hornbeam_erlang as hb  # noqa: E402

PAD = "x" * 40  # with the timestamp and framing, about 64 bytes per message


def summarize(name: str, n_subs: int, n_msgs: int, elapsed: float, lat: list[float]) -> dict:
    lat.sort()
    return {
        "name": name,
        "deliveries_per_s": n_subs * n_msgs / elapsed,
        "p50_ms": 1e3 * lat[len(lat) // 2],
        "p99_ms": 1e3 * lat[int(len(lat) * 0.99)],
    }


async def run_hornbeam(n_subs: int, n_msgs: int, batch: int, iterate: bool = False) -> dict:
    lat: list[float] = []
    ready = asyncio.Event()
    started = 0

    async def sub() -> None:
        nonlocal started
        mb = hb.subscribe("bench:fanout")
        started += 1
        if started == n_subs:
            ready.set()
        if iterate:
            got = 0
            async for msg in mb:
                lat.append(time.perf_counter() - msg.message[0])
                got += 1
                if got == n_msgs:
                    break
        else:
            for _ in range(n_msgs):
                msg = await mb.recv()
                lat.append(time.perf_counter() - msg.message[0])
        mb.close()

    tasks = [asyncio.create_task(sub()) for _ in range(n_subs)]
    await ready.wait()
    t0 = time.perf_counter()
    for i in range(n_msgs):
        hb.publish("bench:fanout", (time.perf_counter(), PAD))
        if i % batch == batch - 1:
            await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    name = "hornbeam_erlang mailboxes, " + ("async for" if iterate else "await recv()")
    return summarize(name, n_subs, n_msgs, time.perf_counter() - t0, lat)


async def run_queues(n_subs: int, n_msgs: int, batch: int) -> dict:
    lat: list[float] = []
    queues = [asyncio.Queue(maxsize=1024) for _ in range(n_subs)]

    async def sub(q: asyncio.Queue) -> None:
        for _ in range(n_msgs):
            msg = await q.get()
            lat.append(time.perf_counter() - msg[0])

    tasks = [asyncio.create_task(sub(q)) for q in queues]
    await asyncio.sleep(0)
    t0 = time.perf_counter()
    for i in range(n_msgs):
        msg = (time.perf_counter(), PAD)
        for q in queues:
            q.put_nowait(msg)
        if i % batch == batch - 1:
            await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    return summarize("asyncio.Queue per subscriber (pure Python)", n_subs, n_msgs, time.perf_counter() - t0, lat)


async def run_redis(port: int, n_subs: int, n_msgs: int, batch: int) -> dict:
    import msgpack
    import redis.asyncio as aioredis

    lat: list[float] = []
    pool = aioredis.ConnectionPool(host="127.0.0.1", port=port, max_connections=n_subs + 8)
    client = aioredis.Redis(connection_pool=pool)
    subs = []
    for _ in range(n_subs):
        ps = client.pubsub()
        await ps.subscribe("bench:fanout")
        await ps.get_message(timeout=1)  # the subscribe confirmation
        subs.append(ps)

    async def sub(ps) -> None:
        got = 0
        while got < n_msgs:
            m = await ps.get_message(ignore_subscribe_messages=True, timeout=10)
            if m is None:
                continue
            lat.append(time.perf_counter() - msgpack.unpackb(m["data"])[0])
            got += 1

    tasks = [asyncio.create_task(sub(ps)) for ps in subs]
    t0 = time.perf_counter()
    for i in range(n_msgs):
        await client.publish("bench:fanout", msgpack.packb((time.perf_counter(), PAD)))
        if i % batch == batch - 1:
            await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*tasks), 300)
    elapsed = time.perf_counter() - t0
    for ps in subs:
        await ps.aclose()
    await client.aclose()
    await pool.aclose()
    return summarize("redis.asyncio pub/sub", n_subs, n_msgs, elapsed, lat)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--subscribers", type=int, default=1000)
    ap.add_argument("--messages", type=int, default=None)
    ap.add_argument("--batch", type=int, default=10, help="messages published between yields")
    ap.add_argument("--rounds", type=int, default=1, help="alternate the in-process runs this often")
    args = ap.parse_args()
    n_msgs = args.messages or (50 if args.quick else 300)
    n_subs = args.subscribers
    rounds: list[list[dict]] = []
    for _ in range(args.rounds):
        rounds.append([
            asyncio.run(run_hornbeam(n_subs, n_msgs, args.batch)),
            asyncio.run(run_hornbeam(n_subs, n_msgs, args.batch, iterate=True)),
            asyncio.run(run_queues(n_subs, n_msgs, args.batch)),
        ])
    results = []
    for i, first in enumerate(rounds[0]):
        runs = [r[i] for r in rounds]
        results.append({"name": first["name"],
                        **{k: statistics.median(r[k] for r in runs)
                           for k in ("deliveries_per_s", "p50_ms", "p99_ms")}})
    with redis_server() as port:
        if port is not None:
            results.append(asyncio.run(run_redis(port, n_subs, max(10, n_msgs // 5), args.batch)))
    base = results[0]["deliveries_per_s"]
    queue = results[2]["deliveries_per_s"]
    print(f"{n_subs} subscribers, {n_msgs} messages, publisher yields every {args.batch}, "
          f"{args.rounds} round(s) alternated (medians)\n")
    print("| fan-out | deliveries/s | p50 ms | p99 ms | hornbeam (await recv) speed-up | vs asyncio.Queue |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['name']} | {r['deliveries_per_s']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
              f"{base / r['deliveries_per_s']:.2f}x | {r['deliveries_per_s'] / queue:.2f}x |")


if __name__ == "__main__":
    main()
