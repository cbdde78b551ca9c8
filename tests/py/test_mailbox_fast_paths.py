"""The per-task mailbox's cheaper receive paths keep their guarantees.

``await mailbox.recv()`` called from a coroutine skips the running-loop lookup, and
``async for`` takes a message in one coroutine instead of two. What a receiver is promised stays:
order, lag notices, nothing lost or taken twice when a receive is cancelled (in a loop, at every
point), the awaitable form wherever a loop runs, the blocking form in a plain thread.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import hornbeam_erlang as hb


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_async_for_and_await_recv_keep_order_and_lag_notices() -> None:
    async def scenario() -> None:
        with hb.Mailbox(capacity=16) as mb:
            mb.subscribe("fast:order")
            for i in range(10):
                hb.publish("fast:order", i)
            got = [(await mb.recv()).message for _ in range(3)]
            async for msg in mb:
                got.append(msg.message)
                if len(got) == 10:
                    break
            assert got == list(range(10))
            for i in range(40):  # overflows: the 16 kept, then a lag notice for the rest
                hb.publish("fast:order", i)
            first = await mb.recv()
            assert first.message == 0
            rest = [first]
            async for msg in mb:
                rest.append(msg)
                if len(rest) == 17:
                    break
            assert [m.message for m in rest[:16]] == list(range(16))
            assert rest[16].lagged == 24 and rest[16].message is None
            hb.publish("fast:order", "after")
            assert (await mb.recv()).message == "after"

    run(scenario())


def test_cancelled_receives_lose_nothing_and_take_nothing_twice() -> None:
    async def scenario() -> None:
        with hb.Mailbox(capacity=10_000) as mb:
            mb.subscribe("fast:cancel")
            received: list[int] = []

            async def by_recv() -> None:
                while True:
                    received.append((await mb.recv()).message)

            async def by_iteration() -> None:
                async for msg in mb:
                    received.append(msg.message)

            n = 0
            for round_ in range(400):
                task = asyncio.ensure_future(by_recv() if round_ % 2 else by_iteration())
                for _ in range(round_ % 4):
                    hb.publish("fast:cancel", n)
                    n += 1
                    await asyncio.sleep(0)
                for _ in range(round_ % 3):
                    await asyncio.sleep(0)
                task.cancel()
                await asyncio.wait([task])
            while (msg := mb.recv_nowait()) is not None:
                received.append(msg.message)
            assert received == list(range(n))

    run(scenario())


def test_recv_is_awaitable_wherever_a_loop_runs_and_blocks_in_a_thread() -> None:
    def not_a_coroutine(mb: hb.Mailbox) -> Any:
        return mb.recv()  # a plain function called from a coroutine: still in the loop

    async def scenario() -> None:
        with hb.Mailbox() as mb:
            mb.subscribe("fast:where")
            hb.publish("fast:where", "a")
            hb.publish("fast:where", "b")
            assert (await not_a_coroutine(mb)).message == "a"
            assert (await asyncio.create_task(mb.recv())).message == "b"
            assert await mb.recv(timeout=0.01) is None

    run(scenario())

    mb = hb.Mailbox()
    mb.subscribe("fast:thread")
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(mb.recv(timeout=10)))
    t.start()
    hb.publish("fast:thread", "from main")
    t.join(30)
    assert not t.is_alive() and out[0].message == "from main"
    mb.close()


def test_async_for_ends_when_the_mailbox_closes() -> None:
    async def scenario() -> list[Any]:
        mb = hb.Mailbox()
        mb.subscribe("fast:close")
        seen: list[Any] = []

        async def consume() -> None:
            async for msg in mb:
                seen.append(msg.message)

        task = asyncio.ensure_future(consume())
        hb.publish("fast:close", 1)
        for _ in range(50):
            if seen:
                break
            await asyncio.sleep(0.001)
        mb.close()
        await asyncio.wait_for(task, 10)
        return seen

    assert run(scenario()) == [1]
