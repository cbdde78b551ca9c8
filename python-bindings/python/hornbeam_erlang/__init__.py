"""Hornbeam's Python API — ETS-style state and pub/sub — on the embedded Rust engine.

Every call of Hornbeam's ``hornbeam_erlang`` module works as the Hornbeam documents use it, and
the pub/sub half delivers to Python: ``subscribe(topic)`` subscribes the current task's own
mailbox (like an Erlang process's), which a handler awaits beside its socket::

    from hornbeam_erlang import state_incr, publish, subscribe

    async def handler():
        mailbox = subscribe("chat:lobby")
        async for msg in mailbox:
            print(msg.topic, msg.message)

State lives in the process's default engine (``HORNBEAM_URL`` selects Redis for several processes).
After ``os.fork()`` the child gets a fresh, empty engine: mailboxes made before the fork are closed in
the child.
"""

from __future__ import annotations

import asyncio
from asyncio.events import _get_running_loop
import contextvars
import logging
import multiprocessing
import os
import threading
import weakref
from typing import Any, Optional, Union

from . import _native
from ._native import (
    BackendError,
    HornbeamError,
    MailboxClosed,
    Message,
    ReadySet,
    backend,
    state_clear,
    state_count,
    state_decr,
    state_delete,
    state_exists,
    state_expire,
    state_get,
    state_get_multi,
    state_incr,
    state_keys,
    state_set,
    state_set_if_absent,
    state_set_multi,
    state_ttl,
)
from ._errors import CallTimeout, HandlerError, HookError, HookNotFound, NodeDown
from ._hooks import (
    await_result,
    call,
    cast,
    execute,
    execute_async,
    hook,
    node,
    nodes,
    register_function,
    register_hook,
    rpc_call,
    rpc_cast,
    stream,
    stream_async,
    unhook,
    unregister_function,
    unregister_hook,
)

__version__: str = _native.__version__

#: What `state_set` and `publish` accept (nested freely, up to the depth limit).
Storable = Union[None, bool, int, float, str, bytes, list, tuple, dict]

__all__ = [
    "BackendError", "HornbeamError", "Mailbox", "MailboxClosed", "Message", "ReadySet", "Storable", "backend",
    "check_pubsub", "current_mailbox", "decr", "delete", "get", "incr", "mailbox", "publish",
    "set", "state_clear", "state_count", "state_decr", "state_delete", "state_exists",
    "state_expire", "state_get", "state_get_multi", "state_incr", "state_keys", "state_set",
    "state_set_if_absent", "state_set_multi", "state_ttl", "subscribe", "unsubscribe",
    "unwatch", "watch",
    # Hooks, calls and nodes (_hooks.py)
    "CallTimeout", "HandlerError", "HookError", "HookNotFound", "NodeDown", "await_result", "call",
    "cast", "execute", "execute_async", "hook", "node", "nodes", "receive_pubsub",
    "register_function", "register_hook", "rpc_call", "rpc_cast", "stream", "stream_async",
    "unhook", "unregister_function", "unregister_hook",
]

get = state_get
set = state_set  # noqa: A001 - Hornbeam's alias
delete = state_delete
incr = state_incr
decr = state_decr


class _Hub:
    """One per event loop: a single descriptor (a native ``ReadySet``) registered once with
    ``add_reader`` serves every mailbox awaited in that loop, so a burst of publishes costs one
    wake-up of the loop, not one per mailbox.

    On ``local://`` the hub also watches the bus's doorbell: when another process publishes, the
    loop reads the shared log itself (``_relay_pump``) instead of waiting for the relay thread to
    read it and wake the loop, which saves one thread wake-up per message at light load."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # The ready set also holds the futures of the receives waiting in this loop, and
        # completes them (`wake`): see `PyReadySet` in python-bindings/src/mailbox.rs.
        self.ready = _native.ReadySet()
        # The doorbell's descriptor once watched; None while there may be one to watch later
        # (local://, before this process's first subscription); -1 when there is none.
        self.bell: Optional[int] = None if _native.backend() == "local" else -1
        loop.add_reader(self.ready.fileno(), self.ready.wake)
        # After a publish from this loop's own thread: complete the local receivers' futures at
        # once, as `asyncio.Queue.put_nowait` does, instead of after the loop's next poll.
        self.wake_now = self.ready.wake_waiting

    def find_bell(self) -> None:
        """Watches the doorbell, once this process has one (it joined the local:// bus)."""
        fd = _native._relay_fileno()
        if fd is not None:
            self.bell = fd
            self.loop.add_reader(fd, self._on_bell)

    def _on_bell(self) -> None:
        _native._relay_pump()
        self.ready.wake_waiting()


def publish(topic: str, message: Any) -> int:
    """Publishes ``message`` (any storable object) to ``topic``; returns how many mailboxes took
    it."""
    delivered = _native.publish(topic, message)
    if delivered:
        loop = _get_running_loop()
        if loop is not None:
            hub = _hubs.get(id(loop))
            if hub is not None and hub.loop is loop:
                hub.wake_now()
    return delivered


# Hubs by loop. Keyed by id() because some loops (uvloop) take no weak references; a closed
# loop's hub is dropped the next time a hub is made.
_hubs: dict[int, _Hub] = {}
_hubs_lock = threading.Lock()


def _hub(loop: asyncio.AbstractEventLoop) -> _Hub:
    hub = _hubs.get(id(loop))
    if hub is not None and hub.loop is loop:
        return hub
    with _hubs_lock:
        for key, old in list(_hubs.items()):
            if old.loop.is_closed():
                del _hubs[key]
        hub = _Hub(loop)
        _hubs[id(loop)] = hub
    return hub


class Mailbox(_native.Mailbox):
    """A bounded queue of messages for the topics and patterns it subscribes to, and of the
    changes of the store keys it watches.

    ``await recv()`` (in a coroutine), ``recv(timeout=)`` (in a thread: blocks with the GIL
    released), ``recv_nowait()``, ``drain()``, ``async for msg in mailbox``, ``fileno()``,
    ``subscribe``/``unsubscribe``, ``watch``/``unwatch`` (key prefixes: each change arrives as a
    ``Message`` of type ``'change'``), ``close()``; a (async) context manager that closes on exit.

    Async receive waits on ``fileno()`` with ``loop.add_reader`` — no thread, no polling — and
    takes a message only once it is ready, so cancelling a pending ``recv()`` loses nothing.
    When the mailbox was full, the next item is a lag notice: a ``Message`` whose ``lagged`` says
    how many messages were dropped.
    """

    # `recv(timeout=None)`, `__aiter__` and `__anext__` are native (`_native.Mailbox`): from a
    # coroutine, `recv()` returns an awaitable that takes the message only once it runs, so
    # cancelling it loses nothing. What the native `recv` does not serve itself comes here.

    def _recv_slow(self, timeout: Optional[float]) -> Any:
        """``recv`` called from a plain thread (blocks), or with a timeout, or not straight from a
        coroutine's code."""
        if _get_running_loop() is None:
            return self._recv_blocking(timeout)
        if timeout is None:
            return self._recv_async()
        return self._recv_timeout(timeout)

    def _hub_here(self) -> "_Hub":
        """The running loop's hub, with this mailbox attached to it (the native side caches it,
        see `PyMailbox::hub`)."""
        hub = _hub(asyncio.get_running_loop())
        self._attach(hub.ready)  # the same ready set again is a no-op; another one is an error
        if hub.bell is None:
            hub.find_bell()
        return hub

    async def _recv_timeout(self, timeout: float) -> Optional[Message]:
        try:
            return await asyncio.wait_for(self._recv_async(), timeout)
        except asyncio.TimeoutError:
            return None

    def __enter__(self) -> "Mailbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> "Mailbox":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


# The current task's mailbox (or thread's, outside asyncio), like an Erlang process's own. The
# owner is kept with it: a child task inherits its parent's context, but gets its own mailbox.
_current: contextvars.ContextVar[Optional[tuple[Any, Mailbox]]] = contextvars.ContextVar(
    "hornbeam_mailbox", default=None
)


def _owner() -> Any:
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    if task is not None:
        return weakref.ref(task)
    return threading.get_ident()


def _same_owner(a: Any, b: Any) -> bool:
    if isinstance(a, weakref.ref) and isinstance(b, weakref.ref):
        return a() is not None and a() is b()
    return a == b


def current_mailbox() -> Optional[Mailbox]:
    """The current task's mailbox, or None when it has not subscribed (or watched) yet."""
    cur = _current.get()
    if cur is None or cur[1].closed or not _same_owner(cur[0], _owner()):
        return None
    return cur[1]


def mailbox() -> Mailbox:
    """The current task's mailbox, created on first use."""
    mb = current_mailbox()
    if mb is None:
        mb = Mailbox()
        _current.set((_owner(), mb))
    return mb


def subscribe(topic: str) -> Mailbox:
    """Subscribes the current task's mailbox to ``topic`` (a topic or pattern); returns it."""
    mb = mailbox()
    mb.subscribe(topic)
    return mb


def unsubscribe(topic: str) -> None:
    """Removes ``topic`` from the current task's mailbox (no-op when not subscribed)."""
    mb = current_mailbox()
    if mb is not None:
        mb.unsubscribe(topic)


def watch(prefix: str) -> Mailbox:
    """Watches the store's keys starting with ``prefix`` (``""``: every key) from the current
    task's mailbox (created on first use, as ``subscribe`` does); returns it. Each committed change
    of such a key then arrives there as a ``Message`` of type ``'change'``: ``msg.op`` (``'set'``,
    ``'delete'``, ``'incr'``, ``'expire'``, ``'clear'``), ``msg.key``, ``msg.value`` (the new
    value for set and incr)."""
    mb = mailbox()
    mb.watch(prefix)
    return mb


def unwatch(prefix: str) -> None:
    """Stops the current task's mailbox watching ``prefix`` (no-op when not watched)."""
    mb = current_mailbox()
    if mb is not None:
        mb.unwatch(prefix)


def check_pubsub() -> Optional[Message]:
    """The next message of the current task's mailbox, or None at once."""
    mb = current_mailbox()
    return None if mb is None else mb.recv_nowait()


def receive_pubsub(timeout: float = 0) -> Optional[dict[str, Any]]:
    """Hornbeam's poll of the current task's mailbox: the next message as a dict (``topic``,
    ``message``; a watch event's message is ``{"op": ..., "key": ..., "value": ...}``; a lag
    notice is ``{"topic": None, "message": None, "lagged": n}``) so that it can be sent as JSON,
    or None when none arrives within `timeout` seconds (0: at once). A
    positive timeout blocks the thread (releasing the GIL); in a coroutine, prefer
    ``await mailbox().recv(timeout)``."""
    mb = current_mailbox()
    if mb is None:
        return None
    msg = mb.recv_nowait() if timeout <= 0 else mb._recv_blocking(timeout)
    if msg is None:
        return None
    if msg.lagged:
        return {"topic": None, "message": None, "lagged": msg.lagged}
    return {"topic": msg.topic, "message": msg.message}


_log = logging.getLogger("hornbeam_erlang")
_warned_per_process = False


def _warn_if_worker(reason: str) -> None:
    """Says once per process that a worker's embedded engine is its own (DESIGN.md's pitfall)."""
    global _warned_per_process
    if _warned_per_process or os.environ.get("HORNBEAM_URL"):
        return
    _warned_per_process = True
    _log.warning(
        "hornbeam_erlang: %s, and the embedded engine is per process: each worker has its own "
        "store and bus, so state and messages are not shared between workers. Set "
        "HORNBEAM_URL=local:///dev/shm/myapp (every process on this machine, no server) or "
        "HORNBEAM_URL=redis://host:port/db (several machines) to share them.", reason,
    )


def _after_fork_in_child() -> None:
    _native._after_fork_in_child()
    _hubs.clear()
    _warn_if_worker("this process was forked from one that used the engine")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

# uvicorn --workers and gunicorn start workers with multiprocessing (spawn) or fork.
if multiprocessing.parent_process() is not None:
    _warn_if_worker("running in a worker process started by another")
