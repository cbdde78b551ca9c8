"""The slow-consumer policy the chat examples share: a bounded outbox per WebSocket.

It is the channels layer's (`hornbeam_channels.Outbox`, see its docstring): sends go straight to
the socket while the client keeps up, queue behind a send that waits, and past ``max_chars``
waiting characters the client is closed with 1008 and `SlowConsumer` ends its connection (one of
``examples._tasks.EXPECTED_ENDINGS``).
"""

from hornbeam_channels import Outbox, SlowConsumer

#: About 1,000 ordinary chat messages; the WebSocket chat uses the same bound.
OUTBOX_MAX_CHARS = 256 * 1024

__all__ = ["OUTBOX_MAX_CHARS", "Outbox", "SlowConsumer"]
