"""hornbeam_ml: cached_inference keys, stored results, statistics (shared across processes:
test_hooks_cross.py)."""

from __future__ import annotations

import pytest

import hornbeam_erlang as hb
from hornbeam_ml import cache_key_for, cache_stats, cached_inference

try:
    import numpy as np
except ImportError:  # a missing prerequisite fails, it never skips
    np = None


def need_numpy():
    if np is None:
        pytest.fail("numpy is not installed: pip install -r requirements.txt", pytrace=False)
    return np


class Model:
    def __init__(self) -> None:
        self.calls = 0

    def encode(self, x):
        self.calls += 1
        return [float(len(str(x))), 0.5]


def test_second_call_is_a_hit_and_stats_count_it():
    m = Model()
    assert cache_stats() == {"hits": 0, "misses": 0, "hit_rate": 0.0}
    assert cached_inference(m.encode, "hello") == [5.0, 0.5]
    assert cached_inference(m.encode, "hello") == [5.0, 0.5]
    assert m.calls == 1
    assert cache_stats() == {"hits": 1, "misses": 1, "hit_rate": 0.5}
    # Hornbeam's counter names, so code reading them directly keeps working.
    assert hb.state_get("ml_cache_hits") == 1 and hb.state_get("ml_cache_misses") == 1


def test_keys_carry_the_prefix_and_the_types():
    key = cache_key_for("hello")
    assert key.startswith("ml:") and len(key) == len("ml:") + 32
    assert cache_key_for("hello", "emb").startswith("emb:")
    keys = {cache_key_for(x) for x in (1, 1.0, "1", b"1", True, None, [1], {"1": 1})}
    assert len(keys) == 8
    assert cache_key_for({"a": 1, "b": [1, 2]}) == cache_key_for({"b": [1, 2], "a": 1})
    assert cache_key_for((1, 2)) == cache_key_for([1, 2])  # the store keeps tuples as lists
    assert cache_key_for([[1, "a"], {"k": b"v"}]) == cache_key_for([[1, "a"], {"k": b"v"}])


def test_cache_key_and_prefix_select_the_entry():
    m = Model()
    cached_inference(m.encode, "a", cache_key="embed:v2:doc1")
    assert hb.state_get("embed:v2:doc1") == [1.0, 0.5]
    cached_inference(m.encode, "a", cache_key="embed:v2:doc1")
    assert m.calls == 1
    cached_inference(m.encode, "a", cache_prefix="other")
    assert m.calls == 2
    assert hb.state_exists(cache_key_for("a", "other"))


def test_unhashable_input_needs_a_cache_key():
    with pytest.raises(TypeError, match="cache_key"):
        cached_inference(lambda x: 1, object())
    assert cached_inference(lambda x: 1, object(), cache_key="explicit") == 1


def test_none_is_not_cached():
    m = Model()
    calls = []
    assert cached_inference(lambda x: calls.append(x), "n") is None
    assert cached_inference(lambda x: calls.append(x), "n") is None
    assert calls == ["n", "n"]
    del m


def test_unstorable_result_is_a_type_error():
    with pytest.raises(TypeError, match="object"):
        cached_inference(lambda x: object(), "q")


def test_numpy_arrays_key_by_dtype_shape_and_bytes():
    np = need_numpy()
    a = np.arange(6, dtype=np.int32)
    assert cache_key_for(a) == cache_key_for(np.arange(6, dtype=np.int32))
    assert cache_key_for(a) != cache_key_for(a.astype(np.int64))
    assert cache_key_for(a) != cache_key_for(a.reshape(2, 3))
    assert cache_key_for(a.reshape(2, 3).T) == cache_key_for(np.ascontiguousarray(a.reshape(2, 3).T))


def test_numpy_results_round_trip_with_dtype_and_shape():
    np = need_numpy()
    calls = []

    def encode(x):
        calls.append(x)
        return np.full((2, 3), 0.25, dtype=np.float32)

    first = cached_inference(encode, "text")
    again = cached_inference(encode, "text")
    assert len(calls) == 1
    assert isinstance(again, np.ndarray)
    assert again.dtype == np.float32 and again.shape == (2, 3)
    assert (again == first).all()
    again[0, 0] = 9  # a writable copy, not a view of the store's bytes

    nested = cached_inference(lambda x: {"emb": np.arange(3, dtype=np.int16), "n": [1, (2, 3)]}, "nested")
    back = cached_inference(lambda x: None, "nested")
    assert back["emb"].dtype == np.int16 and back["emb"].tolist() == [0, 1, 2]
    assert back["n"] == [1, [2, 3]]
    assert nested["n"] == [1, (2, 3)]


def test_numpy_scalars_come_back_as_python_numbers():
    np = need_numpy()
    cached_inference(lambda x: {"score": np.float32(0.5), "n": np.int64(3)}, "scalars")
    assert cached_inference(lambda x: None, "scalars") == {"score": 0.5, "n": 3}


def test_ttl_lets_entries_expire():
    cached_inference(lambda x: 1, "t", ttl=30)
    ttl = hb.state_ttl(cache_key_for("t"))
    assert ttl is not None and 0 < ttl <= 30
