"""Hornbeam's hooks, registered functions and distribution calls, on the engine's store and bus.

A hook registered in this process runs here, called directly (no bus, no copy of the arguments).
Any other hook is served by another process on the same backend: the call is a request published
to one of its servers' topics (in turn, when several serve it) and the answer comes back on a
reply topic of this call, so it works wherever the store and the bus reach (see ``_node``).

Values that cross processes are storable values (tuples come back as lists); in the process they
are passed as they are.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as _FutureTimeout
from typing import Any, AsyncIterator, Callable, Iterator, Optional

from . import _handlers, _node
from . import _native  # type: ignore[attr-defined]  # no stub: the native module
from ._errors import CallTimeout, HandlerError, HookError, HookNotFound, NodeDown

#: How long `execute`, `stream` (between two chunks) and `call` wait, in ms; Hornbeam's
#: signatures have no timeout argument (their keyword arguments go to the handler).
DEFAULT_TIMEOUT_MS = int(os.environ.get("HORNBEAM_CALL_TIMEOUT_MS", "30000"))
#: How many chunks a stream's producer may send ahead of its reader.
STREAM_WINDOW = 32
#: How long an `execute_async` result waits to be awaited before it is dropped, in seconds.
TASK_TTL = float(os.environ.get("HORNBEAM_TASK_TTL_S", "600"))


_bound = _handlers._bound


# -- registration ----------------------------------------------------------------------------


def register_hook(app_path: str, handler: Any) -> None:
    """Registers `handler` for `app_path` in this process and announces it to every process on
    the backend. A class is instantiated once, here; an instance's methods are called by action
    name; any other callable is called as ``handler(action, *args, **kwargs)``. Registering again
    replaces the handler."""
    _handlers.add_hook(app_path, handler)
    rt = _node.runtime()
    rt.beat()


def unregister_hook(app_path: str) -> None:
    """Stops serving `app_path` from this process (no-op when it was not registered here)."""
    if _handlers.remove_hook(app_path):
        rt = _node.runtime()
        rt.withdraw(app_path)
        rt.forget_servers(app_path)


hook = register_hook
unhook = unregister_hook


def register_function(name: str, fn: Callable[..., Any]) -> None:
    """Registers `fn` under `name` for `call` and `cast` in this process (Hornbeam's
    ``hornbeam:register_function``), from Python and from C (``hb_function_call``) or Rust: those
    callers pass MessagePack arguments and get a storable result back."""
    _handlers.add_function(name, fn)
    _native.register_function(name, fn)


def unregister_function(name: str) -> None:
    """Removes the function `name` (no-op when it is not registered)."""
    _handlers.remove_function(name)
    _native.unregister_function(name)


# -- execute ---------------------------------------------------------------------------------


def _wrap(app_path: str, action: str, e: Exception) -> HandlerError:
    err = HandlerError(f"{app_path}.{action} raised {type(e).__name__}: {e}", type(e).__name__)
    err.__cause__ = e
    return err


def _execute_slow(app_path: str, action: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """`execute` when the native fast path found no bound handler: bind one this process
    serves (a class is instantiated on first use), or call the process that serves it."""
    found = _handlers.bound(app_path, action)
    if found is None:
        return _remote_call(app_path, action, args, kwargs, DEFAULT_TIMEOUT_MS)
    try:
        return found(*args, **kwargs)
    except HookError:
        raise
    except Exception as e:
        raise _wrap(app_path, action, e) from e


# `execute(app_path, action, /, *args, **kwargs)` runs `action` of hook `app_path` and returns its
# result: here when this process serves the hook, otherwise in a process that does. Raises
# HookNotFound at once when no process serves it, HandlerError when the handler raised,
# CallTimeout after HORNBEAM_CALL_TIMEOUT_MS (30 s), NodeDown when the serving process dies during
# the call. The in-process path is most of the cost of a local call, so it is native: a lookup in
# `_bound` and the handler's call, with no Python frame between (`python-bindings/src/calls.rs`).
_native._install_execute(_bound, _execute_slow, _wrap, HookError)
execute: Callable[..., Any] = _native.execute


def _server_for(app_path: str, fresh: bool = False) -> str:
    server = _node.runtime().pick(app_path, fresh)
    if server is None:
        raise HookNotFound(f"no process on the {_native.backend()} backend serves hook {app_path!r}")
    return server


class _Call:
    """One request in flight: its reply mailbox (subscribed before the request goes out) and
    the node that serves it."""

    def __init__(self, kind: str, server: str, app_path: str, action: str, args: list[Any],
                 kwargs: dict[str, Any], timeout_ms: float, capacity: int = 8,
                 asyncio_mailbox: bool = False) -> None:
        rt = _node.runtime()
        self.server = server
        self.app_path = app_path
        self.action = action
        self.id = next(rt.ids)
        self.topic = f"_hb:reply:{rt.qname}:{self.id}"
        if asyncio_mailbox:
            from . import Mailbox
            self.mailbox: Any = Mailbox(capacity=capacity)
        else:
            self.mailbox = _native.Mailbox(capacity=capacity)
        self.mailbox.subscribe(self.topic)
        req = {"k": kind, "i": self.id, "r": self.topic, "f": rt.name, "app": app_path,
               "act": action, "a": args, "kw": kwargs, "t": timeout_ms, "w": STREAM_WINDOW}
        try:
            if _native.publish(_node.rpc_topic(server), req) == 0:
                raise NodeDown(f"node {server} does not listen (it has stopped)")
        except BaseException:
            self.mailbox.close()
            raise

    def close(self) -> None:
        self.mailbox.close()

    def check(self, body: Any) -> Any:
        """The value of a reply, or its error raised."""
        if not isinstance(body, dict):
            raise HookError(f"unexpected reply to a call of {self.app_path}.{self.action}: {body!r}")
        err = body.get("e")
        if err is None:
            return body
        if err == "nohook":
            raise HookNotFound(body.get("m", f"hook {self.app_path!r} not found"))
        raise HandlerError(f"{self.app_path}.{self.action} raised {body.get('t')}: {body.get('m')}",
                           str(body.get("t", "")), body.get("tb"))

    def wait(self, deadline: float) -> Any:
        """The next message (a reply dict); CallTimeout at `deadline`; NodeDown when the server
        stops heartbeating meanwhile."""
        # Bounded by `deadline`: each turn waits at most one heartbeat.
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CallTimeout(f"{self.app_path}.{self.action} on node {self.server}: "
                                  "no answer within the timeout")
            msg = self.mailbox._recv_blocking(min(left, _node.HEARTBEAT))
            if msg is not None:
                return self.received(msg)
            self.check_alive()

    def received(self, msg: Any) -> Any:
        if msg.lagged:
            raise HookError(f"{self.app_path}.{self.action}: {msg.lagged} replies were dropped "
                            "(the reply mailbox was full)")
        return self.check(msg.message)

    def check_alive(self) -> None:
        if not _node.alive(self.server):
            raise NodeDown(f"node {self.server} died during {self.app_path}.{self.action}")


def _remote_call(app_path: str, action: str, args: list[Any], kwargs: dict[str, Any],
                 timeout_ms: float, server: Optional[str] = None) -> Any:
    deadline = time.monotonic() + timeout_ms / 1000.0
    fixed = server is not None
    # At most two attempts: the second after a server said it no longer serves the hook.
    for attempt in (0, 1):
        target = server if fixed else _server_for(app_path, fresh=attempt > 0)
        assert target is not None
        call = _Call("call", target, app_path, action, args, kwargs, timeout_ms)
        try:
            return call.wait(deadline)["v"]
        except HookNotFound:
            if fixed or attempt:
                raise
            _node.runtime().forget_servers(app_path)
        except NodeDown:
            _node.runtime().forget_servers(app_path)
            raise
        finally:
            call.close()
    raise AssertionError("unreachable")


# -- execute_async / await_result ------------------------------------------------------------

_tasks: dict[str, tuple[float, Any]] = {}
_tasks_lock = threading.Lock()


def execute_async(app_path: str, action: str, /, *args: Any, **kwargs: Any) -> str:
    """Starts `action` of hook `app_path` and returns a task id for `await_result` (in this
    process). Unawaited results are dropped after HORNBEAM_TASK_TTL_S (600 s)."""
    _reap()
    rt = _node.runtime()
    task_id = f"{rt.name}/{next(rt.ids)}"
    f = _handlers.bound(app_path, action)
    if f is not None:
        fut: Future[Any] = Future()

        def run(f: Callable[..., Any] = f) -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(_handlers.settle(f(*args, **kwargs)))
            except Exception as e:
                fut.set_exception(_wrap(app_path, action, e))

        rt.pool.submit(run)
        pending: Any = fut
    else:
        pending = _Call("call", _server_for(app_path), app_path, action, list(args), kwargs,
                        TASK_TTL * 1000)
    with _tasks_lock:
        _tasks[task_id] = (time.monotonic() + TASK_TTL, pending)
    return task_id


def await_result(task_id: str, timeout_ms: int = 30000) -> Any:
    """The result of an `execute_async` task, waiting at most `timeout_ms`. A timeout leaves the
    task pending (await it again); its result or error is given once."""
    with _tasks_lock:
        entry = _tasks.get(task_id)
    if entry is None:
        raise HookError(f"unknown task {task_id!r} (already awaited, expired, or started in "
                        "another process)")
    pending = entry[1]
    deadline = time.monotonic() + timeout_ms / 1000.0
    try:
        if isinstance(pending, Future):
            try:
                value = pending.result(timeout=max(0.0, timeout_ms / 1000.0))
            except _FutureTimeout:
                raise CallTimeout(f"task {task_id}: no result within {timeout_ms} ms") from None
        else:
            try:
                value = pending.wait(deadline)["v"]
            except CallTimeout:
                raise CallTimeout(f"task {task_id}: no result within {timeout_ms} ms") from None
    except CallTimeout:
        raise
    except BaseException:
        _drop(task_id)
        raise
    _drop(task_id)
    return value


def _drop(task_id: str) -> None:
    with _tasks_lock:
        entry = _tasks.pop(task_id, None)
    if entry is not None and not isinstance(entry[1], Future):
        entry[1].close()


def _reap() -> None:
    now = time.monotonic()
    with _tasks_lock:
        old = [k for k, (expires, _) in _tasks.items() if expires < now]
    for k in old:
        _drop(k)


# -- stream ----------------------------------------------------------------------------------


def stream(app_path: str, action: str, /, *args: Any, **kwargs: Any) -> Iterator[Any]:
    """The chunks `action` of hook `app_path` yields (a non-generator result is one chunk), in
    order. Across processes the producer runs at most STREAM_WINDOW chunks ahead of this reader;
    closing the generator early stops the producer."""
    f = _handlers.bound(app_path, action)
    if f is not None:
        return _local_stream(app_path, action, f, args, kwargs)
    return _remote_stream(app_path, action, list(args), kwargs)


def _local_stream(app_path: str, action: str, f: Callable[..., Any], args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> Iterator[Any]:
    try:
        it = _handlers.chunks(f(*args, **kwargs))
    except Exception as e:
        raise _wrap(app_path, action, e) from e
    try:
        # Bounded by the handler's generator.
        while True:
            try:
                chunk = next(it)
            except StopIteration:
                return
            except Exception as e:
                raise _wrap(app_path, action, e) from e
            yield chunk
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


class _Reader:
    """The reading half of a remote stream: orders nothing (the bus keeps one publisher's order)
    but checks it, and grants the producer credit every half window."""

    def __init__(self, call: _Call) -> None:
        self.call = call
        self.seen = 0
        self.done = False

    def take(self, body: dict[str, Any]) -> tuple[bool, Any]:
        """(True, chunk) for a chunk, (False, None) at the end."""
        if "end" in body:
            self.done = True
            return False, None
        if body.get("s") != self.seen:
            raise HookError(f"{self.call.app_path}.{self.call.action}: chunk {body.get('s')} "
                            f"arrived when {self.seen} was expected")
        self.seen += 1
        if self.seen % max(1, STREAM_WINDOW // 2) == 0:
            _native.publish(self.call.topic + ":ack", {"a": self.seen})
        return True, body.get("c")

    def cancel(self) -> None:
        if not self.done:
            try:
                _native.publish(self.call.topic + ":ack", {"x": 1})
            except Exception:
                pass
        self.call.close()


def _remote_stream(app_path: str, action: str, args: list[Any], kwargs: dict[str, Any]) -> Iterator[Any]:
    call = _Call("stream", _server_for(app_path), app_path, action, args, kwargs,
                 DEFAULT_TIMEOUT_MS, capacity=STREAM_WINDOW * 2 + 8)
    return _drain(_Reader(call))


def _drain(reader: _Reader) -> Iterator[Any]:
    try:
        # Bounded by the producer's end, an error, or a timeout between two chunks.
        while True:
            more, chunk = reader.take(reader.call.wait(time.monotonic() + DEFAULT_TIMEOUT_MS / 1000.0))
            if not more:
                return
            yield chunk
    finally:
        reader.cancel()


async def stream_async(app_path: str, action: str, /, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
    """`stream` as an async generator: across processes it awaits the chunks on the event loop
    (no thread); a local handler's async generator is iterated on this loop."""
    f = _handlers.bound(app_path, action)
    if f is not None:
        try:
            result = _handlers.raw(f)(*args, **kwargs)
            if hasattr(result, "__await__"):
                result = await result
        except Exception as e:
            raise _wrap(app_path, action, e) from e
        if hasattr(result, "__aiter__"):
            try:
                async for chunk in result:
                    yield chunk
            except Exception as e:
                raise _wrap(app_path, action, e) from e
            return
        for chunk in _local_stream(app_path, action, lambda: result, (), {}):
            yield chunk
        return
    call = _Call("stream", _server_for(app_path), app_path, action, list(args), kwargs,
                 DEFAULT_TIMEOUT_MS, capacity=STREAM_WINDOW * 2 + 8, asyncio_mailbox=True)
    reader = _Reader(call)
    try:
        # Bounded by the producer's end, an error, or a timeout between two chunks.
        while True:
            deadline = time.monotonic() + DEFAULT_TIMEOUT_MS / 1000.0
            msg = None
            while msg is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CallTimeout(f"{app_path}.{action} on node {call.server}: no chunk "
                                      "within the timeout")
                msg = await call.mailbox.recv(min(left, _node.HEARTBEAT))
                if msg is None:
                    call.check_alive()
            more, chunk = reader.take(call.received(msg))
            if not more:
                return
            yield chunk
    finally:
        reader.cancel()


# -- call / cast -----------------------------------------------------------------------------


def _native_call(name: str, args: tuple[Any, ...]) -> Any:
    """A function registered from C or Rust (`hb_function_register`, `calls::register`)."""
    try:
        return _native.call_function(name, args)
    except LookupError:
        raise HookNotFound(f"no function registered as {name!r}") from None
    except RuntimeError as e:
        raise HandlerError(str(e), "RuntimeError") from None


def call(name: str, *args: Any) -> Any:
    """Calls the function registered as `name` in this process (from Python, C or Rust) and
    returns its result; HookNotFound when none is, HandlerError when it raised or failed."""
    fn = _handlers.function(name)
    if fn is None:
        return _native_call(name, args)
    try:
        return _handlers.settle(fn(*args))
    except HookError:
        raise
    except Exception as e:
        raise _wrap("function", name, e) from e


def cast(name: str, *args: Any) -> None:
    """Runs the function `name` on a background thread and returns at once (its errors are
    logged); HookNotFound at once when no function has that name."""
    fn = _handlers.function(name)
    if fn is None:
        if name not in _native.function_names():
            raise HookNotFound(f"no function registered as {name!r}")

        def fn(*args: Any) -> Any:
            return _native_call(name, args)

    def run() -> None:
        try:
            _handlers.settle(fn(*args))
        except Exception:
            _node._log.exception("hornbeam_erlang: cast(%r) failed", name)

    _node.runtime().pool.submit(run)


# -- nodes -----------------------------------------------------------------------------------


def node() -> str:
    """This process's node name: HORNBEAM_NODE (``{pid}`` and ``{host}`` are filled in), or
    ``hornbeam-<pid>@<host>``."""
    return _node.node_name()


def nodes() -> list[str]:
    """The other live nodes on this backend, sorted (Erlang's ``nodes()``: this one is
    ``node()``). A node is listed while it heartbeats; a killed one leaves within 3 heartbeats."""
    me = _node.node_name()
    return [n for n in _node.live_nodes() if n != me]


def _check_node(target: str) -> None:
    if not isinstance(target, str):
        raise TypeError(f"node must be a str, not {type(target).__name__}")
    if not _node.alive(target):
        raise NodeDown(f"node {target!r} is not connected (no live process of that name on the "
                       f"{_native.backend()} backend)")


def rpc_call(node: str, module: str, function: str, args: list[Any], timeout_ms: int = 5000) -> Any:
    """Runs action `function` of hook `module` on node `node` with `args`; NodeDown for an
    unknown or dead node, HookNotFound when it does not serve `module`, CallTimeout after
    `timeout_ms`."""
    if node == _node.node_name():
        return execute(module, function, *args)
    _check_node(node)
    return _remote_call(module, function, list(args), {}, timeout_ms, server=node)


def rpc_cast(node: str, module: str, function: str, args: list[Any]) -> None:
    """`rpc_call` without waiting: the request is sent and this returns (errors on the other
    node are logged there). NodeDown at once for an unknown node."""
    if node == _node.node_name():
        f = _handlers.bound(module, function)
        if f is None:
            raise HookNotFound(f"node {node} does not serve hook {module!r}")
        _node.runtime().pool.submit(lambda: _node.serve_request(
            {"k": "cast", "app": module, "act": function, "a": list(args)}))
        return
    _check_node(node)
    req = {"k": "cast", "f": _node.node_name(), "app": module, "act": function, "a": list(args)}
    if _native.publish(_node.rpc_topic(node), req) == 0:
        raise NodeDown(f"node {node} does not listen (it has stopped)")


def _after_fork_in_child() -> None:
    global _tasks_lock
    _tasks.clear()
    _tasks_lock = threading.Lock()
    _handlers.reset_after_fork()
    _node.reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
