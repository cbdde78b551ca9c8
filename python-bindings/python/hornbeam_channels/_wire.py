"""Frames, bus topics and refs: how channel traffic is named and encoded.

Every frame is the JSON text of ``[join_ref, ref, topic, event, payload]``. Channel traffic rides
on the engine's bus under a ``hbc:`` prefix, so it never meets an application's own topics:

* ``hbc:t:<topic>`` carries what is broadcast to a channel topic; every connection joined to the
  topic subscribes its mailbox to it;
* ``hbc:c:<session id>`` carries what is pushed to one connection.

A bus message is a short list whose first item says what it is: ``["b", frame, exclude]`` is a
broadcast (``exclude`` is the channel id that must not get it, for ``broadcast_from``);
``["p", join_ref, topic, frame]`` is a push to one joined channel. The frame is encoded once by
the sender, so fan-out costs no JSON work per receiver.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import secrets
import time
from typing import Any, Optional

#: Longest channel topic a client may join (characters); presence keys share the bound.
MAX_TOPIC_LEN = 512

# The bus limits topics to 1 KiB; longer encodings fall back to a digest.
_MAX_BUS_TOPIC_BYTES = 1000

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def encode(join_ref: Any, ref: Any, topic: str, event: str, payload: Any) -> str:
    """The JSON text frame ``[join_ref, ref, topic, event, payload]``."""
    return _dumps([join_ref, ref, topic, event, payload])


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


def new_session_id() -> str:
    """A connection id unique across processes and machines."""
    return secrets.token_hex(12)


_counter = itertools.count()
_pid_tag = f"{os.getpid():x}"


def new_ref() -> str:
    """A presence ref: unique across processes, and ordered by creation time within a process."""
    return f"{time.time_ns():016x}{_pid_tag}{next(_counter):x}{secrets.token_hex(2)}"


def refresh_after_fork() -> None:
    """Re-tags refs with the new pid (refs stay unique across forked workers)."""
    global _pid_tag
    _pid_tag = f"{os.getpid():x}"


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=refresh_after_fork)


def reply_payload(status: str, response: Any) -> dict[str, Any]:
    """The payload of a ``*_reply`` frame."""
    return {"status": status, "response": response if response is not None else {}}


def reason_payload(reason: Any) -> Any:
    """A reply response for an error: a string becomes ``{"reason": ...}``, a dict stays."""
    if isinstance(reason, dict):
        return reason
    return {"reason": reason if isinstance(reason, str) else str(reason)}


def check_topic(topic: Any) -> Optional[str]:
    """Why ``topic`` cannot be joined, or None when it can."""
    if not isinstance(topic, str) or not topic:
        return "topic must be a non-empty string"
    if len(topic) > MAX_TOPIC_LEN:
        return f"topic too long ({len(topic)} characters, limit {MAX_TOPIC_LEN})"
    return None
