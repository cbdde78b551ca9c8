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
import contextvars
import os
import threading
import weakref
from typing import Any, AsyncIterator, Optional, Union

from . import _native
from ._native import (
    BackendError,
    HornbeamError,
    MailboxClosed,
    Message,
    backend,
    publish,
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

__version__: str = _native.__version__

#: What `state_set` and `publish` accept (nested freely, up to the depth limit).
Storable = Union[None, bool, int, float, str, bytes, list, tuple, dict]

__all__ = [
    "BackendError", "HornbeamError", "Mailbox", "MailboxClosed", "Message", "Storable", "backend",
    "check_pubsub", "current_mailbox", "decr", "delete", "get", "incr", "mailbox", "publish",
    "set", "state_clear", "state_count", "state_decr", "state_delete", "state_exists",
    "state_expire", "state_get", "state_get_multi", "state_incr", "state_keys", "state_set",
    "state_set_if_absent", "state_set_multi", "state_ttl", "subscribe", "unsubscribe",
]

get = state_get
set = state_set  # noqa: A001 - Hornbeam's alias
delete = state_delete
incr = state_incr
decr = state_decr


def _wake(fut: "asyncio.Future[None]") -> None:
    if not fut.done():
        fut.set_result(None)


class Mailbox(_native.Mailbox):
    """A bounded queue of messages for the topics and patterns it subscribes to.

    ``await recv()`` (in a coroutine), ``recv(timeout=)`` (in a thread: blocks with the GIL
    released), ``recv_nowait()``, ``drain()``, ``async for msg in mailbox``, ``fileno()``,
    ``subscribe``/``unsubscribe``, ``close()``; a (async) context manager that closes on exit.

    Async receive waits on ``fileno()`` with ``loop.add_reader`` — no thread, no polling — and
    takes a message only once it is ready, so cancelling a pending ``recv()`` loses nothing.
    When the mailbox was full, the next item is a lag notice: a ``Message`` whose ``lagged`` says
    how many messages were dropped.
    """

    def recv(self, timeout: Optional[float] = None) -> Any:
        """Next message; ``None`` on timeout.

        Called from a coroutine (a running event loop in this thread) it returns an awaitable;
        called from a plain thread it blocks, releasing the GIL.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return self._recv_blocking(timeout)
        return self._recv_async(loop, timeout)

    async def _recv_async(self, loop: asyncio.AbstractEventLoop, timeout: Optional[float]) -> Optional[Message]:
        msg = self._try_recv_arm()
        if msg is not None:
            return msg
        fd = self.fileno()
        deadline = None if timeout is None else loop.time() + timeout
        # Each pass waits for the descriptor, then re-checks: a wake-up without a message (another
        # receiver took it) waits again; the deadline bounds the loop when a timeout is given.
        while True:
            fut: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, _wake, fut)
            try:
                if deadline is None:
                    await fut
                else:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        return None
                    try:
                        await asyncio.wait_for(fut, remaining)
                    except asyncio.TimeoutError:
                        return self._try_recv_arm()
            finally:
                loop.remove_reader(fd)
            msg = self._try_recv_arm()
            if msg is not None:
                return msg

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        try:
            msg = await self.recv()
        except MailboxClosed:
            raise StopAsyncIteration from None
        if msg is None:  # pragma: no cover - recv() without timeout returns a message
            raise StopAsyncIteration
        return msg

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
    """The current task's mailbox, or None when it has not subscribed yet."""
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


def check_pubsub() -> Optional[Message]:
    """The next message of the current task's mailbox, or None at once."""
    mb = current_mailbox()
    return None if mb is None else mb.recv_nowait()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_native._after_fork_in_child)
