"""Fuzz target: the channels protocol frame parser (issue 9).

The parser is ``Connection.handle_text`` in ``hornbeam_channels/_connection.py`` (``_wire.py``
holds the encoder, ``encode``, and the names; it has no decoder of its own). Each input is split
on NUL bytes into up to 8 WebSocket messages, sent in order through a real ``Connection``'s read
loop (``_read_loop``), with its ``send`` captured: a message that starts with ``\\x01`` is a
binary frame (the rest of it), any other is a text frame, its bytes decoded as UTF-8 (invalid
sequences replaced: uvicorn closes 1007 on invalid UTF-8 before the app sees the frame). Every
input runs on two connections: one of the Hornbeam family (no query, frames up to 1 MiB) and one
of the Phoenix family (``vsn=2.0.0``, frames up to 600 bytes so the size check is reached).

Both families use the array frame ``[join_ref, ref, topic, event, payload]`` (PROTOCOL.md);
Phoenix's v1 object frames (``{"topic": ..., "event": ..., "payload": ..., "ref": ...}``) and
its binary v2 frames are not supported and must be refused like any malformed frame.

The property, per message (see :func:`check`):

* nothing raises out of the read loop, and nothing is logged at ERROR except the crash of the
  ``boom`` handler that the harness registers on purpose;
* every frame the server sends is sendable (encodes to UTF-8) and is strict JSON (no ``NaN`` or
  ``Infinity``, which browsers' ``JSON.parse`` refuses) of 5 items with string topic and event;
* a binary message gets exactly one control error ``binary frames are not supported``; a text
  message over the limit exactly one control error ``frame too large``; a text message that is
  not a well-formed frame (:func:`reference`: strict JSON, a 5-array, topic and event strings,
  refs string/integer/null, no unpaired surrogate) exactly one control error
  ``malformed frame ...``: the parser's documented error (docs/bad-input.md). A control error
  is ``[null, null, "hornbeam"|"phoenix", "hb_error"|"phx_error", {"reason": ...}]``;
* a well-formed frame gets no control error, and a reply carrying its ref and topic (except
  the ``boom`` event, which crashes its channel instead); it re-encodes with ``_wire.encode`` to
  a sendable text that parses back to the same frame; an ``echo`` on a joined topic replies with
  the payload unchanged.

Run through ``fuzz/python/run.py``; :func:`check` is imported by
``tests/py/test_fuzz_wire_regressions.py`` to replay the corpus under pytest.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sys
from typing import Any, Optional

import hornbeam_channels
import hornbeam_erlang as hb
from hornbeam_channels import _wire
from hornbeam_channels._connection import Connection, Options

MAX_MESSAGES = 8
#: (query string, max_frame_bytes) of the two connections every input runs on.
CONNECTIONS = ((b"", 1 << 20), (b"vsn=2.0.0", 600))
PATTERNS = ("fz:*", "fz")
CONTROL = {"hb": "hornbeam", "phx": "phoenix"}


class Mismatch(AssertionError):
    """The property failed: a wrong answer (as opposed to a crash)."""


# ---- the channels the fuzzed frames reach ---------------------------------------------------------


def setup() -> None:
    """Registers the harness's channels (``fz:*`` with handlers, ``fz`` without any)."""
    room = hornbeam_channels.channel("fz:*")

    @room.on_join
    def join(topic: str, topic_params: Any, params: Any, socket: Any) -> Any:
        if params.get("deny"):
            return ("error", {"reason": "denied"})
        return ("ok", {"params": params}, socket.assign("joined", topic))

    @room.on_leave
    def leave(topic: str, socket: Any) -> None:
        return None

    @room.on("echo")
    def echo(payload: Any, socket: Any) -> Any:
        return ("reply", payload, socket)

    @room.on("stop")
    def stop(payload: Any, socket: Any) -> Any:
        return ("stop", "bye", ("ok", payload), socket)

    @room.on("boom")
    def boom(payload: Any, socket: Any) -> Any:
        raise RuntimeError("boom (on purpose)")

    hornbeam_channels.channel("fz")


def teardown() -> None:
    for pattern in PATTERNS:
        hornbeam_channels.unregister(pattern)


class _Errors(logging.Handler):
    """Collects ERROR records of ``hornbeam_channels`` (the expected ``boom`` crash aside)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("handler of 'boom' on topic"):
            return
        if record.exc_info is not None:
            message += f" ({record.exc_info[1]!r})"
        self.records.append(message)


# ---- the reference ---------------------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} overflows a double")
    return value


#: Strict JSON (RFC 8259 as browsers and Phoenix's Jason read it): no NaN/Infinity tokens, no
#: number that overflows to an infinity.
_strict = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite).decode


def _unpaired_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if any(0xD800 <= ord(c) <= 0xDFFF for c in v):
                return True
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
    return False


def _is_ref(value: Any) -> bool:
    return value is None or (type(value) in (str, int))


def reference(text: str) -> tuple[str, Any]:
    """``("frame", [join_ref, ref, topic, event, payload])`` when ``text`` is a well-formed frame,
    else ``("malformed", why)`` (size aside)."""
    try:
        frame = _strict(text)
    except RecursionError:
        return "malformed", "nested too deeply"
    except ValueError as exc:
        return "malformed", f"invalid JSON: {exc}"
    if not isinstance(frame, list) or len(frame) != 5:
        return "malformed", "not a 5-array"
    join_ref, ref, topic, event, _ = frame
    if not (isinstance(topic, str) and isinstance(event, str) and _is_ref(join_ref)
            and _is_ref(ref)):
        return "malformed", "wrong item types"
    try:
        unpaired = _unpaired_surrogate(frame)
    except RecursionError:
        return "malformed", "nested too deeply"
    if unpaired:
        return "malformed", "unpaired surrogate"
    return "frame", frame


def _parse_sent(text: Any) -> list[Any]:
    """A frame the server sent, checked sendable and strict JSON."""
    if not isinstance(text, str):
        raise Mismatch(f"server sent a non-text message {text!r:.200}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Mismatch(f"server sent a frame that is not valid Unicode ({exc}): {text!r:.300}")
    try:
        frame = _strict(text)
    except (ValueError, RecursionError) as exc:
        raise Mismatch(f"server sent a frame that is not strict JSON ({exc}): {text!r:.300}")
    if not (isinstance(frame, list) and len(frame) == 5 and isinstance(frame[2], str)
            and isinstance(frame[3], str)):
        raise Mismatch(f"server sent a frame of the wrong shape: {text!r:.300}")
    return frame


def same(a: Any, b: Any) -> bool:
    """JSON values equal with their types (``1`` is not ``1.0`` nor ``True``; ``-0.0`` is not
    ``0.0``), dict keys in the same order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


# ---- driving a connection --------------------------------------------------------------------------


def split(data: bytes) -> list[tuple[str, Any]]:
    """The WebSocket messages of one input: ``("bytes", b)`` or ``("text", s)``."""
    out: list[tuple[str, Any]] = []
    for chunk in data.split(b"\0")[:MAX_MESSAGES]:
        if chunk[:1] == b"\x01":
            out.append(("bytes", chunk[1:]))
        else:
            out.append(("text", chunk.decode("utf-8", "replace")))
    return out


async def _converse(query: bytes, limit: int, messages: list[tuple[str, Any]]
                    ) -> tuple[list[tuple[Optional[str], Any, list[Any]]], Connection]:
    """Runs the read loop over ``messages``; per message: (family before it, message, sent)."""
    log: list[tuple[Optional[str], Any, list[Any]]] = []
    pending = list(messages)
    conn: Optional[Connection] = None

    async def receive() -> dict[str, Any]:
        if not pending:
            return {"type": "websocket.disconnect", "code": 1000}
        kind, body = pending.pop(0)
        assert conn is not None
        log.append((conn.family, (kind, body), []))
        return {"type": "websocket.receive", kind: body}

    async def send(message: dict[str, Any]) -> None:
        if message.get("type") == "websocket.send" and log:
            log[-1][2].append(message.get("text", message.get("bytes")))

    conn = Connection({"type": "websocket", "query_string": query}, receive, send,
                      Options(heartbeat_timeout=None, max_frame_bytes=limit, on_connect=None,
                              max_channels=100, max_outbox_chars=256 * 1024))
    conn.mailbox = hb.Mailbox()
    conn.mailbox.subscribe(_wire.session_bus(conn.session_id))
    try:
        await conn._read_loop()
    finally:
        await conn._teardown()
    return log, conn


def _check_message(family: Optional[str], message: tuple[str, Any], sent: list[Any],
                   limit: int, joined_before: set[str]) -> None:
    frames = [_parse_sent(text) for text in sent]
    fam = family or "hb"
    control = [f for f in frames if f[2] == CONTROL[fam] and f[3] == f"{fam}_error"]
    kind, body = message
    if kind == "bytes":
        expect: Optional[str] = "binary frames are not supported"
    elif len(body.encode("utf-8")) > limit:
        expect = "frame too large"
    else:
        verdict, frame = reference(body)
        expect = "malformed frame" if verdict == "malformed" else None
    if expect is not None:
        if len(frames) != 1 or len(control) != 1:
            raise Mismatch(f"expected one control error {expect!r}, the server sent {sent!r:.500}")
        err = control[0]
        if not (err[0] is None and err[1] is None and isinstance(err[4], dict)
                and list(err[4]) == ["reason"] and isinstance(err[4]["reason"], str)
                and err[4]["reason"].startswith(expect)):
            raise Mismatch(f"expected a control error {expect!r}, got {err!r:.300}")
        return
    if control:
        raise Mismatch(f"a well-formed frame {body!r:.300} got a control error {control!r:.300}")
    join_ref, ref, topic, event, payload = frame
    # The frame re-encodes to sendable text that reads back the same.
    again = _parse_sent(_wire.encode(join_ref, ref, topic, event, payload))
    if not same(again, frame):
        raise Mismatch(f"frame {frame!r:.300} re-encodes to {again!r:.300}")
    if event == "boom" and topic in joined_before:
        return
    replies = [f for f in frames if f[1] == ref and f[2] == topic and f[3].endswith("_reply")]
    if len(replies) != 1:
        raise Mismatch(f"frame {body!r:.300} got {len(replies)} replies: {sent!r:.500}")
    reply = replies[0][4]
    if not (isinstance(reply, dict) and list(reply) == ["status", "response"]
            and reply["status"] in ("ok", "error")):
        raise Mismatch(f"malformed reply payload {reply!r:.300}")
    if (event == "echo" and topic in joined_before and isinstance(payload, dict)
            and reply["status"] == "ok" and not same(reply["response"], payload)):
        raise Mismatch(f"echo of {payload!r:.300} replied {reply['response']!r:.300}")


def check(data: bytes) -> None:
    """The fuzz property for one input (see the module docstring)."""
    messages = split(data)
    errors = _Errors()
    logger = logging.getLogger("hornbeam_channels")
    logger.addHandler(errors)
    saved = logger.propagate, logger.level
    logger.propagate = False  # keep the expected `boom` tracebacks off stderr
    logger.setLevel(logging.INFO)
    try:
        for query, limit in CONNECTIONS:
            log, conn = asyncio.run(_converse(query, limit, messages))
            if len(log) != len(messages):
                raise Mismatch(f"the read loop took {len(log)} of {len(messages)} messages")
            joined: set[str] = set()
            for family, message, sent in log:
                _check_message(family, message, sent, limit, joined)
                _track_joins(joined, sent)
            if errors.records:
                raise Mismatch(f"logged errors: {errors.records}")
            if conn.channels or conn.mailbox is None or not conn.mailbox.closed:
                raise Mismatch("the teardown left channels or the mailbox open")
    finally:
        logger.removeHandler(errors)
        logger.propagate, _ = saved
        logger.setLevel(saved[1])


def _track_joins(joined: set[str], sent: list[Any]) -> None:
    """Follows which topics are joined, from the server's own frames."""
    for text in sent:
        frame = json.loads(text)
        topic, event = frame[2], frame[3]
        if event.endswith("_close") or event.endswith("_error"):
            joined.discard(topic)
        elif event == "presence_state":  # follows every successful join reply
            joined.add(topic)


def main(argv: list[str]) -> None:
    import atheris  # type: ignore[import-untyped]

    from instrument import instrument

    setup()
    print(f"INFO: instrumented {instrument(('hornbeam_channels', '__main__'))} functions")
    atheris.Setup(argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
