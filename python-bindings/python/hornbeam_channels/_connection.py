"""One WebSocket connection: its joined channels, its mailbox, and the protocol state machine.

Three tasks serve a connection:

* the reader takes client frames in order and runs the handlers (one frame at a time, so the
  handlers of one connection never race each other);
* the pump forwards what the bus delivers to the connection's mailbox: broadcasts to the topics
  it joined and pushes addressed to it, from this process or any other;
* the watchdog closes a connection that stopped sending (not even heartbeats) and keeps its
  presence entries alive in the store.

Whichever ends first ends the connection, and the teardown runs the same way for every ending:
each channel's leave handler, its presences removed (with the leave diffs), the mailbox closed.

Every frame goes out through the connection's bounded outbox (``_outbox.py``): no task ever waits
for the client, and a client that lets more than ``max_outbox_chars`` characters pile up is
dropped (close 1008), which ends the connection like any other ending.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import threading
from typing import Any, Awaitable, Callable, Optional
from urllib.parse import parse_qsl

import hornbeam_erlang as hb

from . import _presence_store as presence
from ._outbox import Outbox
from ._registry import Channel, find
from ._socket import Socket
from ._wire import (
    check_topic,
    encode,
    new_session_id,
    reason_payload,
    reply_payload,
    session_bus,
    topic_bus,
)

log = logging.getLogger("hornbeam_channels")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ConnectHook = Callable[[dict[str, str], Scope], Any]

#: Connections served by this process, by session id (``push`` looks its target up here).
live: dict[str, "Connection"] = {}

_CONTROL_TOPICS = {"phoenix": "phx", "hornbeam": "hb"}
_JOIN = {"phx_join": "phx", "hb_join": "hb"}
_LEAVE = {"phx_leave": "phx", "hb_leave": "hb"}
RATE_LIMITED = "rate_limited"
TOO_MANY_CHANNELS = "too many channels"


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; browsers' JSON.parse does not, so letting them
    # through would break every client a handler echoes or broadcasts them to.
    raise ValueError(f"{name} is not JSON")


_INF = float("inf")


def _finite_float(text: str) -> float:
    # `1e400` reads as infinity, which would go back out as `Infinity`, like the tokens above.
    value = float(text)
    if value in (_INF, -_INF):
        raise ValueError(f"{text} overflows a double")
    return value


_loads = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float).decode
_dumps = json.JSONEncoder(ensure_ascii=False).encode


def _unpaired_surrogate(frame: Any) -> bool:
    # A `\ud800` escape alone decodes to a str that is not valid Unicode: it could neither be
    # sent back (UTF-8) nor stored or published, so the frame is refused as a whole.
    try:
        _dumps(frame).encode()
    except UnicodeEncodeError:
        return True
    return False


_MALFORMED = "malformed frame: expected a JSON array [join_ref, ref, topic, event, payload]"


class Options:
    """Settings shared by the connections of one endpoint."""

    __slots__ = ("heartbeat_timeout", "max_frame_bytes", "on_connect", "rate_limit", "rate_burst",
                 "max_channels", "max_outbox_chars")

    def __init__(self, heartbeat_timeout: Optional[float], max_frame_bytes: int,
                 on_connect: Optional[ConnectHook], rate_limit: Optional[float] = None,
                 rate_burst: int = 100, max_channels: Optional[int] = None,
                 max_outbox_chars: Optional[int] = None) -> None:
        self.heartbeat_timeout = heartbeat_timeout
        self.max_frame_bytes = max_frame_bytes
        self.on_connect = on_connect
        # Token bucket per connection: `rate_limit` events per second, up to `rate_burst` at once.
        self.rate_limit = rate_limit
        self.rate_burst = rate_burst
        # Channels one connection may have joined (or be joining) at once; None: no cap.
        self.max_channels = max_channels
        # Characters that may wait for one client before it is dropped as too slow; None: no
        # outbox, sends wait for the client (one that stops reading stalls its own connection).
        self.max_outbox_chars = max_outbox_chars


class ChannelState:
    """A joined (or joining) channel of a connection."""

    __slots__ = ("topic", "join_ref", "family", "channel", "socket", "joined", "busy", "outbox",
                 "presences", "bus_topic", "channel_id")

    def __init__(self, topic: str, join_ref: Any, family: str, channel: Channel,
                 socket: Socket) -> None:
        self.topic = topic
        self.join_ref = join_ref
        self.family = family
        self.channel = channel
        self.socket = socket
        self.joined = False
        # While a handler of this channel runs, pushes to it wait in the outbox, so that they
        # follow the join reply, or precede the event reply, as in Phoenix.
        self.busy = False
        self.outbox: list[str] = []
        self.presences: dict[str, tuple[str, str]] = {}
        self.bus_topic = topic_bus(topic)
        # Checked for every broadcast delivered (broadcast_from), so computed once.
        self.channel_id = socket.channel_id


class _Closed(Exception):
    """The client is gone; sending failed."""


def _is_ref(value: Any) -> bool:
    return value is None or (isinstance(value, (str, int)) and not isinstance(value, bool))


async def _call(func: Callable[..., Any], *args: Any) -> Any:
    result = func(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


def _normalize_join(result: Any, socket: Socket) -> tuple[str, Any, Socket]:
    if isinstance(result, tuple) and len(result) in (2, 3) and result[0] in ("ok", "error"):
        new = result[2] if len(result) == 3 else socket
        if not isinstance(new, Socket):
            raise TypeError(f"join handler returned {type(new).__name__} where a Socket goes")
        return result[0], result[1], new
    raise TypeError("join handler must return ('ok', reply), ('ok', reply, socket) or "
                    f"('error', reason), not {result!r}")


def _split_reply(reply: Any) -> tuple[str, Any]:
    if isinstance(reply, tuple) and len(reply) == 2 and reply[0] in ("ok", "error"):
        return reply[0], reply[1]
    return "ok", reply


def _normalize_event(result: Any, socket: Socket) -> tuple[Optional[tuple[str, Any]], bool, Socket]:
    """(reply as (status, response) or None, stop?, new socket)."""
    if isinstance(result, tuple) and result:
        kind, rest = result[0], result[1:]
        if kind == "noreply" and len(rest) <= 1:
            new = rest[0] if rest else socket
            if isinstance(new, Socket):
                return None, False, new
        elif kind == "reply" and len(rest) in (1, 2):
            new = rest[1] if len(rest) == 2 else socket
            if isinstance(new, Socket):
                return _split_reply(rest[0]), False, new
        elif kind == "stop" and len(rest) in (1, 2, 3):
            new = rest[-1] if len(rest) >= 2 else socket
            if isinstance(new, Socket):
                reply = _split_reply(rest[1]) if len(rest) == 3 else None
                return reply, True, new
    raise TypeError("event handler must return ('reply', response, socket), ('noreply', socket) "
                    f"or ('stop', reason, socket), not {result!r}")


def _outbox_for(send: Send, name: str, max_chars: int) -> Outbox:
    # The outbox holds the ASGI send, not the connection: no reference cycle keeps a finished
    # connection (and its mailbox's descriptor) alive until the next garbage collection.
    async def send_frame(text: str) -> None:
        await send({"type": "websocket.send", "text": text})

    async def send_close(code: int, reason: str) -> None:
        await send({"type": "websocket.close", "code": code, "reason": reason})

    return Outbox(send_frame, send_close, name=name, max_chars=max_chars)


class Connection:
    """The server side of one client socket."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, options: Options) -> None:
        self.scope = scope
        self.receive = receive
        self._send = send
        self.options = options
        self.session_id = new_session_id()
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        # The Phoenix client announces its serializer; the Hornbeam client sends none.
        self.family: Optional[str] = "phx" if "vsn" in query else None
        query.pop("vsn", None)
        self.params: dict[str, str] = query
        self.assigns: dict[str, Any] = {}
        self.channels: dict[str, ChannelState] = {}
        self.by_bus: dict[str, ChannelState] = {}
        self.mailbox: Optional[hb.Mailbox] = None
        self.thread = threading.get_ident()
        self.loop = asyncio.get_running_loop()
        self.last_seen = self.loop.time()
        self.send_lock = asyncio.Lock()
        self.closed = False
        self.ending = False
        self.tokens = float(options.rate_burst)
        self.tokens_at = self.last_seen
        self.rate_limited = 0  # events refused so far (for logs and tests)
        self.outbox: Optional[Outbox] = None
        if options.max_outbox_chars is not None:
            self.outbox = _outbox_for(send, f"channel connection {self.session_id}",
                                      options.max_outbox_chars)

    # ---- sending -------------------------------------------------------------------------

    async def send_text(self, text: str) -> None:
        await self.send_many([text])

    async def send_many(self, frames: list[str]) -> None:
        """Sends ``frames`` in order; raises `_Closed` when the client is gone or was dropped."""
        if self.closed:
            raise _Closed
        outbox = self.outbox
        try:
            if outbox is not None:
                for text in frames:  # never waits for the client
                    await outbox.send(text)
            else:
                async with self.send_lock:
                    for text in frames:
                        await self._send({"type": "websocket.send", "text": text})
        except Exception as exc:
            # The client is gone, or the outbox dropped it (`SlowConsumer`: logged, close 1008
            # attempted): either way the connection ends.
            self.closed = True
            raise _Closed from exc

    async def reply(self, join_ref: Any, ref: Any, topic: str, family: str, status: str,
                    response: Any) -> None:
        await self.send_text(encode(join_ref, ref, topic, f"{family}_reply",
                                    reply_payload(status, response)))

    async def control_error(self, reason: str) -> None:
        """An error that belongs to no topic (a frame that could not be read)."""
        family = self.family or "hb"
        topic = "phoenix" if family == "phx" else "hornbeam"
        await self.send_text(encode(None, None, topic, f"{family}_error", {"reason": reason}))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.outbox is not None:
            # What still waits is for a connection that is ending: discarded, writer stopped.
            self.outbox.cancel()
        if self.closed:
            return
        self.closed = True
        try:
            await asyncio.wait_for(
                self._send({"type": "websocket.close", "code": code, "reason": reason}), 5)
        except Exception:  # the peer may already be gone; closing is best effort
            pass

    # ---- lifecycle -----------------------------------------------------------------------

    async def run(self) -> None:
        """Serves the connection from ``websocket.connect`` to its end."""
        first = await self.receive()
        if first.get("type") != "websocket.connect":
            return
        if not await self._accept():
            return
        self.mailbox = hb.Mailbox()
        self.mailbox.subscribe(session_bus(self.session_id))
        live[self.session_id] = self
        tasks = [asyncio.ensure_future(self._read_loop()), asyncio.ensure_future(self._pump()),
                 asyncio.ensure_future(self._watchdog())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if exc is not None and not isinstance(exc, _Closed):
                    log.error("channel connection %s failed", self.session_id, exc_info=exc)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._teardown()

    async def _accept(self) -> bool:
        hook = self.options.on_connect
        if hook is not None:
            try:
                verdict = await _call(hook, dict(self.params), self.scope)
            except Exception:
                log.exception("on_connect failed; refusing the connection")
                verdict = False
            if verdict is False:
                await self._send({"type": "websocket.close", "code": 1008})
                return False
            if isinstance(verdict, dict):
                self.assigns = dict(verdict)
        message: dict[str, Any] = {"type": "websocket.accept"}
        offered = self.scope.get("subprotocols") or []
        if "phoenix" in offered:
            message["subprotocol"] = "phoenix"
        await self._send(message)
        return True

    async def _teardown(self) -> None:
        live.pop(self.session_id, None)
        self.ending = True
        for state in list(self.channels.values()):
            try:
                await self._end_channel(state)
            except Exception:
                log.exception("cleaning up channel %s failed", state.topic)
        if self.mailbox is not None:
            self.mailbox.close()
        await self.close()

    async def _watchdog(self) -> None:
        timeout = self.options.heartbeat_timeout
        refresh_every = presence.PRESENCE_TTL / 3
        tick = refresh_every if timeout is None else min(refresh_every, max(timeout / 4, 0.05))
        last_refresh = self.loop.time()
        while True:
            await asyncio.sleep(tick)
            now = self.loop.time()
            if timeout is not None and now - self.last_seen > timeout:
                log.info("connection %s sent nothing for %.1fs: closing", self.session_id, timeout)
                await self.close(1000, "heartbeat timeout")
                return
            if now - last_refresh >= refresh_every:
                last_refresh = now
                for state in list(self.channels.values()):
                    presence.refresh(state)

    # ---- from the bus --------------------------------------------------------------------

    async def _pump(self) -> None:
        mb = self.mailbox
        assert mb is not None
        while True:
            try:
                first = await mb.recv()
                batch = [first, *mb.drain()]
            except hb.MailboxClosed:
                return
            frames: list[str] = []
            lagged = 0
            by_bus = self.by_bus
            for msg in batch:
                if msg.lagged:
                    lagged += msg.lagged
                data = msg.message
                if not isinstance(data, (list, tuple)) or not data:
                    continue
                kind = data[0]
                if kind == "b":
                    state = by_bus.get(msg.topic or "")
                    if state is not None and state.joined and data[2] != state.channel_id:
                        frames.append(data[1])
                elif kind == "p":
                    state = self.channels.get(data[2])
                    if state is not None and state.join_ref == data[1]:
                        if state.joined and not state.busy:
                            frames.append(data[3])
                        else:
                            state.outbox.append(data[3])
            if lagged:
                frames.extend(self._resync(lagged))
            if frames:
                await self.send_many(frames)

    def _resync(self, lagged: int) -> list[str]:
        # Dropped messages may have been presence diffs: a fresh presence_state lets every
        # client's syncState put its list right again.
        log.warning("connection %s was too slow: %d messages dropped", self.session_id, lagged)
        return [encode(s.join_ref, None, s.topic, "presence_state", presence.list_topic(s.topic))
                for s in self.channels.values() if s.joined]

    # ---- from the client -----------------------------------------------------------------

    def _take_token(self) -> bool:
        """Spends one token of the connection's bucket; False when it is empty (rate limited)."""
        rate = self.options.rate_limit
        if rate is None:
            return True
        now = self.loop.time()
        self.tokens = min(float(self.options.rate_burst), self.tokens + (now - self.tokens_at) * rate)
        self.tokens_at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.rate_limited += 1
        if self.rate_limited == 1 or self.rate_limited % 1000 == 0:
            log.warning("connection %s is over its rate limit: %d events refused",
                        self.session_id, self.rate_limited)
        return False

    async def _read_loop(self) -> None:
        while True:
            message = await self.receive()
            kind = message.get("type")
            if kind == "websocket.disconnect":
                return
            if kind != "websocket.receive":
                continue
            self.last_seen = self.loop.time()
            text = message.get("text")
            if text is None:
                await self.control_error("binary frames are not supported; send JSON text frames")
                continue
            await self.handle_text(text)

    async def handle_text(self, text: str) -> None:
        limit = self.options.max_frame_bytes
        if len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit):
            await self.control_error(
                f"frame too large: {len(text.encode())} bytes, the limit is {limit} bytes")
            return
        try:
            frame = _loads(text)
            unpaired = "\\u" in text and _unpaired_surrogate(frame)
        except RecursionError:
            await self.control_error(_MALFORMED + " (nested too deeply)")
            return
        except ValueError:
            await self.control_error(_MALFORMED + " (invalid JSON)")
            return
        if unpaired:
            await self.control_error(_MALFORMED + " (unpaired surrogate in a string)")
            return
        if not isinstance(frame, list) or len(frame) != 5:
            await self.control_error(_MALFORMED)
            return
        join_ref, ref, topic, event, payload = frame
        if not (isinstance(topic, str) and isinstance(event, str) and _is_ref(join_ref)
                and _is_ref(ref)):
            await self.control_error(_MALFORMED + " (topic and event must be strings, refs "
                                     "strings or null)")
            return
        if event == "heartbeat" and topic in _CONTROL_TOPICS:
            family = _CONTROL_TOPICS[topic]
            self.family = self.family or family
            await self.reply(None, ref, topic, family, "ok", {})  # never rate limited
        elif not self._take_token():
            # Over the limit: answered, not handled; the connection keeps serving.
            state = self.channels.get(topic)
            family = (_JOIN.get(event) or _LEAVE.get(event) or (state and state.family)
                      or self.family or "hb")
            await self.reply(join_ref, ref, topic, family, "error", {"reason": RATE_LIMITED})
        elif event in _JOIN:
            self.family = _JOIN[event]
            await self._join(join_ref, ref, topic, payload, _JOIN[event])
        elif event in _LEAVE:
            self.family = _LEAVE[event]
            await self._leave(join_ref, ref, topic, _LEAVE[event])
        else:
            await self._event(join_ref, ref, topic, event, payload)

    async def _join(self, join_ref: Any, ref: Any, topic: str, params: Any, family: str) -> None:
        if params is None:
            params = {}
        problem = check_topic(topic)
        if problem is None and not isinstance(params, dict):
            problem = "join params must be a JSON object"
        if problem is not None:
            await self.reply(join_ref, ref, topic, family, "error", {"reason": problem})
            return
        old = self.channels.get(topic)
        cap = self.options.max_channels
        if old is None and cap is not None and len(self.channels) >= cap:
            # Refused before any handler runs: nothing is joined, the others keep serving.
            await self.reply(join_ref, ref, topic, family, "error", {"reason": TOO_MANY_CHANNELS})
            return
        if old is not None:
            # A second join replaces the first, as in Phoenix: the old one is closed.
            await self._end_channel(old, close_frame=True)
        found = find(topic)
        if found is None:
            await self.reply(join_ref, ref, topic, family, "error", {"reason": "unmatched topic"})
            return
        channel, topic_params = found
        socket = Socket(topic, join_ref, self.session_id, self.assigns, self.params)
        state = ChannelState(topic, join_ref, family, channel, socket)
        self.channels[topic] = state
        state.busy = True
        try:
            response: Any = {}
            if channel.join_handler is None:
                status = "ok"
            else:
                result = await _call(channel.join_handler, topic, topic_params, params, socket)
                status, response, socket = _normalize_join(result, socket)
            if status == "ok":
                reply = encode(join_ref, ref, topic, f"{family}_reply",
                               reply_payload("ok", response))
            else:
                reply = encode(join_ref, ref, topic, f"{family}_reply",
                               reply_payload("error", reason_payload(response)))
        except Exception:
            log.exception("join handler of %s failed for topic %s", channel.pattern, topic)
            status = "error"
            reply = encode(join_ref, ref, topic, f"{family}_reply",
                           reply_payload("error", {"reason": "join crashed"}))
        finally:
            state.busy = False
        if status != "ok":
            if self.channels.get(topic) is state:
                del self.channels[topic]
            presence.untrack(state)
            await self.send_text(reply)
            return
        state.socket = socket
        assert self.mailbox is not None
        # Subscribe before reading the presence list: a change after the read arrives as a
        # diff, and the clients' sync applies diffs idempotently.
        self.mailbox.subscribe(state.bus_topic)
        self.by_bus[state.bus_topic] = state
        state.joined = True
        frames = [reply, encode(join_ref, None, topic, "presence_state",
                                presence.list_topic(topic))]
        frames.extend(state.outbox)
        state.outbox.clear()
        await self.send_many(frames)

    async def _leave(self, join_ref: Any, ref: Any, topic: str, family: str) -> None:
        state = self.channels.get(topic)
        if state is None or not state.joined:
            await self.reply(join_ref, ref, topic, family, "error", {"reason": "unmatched topic"})
            return
        reply = encode(join_ref, ref, topic, f"{family}_reply", reply_payload("ok", {}))
        await self._end_channel(state, close_frame=True, before_close=[reply])

    async def _event(self, join_ref: Any, ref: Any, topic: str, event: str, payload: Any) -> None:
        state = self.channels.get(topic)
        if state is None or not state.joined:
            family = self.family or "hb"
            await self.reply(join_ref, ref, topic, family, "error", {"reason": "unmatched topic"})
            return
        family = state.family
        handler = state.channel.event_handlers.get(event)
        if handler is None:
            await self.reply(join_ref, ref, topic, family, "error",
                             {"reason": f"unhandled event {event!r}"})
            return
        if not isinstance(payload, dict):
            await self.reply(join_ref, ref, topic, family, "error",
                             {"reason": "payload must be a JSON object"})
            return
        state.busy = True
        try:
            result = await _call(handler, payload, state.socket)
            reply, stop, socket = _normalize_event(result, state.socket)
            reply_frame = None if reply is None else encode(
                join_ref, ref, topic, f"{family}_reply", reply_payload(*reply))
        except Exception:
            log.exception("handler of %r on topic %s failed", event, topic)
            state.busy = False
            await self._crash(state)
            return
        state.busy = False
        state.socket = socket
        frames = list(state.outbox)
        state.outbox.clear()
        if stop:
            await self._end_channel(state, close_frame=True,
                                    before_close=frames + ([reply_frame] if reply_frame else []))
            return
        if reply_frame is not None:
            frames.append(reply_frame)
        if frames:
            await self.send_many(frames)

    async def _crash(self, state: ChannelState) -> None:
        # Phoenix's channel_crash: this topic gets *_error (the client rejoins it); the
        # connection and its other topics go on.
        error = encode(state.join_ref, state.join_ref, state.topic, f"{state.family}_error",
                       {"reason": "channel_crash"})
        await self._end_channel(state, close_frame=False, before_close=[error])

    async def _end_channel(self, state: ChannelState, close_frame: bool = False,
                           before_close: Optional[list[str]] = None) -> None:
        """Ends a channel however it ends: leave handler, presences, unsubscribe, frames."""
        if self.by_bus.get(state.bus_topic) is state:
            del self.by_bus[state.bus_topic]
            if self.mailbox is not None and not self.mailbox.closed:
                self.mailbox.unsubscribe(state.bus_topic)
        was_joined = state.joined
        state.joined = False
        if was_joined and state.channel.leave_handler is not None:
            state.busy = True
            try:
                await _call(state.channel.leave_handler, state.topic, state.socket)
            except Exception:
                log.exception("leave handler of topic %s failed", state.topic)
            finally:
                state.busy = False
        # Only now: the leave handler may still push to this socket or untrack its presences.
        if self.channels.get(state.topic) is state:
            del self.channels[state.topic]
        presence.untrack(state)
        frames = list(state.outbox) + list(before_close or [])
        state.outbox.clear()
        if close_frame:
            frames.append(encode(state.join_ref, state.join_ref, state.topic,
                                 f"{state.family}_close", {}))
        if frames and not self.ending:
            await self.send_many(frames)

