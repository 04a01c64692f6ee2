"""``hermetic.torch.load``: a drop-in for ``torch.load(f, weights_only=True)``
that never runs the checkpoint.

The file is scanned and evaluated in Rust, where no Python object is ever
called; only torch's own data constructors build the result. torch is
imported when a checkpoint is loaded, not when this module is.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable
from typing import IO, Any

from hermetic import _hermetic
from hermetic._evaluate import Maker, _source, allowlist, trust
from hermetic._hermetic import CheckpointError, UnsafePickleError

__all__ = ["CheckpointError", "UnsafePickleError", "load"]


def load(
    f: str | os.PathLike[str] | IO[bytes] | bytes,
    map_location: Any = None,
    pickle_module: Any = None,
    *,
    weights_only: bool | None = None,
    mmap: bool | None = None,
    allow: Iterable[Any] | None = None,
    plain: bool = False,
    **pickle_load_args: Any,
) -> Any:
    """Load a PyTorch checkpoint (zip or legacy format) without unpickling it.

    The result equals ``torch.load(f, weights_only=True)``: the same
    containers and scalars, the same tensors (dtype, shape, stride, storage
    offset, bytes, ``nn.Parameter`` and ``requires_grad``) and the same
    storage sharing (tied weights stay tied, views stay views).

    The signature is ``torch.load``'s, so replacing the call needs no other
    change. ``map_location`` works as in ``torch.load`` (a device, a string,
    a dict from saved to wanted locations, or a callable); a CUDA checkpoint
    on a machine without CUDA fails with torch's own advice. With
    ``mmap=True`` (the default here) the tensors of a zip checkpoint are
    zero-copy views of a private copy-on-write map of the file: loading
    costs no time per byte, the tensors are writable, and writes never reach
    the file. With ``mmap=False``, and for legacy checkpoints, each storage
    is read into memory of its own. ``weights_only`` is accepted and has no
    effect: nothing in the file ever runs. ``pickle_module`` other than
    :mod:`pickle` is refused (hermetic does not unpickle).

    A checkpoint that imports anything outside hermetic's data allowlist (a
    pickled model class, or worse) raises :class:`UnsafePickleError`, whose
    ``imports`` lists every offending ``module.name`` and whose message gives
    the ``allow=[...]`` that would load it; nothing in the file is imported
    or run. ``allow=[...]`` (the syntax of ``hermetic.load``: objects,
    ``"module:qualname"``, ``"module:*"``) trusts those classes and
    functions: they are rebuilt as CPython's unpickler would, and their own
    code runs as under ``pickle.load``. A dangerous import is refused
    whatever ``allow`` says. ``plain=True`` returns objects of other classes
    as ``{"$class": "module:qualname", ...state}`` dicts, running nothing (see
    :func:`hermetic.load_pickle`).
    """
    if pickle_module is not None and pickle_module is not pickle:
        raise TypeError(
            "hermetic.torch.load does not unpickle, so it takes no pickle_module "
            f"({getattr(pickle_module, '__name__', pickle_module)!r} was given)"
        )
    del weights_only  # hermetic never runs the file: every load is weights-only and more
    encoding = pickle_load_args.pop("encoding", None)
    if pickle_load_args:
        raise TypeError(
            f"hermetic.torch.load got unexpected keyword arguments {sorted(pickle_load_args)}"
        )
    src = _source(f)
    trusted = allowlist(allow)
    maker = Maker(
        src,
        mmap=True if mmap is None else mmap,
        map_location=map_location,
        allow=trusted,
        plain=plain,
    )
    try:
        _, obj = _hermetic.evaluate(src, "torch", maker, trust(trusted, plain), encoding)
    finally:
        maker.close()
    return obj
