"""The native awaitable behind ``await mailbox.recv()`` and ``async for``: it is a coroutine to
asyncio, it takes a message only inside a send, and every way out of a wait (a message, a
cancellation, ``throw``, ``close``) leaves no future behind in the loop's ready set."""

from __future__ import annotations

import asyncio
import collections.abc
import gc

import pytest

import hornbeam_erlang as hb
from hornbeam_erlang import Mailbox, MailboxClosed, publish

WAIT = 10


async def parked(mb: Mailbox, n: int = 1) -> None:
    """Runs the loop until `n` receives wait on `mb` in the loop's hub (bounded)."""
    ready = hb._hub(asyncio.get_running_loop()).ready
    for _ in range(100):
        if ready.waiting(mb.id) == n:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{ready.waiting(mb.id)} receives wait, expected {n}")


def waiting(mb: Mailbox) -> int:
    return hb._hub(asyncio.get_running_loop()).ready.waiting(mb.id)


async def test_it_is_a_coroutine_to_asyncio():
    mb = Mailbox()
    mb.subscribe("aw:c")
    r = mb.recv()
    assert asyncio.iscoroutine(r) and isinstance(r, collections.abc.Coroutine)
    task = asyncio.create_task(r)
    await parked(mb)
    publish("aw:c", 1)
    assert (await asyncio.wait_for(task, WAIT)).message == 1
    mb.close()


async def test_a_queued_message_is_the_await_result_and_a_second_await_fails():
    mb = Mailbox()
    mb.subscribe("aw:q")
    publish("aw:q", "first")
    r = mb.recv()
    assert (await r).message == "first"
    with pytest.raises(RuntimeError, match="already awaited"):
        await r
    mb.close()


async def test_a_task_cancelled_before_it_starts_takes_nothing():
    mb = Mailbox()
    mb.subscribe("aw:early")
    publish("aw:early", "kept")
    task = asyncio.create_task(mb.recv())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert mb.recv_nowait().message == "kept"
    mb.close()


async def test_a_cancelled_wait_leaves_no_future_and_the_next_receiver_gets_the_message():
    mb = Mailbox()
    mb.subscribe("aw:cancel")
    task = asyncio.ensure_future(mb.recv())
    await parked(mb)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert waiting(mb) == 0
    publish("aw:cancel", 7)
    assert (await asyncio.wait_for(mb.recv(), WAIT)).message == 7
    mb.close()


async def test_two_receivers_on_one_mailbox_each_get_one_message_and_a_cancelled_one_is_forgotten():
    mb = Mailbox()
    mb.subscribe("aw:two")
    a = asyncio.ensure_future(mb.recv())
    b = asyncio.ensure_future(mb.recv())
    c = asyncio.ensure_future(mb.recv())
    await parked(mb, 3)
    b.cancel()
    with pytest.raises(asyncio.CancelledError):
        await b
    assert waiting(mb) == 2
    publish("aw:two", 1)
    # Both are woken; one takes the message, the other waits again.
    done, pending = await asyncio.wait({a, c}, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
    assert len(done) == 1 and len(pending) == 1
    await parked(mb, 1)
    publish("aw:two", 2)
    second = await asyncio.wait_for(pending.pop(), WAIT)
    assert sorted([done.pop().result().message, second.message]) == [1, 2]
    assert waiting(mb) == 0
    mb.close()


async def test_send_throw_and_close_by_hand():
    mb = Mailbox()
    mb.subscribe("aw:hand")
    publish("aw:hand", "v")
    r = mb._recv_async()
    with pytest.raises(StopIteration) as stop:
        r.send(None)
    assert stop.value.value.message == "v"

    # Empty: the send hands out a future of the running loop, marked for the task protocol.
    r = mb._recv_async()
    fut = r.send(None)
    assert isinstance(fut, asyncio.Future) and fut._asyncio_future_blocking
    assert fut.get_loop() is asyncio.get_running_loop() and waiting(mb) == 1
    with pytest.raises(ValueError, match="stop"):
        r.throw(ValueError("stop"))
    assert waiting(mb) == 0
    with pytest.raises(RuntimeError, match="already awaited"):
        r.send(None)

    r = mb._recv_async()
    r.send(None)
    with pytest.raises(KeyError):
        r.throw(KeyError, "k")
    r = mb._recv_async()
    r.send(None)
    assert waiting(mb) == 1
    assert r.close() is None and waiting(mb) == 0
    publish("aw:hand", "still there")
    assert mb.recv_nowait().message == "still there"
    mb.close()


async def test_a_coroutine_closed_or_dropped_while_waiting_leaves_no_future():
    mb = Mailbox()
    mb.subscribe("aw:drop")

    async def one():
        return await mb.recv()

    coro = one()
    coro.send(None)  # runs to the wait
    assert waiting(mb) == 1
    coro.close()  # GeneratorExit: the awaitable's close() runs
    assert waiting(mb) == 0

    coro = one()
    coro.send(None)
    assert waiting(mb) == 1
    del coro
    gc.collect()
    assert waiting(mb) == 0
    mb.close()


async def test_async_for_ends_when_the_mailbox_closes_and_recv_raises():
    mb = Mailbox()
    mb.subscribe("aw:for")
    got = []

    async def consume():
        async for msg in mb:
            got.append(msg.message)

    task = asyncio.ensure_future(consume())
    publish("aw:for", 1)
    publish("aw:for", 2)
    await parked(mb)
    mb.close()
    await asyncio.wait_for(task, WAIT)
    assert got == [1, 2]
    with pytest.raises(MailboxClosed):
        await mb.recv()


async def test_a_lag_notice_comes_through_the_awaitable():
    mb = Mailbox(capacity=2)
    mb.subscribe("aw:lag")
    for i in range(5):
        publish("aw:lag", i)
    got = [await mb.recv() for _ in range(3)]
    assert [m.message for m in got[:2]] == [0, 1] and got[2].lagged == 3
    mb.close()
