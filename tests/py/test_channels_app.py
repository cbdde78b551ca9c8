"""The app the channel tests run under uvicorn: the channels chat plus test channels.

Not a test module itself (it holds no tests); ``tests.py.test_channels_app:app`` is served by
``test_channels.py``. ``HB_TEST_HEARTBEAT_TIMEOUT`` sets the server's heartbeat timeout.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

import examples.channels_chat.app as chat
from hornbeam_channels import Socket, asgi_endpoint, broadcast, broadcast_from, channel, push
from hornbeam_presence import Presence

params_channel = channel("chat:*:messages:*")


@params_channel.on_join
def join_params(topic: str, topic_params: dict[str, str], params: dict[str, Any],
                socket: Socket) -> tuple[Any, ...]:
    return ("ok", {"topic": topic, "topic_params": topic_params})


exact = channel("exact:lobby")
wild = channel("exact:*")


@exact.on_join
def join_exact(topic: str, topic_params: dict[str, str], params: dict[str, Any],
               socket: Socket) -> tuple[Any, ...]:
    return ("ok", {"handler": "exact", "topic_params": topic_params})


@wild.on_join
def join_wild(topic: str, topic_params: dict[str, str], params: dict[str, Any],
              socket: Socket) -> tuple[Any, ...]:
    return ("ok", {"handler": "wildcard", "topic_params": topic_params})


test = channel("test:*")


@test.on_join
async def join_test(topic: str, topic_params: dict[str, str], params: dict[str, Any],
                    socket: Socket) -> tuple[Any, ...]:
    await asyncio.sleep(0)
    if params.get("reject"):
        return ("error", "rejected")
    if params.get("crash"):
        raise RuntimeError("join blew up")
    name = params.get("name")
    if name:
        Presence(topic).track(socket, name, {"name": name})
        socket = socket.assign("name", name)
    if params.get("greet"):
        push(socket, "welcome", {"to": name})
        broadcast_from(socket, "arrived", {"name": name})
    return ("ok", {"id": topic_params["test_id"]}, socket)


@test.on_leave
def leave_test(topic: str, socket: Socket) -> None:
    broadcast(topic, "gone", {"name": socket.assigns.get("name")})
    push(socket, "bye", {"name": socket.assigns.get("name")})


@test.on("echo")
def echo(payload: dict[str, Any], socket: Socket) -> tuple[Any, ...]:
    return ("reply", payload, socket)


@test.on("async_echo")
async def async_echo(payload: dict[str, Any], socket: Socket) -> tuple[Any, ...]:
    await asyncio.sleep(0.01)
    return ("reply", {"async": True, **payload}, socket)


@test.on("fail")
def fail(payload: dict[str, Any], socket: Socket) -> tuple[Any, ...]:
    return ("reply", ("error", {"reason": "nope"}), socket)


@test.on("boom")
def boom(payload: dict[str, Any], socket: Socket) -> tuple[Any, ...]:
    raise ValueError("handler blew up")


@test.on("stop")
def stop(payload: dict[str, Any], socket: Socket) -> tuple[Any, ...]:
    return ("stop", "done", socket)


@test.on("set")
def set_assign(payload: dict[str, Any], socket: Socket) -> tuple[Any, ...]:
    return ("noreply", socket.merge_assigns(payload))


@test.on("get")
def get_assigns(payload: dict[str, Any], socket: Socket) -> tuple[Any, ...]:
    return ("reply", {"assigns": socket.assigns}, socket)


@test.on("shout")
def shout(payload: dict[str, Any], socket: Socket) -> tuple[Any, ...]:
    broadcast(socket.topic, "shout", payload)
    return ("noreply", socket)


@test.on("whisper")
def whisper(payload: dict[str, Any], socket: Socket) -> tuple[Any, ...]:
    broadcast_from(socket, "whisper", payload)
    return ("noreply", socket)


@test.on("push_now")
def push_now(payload: dict[str, Any], socket: Socket) -> tuple[Any, ...]:
    push(socket, "pushed", {"n": 1})
    return ("reply", {"after": "push"}, socket)


@test.on("push_later")
def push_later(payload: dict[str, Any], socket: Socket) -> tuple[Any, ...]:
    # Both run after the handler has returned: outside any handler, in the loop and in a thread.
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, push, socket, "later", {"from": "loop"})
    threading.Timer(0.1, push, (socket, "later", {"from": "thread"})).start()
    threading.Timer(0.15, broadcast, (socket.topic, "later_all", {"from": "thread"})).start()
    return ("noreply", socket)


@test.on("update")
def update_presence(payload: dict[str, Any], socket: Socket) -> tuple[Any, ...]:
    ref = Presence(socket.topic).update(socket, socket.assigns["name"], payload)
    return ("reply", {"ref": ref}, socket)


async def presence_list(request: Request) -> JSONResponse:
    topic = request.path_params["topic"]
    return JSONResponse(Presence(topic).list())


pages = Starlette(routes=[Route("/api/presence/{topic}", presence_list),
                          Mount("/", app=chat.pages)])

def on_connect(params: dict[str, str], scope: dict[str, Any]) -> Any:
    """Refuses the token "bad"; otherwise the token becomes an assign of every channel."""
    if params.get("token") == "bad":
        return False
    return {"token": params.get("token")}


app = asgi_endpoint(
    "/ws", app=pages, on_connect=on_connect,
    heartbeat_timeout=float(os.environ.get("HB_TEST_HEARTBEAT_TIMEOUT", "60")),
    max_frame_bytes=64 * 1024,
    # The suite sends bursts of 100+ events; HB_TEST_RATE_LIMIT=default tests the endpoint defaults.
    **({} if os.environ.get("HB_TEST_RATE_LIMIT") == "default"
       else {"rate_limit": 10_000.0, "rate_burst": 10_000}),
)
