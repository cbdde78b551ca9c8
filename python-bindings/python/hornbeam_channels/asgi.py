"""The ASGI types, defined once for the package and the apps built on it.

Loose on purpose where frameworks differ (Starlette, FastAPI and uvicorn each type the events their
own way): an event is a ``dict[str, Any]``.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, MutableMapping

__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send"]

#: The connection scope (``scope["type"]`` is ``"http"``, ``"websocket"`` or ``"lifespan"``).
Scope = MutableMapping[str, Any]
#: One ASGI event, received or sent.
Message = MutableMapping[str, Any]
#: Awaits the next event from the server.
Receive = Callable[[], Awaitable[Message]]
#: Sends one event to the server.
Send = Callable[[Message], Awaitable[None]]
#: An ASGI application.
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
