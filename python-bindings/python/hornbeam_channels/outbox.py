"""The outgoing text frames of one WebSocket, bounded: the slow-consumer rule.

Every frame a connection sends goes through its `Outbox`, which never waits for the client:

* while nothing is in flight a frame is sent directly: the send runs to completion in the caller,
  as long as the transport accepts the data (the case of every client that keeps up), and costs
  what ``await websocket.send_text(text)`` costs;
* when the transport makes that send wait (its buffer is full: the client is not reading), a
  writer task finishes it and later frames queue behind it, in order;
* once more than ``max_chars`` characters wait, the client is dropped by policy: the queue is
  discarded, one warning is logged, a close ``1008`` (`CLOSE_TOO_SLOW`) is attempted briefly and
  the outbox ends (`SlowConsumer` from :meth:`Outbox.send`, ``False`` from :meth:`Outbox.offer`,
  :meth:`Outbox.wait_ended` returns), which ends the connection like a client leaving.

So a client that stops reading costs at most ``max_chars`` characters plus the transport's
buffers, and everyone else keeps getting their frames at full speed.

Under uvicorn (its default WebSocket implementation) a frame that would be written at once is
written to the transport directly, its bytes made once per message for every connection it goes
to (:class:`Wire`; on a compressed connection, frames under 1 KiB, sent uncompressed: see
:mod:`hornbeam_channels._fastlane`). The channels layer, the
topic fan-out (:mod:`hornbeam_channels.fanout`) and the example apps all send through one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import Any, Awaitable, Callable, Coroutine, Generator, Optional

from ._fastlane import COMPRESS_MIN, Lane, Wire, text_frame
from .asgi import Send

__all__ = ["CLOSE_TOO_SLOW", "DEFAULT_MAX_CHARS", "Outbox", "SlowConsumer", "Wire"]

log = logging.getLogger("hornbeam_channels")

#: The default bound: about 1,000 ordinary chat frames waiting for one client.
DEFAULT_MAX_CHARS = 256 * 1024
CLOSE_TOO_SLOW = 1008
TOO_SLOW_REASON = "too slow: messages were piling up"
# How long the close frame may wait for a client that does not read (it usually cannot pass: the
# connection then ends without it, when the ASGI app returns).
CLOSE_WAIT = 1.0

#: Starts sending one text frame: returns the coroutine of the send (not awaited yet).
SendText = Callable[[str], Coroutine[Any, Any, None]]
#: Closes the socket with a code and a reason.
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

    ``send_text(text)`` starts sending one text frame and returns its coroutine; ``close(code,
    reason)`` closes the socket; ``name`` identifies the connection in the log. ``max_chars=None``
    never drops the client (what waits for it is then unbounded: for trusted clients only).
    :meth:`for_asgi` makes one over a raw ASGI ``send``.
    """

    def __init__(self, send_text: SendText, close: Close, *, name: str = "",
                 max_chars: Optional[int] = DEFAULT_MAX_CHARS) -> None:
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
        self._ended: Optional[asyncio.Future[None]] = None
        self._closing: Optional[asyncio.Task[None]] = None
        # Set by `for_asgi`: the raw ASGI send, called directly on the fast path (one call frame
        # less per frame than `send_text`, which the fan-out pays once per member).
        self._asgi_send: Optional[Send] = None
        # Set by `for_asgi` when the send is uvicorn's own: frames are then written to the
        # transport directly while uvicorn would write them at once (see `_fastlane`).
        self._lane: Optional[Lane] = None

    @classmethod
    def for_asgi(cls, send: Send, *, name: str = "",
                 max_chars: Optional[int] = DEFAULT_MAX_CHARS) -> "Outbox":
        """An outbox over an ASGI ``send`` (``websocket.send`` text events, ``websocket.close``).

        It holds the ``send`` callable only, not the connection, so no reference cycle keeps a
        finished connection alive until the next garbage collection.
        """
        def send_text(text: str) -> Coroutine[Any, Any, None]:
            return send({"type": "websocket.send", "text": text})  # type: ignore[return-value]

        async def close(code: int, reason: str) -> None:
            await send({"type": "websocket.close", "code": code, "reason": reason})

        outbox = cls(send_text, close, name=name, max_chars=max_chars)
        outbox._asgi_send = send
        outbox._lane = Lane.of(send)
        return outbox

    @property
    def fastlane(self) -> bool:
        """True when a small frame offered now would be written straight to the connection's
        transport (uvicorn's WebSocket protocol, no extension or ``permessage-deflate``, the
        transport accepting data: see :mod:`hornbeam_channels._fastlane`)."""
        lane = self._lane
        return (lane is not None and self._writer is None and lane.ready()
                and lane.limit() >= COMPRESS_MIN - 1)

    @property
    def writing(self) -> bool:
        """True while a send waits for the client in the writer task (frames then queue)."""
        return self._writer is not None

    @property
    def waiting(self) -> int:
        """Frames queued behind the send in flight."""
        return len(self._queue)

    @property
    def ended(self) -> bool:
        """True once the client was dropped or found gone: nothing more will be sent."""
        return self.dropped or self._gone is not None

    def offer(self, text: "str | Wire") -> bool:
        """Sends ``text`` after what already waits, without awaiting anything.

        The synchronous form of :meth:`send`, for a loop that writes one frame to many
        connections (the topic fan-out): returns False, instead of raising, when the outbox has
        ended (the client is gone, or this frame passed the bound: the client is then being
        dropped, see :meth:`drop_soon`). A :class:`Wire` carries its text and the frame made once
        for every connection it goes to.
        """
        if self.dropped or self._gone is not None:
            return False
        wire: Optional[Wire] = None
        if isinstance(text, Wire):
            wire, text = text, text.text
        if self._writer is None:
            lane = self._lane
            if lane is not None and lane.ready():
                frame = wire.frame() if wire is not None else text_frame(text)
                if len(frame) <= lane.limit():
                    try:
                        lane.write(frame)
                    except Exception as exc:  # the client is gone
                        self._set_gone(exc)
                        return False
                    return True
            # Nothing in flight: send now, in this task, unless the transport makes it wait.
            asgi_send = self._asgi_send
            if asgi_send is not None:
                coro: Coroutine[Any, Any, None] = asgi_send(  # type: ignore[assignment]
                    {"type": "websocket.send", "text": text})
            else:
                coro = self._send_text(text)
            try:
                pending = coro.send(None)
            except StopIteration:
                return True
            except Exception as exc:  # the client is gone
                self._set_gone(exc)
                return False
            self.queued = len(text)
            self._writer = asyncio.ensure_future(self._write(_Resumed(coro, pending), len(text)))
            return True
        self._queue.append(text)
        self.queued += len(text)
        if self.max_chars is not None and self.queued > self.max_chars:
            self.drop_soon()
            return False
        return True

    async def send(self, text: str) -> None:
        """Sends ``text`` after what already waits; never waits for the client.

        Raises `ConnectionResetError` when the client is gone, and `SlowConsumer` once the
        client was dropped for letting more than ``max_chars`` characters pile up.
        """
        if not self.offer(text):
            if self.dropped:
                if self._closing is not None:
                    await asyncio.shield(self._closing)
                raise SlowConsumer(self.name)
            raise ConnectionResetError(self._gone)

    def drop_soon(self) -> None:
        """Drops the client by policy: discards what waits, logs it, starts a close 1008 (in a
        task of its own, so the caller does not wait), and ends the outbox."""
        if self.dropped:
            return
        self.dropped = True
        log.warning("%s is not reading (%d characters queued): dropping it",
                    self.name, self.queued)
        self.cancel()
        self._closing = asyncio.ensure_future(self._close_too_slow())
        self._end()

    async def drop(self) -> None:
        """:meth:`drop_soon`, then waits (briefly) for the close frame to be attempted."""
        self.drop_soon()
        if self._closing is not None:
            await asyncio.shield(self._closing)

    async def _close_too_slow(self) -> None:
        # The close frame waits behind what the client does not read: try briefly.
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await asyncio.wait_for(self._close(CLOSE_TOO_SLOW, TOO_SLOW_REASON), CLOSE_WAIT)

    async def wait_ended(self) -> None:
        """Returns once the outbox has ended: the client was dropped, or found gone by the
        writer. A connection awaits it beside its reader, so a dropped client ends it."""
        if self.ended:
            return
        if self._ended is None:
            self._ended = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._ended)

    def cancel(self) -> None:
        """Stops the writer and discards what waits (the connection is ending)."""
        self._queue.clear()
        self.queued = 0
        if self._writer is not None:
            self._writer.cancel()
            self._writer = None

    def _end(self) -> None:
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(None)

    def _set_gone(self, exc: BaseException) -> None:
        self._gone = f"client {self.name} is gone: {exc!r}"
        self._queue.clear()
        self._end()

    async def _write(self, first: _Resumed, first_chars: int) -> None:
        try:
            await first
            self.queued -= first_chars
            while self._queue:
                text = self._queue.popleft()
                await self._send_text(text)
                self.queued -= len(text)
        except Exception as exc:  # the client is gone: the next send raises it
            self._set_gone(exc)
        finally:
            if self._writer is asyncio.current_task():
                self._writer = None
