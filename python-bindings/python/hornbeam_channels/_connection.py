"""One WebSocket connection: its joined channels and the protocol state machine.

Tasks that serve a connection:

* the reader takes client frames in order and runs the handlers (one frame at a time, so the
  handlers of one connection never race each other);
* the process's topic fan-out (``broadcasts``, :mod:`hornbeam_channels.fanout`) writes what is
  broadcast to a joined topic straight into the connection's outbox, one mailbox and one task per
  topic for every connection of the process;
* the push pump forwards pushes addressed to this connection (its own small mailbox: a push names
  one connection, from this process or any other);
* the watchdog closes a connection that stopped sending (not even heartbeats) and keeps its
  presence entries alive in the store.

Whichever ends first ends the connection (the outbox ending, when the client was dropped as too
slow, counts), and the teardown runs the same way for every ending: each channel's leave handler,
its presences removed (with the leave diffs), its fan-out groups left, the mailbox closed.

Every frame goes out through the connection's bounded outbox (``outbox.py``): no task ever waits
for the client, and a client that lets more than ``max_outbox_chars`` characters pile up is
dropped (close 1008), which ends the connection like any other ending.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Optional
from urllib.parse import parse_qsl

import hornbeam_erlang as hb

from . import _decode
from . import _envelope as envelope
from . import presence_store as presence
from ._options import ConnectHook, Options
from ._ratelimit import TokenBucket
from ._registry import Channel, find
from ._results import call, normalize_event, normalize_join
from ._socket import Socket
from ._wire import check_topic, encode, new_session_id, reason_payload, reply_payload, session_bus
from .asgi import Receive, Scope, Send
from .fanout import Fanout
from .outbox import Outbox

__all__ = ["ChannelState", "ConnectHook", "Connection", "Options", "broadcasts", "live"]

log = logging.getLogger("hornbeam_channels")

#: Connections served by this process, by session id (``push`` looks its target up here).
live: dict[str, "Connection"] = {}

_CONTROL_TOPICS = {"phoenix": "phx", "hornbeam": "hb"}
_JOIN = {"phx_join": "phx", "hb_join": "hb"}
_LEAVE = {"phx_leave": "phx", "hb_leave": "hb"}
RATE_LIMITED = "rate_limited"
TOO_MANY_CHANNELS = "too many channels"


def _resync(topic: str, dropped: int) -> str:
    # Dropped messages may have been presence diffs: a fresh presence_state (made once, for every
    # member: no join_ref, as a broadcast) lets every client's syncState put its list right again.
    return encode(None, None, topic, "presence_state", presence.list_topic(topic))


#: The process's fan-out of channel broadcasts (and presence diffs): one group per topic.
broadcasts = Fanout(on_lag=_resync, render=envelope.read_broadcast, bus_topic=envelope.topic_bus,
                    name="channels")


class ChannelState:
    """A joined (or joining) channel of a connection."""

    __slots__ = ("topic", "join_ref", "family", "channel", "socket", "joined", "busy", "outbox",
                 "presences", "channel_id")

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
        # Checked for every broadcast delivered (broadcast_from), so computed once.
        self.channel_id = socket.channel_id


class _Closed(Exception):
    """The client is gone; sending failed."""


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
        self.mailbox: Optional[hb.Mailbox] = None
        self.thread = threading.get_ident()
        self.loop = asyncio.get_running_loop()
        self.last_seen = self.loop.time()
        self.closed = False
        self.ending = False
        self.bucket = TokenBucket(options.rate_limit, options.rate_burst, self.last_seen)
        # The only writer of the socket after accept. It holds the ASGI send, not the
        # connection: no reference cycle keeps a finished connection (and its mailbox's
        # descriptor) alive until the next garbage collection.
        self.outbox = Outbox.for_asgi(send, name=f"channel connection {self.session_id}",
                                      max_chars=options.max_outbox_chars)

    # ---- sending -------------------------------------------------------------------------

    async def send_text(self, text: str) -> None:
        await self.send_many([text])

    async def send_many(self, frames: list[str]) -> None:
        """Sends ``frames`` in order; raises `_Closed` when the client is gone or was dropped."""
        if self.closed:
            raise _Closed
        outbox = self.outbox
        try:
            for text in frames:  # never waits for the client
                await outbox.send(text)
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
        # What still waits is for a connection that is ending: discarded, writer stopped.
        self.outbox.cancel()
        if self.closed or self.outbox.dropped:  # a dropped client was sent its close already
            self.closed = True
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
                 asyncio.ensure_future(self._watchdog()),
                 asyncio.ensure_future(self.outbox.wait_ended())]
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
                verdict = await call(hook, dict(self.params), self.scope)
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
        broadcasts.leave_all(self.outbox)
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
        """Forwards the pushes addressed to this connection (broadcasts go through the fan-out)."""
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
            for msg in batch:
                if msg.lagged:
                    lagged += msg.lagged
                    continue
                push = envelope.read_push(msg.message)
                if push is None:
                    continue
                state = self.channels.get(push.topic)
                if state is not None and state.join_ref == push.join_ref:
                    if state.joined and not state.busy:
                        frames.append(push.frame)
                    else:
                        state.outbox.append(push.frame)
            if lagged:
                log.warning("connection %s was too slow: %d pushes dropped", self.session_id,
                            lagged)
            if frames:
                await self.send_many(frames)

    # ---- from the client -----------------------------------------------------------------

    def _take_token(self) -> bool:
        """Spends one token of the connection's bucket; False when it is empty (rate limited)."""
        if self.bucket.take(self.loop.time()):
            return True
        refused = self.bucket.refused
        if refused == 1 or refused % 1000 == 0:
            log.warning("connection %s is over its rate limit: %d events refused",
                        self.session_id, refused)
        return False

    @property
    def rate_limited(self) -> int:
        """Events refused so far for the rate limit (for logs and tests)."""
        return self.bucket.refused

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
            frame = _decode.loads(text)
            unpaired = "\\u" in text and _decode.unpaired_surrogate(frame)
        except RecursionError:
            await self.control_error(_decode.MALFORMED + " (nested too deeply)")
            return
        except ValueError:
            await self.control_error(_decode.MALFORMED + " (invalid JSON)")
            return
        if unpaired:
            await self.control_error(_decode.MALFORMED + " (unpaired surrogate in a string)")
            return
        if not isinstance(frame, list) or len(frame) != 5:
            await self.control_error(_decode.MALFORMED)
            return
        join_ref, ref, topic, event, payload = frame
        if not (isinstance(topic, str) and isinstance(event, str) and _decode.is_ref(join_ref)
                and _decode.is_ref(ref)):
            await self.control_error(_decode.MALFORMED + " (topic and event must be strings, refs "
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
                result = await call(channel.join_handler, topic, topic_params, params, socket)
                status, response, socket = normalize_join(result, socket)
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
        # Join the topic's group before reading the presence list: a change after the read
        # arrives as a diff, and the clients' sync applies diffs idempotently. Nothing is sent
        # between the join and the frames below (no await), so the reply comes first.
        broadcasts.join(topic, self.outbox, state.channel_id)
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
            result = await call(handler, payload, state.socket)
            reply, stop, socket = normalize_event(result, state.socket)
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
        if state.joined:
            broadcasts.leave(state.topic, self.outbox)
        was_joined = state.joined
        state.joined = False
        if was_joined and state.channel.leave_handler is not None:
            state.busy = True
            try:
                await call(state.channel.leave_handler, state.topic, state.socket)
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

