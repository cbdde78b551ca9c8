"""Presence: who is on a topic, kept in the engine's store and announced to the topic's clients.

Hornbeam's presence API on the Hornbeam engine::

    from hornbeam_presence import Presence

    @room.on_join
    def join(topic, topic_params, params, socket):
        Presence(topic).track(socket, f"user:{params['name']}", {"name": params["name"]})
        return ("ok", {})

Each tracked meta gets a ref, as both ``phx_ref`` (for the ``phoenix`` client) and ``hb_ref``
(for ``hornbeam.js``), which the clients' ``syncState``/``syncDiff`` match metas by; an update
adds ``phx_ref_prev``. Every change is broadcast to the topic as ``presence_diff``
(``{"joins": {...}, "leaves": {...}}``), and a client that joins a topic gets ``presence_state``
(``{key: {"metas": [...]}}``) right after its join reply.

A presence belongs to the channel (socket) that tracked it and goes when that channel ends,
however it ends: leave, ``stop``, a crash, a second join, the connection closing or missing its
heartbeats. Entries live in the store (``hb:presence:*`` keys), so :meth:`Presence.list` gives the
same answer in every process sharing the engine; they carry a TTL that their connection
refreshes, so those of a process that died unannounced expire on their own.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from hornbeam_channels import Socket, owner_of
from hornbeam_channels import presence_store as _store
from hornbeam_channels.presence_store import PRESENCE_TTL, Meta, MetaUpdate, Owner

__all__ = ["PRESENCE_TTL", "Presence", "list_presences", "track", "untrack"]


def _owner(socket: Socket) -> Optional[Owner]:
    return owner_of(socket)


class Presence:
    """The presences of one topic."""

    def __init__(self, topic: str) -> None:
        if not isinstance(topic, str) or not topic:
            raise ValueError("a presence topic must be a non-empty string")
        self.topic = topic

    def track(self, socket: Socket, key: str, meta: Optional[Meta] = None) -> Optional[str]:
        """Tracks ``key`` with ``meta`` for ``socket``'s channel (a key may have several metas,
        one per tracking channel). Works from any handler of this process, and outside any
        handler. Returns the meta's ref, or None when the channel has already ended (nothing is
        tracked then)."""
        owner = _owner(socket)
        if owner is None:
            _store.check_key(key)
            return None
        return _store.track(owner, self.topic, key, meta)

    def untrack(self, socket: Socket, key: Optional[str] = None) -> int:
        """Removes what ``socket``'s channel tracks under ``key`` on this topic (every key when
        None). Returns how many metas were removed."""
        owner = _owner(socket)
        if owner is None:
            return 0
        return _store.untrack(owner, self.topic, None if key is None else _store.check_key(key))

    def untrack_all(self, socket: Socket) -> int:
        """Removes everything ``socket``'s channel tracks on this topic."""
        return self.untrack(socket)

    def update(self, socket: Socket, key: str, meta: MetaUpdate) -> Optional[str]:
        """Replaces ``socket``'s metas of ``key`` with ``meta`` (a dict, or a function from the
        old meta to the new one). Returns the new ref, or None when nothing was tracked."""
        owner = _owner(socket)
        if owner is None:
            return None
        return _store.update(owner, self.topic, key, meta)

    def list(self) -> dict[str, dict[str, list[Meta]]]:
        """``{key: {"metas": [meta, ...]}}`` for every key on the topic, from the store."""
        return _store.list_topic(self.topic)

    def get(self, key: str) -> Optional[Dict[str, List[Meta]]]:
        """``{"metas": [...]}`` for ``key``, or None when nobody tracks it."""
        return _store.get_key(self.topic, key)

    def __repr__(self) -> str:
        return f"Presence({self.topic!r})"


def track(topic: str, socket: Socket, key: str, meta: Optional[Meta] = None) -> Optional[str]:
    """``Presence(topic).track(socket, key, meta)``."""
    return Presence(topic).track(socket, key, meta)


def untrack(topic: str, socket: Socket, key: Optional[str] = None) -> int:
    """``Presence(topic).untrack(socket, key)``."""
    return Presence(topic).untrack(socket, key)


def list_presences(topic: str) -> dict[str, dict[str, list[Any]]]:
    """``Presence(topic).list()``."""
    return Presence(topic).list()
