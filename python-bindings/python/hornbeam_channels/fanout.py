"""The topic fan-out of one process: one bus mailbox and one task per topic, not per connection.

A connection *joins* a topic's local group with its :class:`~hornbeam_channels.outbox.Outbox`.
For each topic that has members, the process (its event loop) holds one mailbox subscribed to
the topic's bus topic and one task that receives what is published there, turns each message into
its text frame once, and writes that frame to every member directly, in the same step::

    rooms = Fanout(on_lag=lag_notice(lambda n: json.dumps({"type": "lagged", "dropped": n})))

    outbox = Outbox.for_asgi(send, name="chat connection")
    rooms.join("chat:lobby", outbox)
    try:
        ...   # read the socket; publish("chat:lobby", text) reaches every member, in every process
    finally:
        rooms.leave_all(outbox)

This is Phoenix's local dispatch with its broadcast "fastlane": a message costs one wake-up of
one task and one encoding per process, then one send per member, where a mailbox and a pump task
per connection would cost one wake-up (and one decode) per connection. Across processes (any
shared backend: ``HORNBEAM_URL``) each process subscribes once per topic, so the bus carries a
message once per process whatever the number of connections.

Sending
    A member's send runs to completion in the fan-out task while its client keeps up. A member
    whose send has to wait gets its own writer (the outbox's) and later frames queue behind it;
    past the outbox's bound the member is dropped with a close 1008 and removed from every group
    of this fan-out (see :mod:`hornbeam_channels.outbox`). No member ever holds the others back.

Lagging
    The topic's mailbox is bounded. When the task fell so far behind that the mailbox dropped
    messages, the lag policy (the required ``on_lag`` argument) says what every member gets
    instead: :func:`lag_skip` (nothing; the loss is logged), :func:`lag_notice` (one frame made
    once and sent to all), or any ``on_lag(topic, dropped) -> Optional[str]``.

Members and topics
    ``join`` and ``leave`` take effect at once, also while the task is between two sends: a frame
    is written to the members present when it is handled. A topic whose last member leaves drops
    its mailbox and its task at once. Frames can skip one member: a broadcast envelope names the
    member key it excludes (``broadcast_from``).

Publishing
    ``hornbeam_erlang.publish(bus_topic, data)`` from anywhere reaches every member, in every
    process. :meth:`Fanout.publish` does the same and then hands this process's members what
    their topic's mailbox holds at once, in the publisher's own step (Zenith's loop of sends),
    so what a handler publishes reaches its local members, its own connection included, before
    anything it sends next: read-your-writes order within a process, and no task switch.

Threads and loops
    A fan-out serves the event loop it is used from; several loops (threads) each get their own
    groups. Its methods are not thread-safe: call them from the loop's thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Callable, Hashable, Iterator, NamedTuple, Optional

import hornbeam_erlang as hb

from ._fastlane import Wire
from .outbox import Outbox

__all__ = ["Fanout", "Frame", "LagPolicy", "Render", "Skip", "lag_notice", "lag_skip",
           "next_batch", "render_text"]

log = logging.getLogger("hornbeam_channels")


class Frame(NamedTuple):
    """What a bus message becomes: the text sent to every member, except those whose key is
    ``exclude`` (None: nobody is left out) and those whose ``skip`` filter refuses it; ``tag`` is
    the publisher's own mark for such filters (a sequence number, say)."""

    text: str
    exclude: Optional[Hashable] = None
    tag: Any = None


#: A member's own filter: True skips the frame for that member.
Skip = Callable[[Frame], bool]


#: Turns the data of one bus message into its frame, or None to send nothing.
Render = Callable[[Any], Optional[Frame]]
#: ``on_lag(topic, dropped)``: the frame every member gets after ``dropped`` messages were lost.
LagPolicy = Callable[[str, int], Optional[str]]


def render_text(data: Any) -> Optional[Frame]:
    """The default render: a ``str`` is sent as it is (the publisher encoded it once), a
    ``[text, exclude]`` pair leaves out the member with key ``exclude``, anything else is sent
    as JSON."""
    if isinstance(data, str):
        return Frame(data)
    if isinstance(data, (list, tuple)) and len(data) == 2 and isinstance(data[0], str):
        return Frame(data[0], data[1])
    return Frame(json.dumps(data))


def lag_skip(topic: str, dropped: int) -> None:
    """Lag policy: members get nothing for the lost messages (the fan-out logs the loss)."""
    return None


def lag_notice(make: Callable[[int], str]) -> LagPolicy:
    """Lag policy: every member gets ``make(dropped)``, made once per loss."""
    def policy(topic: str, dropped: int) -> Optional[str]:
        return make(dropped)
    return policy


async def next_batch(mailbox: hb.Mailbox) -> Optional[list[hb.Message]]:
    """Waits until ``mailbox`` holds something, then takes all it holds (lag notices included,
    in order); None once the mailbox is closed. The loop of a task that serves one mailbox::

        while (batch := await next_batch(mailbox)) is not None:
            ...

    Cancelling it loses nothing (``recv`` takes a message only once it is ready)."""
    try:
        first = await mailbox.recv()
        return [first, *mailbox.drain()]
    except hb.MailboxClosed:
        return None


class _Group:
    """One topic's members in one loop, with its mailbox and its task."""

    __slots__ = ("topic", "members", "mailbox", "task")

    def __init__(self, topic: str, mailbox: hb.Mailbox) -> None:
        self.topic = topic
        self.members: dict[Outbox, tuple[Hashable, Optional[Skip]]] = {}
        self.mailbox = mailbox
        self.task: Optional[asyncio.Task[None]] = None


class Fanout:
    """Topic groups of local members, each served by one mailbox and one task.

    ``on_lag``: the lag policy (required: see the module docs). ``render``: turns bus data into
    a :class:`Frame` (:func:`render_text` by default). ``bus_topic``: the bus topic a topic
    rides on (the topic itself by default). ``capacity`` and ``max_bytes``: the bound of each
    topic's mailbox (the engine's defaults when None).
    """

    def __init__(self, *, on_lag: LagPolicy, render: Render = render_text,
                 bus_topic: Callable[[str], str] = str, capacity: Optional[int] = None,
                 max_bytes: Optional[int] = None, name: str = "fan-out") -> None:
        self.on_lag = on_lag
        self.render = render
        self.bus_topic = bus_topic
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.name = name
        self._groups: dict[tuple[asyncio.AbstractEventLoop, str], _Group] = {}
        # The topics each member joined here, so one that is dropped leaves all of them.
        self._joined: dict[Outbox, set[tuple[asyncio.AbstractEventLoop, str]]] = {}

    def join(self, topic: str, member: Outbox, key: Hashable = None, *,
             skip: Optional[Skip] = None) -> None:
        """Adds ``member`` to ``topic``'s group (again: updates its ``key`` and ``skip``).

        ``key`` names the member for frames that exclude one (``broadcast_from``); None is never
        excluded. ``skip(frame)``, when given, is asked for each frame: True leaves this member
        out (a connection that already sent what a frame carries, from history, say).
        """
        loop = asyncio.get_running_loop()
        gk = (loop, topic)
        group = self._groups.get(gk)
        if group is None:
            if loop.is_closed():
                raise RuntimeError("the event loop is closed")
            mailbox = hb.Mailbox(self.capacity, self.max_bytes)
            mailbox.subscribe(self.bus_topic(topic))
            group = _Group(topic, mailbox)
            group.task = loop.create_task(self._run(group), name=f"{self.name} {topic}")
            self._groups[gk] = group
        group.members[member] = (key, skip)
        self._joined.setdefault(member, set()).add(gk)

    def leave(self, topic: str, member: Outbox) -> None:
        """Removes ``member`` from ``topic``'s group (no-op when it is not in it); the last
        member out closes the topic's mailbox and ends its task."""
        self._leave((asyncio.get_running_loop(), topic), member)

    def leave_all(self, member: Outbox) -> None:
        """Removes ``member`` from every group it joined (its connection is ending)."""
        for gk in list(self._joined.get(member, ())):
            self._leave(gk, member)

    def _leave(self, gk: tuple[asyncio.AbstractEventLoop, str], member: Outbox) -> None:
        group = self._groups.get(gk)
        if group is not None and group.members.pop(member, _MISSING) is not _MISSING:
            if not group.members:
                self._close(gk, group)
        joined = self._joined.get(member)
        if joined is not None:
            joined.discard(gk)
            if not joined:
                del self._joined[member]

    def _close(self, gk: tuple[asyncio.AbstractEventLoop, str], group: _Group) -> None:
        if self._groups.get(gk) is group:
            del self._groups[gk]
        group.mailbox.close()
        task, group.task = group.task, None
        # Dropped, not only cancelled: the cancelled task's traceback holds its frame, which
        # holds the group; a reference back would keep the mailbox (and its descriptor) until
        # the next garbage collection.
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def publish(self, topic: str, data: Any) -> int:
        """Publishes ``data`` on ``topic``'s bus topic, then delivers this loop's share at once
        (see "Publishing"); returns what ``hornbeam_erlang.publish`` returns."""
        delivered = hb.publish(self.bus_topic(topic), data)
        self.flush(topic)
        return delivered

    def flush(self, topic: str) -> None:
        """Delivers what ``topic``'s mailbox holds to the members now, in the caller's step, in
        the order the task would have (it takes messages only synchronously, so nothing it
        already took is overtaken). No-op outside an event loop or without members."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        group = self._groups.get((loop, topic))
        if group is not None:
            try:
                batch = group.mailbox.drain()
            except hb.MailboxClosed:
                return
            if batch:
                self._deliver(group, batch)

    def topics(self) -> list[str]:
        """The topics with members in the running loop (sorted)."""
        loop = asyncio.get_running_loop()
        return sorted(t for (lp, t) in self._groups if lp is loop)

    def members(self, topic: str) -> list[Outbox]:
        """The members of ``topic`` in the running loop, in join order."""
        group = self._groups.get((asyncio.get_running_loop(), topic))
        return [] if group is None else list(group.members)

    def mailbox(self, topic: str) -> Optional[hb.Mailbox]:
        """The mailbox that serves ``topic`` in the running loop (None without members)."""
        group = self._groups.get((asyncio.get_running_loop(), topic))
        return None if group is None else group.mailbox

    def __iter__(self) -> Iterator[str]:
        return iter(self.topics())

    async def _run(self, group: _Group) -> None:
        mailbox = group.mailbox
        members = group.members
        while (batch := await next_batch(mailbox)) is not None:
            self._deliver(group, batch)
            if not members:
                return

    def _deliver(self, group: _Group, batch: list[hb.Message]) -> None:
        render = self.render
        members = group.members
        for msg in batch:
            lagged = msg.lagged
            if lagged:
                log.warning("%s: topic %s fell behind, %d messages dropped",
                            self.name, group.topic, lagged)
                text = self.on_lag(group.topic, lagged)
                if text is None:
                    continue
                frame = Frame(text)
            else:
                try:
                    rendered = render(msg.message)
                except Exception:
                    log.exception("%s: cannot render a message of %s", self.name, group.topic)
                    continue
                if rendered is None:
                    continue
                frame = rendered
            self._send(members, frame)

    def _send(self, members: dict[Outbox, tuple[Hashable, Optional[Skip]]], frame: Frame) -> None:
        text, exclude, _ = frame
        wire = Wire(text)  # its frame's bytes are made once, if some member takes the fastlane
        gone: Optional[list[Outbox]] = None
        # A snapshot: a send never runs member code, but a drop ends the member's connection,
        # whose cleanup may leave groups, this one included.
        for member, (key, skip) in tuple(members.items()):
            if exclude is not None and key == exclude:
                continue
            if skip is not None and skip(frame):
                continue
            if not member.offer(wire):
                if gone is None:
                    gone = []
                gone.append(member)
        if gone:
            for member in gone:
                self.leave_all(member)


_MISSING = object()
