"""``hermetic.torch.load``: a drop-in for ``torch.load(f, weights_only=True)``
that never runs the checkpoint.

The file is scanned and evaluated in Rust, where no Python object is ever
called; only torch's own data constructors build the result. torch is
imported when a checkpoint is loaded, not when this module is.
"""

from __future__ import annotations

import os
from typing import IO, Any

from hermetic import _hermetic
from hermetic._evaluate import Maker, _source
from hermetic._hermetic import CheckpointError, UnsafePickleError

__all__ = ["CheckpointError", "UnsafePickleError", "load"]


def load(
    f: str | os.PathLike[str] | IO[bytes] | bytes,
    *,
    map_location: Any = None,
    mmap: bool = True,
) -> Any:
    """Load a PyTorch checkpoint (zip or legacy format) without unpickling it.

    The result equals ``torch.load(f, weights_only=True)``: the same
    containers and scalars, the same tensors (dtype, shape, stride, storage
    offset, bytes, ``nn.Parameter`` and ``requires_grad``) and the same
    storage sharing (tied weights stay tied, views stay views).

    ``map_location`` works as in ``torch.load`` (a device, a string, a dict
    from saved to wanted locations, or a callable). With ``mmap=True`` (the
    default) the tensors of a zip checkpoint are zero-copy views of a private
    copy-on-write map of the file: loading costs no time per byte, the
    tensors are writable, and writes never reach the file. With
    ``mmap=False``, and for legacy checkpoints, each storage is read into
    memory of its own.

    A checkpoint that imports anything outside hermetic's data allowlist (a
    pickled model class, or worse) raises :class:`UnsafePickleError`, whose
    ``imports`` lists every offending ``module.name``; nothing in the file
    is imported or run.
    """
    src = _source(f)
    maker = Maker(src, mmap=mmap, map_location=map_location)
    try:
        _, obj = _hermetic.evaluate(src, "torch", maker)
    finally:
        maker.close()
    return obj
