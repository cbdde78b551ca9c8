"""This process as a node of its backend: its name, its heartbeat, and the thread that serves the
hooks registered here to the other processes.

Everything goes through the engine's public store and bus, so it works the same on every backend
(embedded, ``local://``, ``redis://``):

- ``_hb:node:<node>`` (store, TTL ``NODE_TTL``): the node is alive. Refreshed every
  ``HEARTBEAT``; a killed process leaves ``nodes()`` when its key expires.
- ``_hb:hook:<app_path>:<node>`` (store, same TTL): this node serves hook ``app_path``. A caller
  lists the servers of a hook with one prefix scan and spreads its calls over them in turn (a
  NATS queue group, with the registry in the store).
- ``_hb:rpc:<node>`` (bus): the node's request topic. A request names the caller's reply topic
  (``_hb:reply:<caller>:<n>``, one per call, subscribed before the request is sent); a stream's
  reader grants credit on ``<reply topic>:ack``.

Names in keys and topics are percent-quoted, so a ``:`` in an app path or a node name cannot
make one prefix match another's entries.

Nothing here runs at import. The node joins (first heartbeat, serving thread) the first time this
process uses a hooks, calls or nodes function; after a fork the child is a new node with a new
name (when the name is the default one) and starts again on its first use.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import queue
import socket
import threading
import time
import traceback
from typing import Any, Callable, Optional
from urllib.parse import quote, unquote

from . import _handlers
from . import _native  # type: ignore[attr-defined]  # no stub: the native module
from ._errors import HookNotFound

_log = logging.getLogger("hornbeam_erlang")

#: Seconds between heartbeats, and how long a silent node stays listed.
HEARTBEAT = float(os.environ.get("HORNBEAM_HEARTBEAT_MS", "1000")) / 1000.0
NODE_TTL = 3 * HEARTBEAT
#: Threads that run handlers for other processes (started on demand).
HOOK_THREADS = max(1, int(os.environ.get("HORNBEAM_HOOK_THREADS", "8")))
#: How long a caller trusts its list of a hook's servers.
SERVERS_CACHE = HEARTBEAT

NODE_PREFIX = "_hb:node:"
HOOK_PREFIX = "_hb:hook:"


def q(name: str) -> str:
    return quote(name, safe="")


def node_key(name: str) -> str:
    return NODE_PREFIX + q(name)


def hook_prefix(app_path: str) -> str:
    return f"{HOOK_PREFIX}{q(app_path)}:"


def rpc_topic(name: str) -> str:
    return f"_hb:rpc:{q(name)}"


def _default_name() -> str:
    template = os.environ.get("HORNBEAM_NODE", "").strip()
    host = socket.gethostname() or "localhost"
    if not template:
        return f"hornbeam-{os.getpid()}@{host}"
    return template.replace("{pid}", str(os.getpid())).replace("{host}", host)


class _Pool:
    """Daemon threads that run handlers, started as work arrives (at most HOOK_THREADS); daemon
    so that a handler that never returns cannot hold the interpreter's exit."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.jobs: "queue.SimpleQueue[Callable[[], None]]" = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.threads = 0
        self.idle = 0

    def submit(self, job: Callable[[], None]) -> None:
        self.jobs.put(job)
        with self.lock:
            if self.idle > 0 or self.threads >= self.size:
                return
            self.threads += 1
        threading.Thread(target=self._work, name="hornbeam-hook", daemon=True).start()

    def _work(self) -> None:
        # Bounded by the process's life: a daemon thread that waits for jobs.
        while True:
            with self.lock:
                self.idle += 1
            job = self.jobs.get()
            with self.lock:
                self.idle -= 1
            try:
                job()
            except Exception:  # a job reports its own errors; this keeps the thread alive
                _log.exception("hornbeam_erlang: a hook job failed")


class Runtime:
    """This process's node: created on first use, replaced after a fork."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.started = time.time()
        self.name = self._claim(_default_name())
        self.qname = q(self.name)
        self.pool = _Pool(HOOK_THREADS)
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self.announced: set[str] = set()
        self.servers: dict[str, tuple[float, list[str]]] = {}
        self.turn = itertools.count(int.from_bytes(os.urandom(2), "little"))
        self.stopped = threading.Event()
        #: Mailboxes that pool threads wait on (stream credit), closed at exit to wake them.
        self.waiting: set[Any] = set()
        self.requests = _native.Mailbox(capacity=4096)
        self.requests.subscribe(rpc_topic(self.name))
        self.beat()
        # Serving threads take requests straight from the mailbox and run them (no hand-off to
        # another thread); one more starts whenever none is left waiting, up to HOOK_THREADS.
        self.serving: list[threading.Thread] = []
        self.idle_servers = 0
        self.thread = threading.Thread(target=self._heartbeat, name="hornbeam-node", daemon=True)
        self.thread.start()
        self._add_server()
        atexit.register(self.leave)

    def _claim(self, name: str) -> str:
        """`name`, or `name-<pid>` when another live process holds it (several workers started
        with one HORNBEAM_NODE)."""
        me = self.info()
        # Atomic, so two workers starting at once cannot both take the name.
        if _native.state_set_if_absent(node_key(name), me, NODE_TTL):
            return name
        held = _native.state_get(node_key(name))
        if isinstance(held, dict) and held.get("pid") == me["pid"] and held.get("host") == me["host"]:
            return name
        renamed = f"{name}-{os.getpid()}"
        _log.warning("hornbeam_erlang: node name %r is taken by a live process; this one is %r",
                     name, renamed)
        return renamed

    # -- registry ------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return {"pid": self.pid, "host": socket.gethostname(), "started": self.started}

    def beat(self) -> None:
        """Says (again) that this node is alive and which hooks it serves."""
        items: dict[str, Any] = {node_key(self.name): self.info()}
        hooks = _handlers.local_hooks()
        for app in hooks:
            items[hook_prefix(app) + self.qname] = self.name
        _native.state_set_multi(items, NODE_TTL)
        for app in self.announced - set(hooks):
            _native.state_delete(hook_prefix(app) + self.qname)
        self.announced = set(hooks)

    def withdraw(self, app_path: str) -> None:
        self.announced.discard(app_path)
        _native.state_delete(hook_prefix(app_path) + self.qname)

    def leave(self) -> None:
        """At exit: wake and stop this node's threads that wait in the engine (a thread that
        comes back from native code while the interpreter finalizes is torn down through Rust
        frames, which aborts the process), then drop this node's entries at once instead of
        waiting for them to expire."""
        if os.getpid() != self.pid or self.stopped.is_set():
            return
        self.stopped.set()
        self.requests.close()
        for mb in list(self.waiting):
            mb.close()
        deadline = time.monotonic() + 5
        for t in [self.thread, *self.serving]:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        try:
            for app in list(self.announced):
                _native.state_delete(hook_prefix(app) + self.qname)
            _native.state_delete(node_key(self.name))
        except Exception:  # the backend may already be gone at exit
            pass

    def servers_of(self, app_path: str, fresh: bool = False) -> list[str]:
        """The live nodes that serve `app_path` (cached for SERVERS_CACHE seconds)."""
        now = time.monotonic()
        hit = self.servers.get(app_path)
        if hit is not None and not fresh and hit[0] > now:
            return hit[1]
        prefix = hook_prefix(app_path)
        names = [unquote(k[len(prefix):]) for k in _native.state_keys(prefix)]
        self.servers[app_path] = (now + SERVERS_CACHE, names)
        return names

    def pick(self, app_path: str, fresh: bool = False) -> Optional[str]:
        names = self.servers_of(app_path, fresh)
        if not names:
            return None
        return names[next(self.turn) % len(names)]

    def forget_servers(self, app_path: str) -> None:
        self.servers.pop(app_path, None)

    # -- serving -------------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        # Bounded by the process's life (or the node's leave at exit).
        while not self.stopped.wait(HEARTBEAT):
            try:
                self.beat()
            except Exception as e:
                _log.warning("hornbeam_erlang: heartbeat of node %s failed: %s", self.name, e)

    def _add_server(self) -> None:
        with self.lock:
            if len(self.serving) >= HOOK_THREADS:
                return
            t = threading.Thread(target=self._serve, name="hornbeam-hook", daemon=True)
            self.serving.append(t)
        t.start()

    def _serve(self) -> None:
        # Bounded by the process's life (or the node's leave at exit, or its mailbox closing
        # after a fork): each turn waits at most one heartbeat for a request.
        while not self.stopped.is_set():
            with self.lock:
                self.idle_servers += 1
            try:
                # A node that serves no hook answers only errors: its idle servers wait in the
                # background (on local:// they then cost no wake-up per message, and leave the
                # reading of the shared log to the threads that wait for answers).
                msg = self.requests._recv_blocking(HEARTBEAT, background=not _handlers.local_hooks())
            except _native.MailboxClosed:
                return
            finally:
                with self.lock:
                    self.idle_servers -= 1
                    idle = self.idle_servers
            if msg is None:
                continue
            if idle == 0:
                self._add_server()
            if msg.lagged:
                _log.warning("hornbeam_erlang: node %s dropped %d requests (its mailbox was full)",
                             self.name, msg.lagged)
                continue
            req = msg.message
            if isinstance(req, dict) and "k" in req:
                try:
                    serve_request(req)
                except Exception:  # serve_request answers errors itself; keep serving
                    _log.exception("hornbeam_erlang: serving a request failed")


def _reply(topic: str, msg: dict[str, Any]) -> None:
    try:
        _native.publish(topic, msg)
    except (TypeError, ValueError) as e:
        # The result cannot travel (not storable, or too large): say so instead.
        _native.publish(topic, {"i": msg.get("i"), "e": "raised", "t": type(e).__name__,
                                "m": f"the handler's result cannot be sent: {e}"})


def _error(req: dict[str, Any], e: BaseException) -> dict[str, Any]:
    if isinstance(e, HookNotFound):
        return {"i": req.get("i"), "e": "nohook", "m": str(e)}
    return {"i": req.get("i"), "e": "raised", "t": type(e).__name__, "m": str(e),
            "tb": "".join(traceback.format_exception(e))}


def _target(req: dict[str, Any]) -> Callable[..., Any]:
    app, action = req.get("app"), req.get("act")
    f = _handlers.bound(app, action) if isinstance(app, str) and isinstance(action, str) else None
    if f is None:
        raise HookNotFound(f"node {node_name()} does not serve hook {app!r}")
    return f


def serve_request(req: dict[str, Any]) -> None:
    kind = req["k"]
    args = req.get("a") or []
    kwargs = req.get("kw") or {}
    if kind == "cast":
        try:
            _handlers.settle(_target(req)(*args, **kwargs))
        except Exception:
            _log.exception("hornbeam_erlang: cast to %r.%r failed", req.get("app"), req.get("act"))
        return
    reply = req.get("r")
    if not isinstance(reply, str):
        return
    if kind == "call":
        try:
            value = _handlers.settle(_target(req)(*args, **kwargs))
        except Exception as e:
            _reply(reply, _error(req, e))
            return
        _reply(reply, {"i": req.get("i"), "v": value})
    elif kind == "stream":
        _serve_stream(req, reply, args, kwargs)


def _serve_stream(req: dict[str, Any], reply: str, args: list[Any], kwargs: dict[str, Any]) -> None:
    """Sends the chunks in order, at most `w` ahead of what the reader acknowledged: a slow
    reader slows the handler. Stops when the reader cancels, dies, or grants nothing for `t` ms."""
    window = max(1, int(req.get("w", 32)))
    stall = float(req.get("t", 30000)) / 1000.0
    caller = req.get("f")
    acks = _native.Mailbox(capacity=256)
    acks.subscribe(reply + ":ack")
    rt = runtime()
    rt.waiting.add(acks)
    it = None
    try:
        try:
            it = _handlers.chunks(_target(req)(*args, **kwargs))
        except Exception as e:
            _reply(reply, _error(req, e))
            return
        sent = acked = 0
        # Bounded by the generator, and each wait by `stall`.
        while True:
            try:
                chunk = next(it)
            except StopIteration:
                break
            except Exception as e:
                _reply(reply, _error(req, e))
                return
            granted = _credit(acks, acked, sent - acked >= window, stall, caller)
            if granted is None:
                return  # cancelled, reader gone or stalled: drop the generator
            acked = granted
            try:
                _native.publish(reply, {"i": req.get("i"), "s": sent, "c": chunk})
            except (TypeError, ValueError) as e:
                _reply(reply, _error(req, e))
                return
            sent += 1
        _reply(reply, {"i": req.get("i"), "end": sent})
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                pass
        rt.waiting.discard(acks)
        acks.close()


def _credit(acks: Any, acked: int, must_wait: bool, stall: float, caller: Any) -> Optional[int]:
    """Reads the reader's acknowledgements: the new acknowledged count, or None to stop."""
    deadline = time.monotonic() + stall
    # Bounded: each turn takes a pending message or waits at most HEARTBEAT, until `deadline`.
    while True:
        try:
            msg = acks.recv_nowait() if not must_wait else acks._recv_blocking(
                max(0.0, min(HEARTBEAT, deadline - time.monotonic())))
        except _native.MailboxClosed:
            return None  # this process is exiting
        if msg is None:
            if not must_wait:
                return acked
            if time.monotonic() >= deadline:
                return None
            if isinstance(caller, str) and not alive(caller):
                return None
            continue
        body = msg.message
        if not isinstance(body, dict) or body.get("x"):
            return None
        acked = max(acked, int(body.get("a", acked)))
        must_wait = False


_rt: Optional[Runtime] = None
_rt_lock = threading.Lock()


def runtime() -> Runtime:
    """This process's node, joined on first use (and again in a child after a fork)."""
    rt = _rt
    if rt is not None and rt.pid == os.getpid():
        return rt
    return _join()


def _join() -> Runtime:
    global _rt
    with _rt_lock:
        if _rt is None or _rt.pid != os.getpid():
            _rt = Runtime()
        return _rt


def node_name() -> str:
    return runtime().name


def alive(name: str) -> bool:
    return bool(_native.state_exists(node_key(name)))


def live_nodes() -> list[str]:
    return sorted(unquote(k[len(NODE_PREFIX):]) for k in _native.state_keys(NODE_PREFIX))


def next_id() -> int:
    return next(runtime().ids)


def shutdown() -> None:
    """Leaves the backend now (what exit does): the next use joins again as a new node."""
    global _rt
    with _rt_lock:
        rt, _rt = _rt, None
    if rt is not None:
        rt.leave()


def reset_after_fork() -> None:
    """In the child: forget the parent's node (its thread does not exist here; its mailbox is
    closed by the engine's own fork handler). The child joins as a new node on first use."""
    global _rt, _rt_lock
    _rt = None
    _rt_lock = threading.Lock()
