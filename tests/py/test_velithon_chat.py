"""Velithon chat (seed 004) against a real uvicorn: protocol, REST, tokens, persistence across a
restart, rate limiting and private messages, with their error paths.

Servers get a known ``VELITHON_SECRET`` (so tests can forge expired or foreign tokens), a history
file under ``tmp_path``, and a high rate limit unless the test is about the limit.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Awaitable, Optional, TypeVar
from urllib.parse import quote

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from examples.velithon_chat.auth import TokenSigner

APP = "examples.velithon_chat.app:app"
SECRET = "test-secret-0123456789"
T = TypeVar("T")


def mounted_app() -> Any:
    """A factory for uvicorn --factory: the app mounted under /velithon (no lifespan reaches it)."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from examples.velithon_chat.app import app

    return Starlette(routes=[Mount("/velithon", app=app)])


def start(serve: Any, tmp_path: Path, **env: str) -> Any:
    full = {"VELITHON_SECRET": SECRET, "VELITHON_HISTORY_FILE": str(tmp_path / "history.jsonl"),
            "VELITHON_RATE_LIMIT": "100000", **env}
    return serve(APP, env={k: v for k, v in full.items() if v is not None})


def run(coro: Awaitable[T], timeout: float = 90) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro
    return asyncio.run(bounded())


def token(server: Any, username: str) -> str:
    response = httpx.post(server.url + "/api/token", json={"username": username})
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["token"]
    return body["token"]


def ws_url(server: Any, room: str, username: str, tok: Optional[str]) -> str:
    url = f"{server.ws_url}/ws/{quote(room, safe='')}/{quote(username, safe='')}"
    return url if tok is None else f"{url}?token={quote(tok, safe='')}"


async def join(server: Any, room: str, username: str) -> ClientConnection:
    return await connect(ws_url(server, room, username, token(server, username)))


async def recv_json(ws: ClientConnection, timeout: float = 5) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def assert_silent(ws: ClientConnection, wait: float = 0.3) -> None:
    try:
        frame = await asyncio.wait_for(ws.recv(), wait)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected frame: {frame}")


async def say(ws: ClientConnection, content: str) -> None:
    await ws.send(json.dumps({"type": "message", "content": content}))


def assert_timestamp(value: Any) -> None:
    assert isinstance(value, str)
    stamp = datetime.fromisoformat(value)
    assert stamp.utcoffset() is not None
    assert abs(stamp.timestamp() - time.time()) < 60


def auth(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


async def wait_users(server: Any, tok: str, room: str, expected: list[str]) -> None:
    body: Any = None
    async with httpx.AsyncClient(base_url=server.url, headers=auth(tok)) as http:
        for _ in range(50):
            body = (await http.get(f"/api/rooms/{quote(room, safe='')}/users")).json()
            if body["users"] == expected:
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"users stayed {body}, expected {expected}")


# --- wire protocol ----------------------------------------------------------------------------


def test_messages_joins_and_leaves(serve, tmp_path):
    server = start(serve, tmp_path)

    async def scenario() -> None:
        alice = await join(server, "general", "alice")
        await say(alice, "  hello  ")
        echo = await recv_json(alice)
        assert list(echo) == ["id", "username", "content", "timestamp", "message_type"]
        assert echo["message_type"] == "message"
        assert echo["username"] == "alice"
        assert echo["content"] == "hello"  # stripped, as the seed did
        assert re.fullmatch(r"alice_\d+_\d+", echo["id"])
        assert_timestamp(echo["timestamp"])

        bob = await join(server, "general", "bob")
        assert await recv_json(bob) == echo  # history on connect
        joined = await recv_json(alice)
        assert list(joined) == ["username", "message_type", "timestamp"]
        assert joined["username"] == "bob" and joined["message_type"] == "user_joined"
        assert_timestamp(joined["timestamp"])
        await assert_silent(bob)  # the joiner does not hear its own join

        # A second connection of bob: no new announcement, and it gets the history too.
        bob2 = await join(server, "general", "bob")
        assert await recv_json(bob2) == echo
        await say(bob2, "from tab two")
        for ws in (alice, bob, bob2):
            assert (await recv_json(ws))["content"] == "from tab two"
        await bob.close()
        await assert_silent(alice)  # bob is still there through bob2
        await bob2.close()
        left = await recv_json(alice)
        assert list(left) == ["username", "message_type", "timestamp"]
        assert left["username"] == "bob" and left["message_type"] == "user_left"
        assert_timestamp(left["timestamp"])
        await alice.close()

    run(scenario())


def test_last_50_on_connect_then_live(serve, tmp_path):
    server = start(serve, tmp_path)

    async def scenario() -> None:
        async with await join(server, "busy", "writer") as writer:
            for i in range(60):
                await say(writer, f"m{i}")
            for i in range(60):
                assert (await recv_json(writer))["content"] == f"m{i}"
            async with await join(server, "busy", "reader") as reader:
                history = [await recv_json(reader) for _ in range(50)]
                assert [m["content"] for m in history] == [f"m{i}" for i in range(10, 60)]
                await recv_json(writer)  # reader joined
                await say(writer, "live")
                assert (await recv_json(reader))["content"] == "live"
                await assert_silent(reader)  # no history message twice

    run(scenario())


def test_1000_kept_per_room(serve, tmp_path):
    server = start(serve, tmp_path)
    tok = token(server, "flood")

    async def scenario() -> None:
        async with connect(ws_url(server, "big", "flood", tok)) as ws:
            for batch in range(0, 1010, 101):
                for i in range(batch, batch + 101):
                    await say(ws, f"n{i}")
                for i in range(batch, batch + 101):
                    assert (await recv_json(ws))["content"] == f"n{i}"
        async with httpx.AsyncClient(base_url=server.url, headers=auth(tok)) as http:
            body = (await http.get("/api/rooms/big/messages", params={"limit": 1000})).json()
        assert [m["content"] for m in body["messages"]] == [f"n{i}" for i in range(10, 1010)]

    run(scenario())


def test_history_store_deletes_older_than_1000():
    import hornbeam_erlang as hb

    from examples.velithon_chat import history

    room = f"trim-{time.monotonic_ns()}"
    for i in range(1005):
        history.store_message(room, history.next_seq(room), {"content": f"c{i}"})
    keys = history.room_keys(room)
    assert len(keys) == 1000
    assert hb.state_get(keys[0]) == {"content": "c5"}
    assert [m["content"] for _, m in history.recent(room, 3)] == ["c1002", "c1003", "c1004"]


def test_error_frames(serve, tmp_path):
    server = start(serve, tmp_path)

    async def expect_error(ws: ClientConnection, frame: Any, code: str) -> None:
        await ws.send(frame if isinstance(frame, str) else json.dumps(frame))
        event = await recv_json(ws)
        assert event["message_type"] == "error" and event["error"] == code, event
        assert isinstance(event["detail"], str) and event["detail"]
        assert_timestamp(event["timestamp"])

    async def scenario() -> None:
        async with await join(server, "errs", "watcher") as watcher, \
                await join(server, "errs", "noisy") as noisy:
            await recv_json(watcher)  # noisy joined
            await expect_error(noisy, "{oops", "invalid_json")
            await expect_error(noisy, '"just a string"', "invalid_json")
            await expect_error(noisy, {"type": "shout", "content": "x"}, "unknown_type")
            await expect_error(noisy, {"content": "no type"}, "unknown_type")
            await expect_error(noisy, {"type": "message", "content": ""}, "empty_message")
            await expect_error(noisy, {"type": "message", "content": " \t "}, "empty_message")
            await expect_error(noisy, {"type": "message"}, "empty_message")
            await expect_error(noisy, {"type": "message", "content": 5}, "empty_message")
            await expect_error(noisy, {"type": "message", "content": "x" * 2001}, "invalid_message")
            await expect_error(noisy, {"type": "private_message", "content": "x"}, "invalid_recipient")
            await expect_error(noisy, {"type": "private_message", "to": "a/b", "content": "x"},
                               "invalid_recipient")
            await expect_error(noisy, {"type": "private_message", "to": "ghost", "content": "boo"},
                               "unknown_user")
            await expect_error(noisy, {"type": "private_message", "to": "watcher", "content": ""},
                               "empty_message")
            await assert_silent(watcher)
            await say(noisy, "still works")
            assert (await recv_json(watcher))["content"] == "still works"
        async with httpx.AsyncClient(base_url=server.url, headers=auth(token(server, "x"))) as http:
            body = (await http.get("/api/rooms/errs/messages")).json()
        assert [m["content"] for m in body["messages"]] == ["still works"]

    run(scenario())


# --- REST --------------------------------------------------------------------------------------


def test_rest_endpoints(serve, tmp_path):
    server = start(serve, tmp_path)
    tok = token(server, "reader")

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=server.url, headers=auth(tok)) as http:
            assert (await http.get("/api/rooms")).json() == {"rooms": []}
            assert (await http.get("/api/rooms/none/users")).json() == {"room": "none", "users": []}
            assert (await http.get("/api/rooms/none/messages")).json() == {"room": "none", "messages": []}
            async with await join(server, "r1", "zed") as zed, await join(server, "r1", "amy") as amy, \
                    await join(server, "r:2", "bo") as bo:
                await recv_json(zed)
                assert (await http.get("/api/rooms")).json() == {"rooms": ["r1", "r:2"]}
                assert (await http.get("/api/rooms/r1/users")).json() == {"room": "r1", "users": ["amy", "zed"]}
                assert (await http.get("/api/rooms/r%3A2/users")).json() == {"room": "r:2", "users": ["bo"]}
                for i in range(60):
                    await say(amy, f"x{i}")
                for i in range(60):
                    await recv_json(amy)
                default = (await http.get("/api/rooms/r1/messages")).json()
                assert default["room"] == "r1"
                assert [m["content"] for m in default["messages"]] == [f"x{i}" for i in range(10, 60)]
                three = (await http.get("/api/rooms/r1/messages?limit=3")).json()["messages"]
                assert [m["content"] for m in three] == ["x57", "x58", "x59"]
                assert list(three[0]) == ["id", "username", "content", "timestamp", "message_type"]
                assert len((await http.get("/api/rooms/r1/messages?limit=1000")).json()["messages"]) == 60
                for bad in ("0", "-1", "1001", "abc", "2.5", ""):
                    response = await http.get("/api/rooms/r1/messages", params={"limit": bad})
                    assert response.status_code == 422, bad
                    assert response.json()["detail"][0]["loc"] == ["query", "limit"]
                await bo.close()
            await wait_users(server, tok, "r1", [])
            assert (await http.get("/api/rooms")).json() == {"rooms": []}
            # History outlives the room's last user (persistence would contradict dropping it).
            assert len((await http.get("/api/rooms/r1/messages")).json()["messages"]) == 50

    run(scenario())


def test_page_is_served_with_its_root_path(serve, tmp_path):
    server = start(serve, tmp_path)
    page = httpx.get(server.url + "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<meta name="root-path" content="">' in page.text
    assert not re.search(r"innerHTML\s*=|outerHTML|insertAdjacentHTML|document\.write", page.text)


def test_mounted_under_a_prefix(serve, tmp_path):
    server = serve("tests.py.test_velithon_chat:mounted_app", args=("--factory",),
                   env={"VELITHON_SECRET": SECRET, "VELITHON_HISTORY_FILE": str(tmp_path / "h.jsonl")})

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=server.url + "/velithon") as http:
            page = await http.get("/")
            assert '<meta name="root-path" content="/velithon">' in page.text
            tok = (await http.post("/api/token", json={"username": "m"})).json()["token"]
            async with connect(f"{server.ws_url}/velithon/ws/lobby/m?token={tok}") as ws:
                await say(ws, "mounted")
                assert (await recv_json(ws))["content"] == "mounted"
                rooms = await http.get("/api/rooms", headers=auth(tok))
                assert rooms.json() == {"rooms": ["lobby"]}
                assert (await http.get("/api/rooms")).status_code == 401
        assert (tmp_path / "h.jsonl").read_text().count("\n") == 1

    run(scenario())


# --- 1. tokens ---------------------------------------------------------------------------------


def test_token_endpoint_validates_usernames(serve, tmp_path):
    server = start(serve, tmp_path)
    a, b = token(server, "alice"), token(server, "bob")
    assert a != b and a.count(".") == 1
    assert TokenSigner(SECRET.encode()).verify(a) == "alice"
    for body in ({}, {"username": ""}, {"username": "a/b"}, {"username": " pad"},
                 {"username": "x" * 65}, {"username": 7}, {"username": "tab\there"}):
        response = httpx.post(server.url + "/api/token", json=body)
        assert response.status_code == 422, body
    assert httpx.post(server.url + "/api/token", content=b"nope").status_code == 422


def test_socket_refuses_bad_tokens_with_1008(serve, tmp_path):
    server = start(serve, tmp_path)
    good = token(server, "alice")
    signer = TokenSigner(SECRET.encode())
    payload, signature = good.split(".")
    # A longer-lived claim for the same user, under the good token's signature.
    forged_payload = TokenSigner(b"other", ttl=10**7).issue("alice").split(".")[0]
    bad_tokens = {
        "missing": None,
        "empty": "",
        "garbage": "not-a-token",
        "other secret": TokenSigner(b"another-secret").issue("alice"),
        "someone else's": token(server, "mallory"),
        "expired": signer.issue("alice", now=time.time() - 2 * signer.ttl),
        "tampered payload": f"{forged_payload}.{signature}",
        "tampered signature": f"{payload}.{signature[:-2]}AA",
        "three parts": f"{good}.x",
    }

    async def refused(tok: Optional[str], room: str = "general") -> ConnectionClosed:
        async with connect(ws_url(server, room, "alice", tok)) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
        return closed.value

    async def scenario() -> None:
        for name, tok in bad_tokens.items():
            closed = await refused(tok)
            assert closed.rcvd is not None and closed.rcvd.code == 1008, name
            assert "token" in closed.rcvd.reason, name
        long_room = await refused(good, "r" * 65)
        assert long_room.rcvd is not None and long_room.rcvd.code == 1008
        assert long_room.rcvd.reason == "invalid room name"
        async with httpx.AsyncClient(base_url=server.url, headers=auth(good)) as http:
            assert (await http.get("/api/rooms")).json() == {"rooms": []}
        async with connect(ws_url(server, "general", "alice", good)) as ws:
            await say(ws, "in")
            assert (await recv_json(ws))["content"] == "in"

    run(scenario())


def test_rest_requires_bearer_token(serve, tmp_path):
    server = start(serve, tmp_path)
    good = token(server, "alice")
    expired = TokenSigner(SECRET.encode()).issue("alice", now=0)
    for path in ("/api/rooms", "/api/rooms/general/users", "/api/rooms/general/messages",
                 "/api/rooms/general/messages?limit=0"):
        for headers in ({}, {"Authorization": good}, {"Authorization": f"Basic {good}"},
                        {"Authorization": "Bearer"}, {"Authorization": "Bearer nope"},
                        {"Authorization": f"Bearer {expired}"}):
            response = httpx.get(server.url + path, headers=headers)
            assert response.status_code == 401, (path, headers)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert isinstance(response.json()["detail"], str)
        assert httpx.get(server.url + path, headers=auth(good)).status_code in (200, 422)


def test_random_secret_per_process_when_unset(serve, tmp_path):
    one = start(serve, tmp_path, VELITHON_SECRET="")
    two = start(serve, tmp_path / "two", VELITHON_SECRET="")
    tok = token(one, "alice")
    assert httpx.get(one.url + "/api/rooms", headers=auth(tok)).status_code == 200
    assert httpx.get(two.url + "/api/rooms", headers=auth(tok)).status_code == 401
    assert TokenSigner(SECRET.encode()).verify(tok) is None


# --- 2. persistence ----------------------------------------------------------------------------


def test_history_survives_a_restart(serve, tmp_path):
    first = start(serve, tmp_path)

    async def chat(server: Any) -> None:
        async with await join(server, "keep", "alice") as ws:
            for text in ("one", "two", "three"):
                await say(ws, text)
            for _ in range(3):
                await recv_json(ws)

    run(chat(first))
    first.stop()
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["message"]["content"] for line in lines] == ["one", "two", "three"]

    second = start(serve, tmp_path)

    async def reconnect() -> None:
        async with await join(second, "keep", "bob") as ws:
            history = [await recv_json(ws) for _ in range(3)]
            assert [m["content"] for m in history] == ["one", "two", "three"]
            assert all(m["username"] == "alice" for m in history)
            await say(ws, "four")
            await recv_json(ws)
        tok = token(second, "bob")
        body = httpx.get(second.url + "/api/rooms/keep/messages", headers=auth(tok)).json()
        assert [m["content"] for m in body["messages"]] == ["one", "two", "three", "four"]

    run(reconnect())


def test_torn_last_line_is_skipped(serve, tmp_path):
    path = tmp_path / "history.jsonl"
    good = {"id": "old_1_1", "username": "old", "content": "kept", "timestamp": "2024-01-01T00:00:00.000+00:00",
            "message_type": "message"}
    path.write_text(json.dumps({"room": "t", "message": good}) + "\n"
                    + "not json at all\n"
                    + '{"room": "t", "mess')
    server = start(serve, tmp_path)

    async def scenario(srv: Any, expected: list[str]) -> None:
        async with await join(srv, "t", "reader") as ws:
            history = [await recv_json(ws) for _ in expected]
            assert [m["content"] for m in history] == expected
            await assert_silent(ws)
            if len(expected) == 1:
                await say(ws, "after the tear")
                await recv_json(ws)

    run(scenario(server, ["kept"]))
    server.stop()
    # The new line starts on a line of its own, so the next start reads it.
    lines = path.read_text().splitlines()
    assert lines[2] == '{"room": "t", "mess'
    assert json.loads(lines[3])["message"]["content"] == "after the tear"
    again = start(serve, tmp_path)
    run(scenario(again, ["kept", "after the tear"]))


def test_replay_keeps_the_newest_1000_per_room(serve, tmp_path):
    path = tmp_path / "history.jsonl"
    with path.open("w") as handle:
        for i in range(1003):
            handle.write(json.dumps({"room": "big", "message": {"content": f"b{i}"}}) + "\n")
        handle.write(json.dumps({"room": "small", "message": {"content": "s"}}) + "\n")
    server = start(serve, tmp_path)
    tok = token(server, "reader")
    big = httpx.get(server.url + "/api/rooms/big/messages?limit=1000", headers=auth(tok)).json()
    assert [m["content"] for m in big["messages"]] == [f"b{i}" for i in range(3, 1003)]
    small = httpx.get(server.url + "/api/rooms/small/messages", headers=auth(tok)).json()
    assert small["messages"] == [{"content": "s"}]


def test_default_history_file_is_in_the_example_folder_and_ignored():
    import subprocess

    from examples.velithon_chat import history

    root = Path(__file__).resolve().parents[2]
    assert history.DEFAULT_HISTORY_FILE.parent == root / "examples" / "velithon_chat" / "data"
    check = subprocess.run(["git", "check-ignore", "-q", str(history.DEFAULT_HISTORY_FILE)], cwd=root,
                           timeout=30)
    assert check.returncode == 0


# --- 3. rate limiting --------------------------------------------------------------------------


def test_rate_limit_blocks_only_the_flooder(serve, tmp_path):
    server = start(serve, tmp_path, VELITHON_RATE_LIMIT="3", VELITHON_RATE_WINDOW="5")

    async def scenario() -> None:
        async with await join(server, "rl", "calm") as calm, await join(server, "rl", "flooder") as flooder:
            await recv_json(calm)  # flooder joined
            for i in range(5):
                await say(flooder, f"f{i}")
            frames = [await recv_json(flooder) for _ in range(5)]
            assert [f.get("content") for f in frames[:3]] == ["f0", "f1", "f2"]
            for frame in frames[3:]:
                assert frame["message_type"] == "error" and frame["error"] == "rate_limited"
                assert 0 < frame["retry_after"] <= 5
                assert "3 messages per 5 seconds" in frame["detail"]
            assert [(await recv_json(calm))["content"] for _ in range(3)] == ["f0", "f1", "f2"]
            await assert_silent(calm)
            # Private messages count too, and others are unaffected.
            await flooder.send(json.dumps({"type": "private_message", "to": "calm", "content": "psst"}))
            assert (await recv_json(flooder))["error"] == "rate_limited"
            await say(calm, "I can talk")
            assert (await recv_json(calm))["content"] == "I can talk"
            assert (await recv_json(flooder))["content"] == "I can talk"
            # The window ends with the counter's TTL: the flooder waits as long as it is told to
            # (retry_after), and is then heard again (bounded: a few windows at most).
            for _ in range(5):
                await say(flooder, "again")
                frame = await recv_json(flooder)
                if frame.get("content") == "again":
                    break
                assert frame["error"] == "rate_limited" and 0 < frame["retry_after"] <= 5, frame
                await asyncio.sleep(frame["retry_after"])
            assert frame.get("content") == "again", frame
            assert (await recv_json(calm))["content"] == "again"
        tok = token(server, "x")
        body = httpx.get(server.url + "/api/rooms/rl/messages", headers=auth(tok)).json()
        assert [m["content"] for m in body["messages"]] == ["f0", "f1", "f2", "I can talk", "again"]

    run(scenario())


def test_rate_counter_lives_in_the_store_with_a_ttl():
    import hornbeam_erlang as hb

    from examples.velithon_chat import app as velithon

    user = f"ttl-{time.monotonic_ns()}"
    assert velithon.rate_check(user) is None
    ttl = hb.state_ttl(f"velithon:rate:{user}")
    assert ttl is not None and 0 < ttl <= velithon.RATE_WINDOW
    for _ in range(velithon.RATE_LIMIT - 1):
        assert velithon.rate_check(user) is None
    wait = velithon.rate_check(user)
    assert wait is not None and 0 < wait <= velithon.RATE_WINDOW


# --- 4. private messages -----------------------------------------------------------------------


def test_private_messages_reach_only_the_two_users(serve, tmp_path):
    server = start(serve, tmp_path)

    async def scenario() -> None:
        async with await join(server, "pm", "alice") as alice, await join(server, "pm", "carol") as carol, \
                await join(server, "elsewhere", "bob") as bob:
            await recv_json(alice)  # carol joined
            await alice.send(json.dumps({"type": "private_message", "to": "bob", "content": " secret "}))
            to_bob = await recv_json(bob)
            assert list(to_bob) == ["message_type", "from", "to", "content", "timestamp"]
            assert to_bob["message_type"] == "private_message"
            assert (to_bob["from"], to_bob["to"], to_bob["content"]) == ("alice", "bob", "secret")
            assert_timestamp(to_bob["timestamp"])
            assert await recv_json(alice) == to_bob  # the sender's confirmation
            await assert_silent(carol)

            await bob.send(json.dumps({"type": "private_message", "to": "bob", "content": "note"}))
            assert (await recv_json(bob))["content"] == "note"
            await assert_silent(bob)  # to oneself: once

            await bob.close()
            await wait_users(server, token(server, "x"), "elsewhere", [])
            await alice.send(json.dumps({"type": "private_message", "to": "bob", "content": "gone?"}))
            assert (await recv_json(alice))["error"] == "unknown_user"
        tok = token(server, "x")
        assert httpx.get(server.url + "/api/rooms/pm/messages", headers=auth(tok)).json()["messages"] == []

    run(scenario())
