"""Per-connection rate limit of the channels layer (issue 9), with the endpoint's defaults.

``asgi_endpoint`` defaults to 50 events/s with a burst of 100 per connection. Events over the limit
(joins included) get an error reply ``{"reason": "rate_limited"}`` and are not handled; heartbeats
are never limited; the connection, and every other connection, keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Iterator

import pytest
from conftest import Server
from test_channels import APP, CONTROL, FAMILIES, Client, run, unique

RATE, BURST = 50.0, 100  # asgi_endpoint's defaults


@pytest.fixture(scope="module")
def limited_server() -> Iterator[Server]:
    srv = Server(APP, {"HB_TEST_RATE_LIMIT": "default"}, [])
    yield srv
    srv.stop()


async def collect_replies(c: Client, refs: set[str], timeout: float = 60.0) -> dict[str, Any]:
    """Reads until every ref in ``refs`` has its reply; {ref: reply frame}."""
    got: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    while len(got) < len(refs):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {len(got)} of {len(refs)} replies within {timeout}s"
        frame = json.loads(await asyncio.wait_for(c.ws.recv(), remaining))
        if frame[3].endswith("_reply") and frame[1] in refs:
            got[frame[1]] = frame
    return got


async def until_served(c: Client, topic: str, limit: int = 100) -> dict[str, Any]:
    """Calls echo until it is handled again (the bucket refills): its reply payload."""
    for _ in range(limit):
        reply = (await c.call(topic, "echo", {"ok": 1}))[4]
        if reply != {"status": "error", "response": {"reason": "rate_limited"}}:
            return reply
        await asyncio.sleep(0.05)
    raise AssertionError("the connection never served an event again")


@pytest.mark.parametrize("family", FAMILIES)
def test_event_flood_is_rate_limited_heartbeats_are_not(limited_server: Server, family: str) -> None:
    async def scenario() -> None:
        c = await Client.connect(limited_server, family)
        other = await Client.connect(limited_server, family)
        topic = unique("test")
        await c.join(topic, {})
        await other.join(topic, {})
        events: set[str] = set()
        beats: set[str] = set()
        start = time.monotonic()
        for i in range(1000):
            ref = c.ref()
            events.add(ref)
            await c.send(c.join_refs[topic], ref, topic, "echo", {"i": i})
            if i % 10 == 0:
                ref = c.ref()
                beats.add(ref)
                await c.send(None, ref, CONTROL[family], "heartbeat", {})
        replies = await collect_replies(c, events | beats)
        elapsed = time.monotonic() - start

        for ref in beats:
            assert replies[ref][4] == {"status": "ok", "response": {}}
        statuses = [replies[ref][4] for ref in events]
        limited = [s for s in statuses if s == {"status": "error", "response": {"reason": "rate_limited"}}]
        served = [s for s in statuses if s["status"] == "ok"]
        assert len(limited) + len(served) == 1000
        assert limited, "a flood of 1000 events must hit the limit"
        # A token bucket cannot serve more than its burst plus what refilled meanwhile
        # (the join spent one token too); elapsed is measured around the server's work.
        assert len(served) <= BURST + RATE * elapsed + 1
        assert all(replies[ref][3] == f"{family}_reply" for ref in events)

        # Another connection has its own bucket; this one serves again once it refills.
        assert (await other.call(topic, "echo", {"x": 1}))[4] == {"status": "ok", "response": {"x": 1}}
        assert await until_served(c, topic) == {"status": "ok", "response": {"ok": 1}}
        await c.close()
        await other.close()

    run(scenario())


@pytest.mark.parametrize("family", FAMILIES)
def test_join_flood_is_rate_limited(limited_server: Server, family: str) -> None:
    async def scenario() -> None:
        c = await Client.connect(limited_server, family)
        refs: dict[str, str] = {}
        start = time.monotonic()
        for _ in range(500):
            topic = unique("test")
            ref = c.ref()
            refs[ref] = topic
            await c.send(ref, ref, topic, c.ev("join"), {})
        replies = await collect_replies(c, set(refs))
        elapsed = time.monotonic() - start
        joined = [r for r in refs if replies[r][4]["status"] == "ok"]
        limited = [r for r in refs if replies[r][4] == {"status": "error",
                                                         "response": {"reason": "rate_limited"}}]
        # Tokens that refill during the flood may reach joins past the channel cap (100).
        capped = [r for r in refs if replies[r][4] == {"status": "error",
                                                        "response": {"reason": "too many channels"}}]
        assert len(joined) + len(limited) + len(capped) == 500
        assert limited and len(joined) + len(capped) <= BURST + RATE * elapsed
        # A refused join joined nothing: events on its topic are unmatched, once tokens are back.
        topic = refs[limited[0]]
        c.join_refs[topic] = limited[0]
        assert await until_served(c, topic) == {"status": "error",
                                                "response": {"reason": "unmatched topic"}}
        await c.close()

    run(scenario())


# ---- channels joined per connection -------------------------------------------------------

MAX_CHANNELS = 100  # asgi_endpoint's default
TOO_MANY = {"status": "error", "response": {"reason": "too many channels"}}


@pytest.fixture(scope="module")
def capped_server() -> Iterator[Server]:
    # The test app lifts the rate limit (the flood must meet the cap, not the bucket) and keeps
    # the default channel cap.
    srv = Server(APP, {}, [])
    yield srv
    srv.stop()


@pytest.mark.parametrize("family", FAMILIES)
def test_join_flood_is_capped_per_connection_and_leaving_frees_a_slot(capped_server: Server,
                                                                      family: str) -> None:
    async def scenario() -> None:
        c = await Client.connect(capped_server, family)
        first = unique("test")
        assert (await c.join(first, {}))[4]["status"] == "ok"

        # 1,000 joins of new topics at once on the same connection.
        refs: dict[str, str] = {}
        for _ in range(1000):
            topic = unique("test")
            ref = c.ref()
            refs[ref] = topic
            await c.send(ref, ref, topic, c.ev("join"), {})
        replies = await collect_replies(c, set(refs))
        joined = [r for r in refs if replies[r][4]["status"] == "ok"]
        refused = [r for r in refs if replies[r][4] == TOO_MANY]
        # Joins are handled in order: the first ones fill the cap, every later one is refused.
        assert len(joined) == MAX_CHANNELS - 1
        assert len(refused) == 1000 - len(joined)
        assert joined == sorted(joined, key=int) and max(map(int, joined)) < min(map(int, refused))
        assert all(replies[r][3] == f"{family}_reply" for r in refs)
        for r in joined:
            c.join_refs[refs[r]] = r

        # The connection keeps serving its channels, the first one and the last one joined.
        for topic in (first, refs[joined[-1]]):
            assert (await c.call(topic, "echo", {"x": 1}))[4] == {"status": "ok", "response": {"x": 1}}
        # A refused join joined nothing: its topic is unmatched.
        c.join_refs[refs[refused[0]]] = refused[0]
        assert (await c.call(refs[refused[0]], "echo", {"x": 1}))[4] == {
            "status": "error", "response": {"reason": "unmatched topic"}}
        # Joining an already joined topic again replaces it: no slot needed.
        assert (await c.join(first, {}))[4]["status"] == "ok"
        assert (await c.call(first, "echo", {"x": 2}))[4] == {"status": "ok", "response": {"x": 2}}

        # Still full; a leave frees exactly one slot.
        assert (await c.join(unique("test"), {}))[4] == TOO_MANY
        ref = c.ref()
        await c.send(c.join_refs[first], ref, first, c.ev("leave"), {})
        assert (await c.reply_to(ref))[4]["status"] == "ok"
        assert (await c.join(unique("test"), {}))[4]["status"] == "ok"
        assert (await c.join(unique("test"), {}))[4] == TOO_MANY

        # The cap is per connection: another one joins as many as the cap allows.
        other = await Client.connect(capped_server, family)
        for _ in range(MAX_CHANNELS):
            assert (await other.join(unique("test"), {}))[4]["status"] == "ok"
        assert (await other.join(unique("test"), {}))[4] == TOO_MANY
        await other.close()
        await c.close()

    run(scenario())


def test_max_channels_option_is_checked() -> None:
    from hornbeam_channels import asgi_endpoint

    for bad in (0, -1, 1.5, True, "10"):
        with pytest.raises(ValueError, match="max_channels"):
            asgi_endpoint("/ws", max_channels=bad)  # type: ignore[arg-type]
    assert asgi_endpoint("/ws").options.max_channels == MAX_CHANNELS
    assert asgi_endpoint("/ws", max_channels=None).options.max_channels is None
