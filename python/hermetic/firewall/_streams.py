"""Reading exactly one pickle stream from a file, so that the bytes the
firewall hashes are the bytes the unpickler runs.

The firewall never hashes a file and then lets the unpickler read it again:
it reads the stream once, decides on those bytes, and hands the unpickler an
in-memory copy. The file is then positioned just past what the unpickler
consumed, as if the unpickler had read it directly.
"""

from __future__ import annotations

import io
import os
import pickletools
from collections.abc import Callable
from typing import IO, Any, cast

from hermetic import _hermetic

_FIRST_READ = 64 * 1024

_COMPLETE, _NEED_MORE, _MALFORMED = 0, 1, 2


def file_name(obj: Any) -> str | None:
    """The path of a file object, when it has one."""
    name = getattr(obj, "name", None)
    if isinstance(name, (str, bytes, os.PathLike)) and not isinstance(name, int):
        try:
            return os.path.abspath(os.fsdecode(name))
        except (TypeError, ValueError):
            return None
    return None


class Source:
    """One file an unpickler reads from, given as its ``read`` and
    ``readline`` (bound methods of a file object, usually)."""

    __slots__ = ("read", "readline", "file", "start", "seekable")

    def __init__(self, read: Callable[..., bytes], readline: Callable[..., bytes]) -> None:
        self.read = read
        self.readline = readline
        owner = getattr(read, "__self__", None)
        self.file = owner if getattr(readline, "__self__", None) is owner else None
        self.start = 0
        self.seekable = False
        if self.file is not None:
            try:
                self.seekable = bool(self.file.seekable())
                if self.seekable:
                    self.start = self.file.tell()
            except (AttributeError, OSError, ValueError):
                self.seekable = False

    @classmethod
    def of(cls, file: Any) -> Source:
        return cls(file.read, file.readline)

    def take(self) -> bytes:
        """Reads the next pickle stream: through its STOP opcode, or to the
        end of the file when it is malformed or truncated."""
        if self.seekable:
            return self._take_seekable()
        return self._take_exact()

    def take_joblib(self) -> bytes:
        """Reads the blob of joblib's unpickler, which reads array data from
        its file between opcodes: for a joblib dump, the whole span the
        scanner's joblib reader finds (opcodes and arrays, through STOP);
        for anything else, the plain stream."""
        if not self.seekable:
            return self.take_rest()
        buf = bytearray()
        want = _FIRST_READ
        eof = False
        while True:
            while len(buf) < want and not eof:
                chunk = self.read(want - len(buf))
                if not chunk:
                    eof = True
                else:
                    buf += chunk
            data = bytes(buf)
            is_joblib, span = _hermetic.joblib_span_of(data)
            if is_joblib:
                end = span if span is not None and (span < len(data) or eof) else None
            else:
                status, end_ = _hermetic.stream_extent_of(data)
                if status == _COMPLETE:
                    end = end_
                elif status == _MALFORMED:
                    rest = b"" if eof else self.read()
                    return data + (rest or b"")
                else:
                    end = None
            if end is not None:
                if end < len(data):
                    assert self.file is not None  # seekable implies a file
                    self.file.seek(self.start + end)
                return data[:end]
            if eof:
                return data
            want *= 2

    def take_rest(self) -> bytes:
        """Reads everything left."""
        parts = []
        while True:
            chunk = self.read(1 << 20)
            if not chunk:
                break
            parts.append(chunk)
        return b"".join(parts)

    def _take_seekable(self) -> bytes:
        buf = bytearray()
        want = _FIRST_READ
        eof = False
        while True:
            while len(buf) < want and not eof:
                chunk = self.read(want - len(buf))
                if not chunk:
                    eof = True
                else:
                    buf += chunk
            data = bytes(buf)
            status, end = _hermetic.stream_extent_of(data)
            if status == _COMPLETE:
                if end < len(data):
                    assert self.file is not None  # seekable implies a file
                    self.file.seek(self.start + end)
                return data[:end]
            if status == _MALFORMED:
                rest = b"" if eof else self.read()
                return data + (rest or b"")
            if eof:
                return data
            want *= 2

    def _take_exact(self) -> bytes:
        """For pipes and sockets: read opcode by opcode, never past STOP."""
        tee = _Tee(self.read, self.readline)
        try:
            # genops needs only read and readline, which _Tee provides.
            for op, _arg, _pos in pickletools.genops(cast("IO[bytes]", tee)):
                if op.name == "STOP":
                    break
        except Exception:
            # Malformed: the unpickler would read on; the blob is the rest.
            while True:
                chunk = self.read(_FIRST_READ)
                if not chunk:
                    break
                tee.parts.append(chunk)
        return b"".join(tee.parts)

    def settle(self, blob_len: int, consumed: int) -> None:
        """Leaves the file just past the ``consumed`` bytes of the blob."""
        if self.seekable and consumed != blob_len:
            assert self.file is not None  # seekable implies a file
            self.file.seek(self.start + consumed)


class _Tee:
    __slots__ = ("_read", "_readline", "parts")

    def __init__(self, read: Callable[..., bytes], readline: Callable[..., bytes]) -> None:
        self._read = read
        self._readline = readline
        self.parts: list[bytes] = []

    def read(self, n: int = -1) -> bytes:
        b = self._read(n)
        self.parts.append(b)
        return b

    def readline(self) -> bytes:
        b = self._readline()
        self.parts.append(b)
        return b


def reader_like(src: Any, blob: bytes) -> Any:
    """An in-memory file of ``blob`` that the C unpickler reads the way it
    would read ``src``: it prefetches through ``peek`` when the file has one,
    and that changes how it treats frames (a FRAME whose length lies is
    read past by a prefetching unpickler, refused by one that is not)."""
    bio = io.BytesIO(blob)
    return io.BufferedReader(bio) if hasattr(src, "peek") else bio  # type: ignore[arg-type]


class Feed:
    """The file a guarded C unpickler is built on: reads go to the source
    file until ``load`` swaps in the checked bytes."""

    __slots__ = ("src", "buf")

    def __init__(self, src: Any) -> None:
        self.src = src
        self.buf: Any = None

    @staticmethod
    def of(src: Any) -> Feed:
        return PeekFeed(src) if hasattr(src, "peek") else Feed(src)

    def read(self, n: int = -1) -> bytes:
        b = self.buf
        return self.src.read(n) if b is None else b.read(n)

    def readline(self, size: int = -1) -> bytes:
        b = self.buf
        if b is None:
            return self.src.readline() if size == -1 else self.src.readline(size)
        return b.readline(size)

    def readinto(self, m: Any) -> int:
        b = self.buf
        if b is not None:
            return b.readinto(m)
        ri = getattr(self.src, "readinto", None)
        if ri is not None:
            return ri(m)
        data = self.src.read(len(m))
        m[: len(data)] = data
        return len(data)


class PeekFeed(Feed):
    """A ``Feed`` for files that can ``peek``, so the unpickler prefetches."""

    __slots__ = ()

    def peek(self, n: int = 0) -> bytes:
        b = self.buf
        return self.src.peek(n) if b is None else b.peek(n)
