"""The state half of the contract: every row of DESIGN.md's table, and bad input."""

import datetime
import threading
import time

import pytest

import hornbeam_erlang as hb
from hornbeam_erlang import (
    state_decr,
    state_delete,
    state_get,
    state_get_multi,
    state_incr,
    state_keys,
    state_set,
)

VALUES = [
    None, True, False, 0, -1, 2**63 - 1, -(2**63), 1.5, float("inf"), "", "héllo ✓", b"\x00\xff",
    [1, "a", None], {"a": {"b": [1, 2, {"c": None}]}}, {"username": "ann", "n": 3, "ok": True},
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_roundtrip(value):
    state_set("k", value)
    assert state_get("k") == value
    assert type(state_get("k")) is type(value)


def test_nan_roundtrips():
    state_set("k", float("nan"))
    v = state_get("k")
    assert v != v


def test_tuple_reads_back_as_list():
    state_set("k", (1, (2, 3)))
    assert state_get("k") == [1, [2, 3]]


def test_missing_key_is_none_and_delete_is_fine():
    assert state_get("nope") is None
    assert state_delete("nope") is None
    state_set("k", 1)
    state_delete("k")
    assert state_get("k") is None


def test_incr_decr():
    assert state_incr("c") == 1
    assert state_incr("c", 10) == 11
    assert state_incr("c", -1) == 10
    assert state_decr("c") == 9
    assert state_decr("c", 4) == 5
    assert state_decr("fresh") == -1
    assert state_get("c") == 5


def test_incr_on_non_integer_names_key_and_keeps_value():
    state_set("name", "ann")
    with pytest.raises(TypeError, match="name"):
        state_incr("name")
    assert state_get("name") == "ann"


def test_incr_overflow_keeps_value():
    state_set("big", 2**63 - 1)
    with pytest.raises(OverflowError, match="big"):
        state_incr("big")
    assert state_get("big") == 2**63 - 1


def test_incr_bad_delta():
    with pytest.raises(TypeError, match="delta must be int"):
        state_incr("c", "1")
    with pytest.raises(TypeError):
        state_incr("c", 1.5)
    with pytest.raises(ValueError):
        state_incr("c", 2**64)
    assert state_get("c") is None


def test_get_multi_and_keys_sorted():
    for k in ["room:b", "room:a", "room:c", "other"]:
        state_set(k, k)
    assert state_get_multi(["room:a", "missing"]) == {"room:a": "room:a", "missing": None}
    assert state_keys("room:") == ["room:a", "room:b", "room:c"]
    assert state_keys() == ["other", "room:a", "room:b", "room:c"]
    assert state_keys(None) == state_keys()
    assert state_keys("zzz") == []


def test_aliases():
    hb.set("a", 1)
    assert hb.get("a") == 1
    assert hb.incr("a") == 2
    assert hb.decr("a") == 1
    hb.delete("a")
    assert hb.get("a") is None


def test_ttl_expires():
    state_set("t", "x", ttl=0.05)
    ttl = hb.state_ttl("t")
    assert ttl is not None and 0 < ttl <= 0.05
    deadline = time.monotonic() + 5
    while state_get("t") is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert state_get("t") is None
    assert "t" not in state_keys()


def test_set_if_absent_expire_exists_count():
    assert hb.state_set_if_absent("lock", "a")
    assert not hb.state_set_if_absent("lock", "b")
    assert state_get("lock") == "a"
    assert hb.state_exists("lock") and not hb.state_exists("nope")
    assert hb.state_expire("lock", 100)
    assert hb.state_ttl("lock") > 99
    assert hb.state_count() == 1
    hb.state_set_multi({"x": 1, "y": [2]})
    assert state_get_multi(["x", "y"]) == {"x": 1, "y": [2]}


class Thing:
    pass


@pytest.mark.parametrize(
    "value, message",
    [
        ({"user": {"joined_at": datetime.datetime(2024, 1, 1)}}, r"value\['user'\]\['joined_at'\]: datetime is not storable"),
        ([1, 2, Thing()], r"value\[2\]: Thing is not storable"),
        ({1: "a"}, r"dict key of type int"),
        ({"s": {1, 2}}, r"value\['s'\]: set is not storable"),
        (object(), r"value: object is not storable"),
    ],
)
def test_unstorable_values_raise_type_error_and_store_nothing(value, message):
    state_set("k", "before")
    with pytest.raises(TypeError, match=message):
        state_set("k", value)
    assert state_get("k") == "before"


def test_int_too_large_is_value_error():
    with pytest.raises(ValueError, match="64 bits"):
        state_set("k", {"n": 2**64})
    assert state_get("k") is None


def test_deep_nesting_is_value_error_not_crash():
    deep: list = []
    cur = deep
    for _ in range(10_000):
        nxt: list = []
        cur.append(nxt)
        cur = nxt
    with pytest.raises(ValueError, match="nested deeper"):
        state_set("k", deep)
    assert state_get("k") is None


def test_self_referencing_value_is_value_error():
    d: dict = {}
    d["self"] = d
    with pytest.raises(ValueError, match="nested deeper"):
        state_set("k", d)


def test_bad_keys():
    with pytest.raises(TypeError, match="key must be str"):
        state_set(1, "x")
    with pytest.raises(TypeError, match="key must be str"):
        state_get(b"k")
    with pytest.raises(ValueError, match="over the limit"):
        state_set("k" * 100_000, "x")
    with pytest.raises(ValueError, match="ttl"):
        state_set("k", 1, ttl=-1)
    with pytest.raises(ValueError, match="ttl"):
        state_set("k", 1, ttl=float("nan"))
    assert state_keys() == []


def test_huge_value_is_value_error():
    with pytest.raises(ValueError, match="over the limit"):
        state_set("k", b"x" * (17 * 1024 * 1024))
    assert state_get("k") is None


def test_str_subclass_and_surrogates():
    class S(str):
        pass

    state_set("k", {"a": S("b")})
    assert state_get("k") == {"a": "b"}
    with pytest.raises(UnicodeEncodeError):
        state_set("k", "\udcff")
    assert state_get("k") == {"a": "b"}


def test_eight_threads_incr_exactly():
    # On Redis every call is a round trip: fewer calls test the same atomicity (INCRBY).
    per_thread = 100_000 if hb.backend() == "embedded" else 5_000

    def work():
        for _ in range(per_thread):
            state_incr("hits")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert state_get("hits") == 8 * per_thread


def test_repeated_dict_keys_read_back_exactly():
    # Map keys come from a cache of str objects (1024 slots, keys up to 64 bytes): many distinct
    # keys (so slots collide and are replaced), keys at and past the length limit, non-ASCII keys,
    # str8-encoded keys and nested maps must all read back equal, every time.
    keys = [f"field{i}" for i in range(3000)] + ["k" * 31, "k" * 32, "k" * 64, "k" * 65, "é✓" * 10, ""]
    big = {k: i for i, k in enumerate(keys)}
    for _ in range(3):
        state_set("big", big)
        got = state_get("big")
        assert got == big
        assert list(got) == keys
    nested = {"a": {"a": {"a": [{"a": 1, "b": 2}, {"b": 3}]}}, "b": None}
    state_set("nested", nested)
    assert state_get("nested") == nested
    assert state_get("nested") == nested
    # A cached key is an ordinary, equal str: usable as a dict key and as a string.
    state_set("one", {"field7": 0})
    (key,) = state_get("one")
    assert key == "field7" and hash(key) == hash("field7") and key.upper() == "FIELD7"
