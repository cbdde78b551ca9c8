"""The hooks and functions registered in this process, and how a handler is called.

A hook's handler is one of Hornbeam's three kinds:

- a class: instantiated once, when it is registered; the action names the method to call;
- an instance (any other object that has the action as an attribute): its method;
- a function (any other callable): called as ``handler(action, *args, **kwargs)``.

Actions that start with ``_`` are refused for classes and instances, so a caller in another
process reaches only public methods.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from typing import Any, Callable, Iterator, Optional

from ._errors import HookNotFound

_lock = threading.Lock()
#: app_path -> (kind, target): kind is "function" or "object".
_hooks: dict[str, tuple[str, Any]] = {}
#: app_path -> action -> the callable to run; filled on demand, cleared when a hook changes
#: (always in place: `execute` holds this dict).
_bound: dict[str, dict[str, Callable[..., Any]]] = {}
#: name -> function for `call`/`cast`.
_functions: dict[str, Callable[..., Any]] = {}


def add_hook(app_path: str, handler: Any) -> None:
    if not isinstance(app_path, str) or not app_path:
        raise ValueError("app_path must be a non-empty string")
    if inspect.isclass(handler):
        entry = ("object", handler())
    elif inspect.isroutine(handler) or isinstance(handler, functools.partial):
        entry = ("function", handler)
    elif handler is None:
        raise TypeError("a hook handler must be a function, a class or an instance, not None")
    else:
        entry = ("object", handler)
    with _lock:
        _hooks[app_path] = entry
        _bound.clear()


def remove_hook(app_path: str) -> bool:
    with _lock:
        found = _hooks.pop(app_path, None) is not None
        _bound.clear()
    return found


def local_hooks() -> list[str]:
    with _lock:
        return sorted(_hooks)


def has_hook(app_path: str) -> bool:
    return app_path in _hooks


def bound(app_path: str, action: str) -> Optional[Callable[..., Any]]:
    """The callable that runs `action` of the local hook `app_path`; None when this process does
    not serve that hook. Raises HookNotFound when the handler has no such action."""
    f = _bound.get(app_path, {}).get(action)
    if f is not None:
        return f
    entry = _hooks.get(app_path)
    if entry is None:
        return None
    kind, target = entry
    if not isinstance(action, str):
        raise TypeError(f"action must be a str, not {type(action).__name__}")
    if kind == "function":
        f = functools.partial(target, action)
    elif not action.startswith("_") and hasattr(target, action):
        f = getattr(target, action)
        if not callable(f):
            raise HookNotFound(f"hook {app_path!r}: {action!r} is not a method")
    elif callable(target) and not inspect.isclass(target):
        f = functools.partial(target, action)
    else:
        raise HookNotFound(f"hook {app_path!r} has no action {action!r}")
    if inspect.iscoroutinefunction(f) or inspect.iscoroutinefunction(getattr(f, "func", None)):
        f = _sync(f)
    with _lock:
        if _hooks.get(app_path) is entry:
            _bound.setdefault(app_path, {})[action] = f
    return f


def _sync(f: Callable[..., Any]) -> Callable[..., Any]:
    """An ``async def`` handler as a plain callable (run to its end); ``raw`` keeps the original
    for the async paths."""

    def run(*args: Any, **kwargs: Any) -> Any:
        return run_coroutine(f(*args, **kwargs))

    run.raw = f  # type: ignore[attr-defined]
    return run


def raw(f: Callable[..., Any]) -> Callable[..., Any]:
    return getattr(f, "raw", f)


def add_function(name: str, fn: Callable[..., Any]) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError("name must be a non-empty string")
    if not callable(fn):
        raise TypeError(f"{type(fn).__name__} object is not callable")
    with _lock:
        _functions[name] = fn


def remove_function(name: str) -> bool:
    with _lock:
        return _functions.pop(name, None) is not None


def function(name: str) -> Optional[Callable[..., Any]]:
    return _functions.get(name)


def run_coroutine(coro: Any) -> Any:
    """Runs a coroutine to its end from synchronous code: on a private loop, or, when this
    thread already runs a loop, on a private loop in a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    out: list[Any] = []

    def run() -> None:
        try:
            out.append((True, asyncio.run(coro)))
        except BaseException as e:  # handed to the caller below
            out.append((False, e))

    t = threading.Thread(target=run, name="hornbeam-coroutine")
    t.start()
    t.join()
    ok, value = out[0]
    if ok:
        return value
    raise value


def settle(result: Any) -> Any:
    """The value of a handler's result: a coroutine (an ``async def`` handler) is run."""
    if inspect.iscoroutine(result):
        return run_coroutine(result)
    return result


def chunks(result: Any) -> Iterator[Any]:
    """The chunks of a streaming handler's result, as Hornbeam streams them: a generator's (or an
    async generator's) items; any other value is one chunk."""
    if inspect.isgenerator(result) or isinstance(result, Iterator):
        return result
    if inspect.isasyncgen(result):
        return _drive_async(result)
    return iter((settle(result),))


def _drive_async(agen: Any) -> Iterator[Any]:
    """An async generator as a plain iterator, on a private loop (the thread has none running)."""
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(agen.__anext__())
            except StopAsyncIteration:
                return
    finally:
        try:
            loop.run_until_complete(agen.aclose())
        finally:
            loop.close()


def reset_after_fork() -> None:
    """The child keeps the handlers (it is a copy of the program) but gets a fresh lock."""
    global _lock
    _lock = threading.Lock()
