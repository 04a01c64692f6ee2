"""Tensors out of a hermetic file: the maker Rust hands each (entry, view) of
a load to.

``hermetic.load`` walks the file's tree in Rust; each tensor it meets comes
here as an entry of the file and a view of it (dtype code, shape, strides,
offset), and leaves as a torch tensor or numpy array over the file's private
map, or over memory of its own with ``mmap=False``. Every view of one entry is
made from one storage, so storage shared when saved stays shared.
"""

from __future__ import annotations

import os
from typing import Any

from hermetic import _tensors
from hermetic._format_codec import _CODE_NP, _CODE_TORCH, _np, _np_dtype, _torch, _torch_dtypes
from hermetic._hermetic import FormatError


class _Maker:
    """Turns (entry, view) descriptions from Rust into tensors. Every view of
    one entry is made from one storage, so shared storage stays shared."""

    def __init__(
        self,
        archive: Any,
        buffers: list[Any],
        framework: str | None,
        device: Any,
        mmap: bool = True,
    ) -> None:
        self.archive = archive
        self.buffers = buffers
        self.framework = framework
        self.device = device
        self.mmap = mmap
        self.bases: dict[tuple[str, str], Any] = {}
        self.files: dict[int, int] = {}  # descriptors for mmap=False reads
        #: What Rust calls for a plain torch tensor that is its whole entry,
        #: row-major (it checks that much itself): mapped CPU torch loads only.
        fast = mmap and device is None and framework in (None, "torch")
        self.make_whole = self._whole if fast else None
        self._dtypes: dict[str, Any] | None = None
        self._frombuffer: Any = None

    def buffer(self, file: int) -> Any:
        buf = self.buffers[file]
        if buf is None:
            buf = self.buffers[file] = _tensors.private_map(self.archive.paths()[file])
        return buf

    def read_into(self, file: int, start: int, out: Any) -> None:
        """``mmap=False``: the entry's bytes copied into ``out`` (memory the
        caller owns), so nothing done to the file later reaches the tensors."""
        fd = self.files.get(file)
        if fd is None:
            path = self.archive.paths()[file]
            fd = self.files[file] = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        nbytes = memoryview(out).nbytes

        def cut(at: int) -> FormatError:
            return FormatError(
                f"{self.archive.paths()[file]}: the file ends at byte {at}, inside an entry "
                f"of {nbytes} bytes from byte {start} (changed since it was opened?)"
            )

        _tensors.read_exact(fd, start, out, cut)

    def close(self) -> None:
        for fd in self.files.values():
            os.close(fd)
        self.files.clear()

    def _whole(
        self,
        file: int,
        start: int,
        nbytes: int,
        entry: str,
        code: str,
        shape: tuple[int, ...],
        strides: tuple[int, ...],
    ) -> Any:
        """A torch tensor that is its whole entry: one ``frombuffer`` on the
        mapped file, unless the entry already has a base to share."""
        dtypes = self._dtypes
        if dtypes is None:
            table = _torch_dtypes()
            dtypes = self._dtypes = {c: table[n] for c, n in _CODE_TORCH.items() if n in table}
            self._frombuffer = _torch().frombuffer
        dtype = dtypes.get(code)
        key = ("torch", entry)
        if dtype is None or key in self.bases:
            return self("torch", file, start, nbytes, entry, code, shape, strides, 0, False, None)
        buf = self.buffers[file]
        if buf is None:
            buf = self.buffer(file)
        t = self._frombuffer(buf, dtype=dtype, count=nbytes // dtype.itemsize, offset=start)
        self.bases[key] = t
        if len(shape) == 1:
            return t  # frombuffer made it 1-D of this length
        # view(*shape) costs a third less than view(shape).
        return t.view(*shape) if shape else t.view(shape)

    def __call__(
        self,
        kind: str,
        file: int,
        start: int,
        nbytes: int,
        entry: str,
        code: str,
        shape: tuple[int, ...],
        strides: tuple[int, ...],
        offset: int,
        requires_grad: bool,
        np_dtype: str | None,
    ) -> Any:
        target = self.framework or ("numpy" if kind == "numpy" else "torch")
        if target == "numpy":
            if self.framework == "numpy" and self.device is not None and str(self.device) != "cpu":
                raise FormatError(f"numpy arrays live on the CPU, not {self.device}")
            return self._numpy(file, start, nbytes, entry, code, shape, strides, offset, np_dtype)
        t = self._torch_view(file, start, nbytes, entry, code, shape, strides, offset, np_dtype)
        if self.framework in (None, "torch"):
            return _tensors.finish(t, kind == "parameter", requires_grad)
        return t

    def _numpy(
        self,
        file: int,
        start: int,
        nbytes: int,
        entry: str,
        code: str,
        shape: tuple[int, ...],
        strides: tuple[int, ...],
        offset: int,
        np_dtype: str | None,
    ) -> Any:
        np = _np()
        base = self.bases.get(("np", entry))
        if base is None:
            if nbytes and not self.mmap:
                base = np.empty(nbytes, np.uint8)
                self.read_into(file, start, base)
            elif nbytes:
                base = np.frombuffer(self.buffer(file), np.uint8, count=nbytes, offset=start)
            else:
                base = np.empty(0, np.uint8)
            self.bases[("np", entry)] = base
        swap_to = None
        if np_dtype is not None:
            dt = _np_dtype(np_dtype, None if code.startswith("RAW") else None)
            if code.startswith("RAW"):
                if dt.itemsize != int(code[3:]):
                    raise FormatError(f"np_dtype {np_dtype} does not have {code[3:]}-byte items")
            elif dt.byteorder == ">":
                swap_to, dt = dt, dt.newbyteorder("<")
        else:
            name = _CODE_NP.get(code)
            if name is None:
                raise FormatError(
                    f"dtype {code} has no numpy equivalent; load with framework='torch'"
                )
            dt = np.dtype(name)
        arr = np.ndarray(shape, dtype=dt, buffer=base, offset=offset, strides=strides)
        return arr.astype(swap_to) if swap_to is not None else arr

    def _torch_view(
        self,
        file: int,
        start: int,
        nbytes: int,
        entry: str,
        code: str,
        shape: tuple[int, ...],
        strides: tuple[int, ...],
        offset: int,
        np_dtype: str | None,
    ) -> Any:
        torch = _torch()
        if np_dtype is not None:
            raise FormatError(f"numpy dtype {np_dtype} has no torch equivalent; load as numpy")
        name = _CODE_TORCH.get(code)
        dtype = _torch_dtypes().get(name) if name else None
        if dtype is None:
            if name:
                raise FormatError(f"dtype {code}: this torch ({torch.__version__}) has no {name}")
            raise FormatError(f"dtype {code} has no torch equivalent")
        base = self.bases.get(("torch", entry))
        size = dtype.itemsize
        if base is None and self.mmap and self.device is None and nbytes and not offset:
            # The common case, a CPU tensor that is its whole entry: one typed
            # view of the map, whose storage is the entry, as for the others.
            if _row_major(tuple(shape), size) == (tuple(strides), nbytes):
                t = torch.frombuffer(
                    self.buffer(file), dtype=dtype, count=nbytes // size, offset=start
                )
                self.bases[("torch", entry)] = t
                return t.view(shape)
        if base is None:
            device = torch.device(self.device) if self.device is not None else None
            if device is not None and device.type == "meta":
                base = torch.empty(nbytes, dtype=torch.uint8, device="meta")
            else:
                if nbytes and not self.mmap:
                    base = torch.empty(nbytes, dtype=torch.uint8)
                    self.read_into(file, start, base.numpy())
                elif nbytes:
                    base = torch.frombuffer(
                        self.buffer(file), dtype=torch.uint8, count=nbytes, offset=start
                    )
                else:
                    base = torch.empty(0, dtype=torch.uint8)
                if device is not None and device.type != "cpu":
                    base = base.to(device)
            self.bases[("torch", entry)] = base
        return _tensors.on_storage(
            base.untyped_storage(), dtype, offset // size, shape, [s // size for s in strides]
        )


_ROW_MAJOR: dict[tuple[tuple[int, ...], int], tuple[tuple[int, ...], int]] = {}


def _row_major(shape: tuple[int, ...], size: int) -> tuple[tuple[int, ...], int]:
    """Row-major byte strides of ``shape`` and its byte size (cached:
    checkpoints repeat shapes)."""
    key = (shape, size)
    r = _ROW_MAJOR.get(key)
    if r is None:
        out = []
        n = size
        for dim in reversed(shape):
            out.append(n)
            n *= dim
        r = (tuple(reversed(out)), n)
        if len(_ROW_MAJOR) < 4096:
            _ROW_MAJOR[key] = r
    return r
