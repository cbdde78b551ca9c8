"""Bad input from Python that test_state.py / test_pubsub.py do not cover (docs/bad-input.md)."""

import math

import pytest

import hornbeam_erlang as hb
from hornbeam_erlang import HornbeamError, Mailbox, publish, state_get, state_set

SPECIALS = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "-0": -0.0,
            "tiny": 5e-324, "max": 1.7976931348623157e308}


def check_specials(value):
    assert set(value) == set(SPECIALS) | {"list"}
    assert math.isnan(value["nan"])
    assert value["inf"] == math.inf and value["-inf"] == -math.inf
    assert value["-0"] == 0.0 and math.copysign(1.0, value["-0"]) == -1.0
    assert value["tiny"] == 5e-324 and value["max"] == 1.7976931348623157e308
    assert math.isnan(value["list"][0]) and value["list"][1:] == [math.inf, -math.inf]
    assert all(type(v) is float for k, v in value.items() if k != "list")


def test_nan_and_infinities_round_trip_nested_through_store_and_bus():
    value = {**SPECIALS, "list": [math.nan, math.inf, -math.inf]}
    state_set("floats", value)
    check_specials(state_get("floats"))
    with Mailbox() as mb:
        mb.subscribe("floats")
        assert publish("floats", value) == 1
        check_specials(mb.recv_nowait().message)
    # A NaN key is an ordinary string; NaN as a TTL is refused (test_state.py::test_bad_keys).
    state_set("nan", math.nan)
    assert math.isnan(state_get("nan"))


def test_nan_delta_is_refused_and_counter_kept():
    hb.state_incr("counter", 5)
    for bad in (math.nan, math.inf, 1.5):
        with pytest.raises(TypeError):
            hb.state_incr("counter", bad)
    assert state_get("counter") == 5


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_storm_of_100000_pattern_subscriptions_stays_within_limits_and_unsubscribes_clean():
    limit = 100_000  # core's Limits::max_subscriptions_per_mailbox
    before = rss_kib()
    with Mailbox() as mb, Mailbox() as other:
        other.subscribe("storm:7:x")
        for i in range(limit):
            assert mb.subscribe(f"storm:{i}:*")
        assert not mb.subscribe("storm:0:*")  # already there: no duplicate
        with pytest.raises(HornbeamError, match=f"maximum of {limit} subscriptions"):
            mb.subscribe("one:too:many")
        assert len(mb.subscriptions()) == limit
        # 100,000 patterns cost memory in proportion, far from unbounded (a few hundred bytes each).
        assert (rss_kib() - before) < 256 * 1024
        # Routing is still exact: one pattern matches, the others do not.
        assert publish("storm:7:x", "hit") == 2
        assert publish("storm:7:x:y", "deeper") == 0
        assert [m.message for m in mb.drain()] == ["hit"]

        for i in range(limit):
            assert mb.unsubscribe(f"storm:{i}:*")
        assert not mb.unsubscribe("storm:0:*")
        assert mb.subscriptions() == []
        assert publish("storm:7:x", "after") == 1  # only `other` is left
        assert mb.drain() == []
        # The mailbox still works after the storm.
        assert mb.subscribe("calm")
        assert publish("calm", 1) == 1 and mb.recv_nowait().message == 1
    assert publish("storm:7:x", "closed") == 0


def test_huge_message_and_topic_are_value_errors_and_deliver_nothing():
    with Mailbox() as mb:
        mb.subscribe("t")
        with pytest.raises(ValueError, match="over the limit of 16777216 bytes"):
            publish("t", b"x" * (17 * 1024 * 1024))
        with pytest.raises(ValueError, match="over the limit of 1024 bytes"):
            publish("t" * 2000, 1)
        with pytest.raises(ValueError, match="over the limit of 1024 bytes"):
            mb.subscribe("t" * 2000)
        assert mb.drain() == []
        assert mb.subscriptions() == ["t"]
