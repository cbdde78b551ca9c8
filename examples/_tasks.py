"""Task helpers the FastAPI chat examples share."""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Awaitable

import hornbeam_erlang as hb
from starlette.websockets import WebSocket, WebSocketDisconnect

from hornbeam_channels import SlowConsumer

log = logging.getLogger(__name__)

# How a connection normally ends: the client left (uvicorn's ClientDisconnected is an
# OSError), the mailbox was closed by the cleanup, or the client was dropped for not reading.
EXPECTED_ENDINGS = (WebSocketDisconnect, OSError, hb.MailboxClosed, SlowConsumer)


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


async def text_frames(websocket: WebSocket) -> AsyncIterator[str]:
    """The client's frames as text until it goes away (binary frames decoded as UTF-8, with
    replacement characters for what is not)."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        raw = message.get("text")
        if raw is None and message.get("bytes") is not None:
            raw = message["bytes"].decode("utf-8", errors="replace")
        yield raw or ""
