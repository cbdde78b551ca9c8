"""The broadcast fastlane: a text frame encoded once, written to each connection's transport.

An ASGI ``send`` of a text frame costs several coroutines, the WebSocket library's frame object
and its serialisation, for every connection; a broadcast to N members pays that N times for the
same bytes. When the ``send`` is uvicorn's own WebSocket protocol (its default implementation,
``websockets-sansio``), the frame is built once per message (:class:`Wire`) and written to each
member's transport directly. This is Phoenix's "fastlane": encode once per serializer, write to
each socket.

Compression: a connection that negotiated ``permessage-deflate`` (browsers offer it, uvicorn
accepts it by default) has its own compressor state, so its compressed frames cannot be shared.
RFC 7692 lets a sender leave any message uncompressed (RSV1 clear), which changes no state on
either side: frames under :data:`COMPRESS_MIN` bytes take the lane uncompressed (as Node's
``ws`` does below its 1 KiB threshold: deflate gains little on small frames and costs the most
per byte there); larger ones go through uvicorn, compressed. A connection with any other
extension never takes the lane.

The lane is taken only while the connection is exactly in the state where uvicorn itself would
write the frame at once: handshake done, no close sent or received, not disconnected, and the
transport accepting data (``writable``, which uvicorn clears while the transport's buffer is over
its high-water mark). Otherwise the frame goes through the ASGI ``send`` as usual, so the slow
consumer rule (:mod:`hornbeam_channels.outbox`), close handling and compression stay uvicorn's.
Any other server, or a wrapped ``send``, simply has no lane.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Optional

__all__ = ["COMPRESS_MIN", "Lane", "Wire", "text_frame"]

#: On a compressed connection, frames of at least this many bytes are left to uvicorn (and so
#: compressed); smaller ones take the lane, uncompressed.
COMPRESS_MIN = 1024

# The state the WebSocket library's protocol is in while open, and its one extension (None
# without the websockets library: then uvicorn's lane cannot exist either).
_OPEN: Any = None
_Deflate: Optional[type] = None
try:
    from websockets.extensions.permessage_deflate import PerMessageDeflate
    from websockets.protocol import State

    _OPEN, _Deflate = State.OPEN, PerMessageDeflate
except ImportError:  # pragma: no cover
    pass

#: The uvicorn protocol class whose ``send`` the lane understands (by module and name, so that
#: importing this module never imports uvicorn).
_PROTOCOL = ("uvicorn.protocols.websockets.websockets_sansio_impl", "WebSocketsSansIOProtocol")
_ATTRS = ("conn", "transport", "writable", "handshake_complete", "close_sent", "disconnected",
          "initial_response")


def text_frame(text: str) -> bytes:
    """One unfragmented, unmasked WebSocket text frame (RFC 6455 5.2) carrying ``text``, as a
    server sends it."""
    data = text.encode()
    n = len(data)
    if n < 126:
        return bytes((0x81, n)) + data
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + data
    return struct.pack("!BBQ", 0x81, 127, n) + data


class Wire:
    """A message's text and, made on first use and shared by every member, its frame."""

    __slots__ = ("text", "_frame")

    def __init__(self, text: str) -> None:
        self.text = text
        self._frame: Optional[bytes] = None

    def frame(self) -> bytes:
        frame = self._frame
        if frame is None:
            frame = self._frame = text_frame(self.text)
        return frame


class Lane:
    """The transport behind an ASGI ``send`` that is uvicorn's WebSocket protocol."""

    __slots__ = ("_proto", "_is_set", "_is_closing", "write", "_limit")

    def __init__(self, proto: Any) -> None:
        self._proto = proto
        self._is_set: Callable[[], bool] = proto.writable.is_set
        self._is_closing: Callable[[], bool] = proto.transport.is_closing
        #: Writes bytes to the transport (call only after :meth:`ready`).
        self.write: Callable[[bytes], None] = proto.transport.write
        # Largest frame the lane takes, known once the handshake chose the extensions.
        self._limit: Optional[int] = None

    @classmethod
    def of(cls, send: Any) -> Optional["Lane"]:
        """The lane of ``send``, or None when it is not uvicorn's protocol's own ``send``."""
        proto = getattr(send, "__self__", None)
        if proto is None or _OPEN is None:
            return None
        kind = type(proto)
        if (kind.__module__, kind.__name__) != _PROTOCOL:
            return None
        if getattr(send, "__func__", None) is not getattr(kind, "send", None):
            return None
        if not all(hasattr(proto, a) for a in _ATTRS) or proto.transport is None:
            return None
        try:
            return cls(proto)
        except AttributeError:
            return None

    def ready(self) -> bool:
        """True when uvicorn would write a text frame to the transport at once (frames up to
        :meth:`limit` bytes may then be written with :attr:`write`)."""
        p = self._proto
        if (not p.handshake_complete or p.close_sent or p.disconnected
                or p.initial_response is not None or not self._is_set() or self._is_closing()):
            return False
        return p.conn.state is _OPEN

    def limit(self) -> int:
        """The largest frame (in bytes) the lane takes: any without extensions, under
        :data:`COMPRESS_MIN` with ``permessage-deflate``, none with another extension. Call only
        after :meth:`ready` (the handshake is done)."""
        limit = self._limit
        if limit is None:
            extensions = self._proto.conn.extensions
            if not extensions:
                limit = 1 << 62
            elif _Deflate is not None and all(isinstance(e, _Deflate) for e in extensions):
                limit = COMPRESS_MIN - 1
            else:
                limit = -1
            self._limit = limit
        return limit
