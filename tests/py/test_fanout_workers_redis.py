"""Under ``uvicorn --workers 4`` on one Redis, a room broadcast crosses the bus once per process.

Clients of one room land on all four workers (checked with ``PUBSUB NUMSUB``: each worker's bus
subscribes once). One message is sent to the room; every client gets it, and each worker's room
fan-out received it exactly once (counted in the shared store by ``fanout_count_app.py``), so the
bus carried it once per process, not once per connection.
"""

from __future__ import annotations

import hornbeam_erlang  # noqa: F401  (the engine is importable: the app needs it)

from test_chat_redis import BUS, RedisServer, redis_server  # noqa: F401  (fixture)
from test_websocket_chat import Client, run

APP = "tests.py.fanout_count_app:application"
WORKERS = 4


def store_counts(url: str, prefix: str) -> dict[str, int]:
    """``{key: value}`` of the shared store's keys under ``prefix`` (read through Redis' engine
    in a child process, so this test process keeps its own embedded engine)."""
    import json
    import os
    import subprocess
    import sys

    code = ("import json, hornbeam_erlang as h; ks = h.state_keys(%r); "
            "print(json.dumps(h.state_get_multi(ks)))" % prefix)
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, HORNBEAM_URL=url),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return {k: int(v) for k, v in json.loads(out.stdout).items()}


def test_a_room_broadcast_crosses_the_bus_once_per_process(serve, redis_server):  # noqa: F811
    server = serve(APP, env={"HORNBEAM_URL": redis_server.url}, args=("--workers", str(WORKERS)))
    room = "fanout-count"

    async def main() -> None:
        clients: list[Client] = []
        # Connect until every worker holds clients of the room; bounded.
        for i in range(120):
            clients.append(await Client.connect(server.ws_url, room, f"u{i}"))
            if len(clients) >= 40 and redis_server.numsub(BUS) == WORKERS:
                break
        assert redis_server.numsub(BUS) == WORKERS, "clients did not reach all four workers"
        members = store_counts(redis_server.url, f"fanout-count:members:chat:{room}:")
        pids = {k.rsplit(":", 1)[1] for k in members}
        assert len(pids) == WORKERS, members
        assert sum(members.values()) == len(clients) > WORKERS

        await clients[0].send(type="message", text="count-me once")
        for c in clients:
            await c.wait_for(lambda c: c.texts().count("count-me once") == 1, timeout=30)
        renders = store_counts(redis_server.url, "fanout-count:renders:")
        # One delivery per process (each worker's one room mailbox), whatever its connections.
        assert {k.rsplit(":", 1)[1] for k in renders} == pids
        assert sorted(renders.values()) == [1] * WORKERS, renders
        for c in clients:
            await c.close()

    run(main(), timeout=120)
