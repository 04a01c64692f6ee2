"""Tensors over file bytes, for both loaders: ``hermetic.load`` (the format,
``_format_maker._Maker``) and ``hermetic.torch.load`` / ``load_pickle`` (evaluated
checkpoints, ``_evaluate.Maker``).

What the two share lives here once, so they cannot drift apart: the
frameworks, imported only when a file holds tensors; the closed table of
torch values a file may name; the private copy-on-write map of a file; exact
positioned reads for ``mmap=False``; and a tensor set on a storage, made a
``Parameter`` or given ``requires_grad`` the way torch's own loaders do.
Where the two loaders' inputs differ (entries of a safetensors file against
storages of a pickle), their makers differ; nothing here reads a file's
structure.
"""

from __future__ import annotations

import builtins
import mmap
import os
from collections.abc import Callable
from typing import Any

from hermetic import _hermetic

__all__ = [
    "finish",
    "np",
    "on_storage",
    "private_map",
    "read_exact",
    "torch",
    "torch_dtypes",
    "torch_value",
    "TORCH_NAMES",
]


def torch() -> Any:
    import torch as t

    return t


def np() -> Any:
    import numpy

    return numpy


# The torch values a file may name (dtypes, layouts, memory formats,
# quantization schemes): a closed table from Rust (docs/SPEC.md 6.2).
TORCH_NAMES = frozenset((*_hermetic.TORCH_DTYPE_NAMES, *_hermetic.TORCH_ENUM_NAMES))
_TORCH_VALUES: dict[str, Any] = {}
_TORCH_DTYPES: dict[str, Any] = {}


def torch_value(name: str) -> Any | None:
    """``torch.<name>`` if the closed table has ``name`` and this torch does,
    else None. Looked up with ``vars()``: ``getattr(torch, name)`` would reach
    torch's module ``__getattr__``, which imports submodules for the asking."""
    value = _TORCH_VALUES.get(name)
    if value is None and name in TORCH_NAMES:
        value = vars(torch()).get(name)
        if value is not None:
            _TORCH_VALUES[name] = value
    return value


def torch_dtypes() -> dict[str, Any]:
    """The dtypes of the closed table that this torch has, by name."""
    if not _TORCH_DTYPES:
        t = torch()
        table = {}
        for name in _hermetic.TORCH_DTYPE_NAMES:
            dt = torch_value(name)
            if isinstance(dt, t.dtype):
                table[name] = dt
        _TORCH_DTYPES.update(table)
    return _TORCH_DTYPES


def private_map(path: str | os.PathLike[str]) -> mmap.mmap:
    """A private copy-on-write map of the whole file: tensors over it are
    writable, writes never reach the file, and untouched pages cost no memory."""
    with builtins.open(path, "rb") as f:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)


def read_exact(fd: int, offset: int, out: Any, error: Callable[[int], Exception]) -> None:
    """Fills ``out`` (any writable buffer) with the bytes of ``fd`` from
    ``offset``; ``error(position)`` is raised if the file ends first (it
    changed since it was opened)."""
    view = memoryview(out).cast("B")
    got = 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], offset + got)
        if n <= 0:
            raise error(offset + got)
        got += n


def on_storage(storage: Any, dtype: Any, offset: int, shape: Any, stride: Any) -> Any:
    """A tensor of ``dtype`` over ``storage`` (an untyped storage), offset and
    strides in elements: how torch's loaders rebuild a view, so views of one
    storage share it."""
    return torch().empty(0, dtype=dtype, device=storage.device).set_(storage, offset, shape, stride)


def finish(t: Any, parameter: bool, requires_grad: bool) -> Any:
    """``t`` as saved: an ``nn.Parameter`` (which takes ``requires_grad`` as
    given), or a tensor that requires grad if it did."""
    if parameter:
        return torch().nn.Parameter(t, requires_grad=requires_grad)
    if requires_grad:
        t.requires_grad_(True)
    return t
