"""Fuzz target: MessagePack values in the store, as Python and C read them back (issue 9).

Two halves, chosen by the first byte of the input:

* **raw** (any input not starting with ``S``): the input bytes are stored with ``hb_set`` through
  the C ABI that ``hornbeam_erlang`` shares in the capsule ``hornbeam_erlang._native._C_API`` (the
  same engine Python uses), then read back with ``hornbeam_erlang.state_get`` and with the C
  getters ``hb_get``, ``hb_get_int``, ``hb_get_str``. The reference is the ``msgpack`` package
  (see :func:`reference`), checked against our documented rules.
* **structured** (``S`` + bytes): atheris' ``FuzzedDataProvider`` builds a Python value, which is
  stored with ``state_set`` and must read back equal (floats compared bit for bit, NaN included),
  or be refused with the ``TypeError``/``ValueError`` the encoder documents, the old value kept.

The mapping from MessagePack to Python that ``python-bindings/src/convert.rs`` (``decode``)
implements, and that :func:`reference` rebuilds from ``msgpack.unpackb``:

==========================  ============================================================
MessagePack                 Python
==========================  ============================================================
nil, true/false             ``None``, ``bool``
int (any width)             ``int`` (uint64 above 2**63-1 too)
float32, float64            ``float`` (float32 widened; NaN stays NaN)
str                         ``str`` (invalid UTF-8 is refused by ``hb_set``)
bin                         ``bytes``
ext (any type, incl. -1)    ``bytes`` of the ext data; the type code is dropped (so the
                            timestamp ext -1 is *not* a datetime, whatever its length)
array                       ``list``
map                         ``dict`` in wire order, later duplicates win; keys of any type;
                            an array key becomes a ``tuple`` of its items (one level only)
==========================  ============================================================

Refused by ``hb_set`` (``HB_INVALID_VALUE``; ``core/src/value.rs`` ``validate``): not exactly one
value (empty, truncated, trailing bytes), the reserved byte 0xc1, a string that is not UTF-8, a
value nested deeper than 512 levels (root at level 0, every array item, map key and map value one
level below its container). Stored, but ``state_get`` raises ``ValueError`` (``unhashable map
key``): a map key that Python cannot hash (a map, or an array holding an array or a map).

Run through ``fuzz/python/run.py``; ``check_raw`` and ``check_structured`` are imported by
``python-bindings/tests/test_fuzz_decode_regressions.py`` to replay the corpus under pytest.
"""

from __future__ import annotations

import ctypes
import functools
import math
import struct
import sys
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def _deep(func: F) -> F:
    """Runs ``func`` with room for the oracle's recursion (a few Python frames per level, on
    values up to 513 levels deep)."""

    @functools.wraps(func)
    def wrapper(*args: Any) -> Any:
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 20000))
        try:
            return func(*args)
        finally:
            sys.setrecursionlimit(limit)

    return wrapper  # type: ignore[return-value]

import msgpack  # type: ignore[import-untyped]
import msgpack.fallback  # type: ignore[import-untyped]

import hornbeam_erlang as hb

MAX_DEPTH = 512
KEY = "fuzz:decode:value"
_KEY_B = KEY.encode()
SENTINEL = {"fuzz": "sentinel", "n": [1, 2.5, None]}

# HbStatus values (include/hornbeam.h).
HB_OK = 0
HB_NOT_FOUND = 200
HB_NOT_AN_INTEGER = 201
HB_VALUE_TOO_LARGE = 204
HB_INVALID_VALUE = 205
HB_PANIC = 900

I64_MIN, I64_MAX = -(2**63), 2**63 - 1




class Mismatch(AssertionError):
    """The property failed: a wrong result (as opposed to a crash)."""


# ---- the C ABI through the capsule -------------------------------------------------------------

_status = ctypes.c_int
_eng = ctypes.c_void_p
_u8p = ctypes.c_char_p
_size = ctypes.c_size_t


class _HbApi(ctypes.Structure):
    """The head of ``HbApi`` (ffi/src/api.rs), up to ``bytes_free``; fields are only appended."""

    _fields_ = [
        ("version", ctypes.c_uint32),
        ("engine_default", ctypes.CFUNCTYPE(_status, ctypes.POINTER(_eng))),
        ("engine_free", ctypes.CFUNCTYPE(None, _eng)),
        ("get", ctypes.CFUNCTYPE(_status, _eng, _u8p, _size, ctypes.POINTER(ctypes.c_void_p))),
        ("set", ctypes.CFUNCTYPE(_status, _eng, _u8p, _size, _u8p, _size, ctypes.c_uint64)),
        ("get_int", ctypes.CFUNCTYPE(_status, _eng, _u8p, _size, ctypes.POINTER(ctypes.c_int64))),
        ("set_int", ctypes.CFUNCTYPE(_status, _eng, _u8p, _size, ctypes.c_int64, ctypes.c_uint64)),
        ("get_str", ctypes.CFUNCTYPE(_status, _eng, _u8p, _size, ctypes.POINTER(ctypes.c_void_p))),
        ("set_str", ctypes.CFUNCTYPE(_status, _eng, _u8p, _size, _u8p, _size, ctypes.c_uint64)),
        ("delete", ctypes.CFUNCTYPE(_status, _eng, _u8p, _size, ctypes.POINTER(ctypes.c_bool))),
        ("incr", ctypes.CFUNCTYPE(_status, _eng, _u8p, _size, ctypes.c_int64,
                                  ctypes.POINTER(ctypes.c_int64))),
        ("publish", ctypes.c_void_p),
        ("publish_str", ctypes.c_void_p),
        ("bytes_data", ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)),
        ("bytes_len", ctypes.CFUNCTYPE(_size, ctypes.c_void_p)),
        ("bytes_free", ctypes.CFUNCTYPE(None, ctypes.c_void_p)),
    ]


class CApi:
    """``hb_set``/``hb_get*`` on the default engine of the ``hornbeam_erlang`` module."""

    def __init__(self) -> None:
        get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
        get_pointer.restype = ctypes.c_void_p
        get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
        ptr = get_pointer(getattr(hb, "_native")._C_API, b"hornbeam_erlang._native._C_API")
        if not ptr:
            raise RuntimeError("no _C_API capsule")
        self.api = _HbApi.from_address(ptr)
        if self.api.version < 1:
            raise RuntimeError(f"HbApi version {self.api.version}")
        self.engine = _eng()
        st = self.api.engine_default(ctypes.byref(self.engine))
        if st != HB_OK:
            raise RuntimeError(f"hb_engine_default: status {st}")

    def set(self, key: bytes, value: bytes) -> int:
        return int(self.api.set(self.engine, key, len(key), value, len(value), 0))

    def _take(self, st: int, out: ctypes.c_void_p) -> tuple[int, bytes | None]:
        if st != HB_OK:
            return st, None
        try:
            data = ctypes.string_at(self.api.bytes_data(out), self.api.bytes_len(out))
        finally:
            self.api.bytes_free(out)
        return st, data

    def get(self, key: bytes) -> tuple[int, bytes | None]:
        out = ctypes.c_void_p()
        return self._take(self.api.get(self.engine, key, len(key), ctypes.byref(out)), out)

    def get_str(self, key: bytes) -> tuple[int, bytes | None]:
        out = ctypes.c_void_p()
        return self._take(self.api.get_str(self.engine, key, len(key), ctypes.byref(out)), out)

    def get_int(self, key: bytes) -> tuple[int, int | None]:
        out = ctypes.c_int64()
        st = int(self.api.get_int(self.engine, key, len(key), ctypes.byref(out)))
        return st, (out.value if st == HB_OK else None)


_capi: CApi | None = None


def capi() -> CApi:
    global _capi
    if _capi is None:
        _capi = CApi()
    return _capi


# ---- comparing values ----------------------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down; floats bit for bit except NaN payloads,
    dict items in the same order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb) for (ka, va), (kb, vb) in zip(a.items(), b.items()))
    return bool(a == b)


# ---- the reference: msgpack.unpackb, mapped to our rules -----------------------------------------


class _Map(list):  # type: ignore[type-arg]
    """A map's (key, value) pairs in wire order, before our dict rules apply."""


class _Ext:
    __slots__ = ("code", "data")

    def __init__(self, code: int, data: bytes) -> None:
        self.code, self.data = code, data


class _RawTimestamp:
    """Stands in for ``msgpack.fallback.Timestamp`` while :func:`_unpack_fallback` runs, so the
    ext type -1 comes through as raw data, like every other ext type."""

    @staticmethod
    def from_bytes(data: bytes) -> _Ext:
        return _Ext(-1, data)


class _NeedFallback(Exception):
    pass


class Unhashable(Exception):
    """The value is valid MessagePack but holds a map key Python cannot hash."""


_OPTS: dict[str, Any] = dict(raw=False, strict_map_key=False, use_list=True,
                             ext_hook=_Ext, object_pairs_hook=_Map)


def _unpack_fallback(data: bytes) -> Any:
    saved = msgpack.fallback.Timestamp
    msgpack.fallback.Timestamp = _RawTimestamp
    try:
        return msgpack.fallback.unpackb(data, timestamp=0, **_OPTS)
    finally:
        msgpack.fallback.Timestamp = saved


def _too_deep(tree: Any, depth: int = 0) -> bool:
    if depth > MAX_DEPTH:
        return True
    if isinstance(tree, _Map):
        return any(_too_deep(k, depth + 1) or _too_deep(v, depth + 1) for k, v in tree)
    if isinstance(tree, list):
        return any(_too_deep(x, depth + 1) for x in tree)
    return False


def _to_python(tree: Any) -> Any:
    if isinstance(tree, _Map):
        out: dict[Any, Any] = {}
        for k, v in tree:
            key = _to_python(k)
            if isinstance(key, list):
                key = tuple(key)
            val = _to_python(v)
            try:
                out[key] = val
            except TypeError as exc:
                raise Unhashable(str(exc)) from None
        return out
    if isinstance(tree, list):
        return [_to_python(x) for x in tree]
    if isinstance(tree, _Ext):
        return tree.data
    if isinstance(tree, msgpack.Timestamp):
        raise _NeedFallback
    return tree


def reference(data: bytes) -> tuple[str, Any]:
    """What our documented rules make of ``data``, from ``msgpack``:

    ``("ok", value)``: stored, ``state_get`` gives ``value``; ``("unhashable", why)``: stored,
    ``state_get`` raises ``ValueError``; ``("refused", why)``: ``hb_set`` refuses it.
    """
    try:
        try:
            tree = msgpack.unpackb(data, **_OPTS)
            value = _to_python(tree) if not _too_deep(tree) else None
        except (_NeedFallback, ValueError) as exc:
            # The C unpacker turns every ext -1 into a Timestamp (or refuses its length).
            if not isinstance(exc, _NeedFallback) and "timestamp" not in str(exc):
                raise
            tree = _unpack_fallback(data)
            value = _to_python(tree) if not _too_deep(tree) else None
    except Unhashable as exc:
        return "unhashable", str(exc)
    except Exception as exc:  # every msgpack refusal: ExtraData, OutOfData, FormatError, ...
        return "refused", f"msgpack: {type(exc).__name__}: {exc}"
    if _too_deep(tree):
        return "refused", f"nested deeper than {MAX_DEPTH} levels"
    return "ok", value


def _root_int(data: bytes) -> int | None:
    """The integer when ``data`` is exactly one MessagePack int in i64 range (a counter)."""
    if not data or not (data[0] <= 0x7F or data[0] >= 0xE0 or 0xCC <= data[0] <= 0xCF
                        or 0xD0 <= data[0] <= 0xD3):
        return None
    try:
        v = msgpack.unpackb(data)
    except Exception:
        return None
    return v if type(v) is int and I64_MIN <= v <= I64_MAX else None


# ---- the raw half --------------------------------------------------------------------------------


def _sentinel_kept(why: str) -> None:
    got = hb.state_get(KEY)
    if not same(got, SENTINEL):
        raise Mismatch(f"{why}: the old value was not kept: {got!r}")
    st, raw = capi().get(_KEY_B)
    if st != HB_OK or raw != msgpack.packb(SENTINEL):
        raise Mismatch(f"{why}: hb_get of the old value gave status {st}, {raw!r}")


@_deep
def check_raw(data: bytes) -> None:
    """Stores ``data`` with ``hb_set`` and checks what Python and C read back against
    :func:`reference`. Raises :class:`Mismatch` (or lets an unexpected exception through)."""
    api = capi()
    hb.state_set(KEY, SENTINEL)
    st = api.set(_KEY_B, data)
    kind, expected = reference(data)
    if st not in (HB_OK, HB_INVALID_VALUE, HB_VALUE_TOO_LARGE):
        raise Mismatch(f"hb_set returned status {st} for {data.hex()}")
    if st != HB_OK:
        if kind != "refused":
            raise Mismatch(f"hb_set refused ({st}) what msgpack and our rules accept "
                           f"({kind}: {expected!r})")
        _sentinel_kept(f"refused value (status {st})")
        return
    if kind == "refused":
        raise Mismatch(f"hb_set accepted what must be refused: {expected}")
    # Python.
    try:
        got = hb.state_get(KEY)
    except ValueError as exc:
        if kind != "unhashable":
            raise Mismatch(f"state_get raised ValueError ({exc}) where msgpack reads "
                           f"{expected!r}") from None
    else:
        if kind == "unhashable":
            raise Mismatch(f"state_get returned {got!r} for a map with an unhashable key "
                           f"({expected})")
        if not same(got, expected):
            raise Mismatch(f"state_get returned {got!r}, msgpack reads {expected!r}")
    # C: the bytes back (integers as counters come back in their shortest form).
    counter = _root_int(data)
    st, raw = api.get(_KEY_B)
    want = data if counter is None else msgpack.packb(counter)
    if st != HB_OK or raw != want:
        raise Mismatch(f"hb_get gave status {st}, {raw!r}; expected {want!r}")
    st, i = api.get_int(_KEY_B)
    if counter is not None:
        if st != HB_OK or i != counter:
            raise Mismatch(f"hb_get_int gave status {st}, {i}; expected {counter}")
    elif st != HB_NOT_AN_INTEGER:
        raise Mismatch(f"hb_get_int gave status {st} ({i}) for a value that is not a counter")
    st, s = api.get_str(_KEY_B)
    if kind == "ok" and type(expected) is str:
        if st != HB_OK or s != expected.encode():
            raise Mismatch(f"hb_get_str gave status {st}, {s!r}; expected {expected!r}")
    elif st != HB_INVALID_VALUE:
        raise Mismatch(f"hb_get_str gave status {st} ({s!r}) for a value that is not a string "
                       f"({type(expected).__name__})")


# ---- the structured half -------------------------------------------------------------------------


class StrSub(str):
    pass


class IntSub(int):
    pass


class FloatSub(float):
    pass


class DictSub(dict):  # type: ignore[type-arg]
    pass


class ListSub(list):  # type: ignore[type-arg]
    pass


class Refusal(Exception):
    """What :func:`expected_store` predicts ``state_set`` raises."""

    def __init__(self, exc_type: type[Exception], why: str) -> None:
        super().__init__(why)
        self.exc_type = exc_type


def _utf8(s: str, where: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise Refusal(ValueError, f"{where}: lone surrogate") from None


def expected_store(v: Any, depth: int = 0) -> Any:
    """What ``state_get`` gives back after ``state_set(v)`` (``convert.rs`` ``encode`` then
    ``decode``), or :class:`Refusal`: the first fault in the encoder's own order."""
    if depth > MAX_DEPTH:
        raise Refusal(ValueError, "too deep")
    if v is None:
        return None
    if isinstance(v, str):
        _utf8(v, "str")
        return str(v)
    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, int):
        if not I64_MIN <= v <= I64_MAX:
            raise Refusal(ValueError, "int range")
        return int(v)
    if isinstance(v, float):
        return float(v)
    if isinstance(v, dict):
        out = {}
        for k, item in v.items():
            if not isinstance(k, str):
                raise Refusal(TypeError, f"dict key {type(k).__name__}")
            _utf8(k, "key")
            out[str(k)] = expected_store(item, depth + 1)
        return out
    if isinstance(v, (list, tuple)):
        return [expected_store(x, depth + 1) for x in v]
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    raise Refusal(TypeError, f"{type(v).__name__} is not storable")


def _gen(fdp: Any, depth: int, budget: list[int]) -> Any:
    budget[0] -= 1
    leaf = depth >= 6 or budget[0] <= 0
    kind = fdp.ConsumeIntInRange(0, 12 if leaf else 19)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return fdp.ConsumeIntInRange(-40, 300)
    if kind == 3:
        return fdp.ConsumeIntInRange(I64_MIN, I64_MAX)
    if kind == 4:  # near and past the 64-bit edges
        return fdp.PickValueInList([I64_MAX, I64_MAX + 1, I64_MIN, I64_MIN - 1, 2**64 - 1, 2**64,
                                    -(2**64), 10**30])
    if kind == 5:
        return fdp.ConsumeFloat()
    if kind == 6:
        return struct.unpack("<d", fdp.ConsumeBytes(8).ljust(8, b"\0"))[0]  # any bit pattern
    if kind == 7:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))
    if kind == 8:
        return fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 8))  # may hold lone surrogates
    if kind == 9:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40))
    if kind == 10:
        return bytearray(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 8)))
    if kind == 11:
        return fdp.PickValueInList([StrSub("sub"), IntSub(7), FloatSub(-0.0), float("nan"),
                                    float("-inf"), -0.0, 5e-324, "", "\u0000", "\U0010ffff"])
    if kind == 12:
        return fdp.PickValueInList([{1, 2}, object(), 1j, range(2), frozenset()])  # TypeError
    n = fdp.ConsumeIntInRange(0, 5)
    if kind in (13, 14):
        items = [_gen(fdp, depth + 1, budget) for _ in range(n)]
        return items if kind == 13 else tuple(items)
    if kind == 15:
        return ListSub(_gen(fdp, depth + 1, budget) for _ in range(n))
    if kind in (16, 17):
        d: dict[Any, Any] = DictSub() if kind == 17 else {}
        for _ in range(n):
            d[fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 8))] = _gen(
                fdp, depth + 1, budget)
        return d
    if kind == 18:  # a key that is not a str, or holds a lone surrogate
        key = fdp.PickValueInList([1, b"k", None, (1,), 2.5, "\udcff", StrSub("k")])
        return {key: _gen(fdp, depth + 1, budget)}
    # kind 19: a chain of nested containers around the limit (512 levels)
    levels = fdp.ConsumeIntInRange(MAX_DEPTH - 3, MAX_DEPTH + 3)
    inner = _gen(fdp, MAX_DEPTH, budget)
    for i in range(levels):
        inner = [inner] if i % 2 else {"k": inner}
    return inner


@_deep
def check_value(v: Any) -> None:
    """``state_set(v)`` then ``state_get`` gives the value back, or ``state_set`` raises the
    documented error and keeps the old value; the stored bytes are what msgpack reads as it."""
    try:
        want: Any = expected_store(v)
        refusal: Refusal | None = None
    except Refusal as r:
        refusal = r
    hb.state_set(KEY, SENTINEL)
    try:
        hb.state_set(KEY, v)
    except (TypeError, ValueError) as exc:
        if refusal is None:
            raise Mismatch(f"state_set raised {type(exc).__name__}: {exc} for a storable "
                           f"value") from None
        if not isinstance(exc, refusal.exc_type):
            raise Mismatch(f"state_set raised {type(exc).__name__}: {exc}; expected "
                           f"{refusal.exc_type.__name__} ({refusal})") from None
        _sentinel_kept(f"refused value ({exc})")
        return
    if refusal is not None:
        raise Mismatch(f"state_set accepted what must raise {refusal.exc_type.__name__} "
                       f"({refusal})")
    got = hb.state_get(KEY)
    if not same(got, want):
        raise Mismatch(f"state_get returned {got!r}; expected {want!r}")
    st, raw = capi().get(_KEY_B)
    if st != HB_OK or raw is None:
        raise Mismatch(f"hb_get gave status {st}")
    kind, ref = reference(raw)
    if kind != "ok" or not same(ref, want):
        raise Mismatch(f"msgpack reads the stored bytes {raw.hex()} as {kind} {ref!r}")


def check_structured(data: bytes) -> None:
    """Builds a value from ``data`` with ``FuzzedDataProvider`` and runs :func:`check_value`."""
    import atheris  # type: ignore[import-untyped]

    fdp = atheris.FuzzedDataProvider(data)
    check_value(_gen(fdp, 0, [40]))


def check(data: bytes) -> None:
    """The fuzz property for one input: ``S`` + bytes is structured, anything else raw."""
    if data[:1] == b"S":
        check_structured(data[1:])
    else:
        check_raw(data)


def main(argv: list[str]) -> None:
    import atheris

    from instrument import instrument

    capi()
    print(f"INFO: instrumented {instrument(('msgpack', '__main__'))} functions")
    atheris.Setup(argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
