"""Channels: topics that clients join over one WebSocket, with handlers, broadcasts and pushes.

Hornbeam's channel API on the Hornbeam engine::

    from hornbeam_channels import channel, broadcast_from, asgi_endpoint

    room = channel("room:*")

    @room.on_join
    def join(topic, topic_params, params, socket):
        return ("ok", {"room": topic_params["room_id"]}, socket.assign("user", params["user"]))

    @room.on("new_msg")
    def new_msg(payload, socket):
        broadcast_from(socket, "new_msg", {"user": socket.assigns["user"], **payload})
        return ("reply", {"ok": True}, socket)

    app = asgi_endpoint("/ws")   # uvicorn module:app; clients connect to /ws

The wire protocol is Phoenix Channels V2 (``[join_ref, ref, topic, event, payload]``), spoken in
both event families: Hornbeam's ``hb_*`` (our ``hornbeam.js``, served at ``/ws/hornbeam.js``) and
Phoenix's ``phx_*`` (the ``phoenix`` npm client); each client is answered in its own family.
Broadcasts go through ``hornbeam_erlang.publish`` and each process's topic fan-out (one mailbox
and one task per topic, :mod:`hornbeam_channels.fanout`), pushes through a mailbox per connection,
so both reach connections held by other processes once the engine is shared (``HORNBEAM_URL``).
Presence lives in :mod:`hornbeam_presence`.

The package is also a small toolkit for plain ASGI WebSocket apps, one concern per module (the
example apps are built on it):

* :mod:`hornbeam_channels.asgi`: the ASGI types;
* :mod:`hornbeam_channels.routing`: ``route_path``, ``respond``, ``respond_json``, ``lifespan``;
* :mod:`hornbeam_channels.outbox`: ``Outbox``, the bounded outgoing frames of one socket (the
  slow-consumer rule: past the bound, close 1008), and ``Wire``, a frame encoded once for many
  sockets;
* :mod:`hornbeam_channels.fanout`: ``Fanout``, one mailbox and one sending task per topic per
  process, writing each message, encoded once, to every member's outbox.
"""

from __future__ import annotations

from ._api import broadcast, broadcast_from, owner_of, push
from ._endpoint import CLIENT_JS, ChannelsEndpoint, asgi_endpoint
from ._origin import OriginGuard, origin_allowed
from ._registry import Channel, channel, get_channel, list_channels, unregister
from ._socket import Socket
from .fanout import Fanout, Frame, lag_notice, lag_skip, next_batch, render_text
from .outbox import Outbox, SlowConsumer, Wire
from .routing import lifespan, respond, respond_json, route_path

__all__ = [
    "CLIENT_JS",
    "Channel",
    "ChannelsEndpoint",
    "Fanout",
    "Frame",
    "OriginGuard",
    "Outbox",
    "Socket",
    "SlowConsumer",
    "Wire",
    "asgi_endpoint",
    "broadcast",
    "broadcast_from",
    "channel",
    "get_channel",
    "lag_notice",
    "lag_skip",
    "lifespan",
    "next_batch",
    "list_channels",
    "origin_allowed",
    "owner_of",
    "push",
    "render_text",
    "respond",
    "respond_json",
    "route_path",
    "unregister",
]
