"""The WebSocket chat with its room fan-out counted, for ``test_fanout_workers_redis.py``.

Not a test module. Each worker process counts in the shared store how many times its room
fan-out received (rendered) a message that carries ``COUNT_MARK``, and records which workers
have members in which room, so a test can compare the bus deliveries with the connections.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import hornbeam_erlang as hb
from hornbeam_channels import Frame, Outbox

import examples.websocket_chat.app as chat

COUNT_MARK = "count-me"
application = chat.application

_render = chat.rooms.render
_join = chat.rooms.join


def _counting_render(data: Any) -> Optional[Frame]:
    if isinstance(data, str) and COUNT_MARK in data:
        hb.state_incr(f"fanout-count:renders:{os.getpid()}")
    return _render(data)


def _recording_join(topic: str, member: Outbox, key: Any = None, **kw: Any) -> None:
    hb.state_incr(f"fanout-count:members:{topic}:{os.getpid()}")
    _join(topic, member, key, **kw)


chat.rooms.render = _counting_render
chat.rooms.join = _recording_join  # type: ignore[method-assign]
