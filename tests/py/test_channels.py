"""Channels and presence against a real uvicorn, with raw WebSocket clients in both families.

Each case runs with a client speaking Hornbeam's events (``hb_*``, heartbeat on ``hornbeam``)
and one speaking Phoenix's (``phx_*``, heartbeat on ``phoenix``, ``vsn=2.0.0``); the server must
answer each in its own family. The server is ``tests/py/test_channels_app.py`` (the channels
chat plus test channels).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import urllib.request
import uuid
from typing import Any, Callable, Iterator, Optional

import pytest
import websockets
from conftest import Server

APP = "tests.py.test_channels_app:app"
FAMILIES = ["hb", "phx"]
CONTROL = {"hb": "hornbeam", "phx": "phoenix"}

Frame = list[Any]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = Server(APP, None, [])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def fast_server() -> Iterator[Server]:
    """A server that drops connections silent for 1 s."""
    srv = Server(APP, {"HB_TEST_HEARTBEAT_TIMEOUT": "1"}, [])
    yield srv
    srv.stop()


def unique(prefix: str) -> str:
    return f"{prefix}:{uuid.uuid4().hex[:10]}"


class Client:
    """A raw channel client: frames in, frames out, nothing hidden."""

    def __init__(self, ws: Any, family: str) -> None:
        self.ws = ws
        self.family = family
        self.refs = itertools.count(1)
        self.buffer: list[Frame] = []
        self.join_refs: dict[str, str] = {}

    @classmethod
    async def connect(cls, server: Server, family: str, query: str = "") -> "Client":
        qs = "vsn=2.0.0" if family == "phx" else ""
        if query:
            qs = f"{qs}&{query}" if qs else query
        url = f"{server.ws_url}/ws/websocket" + (f"?{qs}" if qs else "")
        ws = await asyncio.wait_for(websockets.connect(url, max_size=2**22), 10)
        return cls(ws, family)

    def ev(self, name: str) -> str:
        return f"{self.family}_{name}"

    def ref(self) -> str:
        return str(next(self.refs))

    async def send(self, join_ref: Any, ref: Any, topic: str, event: str, payload: Any) -> None:
        await self.ws.send(json.dumps([join_ref, ref, topic, event, payload]))

    async def recv(self, timeout: float = 5.0) -> Frame:
        if self.buffer:
            return self.buffer.pop(0)
        frame: Frame = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        return frame

    async def expect(self, pred: Callable[[Frame], bool], timeout: float = 5.0) -> Frame:
        """The first frame matching ``pred`` (earlier non-matching ones stay buffered)."""
        deadline = time.monotonic() + timeout
        for i, frame in enumerate(self.buffer):
            if pred(frame):
                return self.buffer.pop(i)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching frame within {timeout}s; got {self.buffer}")
            try:
                raw = await asyncio.wait_for(self.ws.recv(), remaining)
            except asyncio.TimeoutError:
                continue
            frame = json.loads(raw)
            if pred(frame):
                return frame
            self.buffer.append(frame)

    async def expect_event(self, topic: str, event: str, timeout: float = 5.0) -> Frame:
        return await self.expect(lambda f: f[2] == topic and f[3] == event, timeout)

    async def reply_to(self, ref: str, timeout: float = 5.0) -> Frame:
        return await self.expect(lambda f: f[1] == ref and f[3].endswith("_reply"), timeout)

    async def nothing(self, pred: Callable[[Frame], bool], wait: float = 0.4) -> None:
        """Asserts no frame matching ``pred`` arrives within ``wait`` seconds."""
        deadline = time.monotonic() + wait
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                frame = json.loads(await asyncio.wait_for(self.ws.recv(), remaining))
            except asyncio.TimeoutError:
                break
            self.buffer.append(frame)
        bad = [f for f in self.buffer if pred(f)]
        assert not bad, f"unexpected frames: {bad}"

    async def join(self, topic: str, params: Optional[dict[str, Any]] = None) -> Frame:
        ref = self.ref()
        self.join_refs[topic] = ref
        await self.send(ref, ref, topic, self.ev("join"), params or {})
        return await self.reply_to(ref)

    async def push(self, topic: str, event: str, payload: Any) -> str:
        ref = self.ref()
        await self.send(self.join_refs.get(topic), ref, topic, event, payload)
        return ref

    async def call(self, topic: str, event: str, payload: Any) -> Frame:
        return await self.reply_to(await self.push(topic, event, payload))

    async def close(self) -> None:
        await self.ws.close()


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def presence_keys(state: dict[str, Any]) -> set[str]:
    return set(state)


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


# ---- joining ------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_join_ok_then_presence_state(server: Server, family: str) -> None:
    async def scenario() -> None:
        c = await Client.connect(server, family)
        topic = unique("room")
        reply = await c.join(topic, {"username": "ada"})
        join_ref = c.join_refs[topic]
        assert reply == [join_ref, join_ref, topic, f"{family}_reply",
                         {"status": "ok", "response": {"room_id": topic.split(":")[1],
                                                       "message": f"Welcome to {topic.split(':')[1]}!"}}]
        # presence_state comes right after the join reply, with refs on every meta.
        state = await c.recv()
        assert state[2:4] == [topic, "presence_state"]
        metas = state[4]["user:ada"]["metas"]
        assert len(metas) == 1 and metas[0]["username"] == "ada"
        assert metas[0]["phx_ref"] and metas[0]["hb_ref"] == metas[0]["phx_ref"]
        await c.close()

    run(scenario())


@pytest.mark.parametrize("family", FAMILIES)
def test_join_error_and_join_crash(server: Server, family: str) -> None:
    async def scenario() -> None:
        c = await Client.connect(server, family)
        reply = await c.join(unique("room"), {})
        assert reply[3] == f"{family}_reply"
        assert reply[4] == {"status": "error", "response": {"reason": "username required"}}
        reply = await c.join(unique("test"), {"reject": True})
        assert reply[4] == {"status": "error", "response": {"reason": "rejected"}}
        reply = await c.join(unique("test"), {"crash": True})
        assert reply[4] == {"status": "error", "response": {"reason": "join crashed"}}
        # The connection still serves joins after errors.
        topic = unique("test")
        assert (await c.join(topic, {}))[4]["status"] == "ok"
        await c.close()

    run(scenario())


@pytest.mark.parametrize("family", FAMILIES)
def test_unknown_topic(server: Server, family: str) -> None:
    async def scenario() -> None:
        c = await Client.connect(server, family)
        reply = await c.join("nowhere:at:all", {})
        assert reply[2:] == ["nowhere:at:all", f"{family}_reply",
                             {"status": "error", "response": {"reason": "unmatched topic"}}]
        # An event on a topic never joined gets the same answer.
        reply = await c.call("test:notjoined", "echo", {})
        assert reply[4] == {"status": "error", "response": {"reason": "unmatched topic"}}
        await c.close()

    run(scenario())


@pytest.mark.parametrize("family", FAMILIES)
def test_topic_params_and_exact_beats_wildcard(server: Server, family: str) -> None:
    async def scenario() -> None:
        c = await Client.connect(server, family)
        reply = await c.join("chat:42:messages:7", {})
        assert reply[4]["response"] == {"topic": "chat:42:messages:7",
                                        "topic_params": {"chat_id": "42", "messages_id": "7"}}
        reply = await c.join("exact:lobby", {})
        assert reply[4]["response"] == {"handler": "exact", "topic_params": {}}
        reply = await c.join("exact:other", {})
        assert reply[4]["response"] == {"handler": "wildcard", "topic_params": {"exact_id": "other"}}
        # One segment per '*': a deeper topic is unmatched.
        reply = await c.join("exact:a:b", {})
        assert reply[4]["response"] == {"reason": "unmatched topic"}
        await c.close()

    run(scenario())


# ---- events -------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_replies_sync_async_error_and_assigns(server: Server, family: str) -> None:
    async def scenario() -> None:
        c = await Client.connect(server, family, query="token=t1")
        topic = unique("test")
        assert (await c.join(topic, {"name": "ada"}))[4]["response"] == {"id": topic.split(":")[1]}
        reply = await c.call(topic, "echo", {"a": 1})
        assert reply[0] == c.join_refs[topic]
        assert reply[3:] == [f"{family}_reply", {"status": "ok", "response": {"a": 1}}]
        reply = await c.call(topic, "async_echo", {"b": 2})
        assert reply[4] == {"status": "ok", "response": {"async": True, "b": 2}}
        reply = await c.call(topic, "fail", {})
        assert reply[4] == {"status": "error", "response": {"reason": "nope"}}
        reply = await c.call(topic, "no_such_event", {})
        assert reply[4]["status"] == "error"
        reply = await c.call(topic, "echo", [1, 2])
        assert reply[4] == {"status": "error", "response": {"reason": "payload must be a JSON object"}}
        # noreply carries the new socket to the next handler.
        await c.push(topic, "set", {"color": "blue"})
        reply = await c.call(topic, "get", {})
        assert reply[4]["response"]["assigns"] == {"token": "t1", "name": "ada", "color": "blue"}
        await c.close()

    run(scenario())


@pytest.mark.parametrize("family", FAMILIES)
def test_on_connect_refuses_or_assigns(server: Server, family: str) -> None:
    async def scenario() -> None:
        with pytest.raises(websockets.InvalidStatus) as info:
            await Client.connect(server, family, query="token=bad")
        assert info.value.response.status_code == 403
        c = await Client.connect(server, family, query="token=good")
        topic = unique("test")
        await c.join(topic, {})
        reply = await c.call(topic, "get", {})
        assert reply[4]["response"]["assigns"] == {"token": "good"}
        await c.close()

    run(scenario())


@pytest.mark.parametrize("family", FAMILIES)
def test_broadcast_vs_broadcast_from(server: Server, family: str) -> None:
    async def scenario() -> None:
        a = await Client.connect(server, family)
        b = await Client.connect(server, "phx" if family == "hb" else "hb")
        topic = unique("test")
        await a.join(topic, {})
        await b.join(topic, {})
        await a.push(topic, "shout", {"n": 1})
        for c in (a, b):
            frame = await c.expect_event(topic, "shout")
            assert frame == [None, None, topic, "shout", {"n": 1}]
        await a.push(topic, "whisper", {"n": 2})
        assert (await b.expect_event(topic, "whisper"))[4] == {"n": 2}
        await a.nothing(lambda f: f[3] == "whisper")
        await a.close()
        await b.close()

    run(scenario())


@pytest.mark.parametrize("family", FAMILIES)
def test_chat_messages_typing_and_history(server: Server, family: str) -> None:
    async def scenario() -> None:
        a = await Client.connect(server, family)
        b = await Client.connect(server, family)
        topic = unique("room")
        await a.join(topic, {"username": "ada"})
        await b.join(topic, {"username": "bob"})
        reply = await a.call(topic, "new_msg", {"body": "hello <b>bob</b>"})
        assert reply[4] == {"status": "ok", "response": {"status": "ok"}}
        assert (await b.expect_event(topic, "new_msg"))[4] == {"username": "ada",
                                                                "body": "hello <b>bob</b>"}
        await a.nothing(lambda f: f[3] == "new_msg")
        reply = await a.call(topic, "new_msg", {"body": "   "})
        assert reply[4] == {"status": "error", "response": {"reason": "empty message"}}

        await a.push(topic, "typing", {"typing": True})
        assert (await b.expect_event(topic, "typing"))[4] == {"username": "ada", "typing": True}
        await a.push(topic, "typing", {"typing": False})
        assert (await b.expect_event(topic, "typing"))[4] == {"username": "ada", "typing": False}
        await a.nothing(lambda f: f[3] == "typing", wait=0.2)

        last = ""
        for i in range(105):
            last = await b.push(topic, "new_msg", {"body": f"m{i}"})
        await b.reply_to(last, 10)
        history = (await b.call(topic, "get_history", {}))[4]["response"]["messages"]
        assert len(history) == 100
        assert [m["body"] for m in history] == [f"m{i}" for i in range(5, 105)]
        assert all(m["username"] == "bob" for m in history)
        await a.close()
        await b.close()

    run(scenario())


@pytest.mark.parametrize("family", FAMILIES)
def test_push_from_handlers_and_from_outside(server: Server, family: str) -> None:
    async def scenario() -> None:
        a = await Client.connect(server, family)
        b = await Client.connect(server, family)
        topic = unique("test")
        await b.join(topic, {"name": "bob"})
        # Join handler: push to the joiner (after its reply) and broadcast_from to the others.
        ref = a.ref()
        a.join_refs[topic] = ref
        await a.send(ref, ref, topic, a.ev("join"), {"name": "ada", "greet": True})
        frames = [await a.recv() for _ in range(3)]
        assert [f[3] for f in frames] == [a.ev("reply"), "presence_state", "welcome"]
        assert frames[2] == [ref, None, topic, "welcome", {"to": "ada"}]
        assert (await b.expect_event(topic, "arrived"))[4] == {"name": "ada"}
        # Event handler: the push comes before the reply.
        push_ref = await a.push(topic, "push_now", {})
        first = await a.expect(lambda f: f[3] in ("pushed", a.ev("reply")))
        second = await a.expect(lambda f: f[3] in ("pushed", a.ev("reply")))
        assert first[3] == "pushed" and second[1] == push_ref
        # Outside any handler: from the event loop and from a thread, then a broadcast.
        await a.push(topic, "push_later", {})
        froms = {(await a.expect_event(topic, "later"))[4]["from"] for _ in range(2)}
        assert froms == {"loop", "thread"}
        await a.expect_event(topic, "later_all")
        await b.expect_event(topic, "later_all")
        await b.nothing(lambda f: f[3] == "later")
        # Leave handler broadcasts to whoever is still there.
        leave_ref = a.ref()
        await a.send(ref, leave_ref, topic, a.ev("leave"), {})
        assert (await b.expect_event(topic, "gone"))[4] == {"name": "ada"}
        # ... and its push reaches the leaving client, before the leave reply and the close.
        tail = [await a.expect(lambda f: f[3] in ("bye", a.ev("reply"), a.ev("close")))
                for _ in range(3)]
        assert [f[3] for f in tail] == ["bye", a.ev("reply"), a.ev("close")]
        assert tail[0] == [ref, None, topic, "bye", {"name": "ada"}]
        await a.close()
        await b.close()

    run(scenario())


# ---- presence -----------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_presence_diff_on_join_leave_and_disconnect(server: Server, family: str) -> None:
    async def scenario() -> None:
        a = await Client.connect(server, family)
        topic = unique("room")
        await a.join(topic, {"username": "ada"})
        assert presence_keys((await a.expect_event(topic, "presence_state"))[4]) == {"user:ada"}

        b = await Client.connect(server, "phx" if family == "hb" else "hb")
        await b.join(topic, {"username": "bob"})
        state = (await b.expect_event(topic, "presence_state"))[4]
        assert presence_keys(state) == {"user:ada", "user:bob"}
        diff = (await a.expect_event(topic, "presence_diff"))[4]
        assert diff["leaves"] == {} and list(diff["joins"]) == ["user:bob"]
        bob_meta = diff["joins"]["user:bob"]["metas"][0]
        assert bob_meta["username"] == "bob" and bob_meta["phx_ref"] == bob_meta["hb_ref"]
        assert bob_meta == state["user:bob"]["metas"][0]
        listed = http_json(f"{server.url}/api/presence/{topic}")
        assert presence_keys(listed) == {"user:ada", "user:bob"}

        # Bob's client vanishes without leaving (TCP reset): his presence goes.
        b.ws.transport.abort()
        diff = (await a.expect_event(topic, "presence_diff"))[4]
        assert diff["joins"] == {} and diff["leaves"]["user:bob"]["metas"][0]["phx_ref"] == bob_meta["phx_ref"]
        assert presence_keys(http_json(f"{server.url}/api/presence/{topic}")) == {"user:ada"}

        # A third client, then a proper leave: its presence goes with a leave diff.
        c = await Client.connect(server, family)
        await c.join(topic, {"username": "cat"})
        await a.expect(lambda f: f[3] == "presence_diff" and "user:cat" in f[4]["joins"])
        ref = c.ref()
        await c.send(c.join_refs[topic], ref, topic, c.ev("leave"), {})
        assert (await c.reply_to(ref))[4] == {"status": "ok", "response": {}}
        close = await c.expect_event(topic, c.ev("close"))
        assert close[0] == c.join_refs[topic] and close[4] == {}
        await a.expect(lambda f: f[3] == "presence_diff" and "user:cat" in f[4]["leaves"])
        # After leaving, events on the topic are unmatched.
        assert (await c.call(topic, "new_msg", {"body": "x"}))[4]["response"] == {
            "reason": "unmatched topic"}
        await a.close()
        await c.close()

    run(scenario())


@pytest.mark.parametrize("family", FAMILIES)
def test_presence_update_has_new_ref_and_prev(server: Server, family: str) -> None:
    async def scenario() -> None:
        a = await Client.connect(server, family)
        topic = unique("test")
        await a.join(topic, {"name": "ada"})
        old = (await a.expect_event(topic, "presence_state"))[4]["ada"]["metas"][0]
        reply = await a.call(topic, "update", {"name": "ada", "status": "away"})
        diff = (await a.expect_event(topic, "presence_diff"))[4]
        new = diff["joins"]["ada"]["metas"][0]
        assert new["status"] == "away" and new["phx_ref"] == reply[4]["response"]["ref"]
        assert new["phx_ref_prev"] == old["phx_ref"] and new["hb_ref"] == new["phx_ref"]
        assert diff["leaves"]["ada"]["metas"][0]["phx_ref"] == old["phx_ref"]
        listed = http_json(f"{server.url}/api/presence/{topic}")
        assert [m["phx_ref"] for m in listed["ada"]["metas"]] == [new["phx_ref"]]
        await a.close()

    run(scenario())


@pytest.mark.parametrize("family", FAMILIES)
def test_missed_heartbeats_close_and_remove_presence(fast_server: Server, family: str) -> None:
    async def scenario() -> None:
        topic = unique("room")
        a = await Client.connect(fast_server, family)
        quiet = await Client.connect(fast_server, family)
        await a.join(topic, {"username": "ada"})
        await quiet.join(topic, {"username": "quiet"})
        await a.expect(lambda f: f[3] == "presence_diff" and "user:quiet" in f[4]["joins"])
        # `a` heartbeats every 0.3 s; `quiet` says nothing and is dropped after 1 s.
        start = time.monotonic()
        left = None
        while time.monotonic() - start < 5 and left is None:
            ref = a.ref()
            await a.send(None, ref, CONTROL[family], "heartbeat", {})
            reply = await a.reply_to(ref)
            assert reply == [None, ref, CONTROL[family], f"{family}_reply",
                             {"status": "ok", "response": {}}]
            try:
                left = await a.expect(lambda f: f[3] == "presence_diff"
                                      and "user:quiet" in f[4]["leaves"], timeout=0.3)
            except AssertionError:
                pass
        assert left is not None, "the silent client's presence was not removed"
        with pytest.raises(websockets.ConnectionClosed):
            for _ in range(10):
                await quiet.recv(timeout=2)
        assert presence_keys(http_json(f"{fast_server.url}/api/presence/{topic}")) == {"user:ada"}
        await a.close()

    run(scenario())


# ---- protocol edge cases ------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_heartbeat_reply(server: Server, family: str) -> None:
    async def scenario() -> None:
        c = await Client.connect(server, family)
        await c.send(None, "hb1", CONTROL[family], "heartbeat", {})
        assert await c.recv() == [None, "hb1", CONTROL[family], f"{family}_reply",
                                  {"status": "ok", "response": {}}]
        await c.close()

    run(scenario())


@pytest.mark.parametrize("family", FAMILIES)
def test_duplicate_join_replaces_the_first(server: Server, family: str) -> None:
    async def scenario() -> None:
        a = await Client.connect(server, family)
        watcher = await Client.connect(server, family)
        topic = unique("room")
        await watcher.join(topic, {"username": "watcher"})
        await a.join(topic, {"username": "ada"})
        first_ref = a.join_refs[topic]
        first_meta = (await watcher.expect(lambda f: f[3] == "presence_diff"
                                           and "user:ada" in f[4]["joins"]))[4]["joins"]["user:ada"]["metas"][0]
        reply = await a.join(topic, {"username": "ada"})
        second_ref = a.join_refs[topic]
        assert reply[4]["status"] == "ok" and second_ref != first_ref
        # The first join was closed (with its own join_ref) before the second was answered.
        close = await a.expect_event(topic, a.ev("close"))
        assert close[0] == first_ref
        leaves = await watcher.expect(lambda f: f[3] == "presence_diff" and f[4]["leaves"])
        assert leaves[4]["leaves"]["user:ada"]["metas"][0]["phx_ref"] == first_meta["phx_ref"]
        joins = await watcher.expect(lambda f: f[3] == "presence_diff" and f[4]["joins"])
        assert "user:ada" in joins[4]["joins"]
        # Only one channel remains: a message is broadcast once, to the watcher only.
        await a.call(topic, "new_msg", {"body": "once"})
        assert (await watcher.expect_event(topic, "new_msg"))[4]["body"] == "once"
        await watcher.nothing(lambda f: f[3] == "new_msg")
        listed = http_json(f"{server.url}/api/presence/{topic}")
        assert len(listed["user:ada"]["metas"]) == 1
        await a.close()
        await watcher.close()

    run(scenario())


@pytest.mark.parametrize("family", FAMILIES)
def test_malformed_and_oversized_frames(server: Server, family: str) -> None:
    async def scenario() -> None:
        c = await Client.connect(server, family)
        topic = unique("test")
        await c.join(topic, {})
        bad = ["not json", "{}", "[1,2,3]", json.dumps([None, "1", 5, "echo", {}]),
               json.dumps([None, {}, "t", "echo", {}])]
        for raw in bad:
            await c.ws.send(raw)
            frame = await c.expect(lambda f: f[3] == f"{family}_error")
            assert frame[2] == CONTROL[family]
            assert frame[4]["reason"].startswith("malformed frame")
        await c.ws.send(json.dumps([None, "9", topic, "echo", {"x": "y" * 70000}]))
        frame = await c.expect(lambda f: f[3] == f"{family}_error")
        assert "frame too large" in frame[4]["reason"]
        await c.ws.send(b"\x00\x01binary")
        frame = await c.expect(lambda f: f[3] == f"{family}_error")
        assert "binary" in frame[4]["reason"]
        # Still serving.
        assert (await c.call(topic, "echo", {"ok": 1}))[4] == {"status": "ok", "response": {"ok": 1}}
        await c.close()

    run(scenario())


@pytest.mark.parametrize("family", FAMILIES)
def test_handler_that_raises_errors_only_its_topic(server: Server, family: str) -> None:
    async def scenario() -> None:
        c = await Client.connect(server, family)
        other = await Client.connect(server, family)
        broken, fine = unique("test"), unique("test")
        await c.join(broken, {"name": "ada"})
        await c.join(fine, {})
        await other.join(broken, {"name": "bob"})
        await other.expect(lambda f: f[3] == "presence_diff" and "ada" in f[4]["joins"]
                           or f[3] == "presence_state" and "ada" in f[4])
        await c.push(broken, "boom", {})
        err = await c.expect_event(broken, f"{family}_error")
        assert err[0] == c.join_refs[broken] and err[4] == {"reason": "channel_crash"}
        # The crashed channel's presence is gone; its leave handler ran.
        await other.expect(lambda f: f[3] == "presence_diff" and "ada" in f[4]["leaves"])
        await other.expect_event(broken, "gone")
        # The crashed topic is no longer joined; the other topic is still served.
        assert (await c.call(broken, "echo", {}))[4]["response"] == {"reason": "unmatched topic"}
        assert (await c.call(fine, "echo", {"still": True}))[4] == {"status": "ok",
                                                                    "response": {"still": True}}
        # The client may rejoin the crashed topic.
        assert (await c.join(broken, {"name": "ada"}))[4]["status"] == "ok"
        await c.close()
        await other.close()

    run(scenario())


@pytest.mark.parametrize("family", FAMILIES)
def test_stop_closes_the_channel(server: Server, family: str) -> None:
    async def scenario() -> None:
        c = await Client.connect(server, family)
        topic = unique("test")
        await c.join(topic, {})
        await c.push(topic, "stop", {})
        close = await c.expect_event(topic, f"{family}_close")
        assert close == [c.join_refs[topic], c.join_refs[topic], topic, f"{family}_close", {}]
        assert (await c.call(topic, "echo", {}))[4]["response"] == {"reason": "unmatched topic"}
        await c.close()

    run(scenario())


def test_client_js_is_served(server: Server) -> None:
    with urllib.request.urlopen(f"{server.url}/ws/hornbeam.js", timeout=5) as resp:
        assert resp.headers["content-type"].startswith("application/javascript")
        body = resp.read().decode()
    assert "class Presence" in body and "hb_join" in body
    with urllib.request.urlopen(f"{server.url}/", timeout=5) as resp:
        page = resp.read().decode()
    assert 'src="ws/hornbeam.js"' in page
