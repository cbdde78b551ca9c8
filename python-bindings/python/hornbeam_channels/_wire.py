"""Frames and refs: how channel traffic is encoded.

Every frame is the JSON text of ``[join_ref, ref, topic, event, payload]``. How channel traffic
rides on the bus (bus topics, envelopes) is in ``_envelope.py``; ``topic_bus`` and ``session_bus``
are re-exported here.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import time
from typing import Any, Optional

from ._envelope import session_bus, topic_bus

__all__ = ["MAX_TOPIC_LEN", "check_topic", "encode", "new_ref", "new_session_id", "reason_payload",
           "reply_payload", "session_bus", "topic_bus"]

#: Longest channel topic a client may join (characters); presence keys share the bound.
MAX_TOPIC_LEN = 512

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def encode(join_ref: Any, ref: Any, topic: str, event: str, payload: Any) -> str:
    """The JSON text frame ``[join_ref, ref, topic, event, payload]``."""
    return _dumps([join_ref, ref, topic, event, payload])


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
