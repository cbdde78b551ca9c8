"""On local:// an event loop reads other processes' messages itself: its hub watches the bus's
doorbell and pumps the shared log in the loop's thread, and the relay thread steps back. These
tests check that nobody is left without messages by that: a thread blocked in ``recv``, a thread
polling a mailbox's ``fileno()``, and the loop itself after it was busy, each on a real local://
directory shared by two real processes (whatever backend the rest of the suite runs on)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap

import pytest

SUBSCRIBER = textwrap.dedent('''
    import asyncio, json, select, sys, threading, time
    import hornbeam_erlang as hb
    from hornbeam_erlang import _native

    mode, count = sys.argv[1], int(sys.argv[2])

    async def main():
        mb = hb.Mailbox(); mb.subscribe("t")
        side = hb.Mailbox(); side.subscribe("t")
        print("ready", flush=True)
        first = await asyncio.wait_for(mb.recv(), 10)
        assert first.message == "warm", first
        watched = _native._relay_fileno() is not None
        side.drain()
        busy = threading.Event()
        seen = []

        def blocked_thread():
            m = side.recv(timeout=10)
            seen.append([m.message if m else None, busy.is_set()])

        def polling_thread():
            # As an event loop does: poll, then take (re-arming the descriptor when empty).
            m = None
            for _ in range(100):
                r, _, _ = select.select([side.fileno()], [], [], 0.1)
                m = side._try_recv_arm() if r else None
                if m is not None:
                    break
            seen.append([m.message if m else None, busy.is_set()])

        t = None
        if mode != "loop":
            t = threading.Thread(target=blocked_thread if mode == "thread" else polling_thread)
            t.start()
            time.sleep(0.2)  # the thread is waiting
        busy.set()
        print("busy", flush=True)
        # The loop is stuck (it cannot pump) until the thread got its message, or for 10 s.
        deadline = time.monotonic() + (10 if t is not None else 1.5)
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        busy.clear()
        got = []
        while len(got) < count:
            m = await asyncio.wait_for(mb.recv(), 10)
            assert not m.lagged, m
            got.append(m.message)
        if t is not None:
            t.join(10)
        print(json.dumps({"watched": watched, "got": got, "seen": seen}), flush=True)

    asyncio.run(main())
''')

PUBLISHER = textwrap.dedent('''
    import sys, time
    import hornbeam_erlang as hb
    count, pace = int(sys.argv[1]), float(sys.argv[2])
    for line in sys.stdin:
        if line.strip() == "warm":
            hb.publish("t", "warm")
        elif line.strip() == "go":
            for i in range(count):
                hb.publish("t", i)
                time.sleep(pace)
            print("sent", flush=True)
            break
''')


def run_pair(mode: str, count: int, pace: float) -> dict:
    with tempfile.TemporaryDirectory() as d:
        # A relay thread that looks at the log only once a minute without a ring: whatever
        # reaches the waiting thread while the loop is busy came through a ring, not the TICK.
        env = dict(os.environ, HORNBEAM_URL=f"local://{d}/bus?tick_ms=60000")
        sub = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, mode, str(count)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        pub = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(count), str(pace)], env=env,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert sub.stdout is not None and pub.stdin is not None
            assert sub.stdout.readline().strip() == "ready"
            pub.stdin.write("warm\n")
            pub.stdin.flush()
            assert sub.stdout.readline().strip() == "busy"
            pub.stdin.write("go\n")
            pub.stdin.flush()
            out, err = sub.communicate(timeout=60)
            assert sub.returncode == 0, err
            pub.communicate(timeout=30)
            return json.loads(out.strip().splitlines()[-1])
        finally:
            for p in (sub, pub):
                if p.poll() is None:
                    p.kill()
                    p.wait(timeout=10)


@pytest.mark.parametrize("mode", ["thread", "fd"])
def test_a_waiting_thread_is_served_while_the_loop_is_busy(mode):
    # The loop watches the doorbell but is stuck in a blocking call; the thread (blocked in
    # recv, or polling the mailbox's descriptor) still gets the message while it is stuck.
    r = run_pair(mode, 20, 0.001)
    assert r["watched"], "the hub should watch the doorbell on local://"
    assert r["seen"] == [[0, True]]
    assert r["got"] == list(range(20))


def test_the_loop_gets_everything_in_order_once_it_is_free():
    # Published while the loop was busy and nobody else waited: nothing lost, nothing twice.
    r = run_pair("loop", 300, 0.0005)
    assert r["watched"]
    assert r["got"] == list(range(300))


THREADS = textwrap.dedent('''
    import json, sys, threading, time
    import hornbeam_erlang as hb
    from hornbeam_erlang import _native

    x = _native.Mailbox(); x.subscribe("x")
    y = _native.Mailbox(); y.subscribe("y")
    w = _native.Mailbox(); w.subscribe("w")  # nobody waits on it
    got = {}

    def wait(name, mb):
        m = mb._recv_blocking(10)
        got[name] = m.message if m else None

    a = threading.Thread(target=wait, args=("a", x)); a.start()
    time.sleep(0.2)  # a blocks first: it reads the log for the process
    b = threading.Thread(target=wait, args=("b", y)); b.start()
    time.sleep(0.2)
    print("ready", flush=True)
    a.join(15)
    print("a done", flush=True)
    b.join(15)
    print(json.dumps(got), flush=True)
''')


def test_threads_blocked_in_recv_are_served_when_the_reading_thread_leaves():
    # Thread a waits on x and reads the log for the process; b waits on y. After a got its
    # message and left, b's message must still come (the relay thread takes over at once: with
    # tick_ms=60000 nothing else would bring it within b's 10 s wait).
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, HORNBEAM_URL=f"local://{d}/bus?tick_ms=60000")
        sub = subprocess.Popen([sys.executable, "-c", THREADS], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        try:
            assert sub.stdout is not None
            assert sub.stdout.readline().strip() == "ready"
            pub = [sys.executable, "-c", "import sys, hornbeam_erlang as hb; hb.publish(sys.argv[1], sys.argv[2])"]
            # A message for neither: a reads it in, and the relay thread leaves the doorbell to a.
            subprocess.run(pub + ["w", "for nobody"], env=env, check=True, timeout=30)
            subprocess.run(pub + ["x", "for a"], env=env, check=True, timeout=30)
            assert sub.stdout.readline().strip() == "a done"
            subprocess.run(pub + ["y", "for b"], env=env, check=True, timeout=30)
            out, err = sub.communicate(timeout=60)
            assert sub.returncode == 0, err
            assert json.loads(out.strip().splitlines()[-1]) == {"a": "for a", "b": "for b"}
        finally:
            if sub.poll() is None:
                sub.kill()
                sub.wait(timeout=10)
