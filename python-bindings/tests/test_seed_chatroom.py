"""The `ChatRoom` class of seed 000, exactly as written there, run against the module."""

import asyncio
import uuid
from datetime import datetime

from hornbeam_erlang import (
    publish,
    state_delete,
    state_get,
    state_incr,
    state_keys,
    state_set,
    subscribe,
    unsubscribe,
)


# --- verbatim from shared/seeds/000 ---
class ChatRoom:
    def __init__(self, room_id):
        self.room_id = room_id
        self.topic = f'chat:{room_id}'

    def add_user(self, user_id, username):
        state_set(f'room:{self.room_id}:user:{user_id}', {
            'username': username,
            'joined_at': datetime.now().isoformat()
        })
        state_incr(f'room:{self.room_id}:user_count')

    def remove_user(self, user_id):
        state_delete(f'room:{self.room_id}:user:{user_id}')
        state_incr(f'room:{self.room_id}:user_count', -1)

    def get_users(self):
        keys = state_keys(f'room:{self.room_id}:user:')
        users = []
        for key in keys:
            user = state_get(key)
            if user:
                users.append(user)
        return users

    def add_message(self, user_id, username, text):
        msg_id = state_incr(f'room:{self.room_id}:msg_seq')
        message = {
            'id': msg_id,
            'user_id': user_id,
            'username': username,
            'text': text,
            'timestamp': datetime.now().isoformat()
        }

        # Store last 100 messages
        state_set(f'room:{self.room_id}:msg:{msg_id}', message)

        # Broadcast to all subscribers
        publish(self.topic, {
            'type': 'message',
            'data': message
        })

        return message

    def get_recent_messages(self, limit=50):
        seq = state_get(f'room:{self.room_id}:msg_seq') or 0
        messages = []

        for i in range(max(1, seq - limit + 1), seq + 1):
            msg = state_get(f'room:{self.room_id}:msg:{i}')
            if msg:
                messages.append(msg)

        return messages
# --- end of seed code ---


def test_users_counts_and_history():
    room = ChatRoom("lobby")
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for i, uid in enumerate(ids):
        room.add_user(uid, f"user{i}")
    assert state_get("room:lobby:user_count") == 3
    assert sorted(u["username"] for u in room.get_users()) == ["user0", "user1", "user2"]
    for i in range(60):
        room.add_message(ids[0], "user0", f"m{i}")
    recent = room.get_recent_messages()
    assert [m["text"] for m in recent] == [f"m{i}" for i in range(10, 60)]
    assert [m["id"] for m in recent] == list(range(11, 61))
    room.remove_user(ids[1])
    assert state_get("room:lobby:user_count") == 2
    assert len(room.get_users()) == 2


async def test_messages_reach_other_connections():
    room = ChatRoom("general")
    joined = asyncio.Event()
    count = 0

    async def connection(name):
        nonlocal count
        subscribe(room.topic)
        count += 1
        if count == 2:
            joined.set()
        from hornbeam_erlang import current_mailbox

        msg = await asyncio.wait_for(current_mailbox().recv(), 5)
        unsubscribe(room.topic)
        return msg.message

    tasks = [asyncio.create_task(connection(n)) for n in ("a", "b")]
    await asyncio.wait_for(joined.wait(), 5)
    sent = room.add_message("u1", "ann", "hello")
    results = await asyncio.gather(*tasks)
    assert results == [{"type": "message", "data": sent}] * 2
