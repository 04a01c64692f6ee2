"""Deep comparison of what hermetic's evaluator builds with what the real
loaders build: types, values (bitwise), tensor layout, numpy layout, and
object identity (shared objects stay shared, storages stay shared)."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import torch


def _storage_bytes(t: torch.Tensor) -> torch.Tensor:
    st = t.untyped_storage()
    return torch.empty(0, dtype=torch.uint8, device=st.device).set_(st)


class Comparer:
    """Walks two object graphs in step and fails on the first difference."""

    def __init__(self) -> None:
        self.pairs: dict[int, int] = {}
        self.reverse: dict[int, int] = {}
        self.keep: list[Any] = []
        self.storages_a: dict[int, int] = {}
        self.storages_b: dict[int, int] = {}

    def same(self, a: Any, b: Any, path: str = "root") -> None:
        assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
        if isinstance(a, (list, dict, set, tuple, torch.Tensor, np.ndarray, bytearray)):
            # Identity: an object met again must pair with the same partner.
            ia, ib = id(a), id(b)
            if ia in self.pairs or ib in self.reverse:
                assert self.pairs.get(ia) == ib and self.reverse.get(ib) == ia, (
                    f"{path}: sharing differs"
                )
                return
            self.pairs[ia], self.reverse[ib] = ib, ia
            self.keep += [a, b]
        if isinstance(a, torch.Tensor):
            self.tensor(a, b, path)
        elif isinstance(a, np.ndarray):
            self.ndarray(a, b, path)
        elif isinstance(a, np.generic):
            assert a.dtype == b.dtype, f"{path}: {a.dtype} != {b.dtype}"
            assert a.tobytes() == b.tobytes(), f"{path}: {a!r} != {b!r}"
        elif isinstance(a, dict):
            assert list(a.keys()) == list(b.keys()), f"{path}: keys {list(a)} != {list(b)}"
            for k in a:
                self.same(a[k], b[k], f"{path}[{k!r}]")
            self.attrs(a, b, path)
        elif isinstance(a, (list, tuple)):
            assert len(a) == len(b), f"{path}: length {len(a)} != {len(b)}"
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                self.same(x, y, f"{path}[{i}]")
        elif isinstance(a, (set, frozenset)):
            assert a == b, f"{path}: {a} != {b}"
        elif isinstance(a, float):
            assert struct.pack("<d", a) == struct.pack("<d", b), f"{path}: {a} != {b}"
        elif isinstance(a, complex):
            for x, y in ((a.real, b.real), (a.imag, b.imag)):
                assert struct.pack("<d", x) == struct.pack("<d", y), f"{path}: {a} != {b}"
        elif a == b:
            pass
        elif type(a).__eq__ is object.__eq__ and hasattr(a, "__reduce_ex__"):
            # No equality of its own (numpy's RandomState, a Cython class):
            # equal when it pickles to equal parts (its arguments and state).
            ra, rb = a.__reduce_ex__(4), b.__reduce_ex__(4)
            assert isinstance(ra, tuple) and isinstance(rb, tuple), f"{path}: {a!r} != {b!r}"
            assert ra[0] is rb[0], f"{path}: rebuilt by {ra[0]!r}, not {rb[0]!r}"
            for i, (x, y) in enumerate(zip(ra[1:3], rb[1:3], strict=True)):
                self.same(x, y, f"{path}.__reduce__[{i + 1}]")
        else:
            raise AssertionError(f"{path}: {a!r} != {b!r}")

    def attrs(self, a: Any, b: Any, path: str) -> None:
        da = getattr(a, "__dict__", {})
        db = getattr(b, "__dict__", {})
        assert sorted(da) == sorted(db), f"{path}: attributes {sorted(da)} != {sorted(db)}"
        for k in da:
            self.same(da[k], db[k], f"{path}.{k}")

    def tensor(self, a: torch.Tensor, b: torch.Tensor, path: str) -> None:
        for what in ("dtype", "shape", "device", "requires_grad", "layout"):
            assert getattr(a, what) == getattr(b, what), f"{path}: {what} differs"
        assert a.stride() == b.stride(), f"{path}: stride {a.stride()} != {b.stride()}"
        assert a.storage_offset() == b.storage_offset(), f"{path}: storage offset differs"
        assert a.is_conj() == b.is_conj() and a.is_neg() == b.is_neg(), f"{path}: conj/neg"
        if a.device.type != "meta":
            sa, sb = a.untyped_storage(), b.untyped_storage()
            assert sa.nbytes() == sb.nbytes(), f"{path}: storage size differs"
            assert torch.equal(_storage_bytes(a), _storage_bytes(b)), f"{path}: bytes differ"
            # Storage sharing: the n-th distinct storage on one side is the
            # n-th on the other.
            ka = self.storages_a.setdefault(sa.data_ptr(), len(self.storages_a))
            kb = self.storages_b.setdefault(sb.data_ptr(), len(self.storages_b))
            assert ka == kb, f"{path}: storage sharing differs"
        self.attrs(a, b, path)

    def ndarray(self, a: np.ndarray, b: np.ndarray, path: str) -> None:
        assert a.dtype == b.dtype, f"{path}: dtype {a.dtype} != {b.dtype}"
        assert a.dtype.str == b.dtype.str, f"{path}: byte order differs"
        assert a.shape == b.shape, f"{path}: shape {a.shape} != {b.shape}"
        if a.size:  # an empty array addresses no element: its strides say nothing
            assert a.strides == b.strides, f"{path}: strides {a.strides} != {b.strides}"
        for flag in ("C_CONTIGUOUS", "F_CONTIGUOUS", "WRITEABLE"):
            assert a.flags[flag] == b.flags[flag], f"{path}: flag {flag} differs"
        if a.dtype.hasobject:
            for i, (x, y) in enumerate(zip(a.ravel(order="K"), b.ravel(order="K"), strict=True)):
                self.same(x, y, f"{path}.flat[{i}]")
        else:
            assert a.tobytes(order="A") == b.tobytes(order="A"), f"{path}: bytes differ"


def assert_same(a: Any, b: Any) -> None:
    Comparer().same(a, b)
