"""Origin checking on every WebSocket endpoint (issue 9, security).

One helper, `hornbeam_channels.OriginGuard` / `origin_allowed`, used by every example app and by the
channels endpoint: a foreign ``Origin`` gets HTTP 403 at the handshake; same origin (Origin
host:port == Host), no Origin at all (non-browser clients) and the origins listed in
``HORNBEAM_ALLOWED_ORIGINS`` are accepted.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from hornbeam_channels import origin_allowed

LISTED = "https://allowed.example"
FOREIGN = "https://evil.example"
ENV = {"HORNBEAM_ALLOWED_ORIGINS": f"http://other.example:8080, {LISTED}"}


def scope(origin: Optional[str], host: Optional[str] = "chat.example:8000", scheme: str = "ws") -> dict[str, Any]:
    headers = []
    if host is not None:
        headers.append((b"host", host.encode()))
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return {"type": "websocket", "scheme": scheme, "headers": headers}


@pytest.mark.parametrize(("origin", "host", "scheme", "allowed", "expected"), [
    (None, "chat.example:8000", "ws", [], True),                       # non-browser client
    ("http://chat.example:8000", "chat.example:8000", "ws", [], True),   # same origin
    ("http://CHAT.example:8000", "chat.example:8000", "ws", [], True),   # host names are case-blind
    ("https://chat.example", "chat.example", "wss", [], True),           # default ports
    ("https://chat.example", "chat.example:443", "wss", [], True),
    ("http://chat.example:8001", "chat.example:8000", "ws", [], False),  # another port
    ("http://evil.example:8000", "chat.example:8000", "ws", [], False),
    ("http://chat.example.evil.example:8000", "chat.example:8000", "ws", [], False),
    ("null", "chat.example:8000", "ws", [], False),                      # sandboxed frame, file://
    ("not a url", "chat.example:8000", "ws", [], False),
    ("http://chat.example:8000", None, "ws", [], False),                 # no Host to compare with
    (LISTED, "chat.example:8000", "ws", [LISTED], True),
    (LISTED + ":443", "chat.example:8000", "ws", [LISTED], True),
    ("http://allowed.example", "chat.example:8000", "ws", [LISTED], False),  # scheme matters
    (FOREIGN, "chat.example:8000", "ws", [LISTED], False),
    (FOREIGN, "chat.example:8000", "ws", ["*"], True),
    ("null", "chat.example:8000", "ws", ["*"], True),
])
def test_origin_rule(origin: Optional[str], host: Optional[str], scheme: str, allowed: list[str],
                     expected: bool) -> None:
    assert origin_allowed(scope(origin, host, scheme), allowed) is expected


def test_origin_rule_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HORNBEAM_ALLOWED_ORIGINS", raising=False)
    assert not origin_allowed(scope(LISTED))
    monkeypatch.setenv("HORNBEAM_ALLOWED_ORIGINS", f" {LISTED} ,,http://x.example ")
    assert origin_allowed(scope(LISTED))
    assert origin_allowed(scope("http://x.example:80"))
    assert not origin_allowed(scope(FOREIGN))


async def handshake(url: str, origin: Optional[str]) -> int:
    """101 when the socket opened, else the HTTP status of the refused handshake."""
    kwargs: dict[str, Any] = {"origin": origin} if origin is not None else {}
    try:
        async with websockets.connect(url, open_timeout=10, **kwargs):
            return 101
    except InvalidStatus as e:
        return e.response.status_code


async def check_endpoints(base: str, port: int, paths: list[str], query: str = "") -> None:
    same = f"http://127.0.0.1:{port}"
    for path in paths:
        url = f"{base}{path}{query}"
        assert await handshake(url, FOREIGN) == 403, path
        assert await handshake(url, "http://127.0.0.1:1") == 403, path  # same host, other port
        assert await handshake(url, same) == 101, path
        assert await handshake(url, LISTED) == 101, path
        assert await handshake(url, None) == 101, path


# (uvicorn target, extra args, WebSocket paths)
APPS = [
    ("examples.websocket_chat.app:application", (), ["/ws/general"]),
    ("examples.channels_chat.app:app", (), ["/ws/websocket?vsn=2.0.0", "/ws"]),
    ("examples.zenith_chat.app:app", (), ["/ws/chat/lobby"]),
    ("examples.websocket_guide.app:app", (), [
        "/echo/ws", "/pubsub/ws", "/binary/ws", "/subprotocols/ws", "/tracking/ws", "/dashboard/ws",
        "/errors/ws", "/fastapi/ws/r1", "/starlette/ws", "/starlette/ws/lobby"]),
    ("examples.demo.app:app", (), ["/chat/ws/demo", "/guide/echo/ws", "/guide/fastapi/ws/r1"]),
]


@pytest.mark.parametrize(("target", "args", "paths"), APPS, ids=[a[0].split(".")[1] for a in APPS])
def test_example_endpoints_check_origin(serve: Any, target: str, args: tuple[str, ...],
                                        paths: list[str]) -> None:
    server = serve(target, env=ENV, args=args)
    asyncio.run(check_endpoints(server.ws_url, server.port, paths))


def test_velithon_checks_origin(serve: Any) -> None:
    server = serve("examples.velithon_chat.app:app", env=ENV)

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=server.url) as http:
            tok = (await http.post("/api/token", json={"username": "o"})).json()["token"]
        await check_endpoints(server.ws_url, server.port, ["/ws/lobby/o"], f"?token={tok}")

    asyncio.run(scenario())


def test_unset_means_same_origin_only(serve: Any) -> None:
    server = serve("examples.websocket_chat.app:application", env={"HORNBEAM_ALLOWED_ORIGINS": ""})

    async def scenario() -> None:
        url = f"{server.ws_url}/ws/general"
        assert await handshake(url, LISTED) == 403
        assert await handshake(url, f"http://127.0.0.1:{server.port}") == 101
        assert await handshake(url, None) == 101

    asyncio.run(scenario())
