"""Hooks across processes on a private Redis and on `local://`: every process here (servers and
clients) is a subprocess with HORNBEAM_URL set, so these run the same under `make test-python`
and `make test-redis`. Servers are stopped (or killed) by their PID."""

from __future__ import annotations

import textwrap
from typing import Callable, Iterator

import pytest

from hook_nodes import Node, Redis, client, result, run

WINDOW = 32  # hornbeam_erlang._hooks.STREAM_WINDOW


@pytest.fixture(scope="module", params=["redis", "local"])
def backend_url(request, tmp_path_factory) -> Iterator[str]:
    """The backend every process of a test shares: a private redis-server, or a `local://`
    directory (one machine, no server)."""
    if request.param == "local":
        yield f"local://{tmp_path_factory.mktemp('local-backend')}"
        return
    server = Redis()
    yield server.url
    server.stop()


@pytest.fixture
def start(backend_url: str) -> Iterator[Callable[..., Node]]:
    started: list[Node] = []

    def go(*apps: str, wait: bool = True, **env: str) -> Node:
        n = Node(backend_url, list(apps), wait=wait, **env)
        started.append(n)
        return n

    yield go
    for n in started:
        n.kill()


def test_execute_in_another_process(start, backend_url):
    server = start("svc.exec")
    out = run(backend_url, """
        out = [h.execute("svc.exec", "add", 1, 2), h.execute("svc.exec", "add", 1, b=2, scale=3),
               h.execute("svc.exec", "who")]
    """)
    assert out == [3, 9, server.name]


def test_calls_spread_over_the_processes_that_serve_a_hook(start, backend_url):
    a, b = start("svc.spread"), start("svc.spread")
    out = run(backend_url, """
        out = [h.execute("svc.spread", "who") for _ in range(40)]
    """)
    assert sorted(set(out)) == sorted([a.name, b.name])
    assert out.count(a.name) == out.count(b.name) == 20


def test_no_server_is_an_error_at_once(backend_url):
    out = run(backend_url, """
        try:
            h.execute("svc.nobody", "add", 1)
        except h.HookNotFound as e:
            out = ["HookNotFound", isinstance(e, RuntimeError), str(e)]
    """)
    assert out[:2] == ["HookNotFound", True] and "svc.nobody" in out[2]


def test_handler_error_comes_back_with_its_type_and_traceback(start, backend_url):
    start("svc.err")
    out = run(backend_url, """
        try:
            h.execute("svc.err", "boom")
        except h.HandlerError as e:
            out = [e.exc_type, isinstance(e, RuntimeError), str(e), e.remote_traceback]
    """)
    assert out[:2] == ["ValueError", True]
    assert "remote failure" in out[2]
    assert "hook_nodes.py" in out[3]


def test_values_that_cannot_travel_are_clear_errors(start, backend_url):
    start("svc.opaque")
    out = run(backend_url, """
        out = []
        try:
            h.execute("svc.opaque", "opaque")
        except h.HandlerError as e:
            out.append(["HandlerError", "cannot be sent" in str(e)])
        try:
            h.execute("svc.opaque", "add", object())
        except TypeError as e:
            out.append("TypeError")
    """)
    assert out == [["HandlerError", True], "TypeError"]


def test_killed_server_mid_call_is_an_error_not_a_hang(start, backend_url):
    server = start("svc.kill")
    proc = client(backend_url, """
        try:
            h.execute("svc.kill", "block")
        except h.NodeDown as e:
            out = ["NodeDown", isinstance(e, ConnectionError), isinstance(e, RuntimeError)]
        except Exception as e:
            out = [type(e).__name__]
        from hornbeam_erlang import _hooks
        out.append(len(_hooks._tasks))
    """, HORNBEAM_CALL_TIMEOUT_MS="600000")
    assert server.readline() == "IN block"
    server.kill()
    assert result(proc) == ["NodeDown", True, True, 0]


def test_timeouts_are_timeout_errors(start, backend_url):
    server = start("svc.slow")
    out = run(backend_url, f"""
        out = []
        try:
            h.rpc_call({server.name!r}, "svc.slow", "slow", [5], timeout_ms=100)
        except TimeoutError as e:
            out.append(["TimeoutError", isinstance(e, RuntimeError)])
        task = h.execute_async("svc.slow", "slow", 0.5)
        try:
            h.await_result(task, timeout_ms=10)
        except h.CallTimeout:
            out.append("CallTimeout")
        out.append(h.await_result(task, timeout_ms=60000))
    """)
    assert out == [["TimeoutError", True], "CallTimeout", 0.5]


def test_execute_async_across_processes(start, backend_url):
    start("svc.async")
    out = run(backend_url, """
        tasks = [h.execute_async("svc.async", "add", i, 1) for i in range(10)]
        out = [h.await_result(t) for t in tasks]
        try:
            h.await_result(tasks[0])
        except h.HookError:
            out.append("gone")
    """)
    assert out == list(range(1, 11)) + ["gone"]


def test_stream_chunks_arrive_in_order_and_bounded(start, backend_url):
    start("svc.stream")
    out = run(backend_url, f"""
        out = []
        worst = 0
        for i, chunk in enumerate(h.stream("svc.stream", "count", 500, key="produced")):
            out.append(chunk)
            if i == 5:
                # A slow reader: wait until the producer stops (bounded), so that a producer
                # without back-pressure would show how far it runs ahead.
                last, still = -1, 0
                for _ in range(400):
                    now = h.state_get("produced")
                    still = still + 1 if now == last else 0
                    if still >= 10:
                        break
                    last = now
                    time.sleep(0.02)
            produced = h.state_get("produced") or 0
            worst = max(worst, produced - (i + 1))
        out = [out == list(range(500)), worst]
    """)
    in_order, ahead = out
    assert in_order
    # The producer never runs more than the window (plus the chunk it holds) ahead of the reader.
    assert ahead <= WINDOW + 1


def test_closing_a_remote_stream_stops_the_producer(start, backend_url):
    start("svc.close")
    out = run(backend_url, """
        it = h.stream("svc.close", "count", 100000, key="closing")
        first = [next(it) for _ in range(3)]
        it.close()
        for _ in range(600):  # bounded: until the producer's generator was closed
            if h.state_get("closing:closed"):
                break
            time.sleep(0.05)
        out = [first, h.state_get("closing:closed"), h.state_get("closing") < 100000]
    """)
    assert out == [[0, 1, 2], True, True]


def test_a_stream_whose_reader_dies_is_closed_on_the_producer_side(start, backend_url):
    start("svc.orphan")
    proc = client(backend_url, """
        it = h.stream("svc.orphan", "count", 100000, key="orphan")
        first = [next(it) for _ in range(3)]
        os._exit(0)  # dies without closing the stream (no atexit, its node key expires)
    """, HORNBEAM_CALL_TIMEOUT_MS="600000")  # the producer's own stall limit is far away
    proc.communicate(timeout=120)
    proc.stdout.close()
    proc.stderr.close()
    out = run(backend_url, """
        for _ in range(600):  # bounded: until the producer noticed its reader is gone
            if h.state_get("orphan:closed"):
                break
            time.sleep(0.05)
        out = [h.state_get("orphan:closed"), h.state_get("orphan") < 100000]
    """)
    assert out == [True, True]


def test_stream_async_across_processes(start, backend_url):
    start("svc.astream")
    out = run(backend_url, """
        import asyncio

        async def main():
            return [c async for c in h.stream_async("svc.astream", "count", 100)]

        out = asyncio.run(main()) == list(range(100))
    """)
    assert out is True


def test_nodes_lists_live_processes_and_a_killed_one_leaves(start, backend_url):
    a, b = start("svc.nodes"), start("svc.nodes")
    out = run(backend_url, "out = [h.node(), h.nodes()]")
    me, others = out
    assert a.name in others and b.name in others and me not in others
    b.kill()
    out = run(backend_url, f"""
        for _ in range(400):  # bounded: until the killed node's heartbeat key expires
            if {b.name!r} not in h.nodes():
                break
            time.sleep(0.05)
        out = h.nodes()
    """)
    assert b.name not in out and a.name in out


def test_rpc_call_and_rpc_cast_target_one_node(start, backend_url):
    a, b = start("svc.rpc"), start("svc.other")
    out = run(backend_url, f"""
        out = [h.rpc_call({a.name!r}, "svc.rpc", "who", []),
               h.rpc_call({b.name!r}, "svc.other", "add", [2, 3])]
        try:
            h.rpc_call({b.name!r}, "svc.rpc", "who", [])
        except h.HookNotFound:
            out.append("HookNotFound")
        h.rpc_cast({a.name!r}, "svc.rpc", "mark", ["rpc_cast_done", 7])
        for _ in range(600):  # bounded: until the cast ran
            if h.state_get("rpc_cast_done") == 7:
                break
            time.sleep(0.05)
        out.append(h.state_get("rpc_cast_done"))
    """)
    assert out == [a.name, 5, "HookNotFound", 7]


def test_node_names_from_hornbeam_node_stay_unique(start, backend_url):
    a = start("svc.named", HORNBEAM_NODE="worker@box")
    b = start("svc.named", HORNBEAM_NODE="worker@box")
    assert a.name == "worker@box"
    assert b.name.startswith("worker@box-") and b.name != a.name


def test_cached_inference_statistics_are_shared(backend_url):
    code = """
        calls = []
        def model(text):
            calls.append(text)
            return [float(len(text)), 1.0]
        got = [hornbeam_ml.cached_inference(model, t, cache_prefix="shared") for t in ("a", "bb", "a")]
        out = [got, len(calls), hornbeam_ml.cache_stats()]
    """
    first = run(backend_url, "h.state_clear()\n" + textwrap.dedent(code))
    second = run(backend_url, code)
    assert first == [[[1.0, 1.0], [2.0, 1.0], [1.0, 1.0]], 2, {"hits": 1, "misses": 2, "hit_rate": 1 / 3}]
    assert second[1] == 0
    assert second[2] == {"hits": 4, "misses": 2, "hit_rate": 4 / 6}


def test_a_stopped_server_leaves_at_once(start, backend_url):
    a = start("svc.stop")
    assert run(backend_url, f"out = {a.name!r} in h.nodes()") is True
    a.stop()  # a normal exit: the node removes its own entries
    out = run(backend_url, f"""
        try:
            h.execute("svc.stop", "who")
        except h.HookNotFound:
            out = ["HookNotFound", {a.name!r} in h.nodes()]
    """)
    assert out == ["HookNotFound", False]
