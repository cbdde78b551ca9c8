"""The settings shared by the connections of one endpoint."""

from __future__ import annotations

from typing import Any, Callable, Optional

from .asgi import Scope

#: ``on_connect(params, scope)``: False refuses the socket, a dict becomes the initial assigns.
ConnectHook = Callable[[dict[str, str], Scope], Any]


class Options:
    """Settings shared by the connections of one endpoint (see ``asgi_endpoint``)."""

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
        # Characters that may wait for one client before it is dropped as too slow; None: never
        # dropped (what waits is then unbounded).
        self.max_outbox_chars = max_outbox_chars
