"""The `make run` demo (examples/demo): home page, every example reachable under its prefix."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import httpx
import websockets

APP = "examples.demo.app:app"
ROOT = Path(__file__).resolve().parents[2]


async def recv_json(ws, kind: str, timeout: float = 10) -> dict:
    """The next frame of type `kind` (earlier frames of other types are skipped)."""
    async def find() -> dict:
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("type") == kind:
                return frame
    return await asyncio.wait_for(find(), timeout)


def test_home_links_every_example_and_each_answers(serve):
    server = serve(APP)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        home = http.get("/")
        assert home.status_code == 200
        links = re.findall(r'<a href="([^"]+)">', home.text)
        assert "/chat/" in links and "/guide/" in links
        assert "unavailable" not in home.text, home.text
        for link in links:
            page = http.get(link)
            assert page.status_code == 200, link
            # Pages that build URLs from their mount point must know it.
            match = re.search(r"const ROOT = (\"[^\"]*\");", page.text)
            if match:
                assert json.loads(match.group(1)) == link.rstrip("/"), link
        # Without the trailing slash, the prefix redirects to the example's home.
        assert http.get("/chat", follow_redirects=False).status_code in (301, 307, 308)


def test_examples_work_under_their_prefix(serve):
    server = serve(APP)

    async def main() -> None:
        async with websockets.connect(f"{server.ws_url}/chat/ws/demo") as ann, \
                websockets.connect(f"{server.ws_url}/chat/ws/demo") as bob:
            await ann.send(json.dumps({"type": "join", "username": "ann"}))
            await recv_json(ann, "joined")
            await bob.send(json.dumps({"type": "join", "username": "bob"}))
            await recv_json(bob, "joined")
            await ann.send(json.dumps({"type": "message", "text": "through the demo"}))
            frame = await recv_json(bob, "message")
            assert frame["data"]["text"] == "through the demo"
            async with httpx.AsyncClient(timeout=10) as http:
                rooms = (await http.get(f"{server.url}/chat/api/rooms")).json()
            assert {"id": "demo", "users": 2, "messages": 1} in rooms
        async with websockets.connect(f"{server.ws_url}/guide/echo/ws") as ws:
            await ws.send("hi")
            assert await asyncio.wait_for(ws.recv(), 10) == "Echo: hi"
        async with websockets.connect(f"{server.ws_url}/guide/starlette/ws/lobby") as ws:
            await ws.send("hi")
            assert await asyncio.wait_for(ws.recv(), 10) == "Room lobby: hi"

    asyncio.run(asyncio.wait_for(main(), 60))


def test_behind_a_proxy_prefix(serve):
    # A proxy serving the demo at /base strips the prefix; uvicorn's --root-path tells the app.
    server = serve(APP, args=("--root-path", "/base"))
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert 'href="/base/chat/"' in http.get("/").text
        assert 'const ROOT = "/base/chat";' in http.get("/chat/").text
        assert 'const ROOT = "/base/guide/echo";' in http.get("/guide/echo/").text

    async def main() -> None:
        async with websockets.connect(f"{server.ws_url}/chat/ws/proxied") as ws:
            await ws.send(json.dumps({"type": "join", "username": "p"}))
            assert (await recv_json(ws, "joined"))["room"] == "proxied"

    asyncio.run(asyncio.wait_for(main(), 30))


def test_an_example_that_fails_to_import_is_reported():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from examples.demo import app as demo

    broken = demo.load("/broken", "examples.no_such_example.app:app", "Broken")
    assert broken.app is None and "ModuleNotFoundError" in broken.error
    missing_attr = demo.load("/chat2", "examples.websocket_chat.app:nothing_here", "Chat")
    assert missing_attr.app is None and "AttributeError" in missing_attr.error
    fine = demo.load("/chat", "examples.websocket_chat.app:application", "Chat")
    assert fine.error is None and callable(fine.app)
    # One line per example: prefix, import path, title.
    assert all(len(entry) == 3 and entry[0].startswith("/") for entry in demo.EXAMPLES)
