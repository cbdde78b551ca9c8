"""Room history for the Velithon chat: the newest 1,000 messages per room in the Hornbeam store,
and every message appended to a JSON-lines file that is replayed into the store at start.

Store layout (room names percent-encoded, so a ``:`` in a name cannot split a key):

* ``velithon:seq:<room>``: the room's message counter (``state_incr``), shared by all workers;
* ``velithon:hist:<room>:<seq>``: one message, ``<seq>`` zero-padded so keys sort in order. Storing
  message ``n`` deletes message ``n - 1000``, so a room never holds more than 1,000.

File (``VELITHON_HISTORY_FILE``, default ``examples/velithon_chat/data/history.jsonl``): one line
``{"room": ..., "message": {...}}`` per message, written with a single ``O_APPEND`` write so lines
of several workers do not interleave. Replay keeps the newest 1,000 per room. A line that does not
parse (a torn last line after a crash) is skipped with a warning; before appending to a file whose
last line is torn, a newline is written first, so the torn piece stays a line of its own and never
corrupts the next message. The file only grows; it is not fsync'ed per message (a crash can lose the
last few lines, never the older ones).
"""

from __future__ import annotations

import collections
import json
import logging
import os
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote

import hornbeam_erlang as hb

log = logging.getLogger("velithon_chat")

HISTORY_KEEP = 1000
HISTORY_FILE_ENV = "VELITHON_HISTORY_FILE"
DEFAULT_HISTORY_FILE = Path(__file__).parent / "data" / "history.jsonl"


def _enc(name: str) -> str:
    return quote(name, safe="")


def _hist_key(room: str, seq: int) -> str:
    return f"velithon:hist:{_enc(room)}:{seq:012d}"


def next_seq(room: str) -> int:
    """Allocates the room's next message number (atomic across workers sharing the store)."""
    return hb.state_incr(f"velithon:seq:{_enc(room)}")


def store_message(room: str, seq: int, message: dict[str, Any]) -> None:
    """Puts message ``seq`` in the store and deletes the one that falls out of the newest 1,000."""
    hb.state_set(_hist_key(room, seq), message)
    if seq > HISTORY_KEEP:
        hb.state_delete(_hist_key(room, seq - HISTORY_KEEP))


def recent(room: str, limit: int) -> list[tuple[int, dict[str, Any]]]:
    """The newest ``limit`` messages of a room, oldest first, with their sequence numbers."""
    keys = hb.state_keys(f"velithon:hist:{_enc(room)}:")[-limit:] if limit > 0 else []
    values = hb.state_get_multi(keys)
    out = []
    for key in keys:
        message = values[key]
        if isinstance(message, dict):
            out.append((int(key.rpartition(":")[2]), message))
    return out


def room_keys(room: str) -> list[str]:
    """The store keys of a room's history (for tests and tools)."""
    return hb.state_keys(f"velithon:hist:{_enc(room)}:")


class HistoryFile:
    """The append-only JSON-lines log of a process; opened lazily, reopened after a fork."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: Optional[int] = None
        self._pid: Optional[int] = None

    def _open(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                os.write(fd, b"\n")
            self._fd, self._pid = fd, os.getpid()
        return self._fd

    def append(self, room: str, message: dict[str, Any]) -> None:
        line = json.dumps({"room": room, "message": message}) + "\n"
        os.write(self._open(), line.encode("ascii"))

    def read(self) -> dict[str, collections.deque[dict[str, Any]]]:
        """The newest ``HISTORY_KEEP`` messages per room, in file order; bad lines are skipped."""
        rooms: dict[str, collections.deque[dict[str, Any]]] = {}
        try:
            handle = open(self.path, "rb")
        except FileNotFoundError:
            return rooms
        with handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    entry = json.loads(raw)
                    room, message = entry["room"], entry["message"]
                    if not isinstance(room, str) or not isinstance(message, dict):
                        raise ValueError("room must be a string and message an object")
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("%s:%d: skipping a line that does not parse (%s)", self.path, number, exc)
                    continue
                rooms.setdefault(room, collections.deque(maxlen=HISTORY_KEEP)).append(message)
        return rooms

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None


def replay(history_file: HistoryFile) -> int:
    """Loads the file into the store once per store: the first process to get here does it.

    With the embedded backend every worker has its own store and replays; with a shared store
    (``HORNBEAM_URL``) the marker counter lets only the first, and the history stays in the store.
    """
    if hb.state_incr("velithon:replayed") != 1:
        return 0
    count = 0
    for room, messages in history_file.read().items():
        for message in messages:
            store_message(room, next_seq(room), message)
            count += 1
    return count


def history_file_from_env() -> HistoryFile:
    path = os.environ.get(HISTORY_FILE_ENV)
    return HistoryFile(Path(path) if path else DEFAULT_HISTORY_FILE)
