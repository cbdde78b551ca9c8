"""The topic fan-out (`hornbeam_channels.fanout`), in-process, against fake ASGI sends.

One mailbox and one task per topic, whatever the number of members; every member present when a
frame is handled gets it, in publish order; members join and leave while it sends; a member whose
send waits gets its own writer and, past its outbox's bound, is dropped (close 1008) without
holding back the others; the last member out takes the topic's mailbox and task with it; lag
notices follow the policy given; cancelling the tasks around it loses nothing for who stays.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Callable, Optional

import pytest

import hornbeam_erlang as hb
from hornbeam_channels import Fanout, Frame, Outbox, lag_notice, lag_skip
from hornbeam_channels.outbox import CLOSE_TOO_SLOW


class Peer:
    """A fake client behind an ASGI send: records frames; ``stall()`` makes sends wait."""

    def __init__(self, name: str, max_chars: Optional[int] = 4096) -> None:
        self.name = name
        self.frames: list[str] = []
        self.closes: list[int] = []
        self.open = asyncio.Event()
        self.open.set()
        self.on_send: Optional[Callable[[str], None]] = None
        self.outbox = Outbox.for_asgi(self.send, name=name, max_chars=max_chars)

    async def send(self, event: dict[str, Any]) -> None:
        if event["type"] == "websocket.close":
            self.closes.append(event["code"])
            return
        if not self.open.is_set():
            await self.open.wait()
        self.frames.append(event["text"])
        if self.on_send is not None:
            self.on_send(event["text"])

    def stall(self) -> None:
        self.open.clear()


async def until(cond: Callable[[], bool], what: str = "condition") -> None:
    for _ in range(5000):
        if cond():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"timed out waiting for {what}")


async def settle() -> None:
    """Lets the topic tasks run what is queued (a few loop turns)."""
    for _ in range(5):
        await asyncio.sleep(0)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_one_mailbox_and_one_task_per_topic_for_many_members() -> None:
    async def scenario() -> None:
        fan = Fanout(on_lag=lag_skip, name="t")
        peers = [Peer(f"p{i}") for i in range(50)]
        for p in peers:
            fan.join("fan:one", p.outbox)
        mailbox = fan.mailbox("fan:one")
        assert mailbox is not None and mailbox.subscriptions() == ["fan:one"]
        tasks = [t for t in asyncio.all_tasks() if t.get_name() == "t fan:one"]
        assert len(tasks) == 1
        # The bus reaches one mailbox, not one per member.
        assert hb.publish("fan:one", "hello") == 1
        await until(lambda: all(p.frames == ["hello"] for p in peers), "every member")
        for p in peers:
            fan.leave("fan:one", p.outbox)
        assert fan.topics() == []

    run(scenario())


def test_every_member_gets_every_frame_in_order() -> None:
    async def scenario() -> None:
        fan = Fanout(on_lag=lag_skip)
        peers = [Peer(f"p{i}") for i in range(5)]
        for p in peers:
            fan.join("fan:order", p.outbox)
        texts = [json.dumps({"n": i}) for i in range(200)]
        for i, text in enumerate(texts):
            hb.publish("fan:order", text)
            if i % 37 == 0:
                await asyncio.sleep(0)
        await until(lambda: all(len(p.frames) == len(texts) for p in peers), "all frames")
        for p in peers:
            assert p.frames == texts
        for p in peers:
            fan.leave_all(p.outbox)

    run(scenario())


def test_publish_delivers_locally_in_the_publishers_step() -> None:
    async def scenario() -> None:
        fan = Fanout(on_lag=lag_skip)
        a, b = Peer("a"), Peer("b")
        fan.join("fan:now", a.outbox)
        fan.join("fan:now", b.outbox)
        hb.publish("fan:now", "queued first")  # waits in the mailbox for the task
        assert fan.publish("fan:now", "then mine") == 1
        # Both already written, in publish order, before this task yielded once.
        assert a.frames == b.frames == ["queued first", "then mine"]
        await settle()
        assert a.frames == ["queued first", "then mine"]  # the task finds nothing left
        fan.leave_all(a.outbox)
        fan.leave_all(b.outbox)

    run(scenario())


def test_members_join_and_leave_while_it_sends() -> None:
    async def scenario() -> None:
        fan = Fanout(on_lag=lag_skip)
        stay, leaver, joiner = Peer("stay"), Peer("leaver"), Peer("joiner")
        fan.join("fan:churn", stay.outbox)
        fan.join("fan:churn", leaver.outbox)

        # While the fan-out sends frame "2" to `stay`, `leaver` leaves and `joiner` joins: a frame
        # goes to the members present when it is handled, the next one to the new membership.
        def churn(text: str) -> None:
            if text == "2":
                fan.leave("fan:churn", leaver.outbox)
                fan.join("fan:churn", joiner.outbox)

        stay.on_send = churn
        for i in range(5):
            hb.publish("fan:churn", str(i))
        await until(lambda: len(stay.frames) == 5, "stay's frames")
        assert stay.frames == ["0", "1", "2", "3", "4"]
        assert leaver.frames[:2] == ["0", "1"] and "3" not in leaver.frames
        assert joiner.frames == ["3", "4"]

        # Members coming and going between batches, many times over.
        churners = [Peer(f"c{i}") for i in range(10)]
        expected: dict[str, list[str]] = {p.name: [] for p in churners}
        joined: set[str] = set()
        for step in range(300):
            p = churners[step % len(churners)]
            if p.name in joined:
                fan.leave("fan:churn", p.outbox)
                joined.discard(p.name)
            else:
                fan.join("fan:churn", p.outbox)
                joined.add(p.name)
            text = f"s{step}"
            fan.publish("fan:churn", text)
            for name in joined:
                expected[name].append(text)
            if step % 7 == 0:
                await asyncio.sleep(0)
        await settle()
        for p in churners:
            assert p.frames == expected[p.name], p.name
        for p in [stay, joiner, *churners]:
            fan.leave_all(p.outbox)
        assert fan.topics() == []

    run(scenario())


def test_a_stalled_member_is_dropped_without_holding_back_the_others(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "hornbeam_channels")

    async def scenario() -> None:
        fan = Fanout(on_lag=lag_skip)
        stalled = Peer("stalled", max_chars=1000)
        others = [Peer(f"o{i}") for i in range(3)]
        for p in [stalled, *others]:
            fan.join("fan:stall", p.outbox)
            fan.join("fan:other", p.outbox)
        fan.publish("fan:stall", "before")
        stalled.stall()
        texts = [f"{i:03d}" + "x" * 96 for i in range(30)]  # 3,000 characters for stalled
        for text in texts:
            fan.publish("fan:stall", text)
            # The others get each frame at once, whatever the stalled one does.
            assert all(p.frames[-1] == text for p in others)
        assert stalled.outbox.dropped and stalled.outbox.ended
        await asyncio.wait_for(stalled.outbox.wait_ended(), 5)
        await until(lambda: stalled.closes == [CLOSE_TOO_SLOW], "the 1008 close")
        # Dropped from every group of the fan-out, not only the one that found it out.
        assert stalled.outbox not in fan.members("fan:stall")
        assert stalled.outbox not in fan.members("fan:other")
        assert stalled.frames == ["before"]
        assert stalled.outbox.queued == 0 and stalled.outbox.waiting == 0
        stalled.open.set()
        fan.publish("fan:stall", "after")
        for p in others:
            assert p.frames == ["before", *texts, "after"]
        assert stalled.frames == ["before"]
        for p in others:
            fan.leave_all(p.outbox)
        assert fan.topics() == []

    run(scenario())
    assert "stalled is not reading" in caplog.text


def test_a_member_that_waits_gets_its_own_writer_and_catches_up() -> None:
    async def scenario() -> None:
        fan = Fanout(on_lag=lag_skip)
        slow, fast = Peer("slow", max_chars=None), Peer("fast")
        fan.join("fan:writer", slow.outbox)
        fan.join("fan:writer", fast.outbox)
        slow.stall()
        for i in range(20):
            fan.publish("fan:writer", str(i))
        assert fast.frames == [str(i) for i in range(20)]
        assert slow.outbox.writing and slow.outbox.waiting == 19
        slow.open.set()
        await until(lambda: not slow.outbox.writing, "the writer to hand back")
        assert slow.frames == fast.frames
        fan.publish("fan:writer", "direct")  # sent directly again, no writer
        assert slow.frames[-1] == "direct" and not slow.outbox.writing
        fan.leave_all(slow.outbox)
        fan.leave_all(fast.outbox)

    run(scenario())


def test_the_last_member_out_takes_the_mailbox_and_the_task() -> None:
    async def scenario() -> None:
        fan = Fanout(on_lag=lag_skip, name="last")
        a, b = Peer("a"), Peer("b")
        fan.join("fan:last", a.outbox)
        fan.join("fan:last", b.outbox)
        mailbox = fan.mailbox("fan:last")
        assert mailbox is not None
        task = next(t for t in asyncio.all_tasks() if t.get_name() == "last fan:last")
        await settle()  # the task waits in recv()
        fan.leave("fan:last", a.outbox)
        assert not mailbox.closed and fan.topics() == ["fan:last"]
        fan.leave("fan:last", b.outbox)
        assert mailbox.closed and fan.mailbox("fan:last") is None and fan.topics() == []
        await asyncio.wait([task], timeout=5)
        assert task.done()
        # Nobody listens on the bus any more; a new member makes a new mailbox and task.
        assert hb.publish("fan:last", "nobody") == 0
        fan.join("fan:last", a.outbox)
        assert fan.mailbox("fan:last") is not mailbox
        hb.publish("fan:last", "again")
        await until(lambda: a.frames == ["again"], "the new group's frame")
        fan.leave("fan:last", a.outbox)
        fan.leave("fan:last", a.outbox)  # twice: a no-op
        assert fan.topics() == []

    run(scenario())


def test_a_dropped_last_member_closes_its_topic() -> None:
    async def scenario() -> None:
        fan = Fanout(on_lag=lag_skip)
        p = Peer("alone", max_chars=10)
        fan.join("fan:alone", p.outbox)
        p.stall()
        hb.publish("fan:alone", "first")
        hb.publish("fan:alone", "second is too much")
        await until(lambda: fan.topics() == [], "the topic to close")
        assert p.outbox.dropped

    run(scenario())


def test_lag_policies() -> None:
    async def scenario() -> None:
        notice = Fanout(on_lag=lag_notice(lambda n: json.dumps({"lagged": n})), capacity=8)
        skip = Fanout(on_lag=lag_skip, capacity=8)
        a, b = Peer("a"), Peer("b")
        notice.join("fan:lag", a.outbox)
        skip.join("fan:lag", b.outbox)
        for i in range(20):  # the tasks do not run meanwhile: both mailboxes overflow
            hb.publish("fan:lag", str(i))
        await until(lambda: len(a.frames) >= 2 and len(b.frames) >= 1, "frames after the lag")
        await settle()
        notices = [json.loads(f) for f in a.frames if f.startswith("{")]
        assert len(notices) == 1 and notices[0]["lagged"] > 0
        kept = [f for f in a.frames if not f.startswith("{")]
        assert kept == [str(i) for i in range(20 - len(kept), 20)] or kept == sorted(kept, key=int)
        assert len(kept) + notices[0]["lagged"] == 20
        assert not any(f.startswith("{") for f in b.frames)
        assert [int(f) for f in b.frames] == sorted(int(f) for f in b.frames)
        notice.leave_all(a.outbox)
        skip.leave_all(b.outbox)

    run(scenario())


def test_excluded_keys_and_skip_filters() -> None:
    async def scenario() -> None:
        fan = Fanout(on_lag=lag_skip)
        ada1, ada2, bob, late = Peer("ada1"), Peer("ada2"), Peer("bob"), Peer("late")
        fan.join("fan:ex", ada1.outbox, "ada")
        fan.join("fan:ex", ada2.outbox, "ada")
        fan.join("fan:ex", bob.outbox, "bob")
        fan.join("fan:ex", late.outbox, skip=lambda f: f.tag is not None and f.tag <= 2)
        fan.publish("fan:ex", ["not for ada", "ada"])
        assert ada1.frames == ada2.frames == [] and bob.frames == ["not for ada"]
        for seq in (1, 2, 3):
            fan.flush("fan:ex")
            hb.publish("fan:ex", f"m{seq}")
        fan.flush("fan:ex")
        assert bob.frames[1:] == ["m1", "m2", "m3"]

        tagged = Fanout(on_lag=lag_skip, render=lambda d: Frame(d[0], None, d[1]))
        tagged.join("fan:tag", late.outbox, skip=lambda f: f.tag is not None and f.tag <= 2)
        for seq in (1, 2, 3):
            tagged.publish("fan:tag", [f"t{seq}", seq])
        assert [f for f in late.frames if f.startswith("t")] == ["t3"]
        for p in (ada1, ada2, bob, late):
            fan.leave_all(p.outbox)
        tagged.leave_all(late.outbox)

    run(scenario())


def test_cancellation_around_the_fanout_loses_nothing_for_who_stays() -> None:
    async def scenario() -> None:
        fan = Fanout(on_lag=lag_skip, name="cancel")
        stay = Peer("stay")
        fan.join("fan:cancel", stay.outbox)
        sent: list[str] = []
        for round_ in range(200):
            # A member whose connection task is cancelled at a random point of its life; its
            # cleanup (leave_all) runs in a finally, as in the apps.
            visitor = Peer(f"v{round_}")

            async def connection(v: Peer = visitor) -> None:
                fan.join("fan:cancel", v.outbox)
                try:
                    await asyncio.sleep(3600)
                finally:
                    fan.leave_all(v.outbox)

            task = asyncio.ensure_future(connection())
            for _ in range(round_ % 3):
                await asyncio.sleep(0)
            text = f"r{round_}"
            hb.publish("fan:cancel", text)
            sent.append(text)
            task.cancel()
            if round_ % 2:
                await asyncio.sleep(0)
            await asyncio.wait([task])
        await until(lambda: len(stay.frames) == len(sent), "stay's frames")
        assert stay.frames == sent
        assert fan.members("fan:cancel") == [stay.outbox]

        # The topic's own task cancelled while it waits in recv() (its last member left), over
        # and over: each new group gets everything published while it has members.
        for round_ in range(100):
            p = Peer(f"g{round_}")
            fan.join("fan:again", p.outbox)
            for _ in range(round_ % 3):
                await asyncio.sleep(0)
            hb.publish("fan:again", "one")
            hb.publish("fan:again", "two")
            await until(lambda: len(p.frames) == 2, "the group's frames")
            assert p.frames == ["one", "two"]
            fan.leave("fan:again", p.outbox)
            assert fan.mailbox("fan:again") is None
        fan.leave_all(stay.outbox)
        assert fan.topics() == []
        await settle()
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("cancel ")]

    run(scenario())


def test_each_event_loop_has_its_own_groups() -> None:
    fan = Fanout(on_lag=lag_skip)

    async def member(name: str) -> list[str]:
        p = Peer(name)
        fan.join("fan:loops", p.outbox)
        hb.publish("fan:loops", name)
        await until(lambda: len(p.frames) >= 1, "a frame")
        await settle()
        fan.leave_all(p.outbox)
        return p.frames

    # Two loops one after the other: the first loop's group is gone with its last member, the
    # second makes its own.
    assert run(member("first")) == ["first"]
    assert run(member("second")) == ["second"]
