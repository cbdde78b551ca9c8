"""The errors of hooks, calls and nodes.

Every one is a ``RuntimeError`` (Hornbeam's documented error) and a ``HornbeamError``; a timeout is
also a ``TimeoutError`` and an unknown or dead node also a ``ConnectionError``, so both ``except``
styles of Hornbeam's guides work.
"""

from __future__ import annotations

from typing import Optional

from ._native import HornbeamError  # type: ignore[import-not-found]  # no stub: the native module


class HookError(HornbeamError, RuntimeError):
    """A hook, a registered function or a remote call failed."""


class HookNotFound(HookError, LookupError):
    """No process on the backend serves this hook (or the handler has no such action), or no
    function of this name is registered."""


class HandlerError(HookError):
    """The handler raised. ``exc_type`` is the name of its exception's type, ``remote_traceback``
    its formatted traceback when it ran in another process (in this process the original is
    ``__cause__``)."""

    def __init__(self, message: str, exc_type: str = "", remote_traceback: Optional[str] = None) -> None:
        super().__init__(message)
        self.exc_type = exc_type
        self.remote_traceback = remote_traceback


class CallTimeout(HookError, TimeoutError):
    """No answer within the timeout."""


class NodeDown(HookError, ConnectionError):
    """The node is unknown, or it died (stopped heartbeating) during the call."""
