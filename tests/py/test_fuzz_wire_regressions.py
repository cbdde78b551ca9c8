"""The channels frame parser's fuzz property (fuzz/python/fuzz_wire.py), replayed on the seed
corpus and on every input the fuzzer found wrong, so the harness itself runs in `make test`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "fuzz" / "python"))

import fuzz_wire  # noqa: E402

CORPUS = sorted((ROOT / "fuzz" / "python" / "corpus" / "wire").iterdir())
JOIN = b'["1","1","fz:a","hb_join",{}]'

# Inputs that failed the property, with what was wrong (fixed in hornbeam_channels/_decode.py).
FOUND = {
    # An unpaired surrogate escape (`\ud800`) in a topic: the join raised UnicodeEncodeError out
    # of the read loop (topic_bus encodes the topic), ending the connection with a traceback.
    "surrogate_topic_join": b'["1","1","fz:\\ud800","hb_join",{}]',
    # ... in a ref: the reply echoed it and could not be sent as UTF-8 (connection dropped).
    "surrogate_ref": b'[null,"\\udfff","hornbeam","heartbeat",{}]',
    "surrogate_topic_unmatched": b'[null,"1","\\ud800","hb_join",{}]',
    # ... in a payload: echoed by a handler, same.
    "surrogate_payload_echo": JOIN + b'\0["1","2","fz:a","echo",{"x":"\\udc00"}]',
    "surrogate_key_echo": JOIN + b'\0["1","2","fz:a","echo",{"\\ud800":1}]',
    # Found by the fuzzer in 609 runs: in an event name.
    "surrogate_event": bytes.fromhex(
        "5b2231222c2231222c22667a3a6c6f626279222c2268625f6a6f696ed0d0d0d0d0d0d0d0d0d0d0d0d0d0d0"
        "d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d05c7564383030d0222c7b7d5d005b223160"
        "222c2232222c22667a3a6c6f626279222c22626f6f6d222c7b7d5d005b2231222c2233222c22667a3a6c"
        "6f6200000000222565636865222c7b7d5d"),
    # A number that overflows a double (`1e400`) read as infinity and was echoed as `Infinity`,
    # which browsers' JSON.parse refuses (the NaN/Infinity tokens were already refused).
    "overflowing_number_echo": JOIN + b'\0["1","2","fz:a","echo",{"x":1e400,"y":-1E+999}]',
    # Paired surrogates (an emoji) escaped are fine and echo back.
    "paired_surrogates_ok": JOIN + b'\0["1","2","fz:a","echo",{"x":"\\ud83d\\ude00"}]',
}


@pytest.fixture(scope="module", autouse=True)
def channels() -> Iterator[None]:
    fuzz_wire.setup()
    yield
    fuzz_wire.teardown()


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_seed_corpus_holds_the_property(path: Path) -> None:
    fuzz_wire.check(path.read_bytes())


@pytest.mark.parametrize("data", list(FOUND.values()), ids=list(FOUND))
def test_found_inputs_hold_the_property(data: bytes) -> None:
    fuzz_wire.check(data)


def test_the_property_catches_a_wrong_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    # The harness is only as good as its oracle: with the old parser (no overflow check) the
    # `1e400` echo must fail it.
    import json

    from hornbeam_channels import _decode

    monkeypatch.setattr(_decode, "loads", json.JSONDecoder(
        parse_constant=_decode.reject_constant).decode)
    with pytest.raises(fuzz_wire.Mismatch, match="not strict JSON"):
        fuzz_wire.check(FOUND["overflowing_number_echo"])
