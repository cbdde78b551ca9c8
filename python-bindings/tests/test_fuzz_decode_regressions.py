"""MessagePack decoding's fuzz property (fuzz/python/fuzz_decode.py), replayed on the seed
corpus and on the inputs the fuzzer found wrong, so the harness itself runs in `make test`.

Raw inputs go in through `hb_set` of the C ABI (the `_C_API` capsule, via ctypes) and are read
back by `state_get` and the C getters, against `msgpack`; `S` + bytes builds a Python value that
must round-trip through `state_set`/`state_get`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import hornbeam_erlang

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "fuzz" / "python"))

import fuzz_decode  # noqa: E402

CORPUS = sorted((ROOT / "fuzz" / "python" / "corpus" / "decode").iterdir())

# Inputs the fuzzer found, each a Rust bug now fixed: b"" was encoded as 0x00 (the integer 0)
# by convert.rs, and hb_get_str read a bin of UTF-8 bytes as a string.
EMPTY_BYTES = bytes.fromhex("531046475bfffeffffffffffffffffffffdfffff")  # holds b"" nested
BIN_AS_STR = bytes.fromhex("c403616263")  # bin "abc": hb_get_str returns HB_OK


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_seed_corpus_holds_the_property(path: Path) -> None:
    fuzz_decode.check(path.read_bytes())


@pytest.mark.parametrize("data", [EMPTY_BYTES, BIN_AS_STR], ids=["empty_bytes", "bin_as_str"])
def test_found_inputs_hold_the_property(data: bytes) -> None:
    fuzz_decode.check(data)


@pytest.mark.parametrize("value", [
    None, True, 0, -1, 2**63 - 1, -(2**63), 1.5, float("nan"), -0.0, float("inf"), "",
    "h\u00e9\U0001f600", b"\x00\xff", [1, [2, (3,)]], {"a": {"b": [None]}},
    2**63, -(2**63) - 1, "\ud800", {1: 2}, {"\udcff": 1}, {1, 2}, [[[]]] * 3,
], ids=repr)
def test_values_round_trip_or_raise_the_documented_error(value: object) -> None:
    fuzz_decode.check_value(value)


def test_nesting_at_the_depth_limit() -> None:
    deep: object = None
    for _ in range(fuzz_decode.MAX_DEPTH):
        deep = [deep]
    fuzz_decode.check_value(deep)  # 512 levels: stored
    fuzz_decode.check_value([deep])  # 513: ValueError, old value kept
    fuzz_decode.check(b"\x91" * 512 + b"\x01")
    fuzz_decode.check(b"\x91" * 513 + b"\x01")


def test_the_property_catches_a_wrong_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    # With a wrong oracle (float32 read as if it were an int) the property must fail.
    real = fuzz_decode.reference
    monkeypatch.setattr(fuzz_decode, "reference",
                        lambda data: ("ok", 1) if data[:1] == b"\xca" else real(data))
    with pytest.raises(fuzz_decode.Mismatch):
        fuzz_decode.check(b"\xca\x3f\xc0\x00\x00")


def test_empty_bytes_round_trip() -> None:
    fuzz_decode.check(EMPTY_BYTES)
    for empty in (b"", bytearray(), [b""], {"k": b""}):
        hornbeam_erlang.state_set("fuzz:empty", empty)
        got = hornbeam_erlang.state_get("fuzz:empty")
        assert got == (bytes(empty) if isinstance(empty, bytearray) else empty)
        assert type(got) is not int


def test_hb_get_str_refuses_bin() -> None:
    fuzz_decode.check(BIN_AS_STR)
