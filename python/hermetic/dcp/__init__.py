"""Distributed checkpoints (``torch.distributed.checkpoint``) without pickle.

``Writer``/``Reader`` store each rank's shards as hermetic files and the global
metadata as a documented JSON document; ``SafeReader`` reads folders written by
DCP's own ``FileSystemWriter`` without running their pickles. torch is imported
only when one of these is used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ObjectBytesIO", "Reader", "SafeReader", "Writer"]


def __getattr__(name: str) -> Any:
    if name == "Writer":
        from . import _storage

        return _storage.Writer
    if name in ("Reader", "ObjectBytesIO"):
        from . import _reader

        return getattr(_reader, name)
    if name == "SafeReader":
        from . import _safe

        return _safe.SafeReader
    raise AttributeError(f"module 'hermetic.dcp' has no attribute {name!r}")
