"""Presence entries in the engine's store, and the diffs broadcast when they change.

The storage half of :mod:`hornbeam_presence` (which wraps it in Hornbeam's ``Presence`` API):
public so that presence needs nothing private of the channels layer.

One store entry per tracked meta, under
``hb:presence:<len(topic)>:<topic><len(key)>:<key>:<ref>`` (the lengths make every prefix
unambiguous, whatever characters topics and keys hold), holding
``{"key": key, "meta": meta, "owner": channel_id}``. Because the entries live in the store, every
process reads the same list; because each has a TTL that its connection refreshes while it lives,
the entries of a process that died without cleaning up vanish on their own after
:data:`PRESENCE_TTL` seconds. A connection that ends in any other way removes its entries at once
and broadcasts the leaves.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol, Union

import hornbeam_erlang as hb

from . import _envelope as envelope
from ._wire import MAX_TOPIC_LEN, encode, new_ref

#: Seconds an entry outlives its last refresh; connections refresh a third of the way through.
PRESENCE_TTL = 60.0
_PREFIX = "hb:presence:"

Meta = dict[str, Any]
MetaUpdate = Union[Meta, Callable[[Meta], Meta]]


class Owner(Protocol):
    """What owns presence entries: one joined channel of a connection."""

    @property
    def channel_id(self) -> str: ...

    presences: dict[str, tuple[str, str]]


def topic_prefix(topic: str) -> str:
    """The store prefix of every entry of ``topic``."""
    return f"{_PREFIX}{len(topic)}:{topic}"


def key_prefix(topic: str, key: str) -> str:
    """The store prefix of every entry of ``key`` on ``topic``."""
    return f"{topic_prefix(topic)}{len(key)}:{key}:"


def check_key(key: Any) -> str:
    """``key`` when it can be a presence key; ValueError otherwise."""
    if not isinstance(key, str) or not key:
        raise ValueError("a presence key must be a non-empty string")
    if len(key) > MAX_TOPIC_LEN:
        raise ValueError(f"presence key too long ({len(key)} characters, limit {MAX_TOPIC_LEN})")
    return key


def _check_meta(meta: Any) -> Meta:
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise TypeError(f"presence meta must be a dict, not {type(meta).__name__}")
    return meta


def publish_diff(topic: str, joins: dict[str, Any], leaves: dict[str, Any]) -> None:
    """Broadcasts ``presence_diff`` to everyone joined to ``topic``."""
    if not joins and not leaves:
        return
    frame = encode(None, None, topic, "presence_diff", {"joins": joins, "leaves": leaves})
    hb.publish(envelope.topic_bus(topic), envelope.broadcast(frame))


def _add(group: dict[str, Any], key: str, meta: Meta) -> None:
    group.setdefault(key, {"metas": []})["metas"].append(meta)


def list_topic(topic: str) -> dict[str, dict[str, list[Meta]]]:
    """``{key: {"metas": [...]}}`` for ``topic``, keys sorted, metas in the order tracked."""
    keys = hb.state_keys(topic_prefix(topic))
    if not keys:
        return {}
    values = hb.state_get_multi(keys)
    out: dict[str, dict[str, list[Meta]]] = {}
    for k in keys:
        v = values.get(k)
        if isinstance(v, dict) and "key" in v:
            _add(out, v["key"], v["meta"])
    return dict(sorted(out.items()))


def get_key(topic: str, key: str) -> Optional[dict[str, list[Meta]]]:
    """``{"metas": [...]}`` for one key of ``topic``, or None when it has none."""
    keys = hb.state_keys(key_prefix(topic, check_key(key)))
    values = hb.state_get_multi(keys) if keys else {}
    metas = []
    for k in keys:
        v = values.get(k)
        if isinstance(v, dict):
            metas.append(v["meta"])
    return {"metas": metas} if metas else None


def track(owner: Owner, topic: str, key: str, meta: Optional[Meta]) -> str:
    """Stores one meta for ``key`` owned by ``owner``, broadcasts the join; returns its ref."""
    key = check_key(key)
    ref = new_ref()
    full = dict(_check_meta(meta))
    full["phx_ref"] = ref
    full["hb_ref"] = ref
    skey = key_prefix(topic, key) + ref
    hb.state_set(skey, {"key": key, "meta": full, "owner": owner.channel_id}, ttl=PRESENCE_TTL)
    owner.presences[skey] = (topic, key)
    publish_diff(topic, {key: {"metas": [full]}}, {})
    return ref


def _owned(owner: Owner, topic: Optional[str], key: Optional[str]) -> list[str]:
    return [s for s, (t, k) in owner.presences.items()
            if (topic is None or t == topic) and (key is None or k == key)]


def untrack(owner: Owner, topic: Optional[str] = None, key: Optional[str] = None) -> int:
    """Removes the owner's entries (of ``topic``, of ``key``; all when None); broadcasts the
    leaves, one diff per topic. Returns how many metas were removed."""
    skeys = _owned(owner, topic, key)
    if not skeys:
        return 0
    values = hb.state_get_multi(skeys)
    leaves: dict[str, dict[str, Any]] = {}
    for s in skeys:
        t, k = owner.presences.pop(s)
        hb.state_delete(s)
        v = values.get(s)
        if isinstance(v, dict):
            _add(leaves.setdefault(t, {}), k, v["meta"])
    for t, group in leaves.items():
        publish_diff(t, {}, group)
    return len(skeys)


def update(owner: Owner, topic: str, key: str, meta: MetaUpdate) -> Optional[str]:
    """Replaces the owner's metas of ``key`` (a dict, or a function of the old meta); each gets a
    new ref and ``phx_ref_prev``. Broadcasts joins and leaves; returns the new ref, or None when
    the owner tracks nothing under ``key``."""
    skeys = _owned(owner, topic, check_key(key))
    if not skeys:
        return None
    values = hb.state_get_multi(skeys)
    joins: dict[str, Any] = {}
    leaves: dict[str, Any] = {}
    ref = None
    for s in skeys:
        old = values.get(s)
        old_meta: Meta = old["meta"] if isinstance(old, dict) else {}
        base = meta(dict(old_meta)) if callable(meta) else meta
        ref = new_ref()
        new = dict(_check_meta(base))
        new["phx_ref"] = ref
        new["hb_ref"] = ref
        if "phx_ref" in old_meta:
            new["phx_ref_prev"] = old_meta["phx_ref"]
        nkey = key_prefix(topic, key) + ref
        hb.state_set(nkey, {"key": key, "meta": new, "owner": owner.channel_id}, ttl=PRESENCE_TTL)
        hb.state_delete(s)
        del owner.presences[s]
        owner.presences[nkey] = (topic, key)
        _add(joins, key, new)
        if old_meta:
            _add(leaves, key, old_meta)
    publish_diff(topic, joins, leaves)
    return ref


def refresh(owner: Owner) -> None:
    """Extends the TTL of the owner's entries (they are still alive)."""
    for s in list(owner.presences):
        hb.state_expire(s, PRESENCE_TTL)
