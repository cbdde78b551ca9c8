"""The bus envelope of channel traffic: bus topic names and message formats, in one place.

Channel traffic rides on the engine's bus under a ``hbc:`` prefix, so it never meets an
application's own topics:

* ``hbc:t:<topic>`` carries what is broadcast to a channel topic; each process's topic fan-out
  (:mod:`hornbeam_channels.fanout`) subscribes one mailbox to it for all its members;
* ``hbc:c:<session id>`` carries what is pushed to one connection.

A bus message is a short list whose first item says what it is: ``["b", frame, exclude]`` is a
broadcast (``exclude`` is the channel id that must not get it, for ``broadcast_from``);
``["p", join_ref, topic, frame]`` is a push to one joined channel. The frame is encoded once by
the sender, so fan-out costs no JSON work per receiver.
"""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple, Optional

from .fanout import Frame

# The bus limits topics to 1 KiB; longer encodings fall back to a digest.
_MAX_BUS_TOPIC_BYTES = 1000


def _escape(topic: str) -> str:
    # '*' and '>' are bus wildcards when they make up a whole segment; escaping every occurrence
    # (and '%' itself) keeps the mapping one-to-one.
    return topic.replace("%", "%25").replace("*", "%2A").replace(">", "%3E")


def topic_bus(topic: str) -> str:
    """The bus topic that carries broadcasts to channel ``topic``."""
    name = "hbc:t:" + _escape(topic)
    if len(name.encode()) > _MAX_BUS_TOPIC_BYTES:
        name = "hbc:h:" + hashlib.sha256(topic.encode()).hexdigest()
    return name


def session_bus(session_id: str) -> str:
    """The bus topic that carries pushes to one connection."""
    return "hbc:c:" + session_id


def broadcast(frame: str, exclude: Optional[str] = None) -> list[Any]:
    """The envelope of a broadcast of the encoded ``frame``, skipping channel id ``exclude``."""
    return ["b", frame, exclude]


def push(join_ref: Any, topic: str, frame: str) -> list[Any]:
    """The envelope of a push of the encoded ``frame`` to the join ``join_ref`` of ``topic``."""
    return ["p", join_ref, topic, frame]


def read_broadcast(data: Any) -> Optional[Frame]:
    """A broadcast envelope as the fan-out's frame; None for anything else."""
    if isinstance(data, (list, tuple)) and len(data) == 3 and data[0] == "b" \
            and isinstance(data[1], str):
        return Frame(data[1], data[2])
    return None


class Push(NamedTuple):
    """A push envelope, read."""

    join_ref: Any
    topic: str
    frame: str


def read_push(data: Any) -> Optional[Push]:
    """A push envelope, read; None for anything else."""
    if isinstance(data, (list, tuple)) and len(data) == 4 and data[0] == "p" \
            and isinstance(data[2], str) and isinstance(data[3], str):
        return Push(data[1], data[2], data[3])
    return None
