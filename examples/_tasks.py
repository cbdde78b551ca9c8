"""Task helpers the FastAPI chat examples share."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable

import hornbeam_erlang as hb
from starlette.websockets import WebSocketDisconnect

log = logging.getLogger(__name__)

# How a connection normally ends: the client left (uvicorn's ClientDisconnected is an
# OSError) or the mailbox was closed by the cleanup.
EXPECTED_ENDINGS = (WebSocketDisconnect, OSError, hb.MailboxClosed)


async def run_until_first_ends(*coros: Awaitable[None]) -> None:
    """Runs the coroutines as tasks until one ends, then cancels and awaits the others; logs
    any failure that is not an ordinary end of the connection."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, EXPECTED_ENDINGS):
                log.error("chat connection task failed", exc_info=result)
