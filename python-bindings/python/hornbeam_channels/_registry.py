"""Channel definitions and the topic registry.

A pattern is split on ``:``; ``*`` matches exactly one segment and the segment counts must be
equal. Each ``*`` gives a topic param named after the segment before it plus ``_id``
(``room:*`` -> ``room_id``; ``chat:*:messages:*`` -> ``chat_id``, ``messages_id``); a leading
``*`` is ``id``. An exact pattern beats a wildcard; among wildcards the one with fewer ``*``
wins, then the one defined first.
"""

from __future__ import annotations

import threading
from typing import Any, Awaitable, Callable, Optional, TypeVar, Union

from ._socket import Socket

JoinResult = Union[tuple[str, Any], tuple[str, Any, Socket]]
EventResult = Union[tuple[str, Socket], tuple[str, Any, Socket], tuple[str, Any, Any, Socket]]

JoinHandler = Callable[[str, dict[str, str], dict[str, Any], Socket],
                       Union[JoinResult, Awaitable[JoinResult]]]
LeaveHandler = Callable[[str, Socket], Union[None, Awaitable[None]]]
EventHandler = Callable[[Any, Socket], Union[EventResult, Awaitable[EventResult]]]

J = TypeVar("J", bound=JoinHandler)
L = TypeVar("L", bound=LeaveHandler)
E = TypeVar("E", bound=EventHandler)


def _param_names(segments: list[str]) -> list[Optional[str]]:
    names: list[Optional[str]] = []
    used: set[str] = set()
    for i, seg in enumerate(segments):
        if seg != "*":
            names.append(None)
            continue
        prev = segments[i - 1] if i > 0 else None
        base = "id" if prev is None or prev == "*" else f"{prev}_id"
        name, n = base, 2
        while name in used:  # `room:*:room:*` keeps both values
            name, n = f"{base}_{n}", n + 1
        used.add(name)
        names.append(name)
    return names


class Channel:
    """A topic pattern and its handlers; made by :func:`channel`, filled by the decorators."""

    def __init__(self, pattern: str) -> None:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError("a channel pattern must be a non-empty string")
        self.pattern = pattern
        self.segments = pattern.split(":")
        self.wildcards = self.segments.count("*")
        self._names = _param_names(self.segments)
        self.join_handler: Optional[JoinHandler] = None
        self.leave_handler: Optional[LeaveHandler] = None
        self.event_handlers: dict[str, EventHandler] = {}

    def on_join(self, func: J) -> J:
        """Decorates ``f(topic, topic_params, params, socket)``.

        It returns ``('ok', reply)``, ``('ok', reply, socket)`` or ``('error', reason)``; it may
        be a coroutine function. Without a join handler every join is accepted.
        """
        self.join_handler = func
        return func

    def on_leave(self, func: L) -> L:
        """Decorates ``f(topic, socket)``, called however the channel ends (leave, ``stop``, a
        second join of the topic, the connection closing or timing out)."""
        self.leave_handler = func
        return func

    def on(self, event: str) -> Callable[[E], E]:
        """Decorates ``f(payload, socket)`` for client event ``event``.

        It returns ``('reply', response, socket)``, ``('noreply', socket)`` or
        ``('stop', reason, socket)``; ``('reply', ('error', response), socket)`` replies with
        status ``error``, and ``('stop', reason, reply, socket)`` replies before closing.
        """
        if not isinstance(event, str) or not event:
            raise ValueError("an event name must be a non-empty string")

        def decorator(func: E) -> E:
            self.event_handlers[event] = func
            return func

        return decorator

    def match(self, topic: str) -> Optional[dict[str, str]]:
        """The topic params when ``topic`` matches this pattern, else None."""
        parts = topic.split(":")
        if len(parts) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for seg, part, name in zip(self.segments, parts, self._names):
            if name is not None:
                params[name] = part
            elif seg != part:
                return None
        return params

    def __repr__(self) -> str:
        return f"Channel({self.pattern!r})"


_lock = threading.Lock()
_channels: dict[str, Channel] = {}


def channel(pattern: str) -> Channel:
    """Defines (or redefines) the channel for ``pattern`` and returns it for its decorators."""
    ch = Channel(pattern)
    with _lock:
        _channels[pattern] = ch
    return ch


def get_channel(pattern: str) -> Optional[Channel]:
    """The channel defined for ``pattern``, if any."""
    return _channels.get(pattern)


def list_channels() -> dict[str, Channel]:
    """Every defined channel, by pattern."""
    return dict(_channels)


def unregister(pattern: str) -> None:
    """Forgets the channel for ``pattern`` (no-op when there is none)."""
    with _lock:
        _channels.pop(pattern, None)


def find(topic: str) -> Optional[tuple[Channel, dict[str, str]]]:
    """The channel that serves ``topic`` and its topic params, or None (``unmatched topic``)."""
    exact = _channels.get(topic)
    if exact is not None and exact.wildcards == 0:
        return exact, {}
    best: Optional[tuple[Channel, dict[str, str]]] = None
    for ch in list(_channels.values()):
        if ch.wildcards == 0 or (best is not None and ch.wildcards >= best[0].wildcards):
            continue
        params = ch.match(topic)
        if params is not None:
            best = (ch, params)
    return best
