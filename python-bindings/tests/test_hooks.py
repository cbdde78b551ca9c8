"""Hooks, registered functions, nodes and receive_pubsub in one process (on whichever backend
HORNBEAM_URL selects; test_hooks_cross.py runs them across processes on Redis)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading

import pytest

import hornbeam_erlang as hb
from hornbeam_erlang import (
    CallTimeout, HandlerError, HookError, HookNotFound, NodeDown,
)


@pytest.fixture(scope="module", autouse=True)
def leave_at_the_end():
    """The node's heartbeat would write `_hb:` keys into the store during later test files."""
    yield
    from hornbeam_erlang import _node

    _node.shutdown()
    assert hb.state_keys("_hb:") == []


@pytest.fixture(autouse=True)
def no_hooks_left():
    yield
    from hornbeam_erlang import _handlers

    for app in _handlers.local_hooks():
        hb.unregister_hook(app)


class Counter:
    made = 0

    def __init__(self) -> None:
        Counter.made += 1
        self.n = 0

    def add(self, a, b=0, *, scale=1):
        return (a + b) * scale

    def bump(self):
        self.n += 1
        return self.n

    def numbers(self, n):
        for i in range(n):
            yield i

    def fails(self):
        raise ValueError("no such thing")

    def _secret(self):
        return "hidden"

    async def later(self, x):
        await asyncio.sleep(0)
        return x * 2


def test_function_handler_gets_action_args_and_kwargs():
    seen = []

    def handler(action, *args, **kwargs):
        seen.append((action, args, kwargs))
        return f"{action}:{sum(args)}:{kwargs.get('k')}"

    hb.register_hook("fn", handler)
    assert hb.execute("fn", "sum", 1, 2, 3, k="v") == "sum:6:v"
    assert seen == [("sum", (1, 2, 3), {"k": "v"})]


def test_a_keyword_argument_named_like_a_parameter_reaches_the_handler():
    hb.register_hook("fn", lambda act, **kw: kw)
    assert hb.execute("fn", "x", app_path="a", action="b") == {"app_path": "a", "action": "b"}


def test_class_handler_is_instantiated_once():
    Counter.made = 0
    hb.hook("cls", Counter)
    assert Counter.made == 1
    assert hb.execute("cls", "add", 2, b=3, scale=10) == 50
    assert [hb.execute("cls", "bump") for _ in range(3)] == [1, 2, 3]
    assert Counter.made == 1


def test_instance_handler_calls_its_method():
    c = Counter()
    hb.register_hook("obj", c)
    assert hb.execute("obj", "bump") == 1
    assert c.n == 1


def test_callable_instance_without_the_action_is_called_as_a_function():
    class Dispatch:
        def __call__(self, action, *args):
            return [action, *args]

    hb.register_hook("call", Dispatch())
    assert hb.execute("call", "anything", 1) == ["anything", 1]


def test_private_and_missing_actions_are_refused():
    hb.register_hook("obj", Counter())
    with pytest.raises(HookNotFound, match="no action '_secret'"):
        hb.execute("obj", "_secret")
    with pytest.raises(HookNotFound, match="no action 'nope'"):
        hb.execute("obj", "nope")


def test_unknown_hook_fails_at_once_with_a_runtime_error():
    with pytest.raises(HookNotFound) as info:
        hb.execute("nobody.serves.this", "x")
    assert isinstance(info.value, RuntimeError)
    assert isinstance(info.value, hb.HornbeamError)
    assert "nobody.serves.this" in str(info.value)


def test_handler_error_is_a_runtime_error_with_the_cause():
    hb.register_hook("obj", Counter())
    with pytest.raises(HandlerError) as info:
        hb.execute("obj", "fails")
    assert isinstance(info.value, RuntimeError)
    assert info.value.exc_type == "ValueError"
    assert isinstance(info.value.__cause__, ValueError)
    assert "no such thing" in str(info.value)


def test_the_bound_fast_path_answers_as_the_first_call_did():
    # The first call binds the handler (Python); later ones take the native fast path.
    hb.register_hook("fast", Counter)
    first = [hb.execute("fast", "add", 2, b=3, scale=10), hb.execute("fast", "add", 1, 1)]
    again = [hb.execute("fast", "add", 2, b=3, scale=10), hb.execute("fast", "add", 1, 1)]
    assert first == again == [50, 2]
    for _ in range(2):
        with pytest.raises(HandlerError) as info:
            hb.execute("fast", "fails")
        assert isinstance(info.value.__cause__, ValueError)
        with pytest.raises(HandlerError, match="TypeError"):
            hb.execute("fast", "add", 1, 2, 3, 4, 5)

    def refuses(action):
        raise HookNotFound("refused by the handler")

    hb.register_hook("refuses", refuses)
    for _ in range(2):
        with pytest.raises(HookNotFound, match="refused by the handler") as info:
            hb.execute("refuses", "x")
        assert type(info.value) is HookNotFound


def test_execute_without_app_path_and_action_is_a_type_error():
    with pytest.raises(TypeError, match="app_path and action"):
        hb.execute("only.one")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="app_path and action"):
        hb.execute()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        hb.execute(["unhashable"], "x")  # type: ignore[arg-type]


def test_unregister_and_reregister():
    hb.register_hook("h", lambda action: 1)
    assert hb.execute("h", "a") == 1
    hb.register_hook("h", lambda action: 2)
    assert hb.execute("h", "a") == 2
    hb.unhook("h")
    with pytest.raises(HookNotFound):
        hb.execute("h", "a")
    hb.unregister_hook("h")  # again: no-op


def test_register_announces_the_hook_in_the_store():
    hb.register_hook("announced.app", lambda action: None)
    keys = hb.state_keys("_hb:hook:announced.app:")
    assert len(keys) == 1 and keys[0].endswith(hb.node().replace("@", "%40"))
    hb.unregister_hook("announced.app")
    assert hb.state_keys("_hb:hook:announced.app:") == []


def test_async_def_handler_runs_to_its_end():
    hb.register_hook("obj", Counter())
    assert hb.execute("obj", "later", 21) == 42


async def test_async_def_handler_from_a_coroutine():
    hb.register_hook("obj", Counter())
    assert hb.execute("obj", "later", 4) == 8


def test_bad_handlers_are_refused():
    with pytest.raises(TypeError):
        hb.register_hook("x", None)
    with pytest.raises(ValueError):
        hb.register_hook("", lambda action: None)


# -- execute_async / await_result --------------------------------------------------------------


def test_execute_async_and_await_result():
    hb.register_hook("obj", Counter())
    task = hb.execute_async("obj", "add", 1, 2)
    assert isinstance(task, str)
    assert hb.await_result(task) == 3
    with pytest.raises(HookError, match="unknown task"):
        hb.await_result(task)


def test_await_result_times_out_and_can_wait_again():
    release = threading.Event()

    def handler(action):
        release.wait(60)
        return "done"

    hb.register_hook("slow", handler)
    task = hb.execute_async("slow", "go")
    with pytest.raises(CallTimeout) as info:
        hb.await_result(task, timeout_ms=50)
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, RuntimeError)
    release.set()
    assert hb.await_result(task, timeout_ms=30000) == "done"


def test_await_result_raises_the_handler_error():
    hb.register_hook("obj", Counter())
    task = hb.execute_async("obj", "fails")
    with pytest.raises(HandlerError, match="no such thing"):
        hb.await_result(task)


def test_execute_async_of_an_unknown_hook_fails_at_once():
    with pytest.raises(HookNotFound):
        hb.execute_async("nobody", "x")


# -- stream --------------------------------------------------------------------------------------


def test_stream_yields_the_generator_chunks_in_order():
    hb.register_hook("obj", Counter())
    assert list(hb.stream("obj", "numbers", 100)) == list(range(100))


def test_stream_of_a_plain_result_is_one_chunk():
    hb.register_hook("obj", Counter())
    assert list(hb.stream("obj", "add", 1, 1)) == [2]


def test_stream_error_after_some_chunks():
    def handler(action):
        yield 1
        raise KeyError("gone")

    hb.register_hook("g", handler)
    got = []
    with pytest.raises(HandlerError, match="KeyError"):
        for chunk in hb.stream("g", "x"):
            got.append(chunk)
    assert got == [1]


def test_closing_a_stream_closes_the_handler_generator():
    closed = []

    def handler(action):
        try:
            for i in range(1000):
                yield i
        finally:
            closed.append(True)

    hb.register_hook("g", handler)
    it = hb.stream("g", "x")
    assert next(it) == 0
    it.close()
    assert closed == [True]


async def test_stream_async_over_sync_and_async_generators():
    class Gen:
        def sync(self, n):
            yield from range(n)

        async def asyn(self, n):
            for i in range(n):
                await asyncio.sleep(0)
                yield i

    hb.register_hook("gen", Gen())
    assert [c async for c in hb.stream_async("gen", "sync", 5)] == [0, 1, 2, 3, 4]
    assert [c async for c in hb.stream_async("gen", "asyn", 5)] == [0, 1, 2, 3, 4]
    with pytest.raises(HookNotFound):
        async for _ in hb.stream_async("nobody", "x"):
            pass


def test_stream_of_an_async_generator_from_sync_code():
    async def handler(action):
        for i in range(3):
            yield i

    hb.register_hook("ag", handler)
    assert list(hb.stream("ag", "x")) == [0, 1, 2]


# -- call / cast ---------------------------------------------------------------------------------


def test_call_and_cast_registered_functions():
    hb.register_function("add", lambda a, b: a + b)
    assert hb.call("add", 1, 2) == 3
    done = threading.Event()
    got = []

    def log_event(kind, data):
        got.append((kind, data))
        done.set()

    hb.register_function("log_event", log_event)
    assert hb.cast("log_event", "user_login", {"user_id": 123}) is None
    assert done.wait(30)
    assert got == [("user_login", {"user_id": 123})]
    hb.unregister_function("add")
    hb.unregister_function("log_event")


def test_call_errors():
    with pytest.raises(HookNotFound):
        hb.call("no_such_function")
    with pytest.raises(HookNotFound):
        hb.cast("no_such_function")
    hb.register_function("div", lambda a, b: a / b)
    with pytest.raises(HandlerError, match="ZeroDivisionError") as info:
        hb.call("div", 1, 0)
    assert isinstance(info.value, RuntimeError)
    hb.unregister_function("div")


# -- nodes ---------------------------------------------------------------------------------------


def test_node_name_and_nodes():
    me = hb.node()
    assert me == hb.node()
    assert me.startswith(f"hornbeam-{os.getpid()}@") or os.environ.get("HORNBEAM_NODE")
    assert me not in hb.nodes()
    assert all(isinstance(n, str) for n in hb.nodes())


def test_rpc_call_to_this_node_and_to_an_unknown_node():
    hb.register_hook("ml_model", Counter())
    assert hb.rpc_call(hb.node(), "ml_model", "add", [2, 3]) == 5
    with pytest.raises(NodeDown) as info:
        hb.rpc_call("worker@nowhere", "ml_model", "add", [1, 2])
    assert isinstance(info.value, ConnectionError) and isinstance(info.value, RuntimeError)
    with pytest.raises(ConnectionError):
        hb.rpc_cast("worker@nowhere", "ml_model", "add", [1, 2])
    with pytest.raises(HookNotFound):
        hb.rpc_call(hb.node(), "not_a_module", "f", [])


def test_rpc_cast_to_this_node():
    done = threading.Event()
    hb.register_hook("logger", lambda action, *args: done.set())
    assert hb.rpc_cast(hb.node(), "logger", "log", ["info", "hello"]) is None
    assert done.wait(30)


def run_py(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=full)


def test_hornbeam_node_names_the_node():
    out = run_py("import hornbeam_erlang as h, os; print(h.node()); print(os.getpid())",
                 HORNBEAM_NODE="api-{pid}@box")
    assert out.returncode == 0, out.stderr
    name, pid = out.stdout.split()
    assert name == f"api-{pid}@box"


def test_forked_child_is_a_new_node_and_keeps_its_hooks():
    code = """
import os, hornbeam_erlang as h
h.register_hook("svc", lambda action, x: x + 1)
parent = h.node()
pid = os.fork()
if pid == 0:
    ok = h.node() != parent and h.node().startswith(f"hornbeam-{os.getpid()}@") and h.execute("svc", "inc", 1) == 2
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert h.node() == parent and h.execute("svc", "inc", 2) == 3
print("ok")
"""
    out = run_py(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_no_thread_at_import():
    out = run_py("import threading, hornbeam_erlang, hornbeam_ml; print(threading.active_count())")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


# -- receive_pubsub ------------------------------------------------------------------------------


def test_receive_pubsub_polls_the_current_mailbox():
    assert hb.receive_pubsub() is None  # no mailbox yet
    hb.subscribe("user:1")
    assert hb.receive_pubsub(timeout=0) is None
    hb.publish("user:1", {"type": "alert"})
    assert hb.receive_pubsub(timeout=0) == {"topic": "user:1", "message": {"type": "alert"}}
    threading.Timer(0.01, hb.publish, ("user:1", "later")).start()
    assert hb.receive_pubsub(timeout=30) == {"topic": "user:1", "message": "later"}
    hb.unsubscribe("user:1")
    hb.mailbox().close()
