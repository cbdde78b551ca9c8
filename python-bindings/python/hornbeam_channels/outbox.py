"""The outgoing text frames of one WebSocket, bounded: the slow-consumer policy.

Every frame a connection sends goes through its `Outbox`, which never waits for the client:

* while nothing is in flight a frame is sent directly: the send runs to completion in the caller,
  as long as the transport accepts the data (the case of every client that keeps up), and costs
  what ``await websocket.send_text(text)`` costs;
* when the transport makes that send wait (its buffer is full: the client is not reading), a
  writer task finishes it and later frames queue behind it, in order;
* once more than ``max_chars`` characters wait, the client is dropped by policy: the queue is
  discarded, one warning is logged, a close ``1008`` (`CLOSE_TOO_SLOW`) is attempted briefly and
  `SlowConsumer` is raised, which ends the connection like a client leaving.

So a client that stops reading costs at most ``max_chars`` characters plus the transport's
buffers, and the bus keeps delivering to everyone else at full speed. The channels layer sends
every reply, push, broadcast and presence diff through one; the example chat apps use it too
(``examples/_outbox.py``), exported as ``hornbeam_channels.Outbox``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import Any, Awaitable, Callable, Coroutine, Generator, Optional

log = logging.getLogger("hornbeam_channels")

#: The default bound: about 1,000 ordinary chat frames waiting for one client.
DEFAULT_MAX_CHARS = 256 * 1024
CLOSE_TOO_SLOW = 1008
TOO_SLOW_REASON = "too slow: messages were piling up"
# How long the close frame may wait for a client that does not read (it usually cannot pass: the
# connection then ends without it, when the ASGI app returns).
CLOSE_WAIT = 1.0

SendText = Callable[[str], Coroutine[Any, Any, None]]
Close = Callable[[int, str], Awaitable[None]]


class SlowConsumer(Exception):
    """The client let more than the outbox's bound pile up: it was dropped."""


def _resume(coro: Coroutine[Any, Any, None], pending: Any) -> Generator[Any, Any, None]:
    """The rest of a coroutine whose first step already ran and yielded ``pending``, delegated to
    the task that awaits this generator exactly as ``yield from`` would (sends, throws and close
    included)."""
    while True:
        try:
            sent = yield pending
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # cancellation included: the coroutine sees it
            try:
                pending = coro.throw(exc)
            except StopIteration:
                return
        else:
            try:
                pending = coro.send(sent)
            except StopIteration:
                return


class _Resumed:
    def __init__(self, coro: Coroutine[Any, Any, None], pending: Any) -> None:
        self._gen = _resume(coro, pending)

    def __await__(self) -> Generator[Any, Any, None]:
        return (yield from self._gen)


class Outbox:
    """The outgoing text frames of one connection, bounded to ``max_chars`` waiting characters.

    ``send_text(text)`` sends one text frame (a raw ASGI ``websocket.send``); ``close(code,
    reason)`` closes the socket; ``name`` identifies the connection in the log.
    """

    def __init__(self, send_text: SendText, close: Close, *, name: str = "",
                 max_chars: int = DEFAULT_MAX_CHARS) -> None:
        self._send_text = send_text
        self._close = close
        self.name = name
        self.max_chars = max_chars
        self.queued = 0  # characters waiting, the one in flight included
        self._queue: collections.deque[str] = collections.deque()
        self._writer: Optional[asyncio.Task[None]] = None
        # Why the writer stopped when the client went away: the next send raises it. Kept as
        # text, not as the exception, whose traceback would tie the outbox into a cycle.
        self._gone: Optional[str] = None
        self.dropped = False

    async def send(self, text: str) -> None:
        """Sends ``text`` after what already waits; never waits for the client.

        Raises what the send raised when the client is gone (`ConnectionResetError` when the
        writer task found it gone), and `SlowConsumer` once the client was dropped for letting
        more than ``max_chars`` characters pile up.
        """
        if self.dropped:
            raise SlowConsumer(self.name)
        if self._gone is not None:
            raise ConnectionResetError(self._gone)
        if self._writer is None:
            # Nothing in flight: send now, in this task, unless the transport makes it wait.
            coro = self._send_text(text)
            try:
                pending = coro.send(None)
            except StopIteration:
                return
            self.queued = len(text)
            self._writer = asyncio.ensure_future(self._write(_Resumed(coro, pending), len(text)))
            return
        self._queue.append(text)
        self.queued += len(text)
        if self.queued > self.max_chars:
            await self.drop()
            raise SlowConsumer(self.name)

    async def drop(self) -> None:
        """Drops the client by policy: discards what waits, logs it, attempts a close 1008."""
        if self.dropped:
            return
        self.dropped = True
        log.warning("%s is not reading (%d characters queued): dropping it",
                    self.name, self.queued)
        self.cancel()
        # The close frame waits behind what the client does not read: try briefly.
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await asyncio.wait_for(self._close(CLOSE_TOO_SLOW, TOO_SLOW_REASON), CLOSE_WAIT)

    def cancel(self) -> None:
        """Stops the writer and discards what waits (the connection is ending)."""
        self._queue.clear()
        self.queued = 0
        if self._writer is not None:
            self._writer.cancel()
            self._writer = None

    async def _write(self, first: _Resumed, first_chars: int) -> None:
        try:
            await first
            self.queued -= first_chars
            while self._queue:
                text = self._queue.popleft()
                await self._send_text(text)
                self.queued -= len(text)
        except Exception as exc:  # the client is gone: the next send raises it
            self._gone = f"client {self.name} is gone: {exc!r}"
            self._queue.clear()
        finally:
            if self._writer is asyncio.current_task():
                self._writer = None
