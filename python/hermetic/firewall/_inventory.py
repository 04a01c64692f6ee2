"""Appending to the inventory: one JSON object per line, written by many
processes at once without losing or interleaving lines.

Each record is one ``os.write`` of a complete line to a descriptor opened
with ``O_APPEND``, under an exclusive ``flock`` on the file: the lock keeps
writers from interleaving even where a large append is not atomic (network
file systems), and ``O_APPEND`` keeps every line at the end of the file.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from typing import Any

from hermetic.firewall._errors import display

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

VERSION = 1


class Inventory:
    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._seen: set[tuple[Any, ...]] = set()
        self._failed = False

    def seen(self, event: str, dedup: tuple[Any, ...]) -> bool:
        """Whether this process already wrote a record with this key."""
        return (os.getpid(), event, *dedup) in self._seen

    def write(self, event: str, dedup: tuple[Any, ...], **fields: Any) -> None:
        """Appends one record, unless this process already wrote one with
        the same ``dedup`` key (repeats add no information)."""
        key = (os.getpid(), event, *dedup)
        if key in self._seen:
            return
        self._seen.add(key)
        record = {"v": VERSION, "event": event, "pid": os.getpid(), "time": time.time()}
        record.update(fields)
        line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
        try:
            append_line(self.path, line)
        except OSError as e:
            if not self._failed:
                self._failed = True
                sys.stderr.write(
                    f"hermetic: cannot write the inventory {display(self.path)}: "
                    f"{display(str(e))}\n"
                )


#: Opening flags: never through a symlink at the inventory's path (one a
#: repository planted there would aim the appends at any file the process can
#: write), never blocking on a FIFO (one would hang the program on its first
#: load).
_FLAGS = (
    os.O_WRONLY
    | os.O_APPEND
    | os.O_CREAT
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
)


def append_line(path: str, line: bytes) -> None:
    fd = os.open(path, _FLAGS, 0o644)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file; the inventory is not written there")
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            view = memoryview(line)
            while view:
                n = os.write(fd, view)
                view = view[n:]
        finally:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
