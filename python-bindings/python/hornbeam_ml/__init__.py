"""Hornbeam's ``hornbeam_ml``: inference results cached in the engine's store.

::

    from hornbeam_ml import cached_inference, cache_stats

    embedding = cached_inference(model.encode, text)            # computed once ...
    embedding = cached_inference(model.encode, text)            # ... then read from the store
    cache_stats()   # {'hits': 1, 'misses': 1, 'hit_rate': 0.5}

The cache and its statistics live in the store, so every worker on the backend (``HORNBEAM_URL``)
shares them.

Keys are ``<cache_prefix>:<32 hex digits>``, a SHA-256 of the input encoded with its types: str,
bytes, bool, int, float, None, lists and tuples (the same key: the store keeps tuples as lists),
dicts (in key order, so insertion order does not matter), and numpy arrays and scalars (their
dtype, shape and bytes) when numpy is installed. Any other input needs an explicit ``cache_key``.

Results are stored as storable values. A numpy array is stored as
``{"__ndarray__": 1, "dtype": str, "shape": [...], "data": bytes}`` (C order) and comes back as an
array of the same dtype and shape, also inside lists and dicts; a numpy scalar comes back as the
Python number it holds. A result that holds arrays is kept as ``{"__hornbeam_ml__": 1, "v": value}``,
any other result as it is. An object with ``tolist()`` (such as a tensor) is stored as that list;
tuples come back as lists. A result of ``None`` is not cached.
Statistics are the counters ``ml_cache_hits`` and ``ml_cache_misses``, as in Hornbeam.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any, Callable, Optional, TypeVar

from hornbeam_erlang import state_get, state_get_multi, state_incr, state_set

__all__ = ["cache_key_for", "cache_stats", "cached_inference"]

T = TypeVar("T")

HITS = "ml_cache_hits"
MISSES = "ml_cache_misses"
_ARRAY = "__ndarray__"
#: A stored result that holds arrays is wrapped as {_WRAPPED: 1, "v": value}, so that a hit on a
#: plain result is one type check, not a walk.
_WRAPPED = "__hornbeam_ml__"


def _numpy() -> Any:
    import sys

    return sys.modules.get("numpy")


def _feed(h: Any, x: Any) -> None:
    """Feeds `x` to the hash with a tag per type, so that 1, 1.0, "1" and b"1" differ."""
    if x is None:
        h.update(b"N")
    elif x is True or x is False:
        h.update(b"T" if x else b"F")
    elif isinstance(x, int):
        s = str(x).encode()
        h.update(b"i%d:" % len(s) + s)
    elif isinstance(x, float):
        h.update(b"f" + struct.pack(">d", x))
    elif isinstance(x, str):
        s = x.encode("utf-8", "surrogatepass")
        h.update(b"s%d:" % len(s) + s)
    elif isinstance(x, (bytes, bytearray, memoryview)):
        b = bytes(x)
        h.update(b"b%d:" % len(b) + b)
    elif isinstance(x, (list, tuple)):
        h.update(b"l%d:" % len(x))
        for item in x:
            _feed(h, item)
    elif isinstance(x, dict):
        parts = []
        for k, v in x.items():
            kh = hashlib.sha256()
            _feed(kh, k)
            parts.append((kh.digest(), v))
        parts.sort(key=lambda p: p[0])
        h.update(b"d%d:" % len(parts))
        for kd, v in parts:
            h.update(kd)
            _feed(h, v)
    else:
        np = _numpy()
        if np is not None and isinstance(x, (np.ndarray, np.generic)):
            a = np.ascontiguousarray(x)
            meta = f"{a.dtype.str}|{a.shape}".encode()
            h.update(b"n%d:" % len(meta) + meta)
            h.update(a.tobytes())
            return
        raise TypeError(f"cannot derive a cache key from a {type(x).__name__}; pass cache_key=")


def cache_key_for(input_data: Any, cache_prefix: str = "ml") -> str:
    """The key `cached_inference` uses for `input_data`: ``<cache_prefix>:<32 hex digits>``."""
    h = hashlib.sha256()
    _feed(h, input_data)
    return f"{cache_prefix}:{h.hexdigest()[:32]}"


def _to_store(x: Any) -> Any:
    np = _numpy()
    if np is not None and isinstance(x, np.generic):
        return _to_store(x.item())  # a numpy scalar comes back as the Python number
    if np is not None and isinstance(x, np.ndarray):
        a = np.ascontiguousarray(x)
        if a.dtype.hasobject:
            return _to_store(a.tolist())
        return {_ARRAY: 1, "dtype": a.dtype.str, "shape": list(a.shape), "data": a.tobytes()}
    if isinstance(x, dict):
        return {k: _to_store(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_store(v) for v in x]
    if not isinstance(x, (str, bytes, int, float, type(None))) and hasattr(x, "tolist"):
        return _to_store(x.tolist())
    return x


def _from_store(x: Any) -> Any:
    if isinstance(x, dict):
        if x.get(_ARRAY) == 1 and "data" in x:
            np = _numpy()
            if np is None:
                import numpy as np  # an array was cached: numpy is needed to read it back
            return np.frombuffer(x["data"], dtype=np.dtype(x["dtype"])).reshape(x["shape"]).copy()
        return {k: _from_store(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_from_store(v) for v in x]
    return x


def _has_array(x: Any) -> bool:
    if isinstance(x, dict):
        return _ARRAY in x or any(_has_array(v) for v in x.values())
    if isinstance(x, list):
        return any(_has_array(v) for v in x)
    return False


def cached_inference(
    fn: Callable[[Any], T],
    input_data: Any,
    cache_key: Optional[str] = None,
    cache_prefix: str = "ml",
    ttl: Optional[float] = None,
) -> T:
    """``fn(input_data)``, computed once per distinct input and then read from the store.

    `cache_key` replaces the key derived from the input; `ttl` (seconds) lets entries expire.
    Counts a hit or a miss in the shared statistics (`cache_stats`). When the result cannot be
    stored, ``TypeError`` names its type (nothing is cached).
    """
    key = cache_key if cache_key is not None else cache_key_for(input_data, cache_prefix)
    cached = state_get(key)
    if cached is not None:
        state_incr(HITS)
        if type(cached) is dict and _WRAPPED in cached:
            return _from_store(cached.get("v"))  # type: ignore[no-any-return]
        return cached  # type: ignore[no-any-return]
    state_incr(MISSES)
    result = fn(input_data)
    if result is not None:
        stored = _to_store(result)
        if _has_array(stored):
            stored = {_WRAPPED: 1, "v": stored}
        state_set(key, stored, ttl)
    return result


def cache_stats() -> dict[str, Any]:
    """``{"hits": int, "misses": int, "hit_rate": float}``, over every worker on the backend."""
    got = state_get_multi([HITS, MISSES])
    hits = int(got.get(HITS) or 0)
    misses = int(got.get(MISSES) or 0)
    total = hits + misses
    return {"hits": hits, "misses": misses, "hit_rate": hits / total if total else 0.0}
