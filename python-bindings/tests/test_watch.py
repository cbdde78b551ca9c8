"""Store watches from Python: every operation's event with its value, unwatch, module-level watch
in asyncio tasks, async consumers, lag notices, bad input, and a watcher seeing another process's
writes. Runs on every backend the suite runs on (embedded, local://, Redis): on local:// and Redis
events come back through the backend's relay thread, so every receive waits (bounded)."""

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import hornbeam_erlang as hb
from hornbeam_erlang import Mailbox, MailboxClosed

#: Longest wait for one event (a bound, not a speed requirement).
WAIT = 10


def shared() -> bool:
    return hb.backend() in ("local", "redis")


def next_item(mb: Mailbox):
    msg = mb.recv(timeout=WAIT)
    assert msg is not None, f"no event within {WAIT} s"
    return msg


def event(mb: Mailbox) -> tuple:
    msg = next_item(mb)
    assert msg.type == "change", msg
    return (msg.op, msg.key, msg.value)


def test_every_operation_produces_its_event_with_the_committed_value():
    with Mailbox() as mb:
        assert mb.watch("room:") is True
        assert mb.watch("room:") is False, "already watched"
        assert mb.watch("cfg:") is True
        assert mb.watches() == ["cfg:", "room:"]

        hb.state_set("room:a", {"name": "ann", "tags": ["x"]})
        msg = next_item(mb)
        assert (msg.type, msg.op, msg.key, msg.value) == ("change", "set", "room:a", {"name": "ann", "tags": ["x"]})
        # The generic view of an event: its topic is the key, its message says everything.
        assert msg.topic == "room:a" and msg.lagged == 0
        assert msg.message == msg.data == {"op": "set", "key": "room:a", "value": {"name": "ann", "tags": ["x"]}}
        assert tuple(msg) == ("change", "room:a", msg.message)
        assert "set" in repr(msg) and "room:a" in repr(msg)

        hb.state_set("other", 1)  # outside every watched prefix: no event
        hb.state_set("cfg:mode", "on")
        assert event(mb) == ("set", "cfg:mode", "on")
        hb.set("room:b", None)  # the alias, and a None value: still a set
        assert event(mb) == ("set", "room:b", None)
        hb.state_set_multi({"room:c": b"\x00\xff", "elsewhere": 2})
        assert event(mb) == ("set", "room:c", b"\x00\xff")
        assert hb.state_set_if_absent("room:c", "no") is False  # wrote nothing: no event
        assert hb.state_set_if_absent("room:d", 1.5) is True
        assert event(mb) == ("set", "room:d", 1.5)

        assert hb.state_incr("room:n", 5) == 5
        assert event(mb) == ("incr", "room:n", 5)
        assert hb.state_decr("room:n", 7) == -2
        assert event(mb) == ("incr", "room:n", -2)
        assert hb.incr("room:n") == -1
        assert event(mb) == ("incr", "room:n", -1)

        hb.state_delete("room:a")
        hb.state_delete("room:a")  # nothing was there: no event
        msg = next_item(mb)
        assert (msg.op, msg.key, msg.value, msg.message) == (
            "delete", "room:a", None, {"op": "delete", "key": "room:a", "value": None})

        hb.state_set("room:session", "s", ttl=0.05)
        assert event(mb) == ("set", "room:session", "s")
        # The store reclaims it by itself (embedded: its reaper; local://, Redis: while a process
        # watches); the wait is bounded by WAIT.
        assert event(mb) == ("expire", "room:session", None)
        assert hb.state_get("room:session") is None

        hb.state_clear()
        msg = next_item(mb)
        assert (msg.op, msg.key, msg.value, msg.topic) == ("clear", "", None, "")
        assert mb.recv_nowait() is None
        # Events of one key keep their order.
        for i in range(50):
            hb.state_set("room:seq", i)
        assert [event(mb)[2] for _ in range(50)] == list(range(50))


def test_unwatch_stops_events():
    with Mailbox() as mb:
        mb.watch("a:")
        hb.state_set("a:1", 1)
        assert event(mb) == ("set", "a:1", 1)
        assert mb.unwatch("a:") is True
        assert mb.unwatch("a:") is False, "no longer watched"
        assert mb.watches() == []
        hb.state_set("a:2", 2)
        hb.state_incr("a:3")
        hb.state_delete("a:1")
        # A marker watched afterwards: once it arrives, anything the unwatched writes produced
        # would have arrived before it.
        mb.watch("marker")
        hb.state_set("marker", "m")
        assert event(mb) == ("set", "marker", "m")
        assert mb.recv_nowait() is None


def test_messages_and_lag_notices_are_not_changes():
    with Mailbox() as mb:
        mb.subscribe("news")
        mb.watch("news")
        hb.publish("news", {"x": 1})
        msg = next_item(mb)
        assert (msg.type, msg.topic, msg.message) == ("message", "news", {"x": 1})
        assert (msg.op, msg.key, msg.value) == (None, None, None)
        assert tuple(msg) == ("message", "news", {"x": 1})
        hb.state_set("news", {"x": 2})
        assert event(mb) == ("set", "news", {"x": 2})
        assert mb.watches() == ["news"] and mb.subscriptions() == ["news"]
        assert 'watches=["news"]' in repr(mb)


def test_watcher_that_falls_behind_gets_a_lag_notice():
    small = Mailbox(capacity=8)
    big = Mailbox(capacity=10_000)
    small.watch("lag:")
    big.watch("lag:")
    big.watch("sentinel")
    for _ in range(100):
        hb.state_incr("lag:n")
    # Every event is offered to both mailboxes in commit order: once `big` has the sentinel's,
    # `small` has been offered all 100 (no timing involved).
    hb.state_set("sentinel", 1)
    seen = [event(big) for _ in range(101)]
    assert seen[-1] == ("set", "sentinel", 1)
    assert [v for _, _, v in seen[:100]] == list(range(1, 101))
    items = small.drain()
    assert [(m.op, m.value) for m in items[:8]] == [("incr", i) for i in range(1, 9)]
    assert len(items) == 9, items
    notice = items[8]
    assert (notice.type, notice.lagged, notice.op, notice.key, notice.value) == ("lagged", 92, None, None, None)
    # Room again: the next change arrives.
    hb.state_incr("lag:n")
    assert event(small) == ("incr", "lag:n", 101)
    small.close()
    big.close()


def poll_pubsub(n: int) -> list:
    """The next `n` items through check_pubsub (which never waits), polling a bounded number of
    times: on local:// and Redis events come from the relay thread."""
    got: list = []
    for _ in range(WAIT * 100):
        msg = hb.check_pubsub()
        if msg is not None:
            got.append(msg)
            if len(got) == n:
                break
        else:
            time.sleep(0.01)
    return got


def test_module_level_watch_in_a_thread_with_check_pubsub():
    left = hb.current_mailbox()  # another test's, in this same thread
    if left is not None:
        left.close()
    hb.unwatch("nothing")  # no mailbox yet: a no-op, as unsubscribe
    assert hb.current_mailbox() is None
    mb = hb.watch("t:")
    assert hb.current_mailbox() is mb
    assert hb.watch("u:") is mb
    assert hb.subscribe("topic") is mb, "watches and subscriptions share the task's mailbox"
    assert mb.watches() == ["t:", "u:"]
    hb.state_set("t:1", "a")
    hb.state_set("u:1", "b")
    hb.publish("topic", "p")
    got = poll_pubsub(3)
    assert sorted((m.type, m.topic, m.op, m.value) for m in got) == [
        ("change", "t:1", "set", "a"), ("change", "u:1", "set", "b"), ("message", "topic", None, None)]
    hb.unwatch("t:")
    assert mb.watches() == ["u:"]
    hb.state_set("t:2", "gone")
    hb.state_set("u:2", "kept")
    assert [(m.op, m.key) for m in poll_pubsub(1)] == [("set", "u:2")]
    assert hb.check_pubsub() is None
    mb.close()
    assert hb.current_mailbox() is None


async def test_module_level_watch_in_asyncio_tasks():
    ready = asyncio.Event()
    started = []

    async def member(prefix, n):
        mb = hb.watch(prefix)
        assert hb.current_mailbox() is mb
        started.append(mb)
        if len(started) == 2:
            ready.set()
        got = []
        async for msg in mb:
            got.append((msg.op, msg.key, msg.value))
            if len(got) == n:
                break
        hb.unwatch(prefix)
        assert mb.watches() == []
        mb.close()
        return got

    ta = asyncio.create_task(member("a:", 2))
    tb = asyncio.create_task(member("b:", 3))
    await asyncio.wait_for(ready.wait(), WAIT)
    assert started[0] is not started[1], "each task has its own mailbox"
    hb.state_set("a:1", 1)
    hb.state_incr("b:1", 2)
    hb.state_set("a:stop", 0)
    hb.state_delete("b:1")
    hb.state_set("b:stop", 0)
    got_a, got_b = await asyncio.wait_for(asyncio.gather(ta, tb), WAIT)
    # Each task got its own prefix's events only, each key's in commit order.
    assert sorted(got_a, key=lambda e: e[1]) == [("set", "a:1", 1), ("set", "a:stop", 0)]
    assert sorted(got_b, key=lambda e: e[1]) == [("incr", "b:1", 2), ("delete", "b:1", None), ("set", "b:stop", 0)]
    assert hb.current_mailbox() is None, "the test's own task never watched"


async def test_async_consumer_parked_in_the_hub_is_woken_by_an_event():
    mb = hb.watch("live:")
    loop = asyncio.get_running_loop()
    waiter = asyncio.ensure_future(mb.recv())
    # Bounded: run the loop until the receiver waits in the loop's hub (the mailbox was empty).
    for _ in range(100):
        await asyncio.sleep(0)
        if hb._hub(loop).ready.waiting(mb.id):
            break
    assert hb._hub(loop).ready.waiting(mb.id) and not waiter.done()
    # A write from another thread: the event reaches the parked receiver through the hub's
    # descriptor.
    t = threading.Thread(target=hb.state_set, args=("live:1", {"v": 1}))
    t.start()
    msg = await asyncio.wait_for(waiter, WAIT)
    t.join(WAIT)
    assert (msg.op, msg.key, msg.value) == ("set", "live:1", {"v": 1})
    # And a write from the loop's own thread, with the receiver parked again.
    waiter = asyncio.ensure_future(mb.recv())
    for _ in range(100):
        await asyncio.sleep(0)
        if hb._hub(loop).ready.waiting(mb.id):
            break
    hb.state_incr("live:n", 3)
    msg = await asyncio.wait_for(waiter, WAIT)
    assert (msg.op, msg.key, msg.value) == ("incr", "live:n", 3)
    mb.close()


def test_receive_pubsub_gives_events_as_json_ready_dicts():
    mb = hb.watch("j:")
    hb.state_set("j:1", {"a": [1, 2]})
    item = hb.receive_pubsub(timeout=WAIT)
    assert item == {"topic": "j:1", "message": {"op": "set", "key": "j:1", "value": {"a": [1, 2]}}}
    assert json.loads(json.dumps(item)) == item
    mb.close()


def test_bad_prefixes_are_clear_errors():
    with Mailbox() as mb:
        with pytest.raises(TypeError, match="prefix must be str, not int"):
            mb.watch(5)
        with pytest.raises(TypeError, match="prefix must be str, not NoneType"):
            mb.watch(None)
        with pytest.raises(TypeError, match="prefix must be str, not bytes"):
            mb.unwatch(b"a")
        with pytest.raises(TypeError, match="prefix must be str, not list"):
            hb.watch(["a"])
        with pytest.raises(ValueError, match="over the key limit of 4096 bytes"):
            mb.watch("k" * 5000)
        with pytest.raises(UnicodeEncodeError):
            mb.watch("bad\ud800")
        with pytest.raises(TypeError):
            mb.watch()
        assert mb.watches() == []
        mb.close()
        with pytest.raises(MailboxClosed):
            mb.watch("a")
    cur = hb.current_mailbox()
    if cur is not None:
        cur.close()


WRITER = """
    import hornbeam_erlang as hb
    hb.state_set("xp:user:1", {"name": "ann"})
    hb.state_incr("xp:count", 2)
    hb.state_delete("xp:user:1")
    hb.state_set("xp:done", True)
"""

WATCHER = """
    import json, sys, subprocess
    import hornbeam_erlang as hb
    mb = hb.Mailbox()
    mb.watch("xp:")
    subprocess.run([sys.executable, sys.argv[1]], check=True, timeout=60)
    got = []
    for _ in range(4):
        m = mb.recv(timeout=10)
        got.append(None if m is None else [m.op, m.key, m.value])
    print(json.dumps(got))
"""

EXPECTED = [["set", "xp:user:1", {"name": "ann"}], ["incr", "xp:count", 2],
            ["delete", "xp:user:1", None], ["set", "xp:done", True]]


def test_a_watcher_sees_the_writes_of_another_process(tmp_path):
    writer = tmp_path / "writer.py"
    writer.write_text(textwrap.dedent(WRITER))
    if shared():
        # This process watches; a subprocess on the same backend writes.
        with Mailbox() as mb:
            mb.watch("xp:")
            subprocess.run([sys.executable, str(writer)], check=True, timeout=60)
            got = [list(event(mb)) for _ in range(4)]
        assert got == EXPECTED
        assert hb.state_get("xp:count") == 2
        return
    # Embedded: each process has its own store, so the cross-process case runs on a local://
    # directory of its own: a watcher process, and the writer it starts.
    watcher = tmp_path / "watcher.py"
    watcher.write_text(textwrap.dedent(WATCHER))
    store = tmp_path / "store"
    store.mkdir()
    env = dict(os.environ, HORNBEAM_URL=f"local://{store}")
    out = subprocess.run([sys.executable, str(watcher), str(writer)], capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == EXPECTED
    assert hb.state_get("xp:count") is None, "this process's embedded store saw nothing"
