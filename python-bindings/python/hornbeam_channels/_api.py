"""``broadcast``, ``broadcast_from`` and ``push``: usable from any handler, any task or thread,
and outside any handler, in any process sharing the engine (``HORNBEAM_URL``)."""

from __future__ import annotations

import threading
from typing import Any, Optional

import hornbeam_erlang as hb

from ._connection import ChannelState, live
from ._socket import Socket
from . import _envelope as envelope
from ._wire import encode


def _check_topic(topic: Any) -> str:
    if not isinstance(topic, str) or not topic:
        raise ValueError("a topic must be a non-empty string")
    return topic


def broadcast(topic: str, event: str, payload: Any) -> int:
    """Sends ``event`` with ``payload`` to every connection joined to ``topic``.

    Returns what ``hornbeam_erlang.publish`` returns (the mailboxes reached).
    """
    frame = encode(None, None, _check_topic(topic), event, payload)
    return int(hb.publish(envelope.topic_bus(topic), envelope.broadcast(frame)))


def broadcast_from(socket: Socket, event: str, payload: Any) -> int:
    """Like :func:`broadcast` to ``socket.topic``, except to ``socket``'s own channel."""
    frame = encode(None, None, _check_topic(socket.topic), event, payload)
    return int(hb.publish(envelope.topic_bus(socket.topic),
                          envelope.broadcast(frame, socket.channel_id)))


def push(socket: Socket, event: str, payload: Any) -> bool:
    """Sends ``event`` with ``payload`` to the one client channel ``socket`` stands for.

    From a handler of that channel the push is sent right after the handler returns (before an
    event's reply, after a join's reply); from elsewhere it goes through the bus, so it reaches
    the connection whichever process holds it. Returns False when the channel is known to be
    gone (left, rejoined or disconnected).
    """
    frame = encode(socket.join_ref, None, _check_topic(socket.topic), event, payload)
    conn = live.get(socket.session_id)
    if conn is not None and conn.thread == threading.get_ident():
        state = conn.channels.get(socket.topic)
        if state is None or state.join_ref != socket.join_ref:
            return False
        if state.busy or not state.joined:
            state.outbox.append(frame)
            return True
    return hb.publish(envelope.session_bus(socket.session_id),
                      envelope.push(socket.join_ref, socket.topic, frame)) > 0


def owner_of(socket: Socket) -> Optional[ChannelState]:
    """The live channel ``socket`` stands for in this process (what owns its presences), or None
    when it has ended or is served by another process."""
    if not isinstance(socket, Socket):
        raise TypeError(f"expected a hornbeam_channels.Socket, not {type(socket).__name__}")
    conn = live.get(socket.session_id)
    if conn is None:
        return None
    state = conn.channels.get(socket.topic)
    if state is None or state.join_ref != socket.join_ref:
        return None
    return state
