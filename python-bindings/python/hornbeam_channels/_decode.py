"""The JSON decode policy for client frames: strict JSON only, what browsers can read back."""

from __future__ import annotations

import json
from typing import Any


def reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; browsers' JSON.parse does not, so letting them
    # through would break every client a handler echoes or broadcasts them to.
    raise ValueError(f"{name} is not JSON")


_INF = float("inf")


def _finite_float(text: str) -> float:
    # `1e400` reads as infinity, which would go back out as `Infinity`, like the tokens above.
    value = float(text)
    if value in (_INF, -_INF):
        raise ValueError(f"{text} overflows a double")
    return value


#: Decodes one frame's text; raises ValueError (and RecursionError when nested too deeply).
loads = json.JSONDecoder(parse_constant=reject_constant, parse_float=_finite_float).decode
_dumps = json.JSONEncoder(ensure_ascii=False).encode


def unpaired_surrogate(frame: Any) -> bool:
    """Whether a decoded frame holds a lone ``\\ud800``-style surrogate: it could neither be
    sent back (UTF-8) nor stored or published, so the frame is refused as a whole."""
    try:
        _dumps(frame).encode()
    except UnicodeEncodeError:
        return True
    return False


MALFORMED = "malformed frame: expected a JSON array [join_ref, ref, topic, event, payload]"


def is_ref(value: Any) -> bool:
    """Whether ``value`` can be a join ref or a ref (a string, an int, or null)."""
    return value is None or (isinstance(value, (str, int)) and not isinstance(value, bool))
