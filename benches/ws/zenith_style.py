"""The baseline of the chat benchmark: the same chat written the Zenith way (seed 003).

A Python dict of sockets per room and a loop of sends: each message is encoded once and written to
every socket of the room by the sender's own handler, in-process only. It speaks exactly the
protocol and frame format of examples/websocket_chat, so the same load generator drives both.

Run alone: ``uvicorn zenith_style:application --app-dir benches/ws``.
"""

from __future__ import annotations

import json
import uuid
from collections import deque
from datetime import datetime, timezone
from typing import Any

from hornbeam_channels.asgi import Send
from hornbeam_channels.routing import lifespan, respond

HISTORY_KEPT = 100
HISTORY_ON_JOIN = 50


class ChatManager:
    """Rooms of sockets, as seed 003's `ChatManager` keeps them."""

    def __init__(self) -> None:
        self.rooms: dict[str, dict[str, Send]] = {}
        self.user_names: dict[str, dict[str, Any]] = {}
        self.history: dict[str, deque[dict[str, Any]]] = {}
        self.seq: dict[str, int] = {}

    def connect_to_room(self, send: Send, room: str, user_id: str, username: str) -> None:
        self.rooms.setdefault(room, {})[user_id] = send
        self.user_names[user_id] = {
            "user_id": user_id,
            "username": username,
            "joined_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        }

    def disconnect_from_room(self, room: str, user_id: str) -> None:
        sockets = self.rooms.get(room)
        if sockets is not None:
            sockets.pop(user_id, None)
            if not sockets:
                del self.rooms[room]
        self.user_names.pop(user_id, None)

    def users(self, room: str) -> list[dict[str, Any]]:
        return [self.user_names[uid] for uid in self.rooms.get(room, {}) if uid in self.user_names]

    def add_message(self, room: str, user_id: str, username: str, text: str) -> dict[str, Any]:
        msg_id = self.seq.get(room, 0) + 1
        self.seq[room] = msg_id
        message = {
            "id": msg_id,
            "user_id": user_id,
            "username": username,
            "text": text,
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        }
        self.history.setdefault(room, deque(maxlen=HISTORY_KEPT)).append(message)
        return message

    async def broadcast_to_room(self, room: str, message: dict[str, Any]) -> None:
        message_json = json.dumps(message)
        disconnected = []
        for user_id, send in list(self.rooms.get(room, {}).items()):
            try:
                await send({"type": "websocket.send", "text": message_json})
            except Exception:
                disconnected.append(user_id)
        for user_id in disconnected:
            self.disconnect_from_room(room, user_id)


chat_manager = ChatManager()


async def application(scope: dict[str, Any], receive: Any, send: Send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] != "websocket":
        await respond(send, 404, b"Not Found")
        return

    room = scope["path"].rsplit("/", 1)[-1] or "general"
    user_id = str(uuid.uuid4())
    username = None
    await receive()
    await send({"type": "websocket.accept"})
    try:
        while True:
            event = await receive()
            if event["type"] == "websocket.disconnect":
                break
            text = event.get("text")
            if text is None or len(text) > 64 * 1024:
                await send({"type": "websocket.close", "code": 1003})
                break
            data = json.loads(text)
            kind = data.get("type")
            if kind == "join" and username is None:
                username = str(data.get("username") or f"user_{user_id[:8]}")[:32]
                chat_manager.connect_to_room(send, room, user_id, username)
                await send({"type": "websocket.send", "text": json.dumps({
                    "type": "joined",
                    "user_id": user_id,
                    "username": username,
                    "room": room,
                    "users": chat_manager.users(room),
                    "recent_messages": list(chat_manager.history.get(room, ()))[-HISTORY_ON_JOIN:],
                })})
                await chat_manager.broadcast_to_room(room, {
                    "type": "user_joined", "data": {"user_id": user_id, "username": username}})
            elif kind == "message" and username is not None:
                text = str(data.get("text", "")).strip()[:2000]
                if text:
                    message = chat_manager.add_message(room, user_id, username, text)
                    await chat_manager.broadcast_to_room(room, {"type": "message", "data": message})
            elif kind == "typing" and username is not None:
                await chat_manager.broadcast_to_room(room, {
                    "type": "typing", "data": {"user_id": user_id, "username": username, "is_typing": True}})
    finally:
        if username is not None:
            chat_manager.disconnect_from_room(room, user_id)
            await chat_manager.broadcast_to_room(room, {
                "type": "user_left", "data": {"user_id": user_id, "username": username}})
