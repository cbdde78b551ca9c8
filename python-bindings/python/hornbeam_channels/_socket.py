"""The channel socket: one joined topic of one connection, plus the handler's assigns."""

from __future__ import annotations

from typing import Any, Mapping, Optional


class Socket:
    """One channel of one connection, as the handlers see it.

    A socket is a value: :meth:`assign` and :meth:`merge_assigns` return a new socket and leave
    this one unchanged, so a handler returns the socket it wants the next handler to receive.
    It can be kept and used later, outside any handler (``push``, ``broadcast_from``, presence):
    it names its connection and join, not a Python object of the connection.

    Attributes:
        topic: the joined topic (``"room:lobby"``).
        join_ref: the client's ref of this join; a rejoin of the topic gets a new one.
        session_id: the connection's id, unique across processes.
        assigns: the handler's own state for this channel.
        connect_params: the query parameters the client connected with (``params`` of the
            JavaScript socket, e.g. a token), shared by every channel of the connection.
    """

    __slots__ = ("topic", "join_ref", "session_id", "assigns", "connect_params")

    topic: str
    join_ref: Optional[str]
    session_id: str
    assigns: dict[str, Any]
    connect_params: dict[str, str]

    def __init__(
        self,
        topic: str = "",
        join_ref: Optional[str] = None,
        session_id: str = "",
        assigns: Optional[Mapping[str, Any]] = None,
        connect_params: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.topic = topic
        self.join_ref = join_ref
        self.session_id = session_id
        self.assigns = dict(assigns or {})
        self.connect_params = dict(connect_params or {})

    @property
    def channel_id(self) -> str:
        """Identifies this join of this connection (what ``broadcast_from`` leaves out)."""
        return f"{self.session_id}/{self.join_ref}"

    def _with_assigns(self, assigns: dict[str, Any]) -> "Socket":
        new = Socket.__new__(Socket)
        new.topic = self.topic
        new.join_ref = self.join_ref
        new.session_id = self.session_id
        new.assigns = assigns
        new.connect_params = self.connect_params
        return new

    def assign(self, key: str, value: Any) -> "Socket":
        """A new socket with ``assigns[key] = value``."""
        assigns = dict(self.assigns)
        assigns[key] = value
        return self._with_assigns(assigns)

    def merge_assigns(self, assigns: Mapping[str, Any]) -> "Socket":
        """A new socket with ``assigns`` merged into its assigns."""
        merged = dict(self.assigns)
        merged.update(assigns)
        return self._with_assigns(merged)

    def __repr__(self) -> str:
        return (
            f"Socket(topic={self.topic!r}, join_ref={self.join_ref!r}, "
            f"session_id={self.session_id!r}, assigns={self.assigns!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Socket):
            return NotImplemented
        return (self.topic, self.join_ref, self.session_id, self.assigns) == (
            other.topic, other.join_ref, other.session_id, other.assigns)

    __hash__ = None  # type: ignore[assignment]
