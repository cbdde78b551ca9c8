"""What handlers return, normalised: join and event results, and calling plain or async handlers."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Optional

from ._socket import Socket


async def call(func: Callable[..., Any], *args: Any) -> Any:
    """Calls a handler, plain or async."""
    result = func(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


def normalize_join(result: Any, socket: Socket) -> tuple[str, Any, Socket]:
    """(status, response, new socket) from ``('ok'|'error', reply[, socket])``."""
    if isinstance(result, tuple) and len(result) in (2, 3) and result[0] in ("ok", "error"):
        new = result[2] if len(result) == 3 else socket
        if not isinstance(new, Socket):
            raise TypeError(f"join handler returned {type(new).__name__} where a Socket goes")
        return result[0], result[1], new
    raise TypeError("join handler must return ('ok', reply), ('ok', reply, socket) or "
                    f"('error', reason), not {result!r}")


def _split_reply(reply: Any) -> tuple[str, Any]:
    if isinstance(reply, tuple) and len(reply) == 2 and reply[0] in ("ok", "error"):
        return reply[0], reply[1]
    return "ok", reply


def normalize_event(result: Any, socket: Socket
                    ) -> tuple[Optional[tuple[str, Any]], bool, Socket]:
    """(reply as (status, response) or None, stop?, new socket)."""
    if isinstance(result, tuple) and result:
        kind, rest = result[0], result[1:]
        if kind == "noreply" and len(rest) <= 1:
            new = rest[0] if rest else socket
            if isinstance(new, Socket):
                return None, False, new
        elif kind == "reply" and len(rest) in (1, 2):
            new = rest[1] if len(rest) == 2 else socket
            if isinstance(new, Socket):
                return _split_reply(rest[0]), False, new
        elif kind == "stop" and len(rest) in (1, 2, 3):
            new = rest[-1] if len(rest) >= 2 else socket
            if isinstance(new, Socket):
                reply = _split_reply(rest[1]) if len(rest) == 3 else None
                return reply, True, new
    raise TypeError("event handler must return ('reply', response, socket), ('noreply', socket) "
                    f"or ('stop', reason, socket), not {result!r}")
