"""Bit-exact comparison of trees for the format tests: types, values (floats by
their bits), tensor dtypes/shapes/strides/bytes, object identity and storage
sharing."""

from __future__ import annotations

import struct
from collections import OrderedDict
from typing import Any

import numpy as np
import torch


def float_bits(x: float) -> bytes:
    return struct.pack("<d", x)


def tensor_bytes(t: torch.Tensor) -> bytes:
    """The logical contents of ``t`` as bytes (any dtype, any strides)."""
    if t.numel() == 0:
        return b""
    # A fresh row-major copy: `.contiguous()` keeps any stride of a size-1
    # dimension, which `view(torch.uint8)` then refuses.
    c = torch.empty(t.shape, dtype=t.dtype).copy_(t.detach())
    return bytes(c.view(-1).view(torch.uint8).numpy().tobytes())


def assert_same(a: Any, b: Any, path: str = "tree") -> None:
    """``b`` is a bit-exact copy of ``a``: same types, values, dtypes and strides."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, float):
        assert float_bits(a) == float_bits(b), f"{path}: {a!r} != {b!r}"
    elif isinstance(a, complex):
        assert float_bits(a.real) == float_bits(b.real) and float_bits(a.imag) == float_bits(
            b.imag
        ), f"{path}: {a!r} != {b!r}"
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype, f"{path}: {a.dtype} != {b.dtype}"
        assert a.shape == b.shape and a.stride() == b.stride(), f"{path}: layout differs"
        assert a.requires_grad == b.requires_grad, f"{path}: requires_grad differs"
        assert tensor_bytes(a) == tensor_bytes(b), f"{path}: bytes differ"
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype, f"{path}: {a.dtype} != {b.dtype}"
        assert a.shape == b.shape, f"{path}: shape differs"
        assert a.tobytes() == b.tobytes(), f"{path}: bytes differ"
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), f"{path}: {a!r} != {b!r}"
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: length differs"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x is a:
                assert y is b, f"{path}[{i}]: self-reference lost"
                continue
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, (dict, OrderedDict)):
        assert list(a.keys()) == list(b.keys()), f"{path}: keys differ"
        for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True):
            assert_same(ka, kb, f"{path}[key {ka!r}]")
            if va is a:
                assert vb is b, f"{path}[{ka!r}]: self-reference lost"
                continue
            assert_same(va, vb, f"{path}[{ka!r}]")
    elif isinstance(a, (set, frozenset)):
        assert a == b, f"{path}: {a!r} != {b!r}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def _canon(x: Any) -> str:
    """A text for a hashable value that does not depend on set iteration order."""
    if isinstance(x, (set, frozenset)):
        return type(x).__name__ + "{" + ",".join(sorted(map(_canon, x))) + "}"
    if isinstance(x, tuple):
        return "(" + ",".join(map(_canon, x)) + ")"
    return type(x).__name__ + ":" + repr(x)


def _walk(obj: Any, out: list[Any], seen: set[int]) -> None:
    out.append(obj)
    if isinstance(obj, (list, tuple, dict, set, frozenset)):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, dict):
            items: list[Any] = list(obj.items())
        elif isinstance(obj, (set, frozenset)):
            # Equal sets built in different orders iterate differently: walk
            # them in one canonical order, so the patterns compare contents.
            items = sorted(obj, key=_canon)
        else:
            items = list(obj)
        for it in items:
            if isinstance(obj, dict):
                _walk(it[0], out, seen)
                _walk(it[1], out, seen)
            else:
                _walk(it, out, seen)


def identity_pattern(tree: Any) -> list[int]:
    """For each memoizable object in walk order: the index of its first appearance."""
    objs: list[Any] = []
    _walk(tree, objs, set())
    first: dict[int, int] = {}
    pattern = []
    for o in objs:
        if isinstance(o, (list, tuple, dict, set, frozenset, bytes, torch.Tensor, np.ndarray)):
            pattern.append(first.setdefault(id(o), len(first)))
    return pattern


def sharing_pattern(tree: Any) -> list[tuple[int, int]]:
    """For each tensor/array in walk order: (storage group, byte offset relative
    to the group's first tensor). Equal patterns mean equal sharing."""
    objs: list[Any] = []
    _walk(tree, objs, set())
    groups: dict[Any, tuple[int, int]] = {}
    out = []
    for o in objs:
        if isinstance(o, torch.Tensor) and o.numel() > 0:
            key: Any = ("t", o.untyped_storage().data_ptr())
            addr = o.data_ptr()
        elif isinstance(o, np.ndarray) and o.size > 0:
            root = o
            while isinstance(root.base, np.ndarray):
                root = root.base
            key = ("n", root.__array_interface__["data"][0])
            addr = o.__array_interface__["data"][0]
        else:
            continue
        g = groups.setdefault(key, (len(groups), addr))
        out.append((g[0], addr - g[1]))
    return out


def assert_round_trip(a: Any, b: Any) -> None:
    assert_same(a, b)
    assert identity_pattern(a) == identity_pattern(b), "identity differs"
    assert sharing_pattern(a) == sharing_pattern(b), "storage sharing differs"
