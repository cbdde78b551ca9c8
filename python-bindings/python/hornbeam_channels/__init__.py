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
Fan-out goes through ``hornbeam_erlang.publish`` and per-connection mailboxes, so broadcasts and
pushes reach connections held by other processes once the engine is shared (``HORNBEAM_URL``).
Presence lives in :mod:`hornbeam_presence`.
"""

from __future__ import annotations

from ._api import broadcast, broadcast_from, push
from ._endpoint import CLIENT_JS, ChannelsEndpoint, asgi_endpoint
from ._origin import OriginGuard, origin_allowed
from ._outbox import Outbox, SlowConsumer
from ._registry import Channel, channel, get_channel, list_channels, unregister
from ._socket import Socket

__all__ = [
    "CLIENT_JS",
    "Channel",
    "ChannelsEndpoint",
    "OriginGuard",
    "Outbox",
    "Socket",
    "SlowConsumer",
    "asgi_endpoint",
    "broadcast",
    "broadcast_from",
    "channel",
    "get_channel",
    "list_channels",
    "origin_allowed",
    "push",
    "unregister",
]
