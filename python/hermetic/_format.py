"""`hermetic.save` / `hermetic.load`: whole checkpoint trees in one safetensors file.

The tree walk, the layout and every check of the file happen in Rust
(``hermetic._hermetic``); this module only turns tensors into byte buffers on
the way out and byte buffers into tensors on the way in. Nothing here
unpickles or executes anything from a file.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from hermetic import _hermetic, _tensors, _typed
from hermetic._hermetic import FormatError
from hermetic._typed import ClassNotAllowedError, SchemaError

__all__ = [
    "ClassNotAllowedError",
    "FormatError",
    "Handle",
    "SchemaError",
    "TensorInfo",
    "dumps",
    "load",
    "loads",
    "open_archive",
    "save",
]

Framework = Literal["torch", "pt", "numpy", "np"]
PathLike = str | os.PathLike[str]

# torch dtype name -> hermetic dtype code (docs/SPEC.md, "Dtypes"), from the
# evaluator's table in Rust.
_TORCH_CODES: dict[str, str] = dict(_hermetic.TORCH_DTYPE_CODES)
_CODE_TORCH: dict[str, str] = {v: k for k, v in _TORCH_CODES.items()}
# numpy kind+itemsize -> hermetic dtype code, for native little-endian dtypes.
_NP_CODES: dict[str, str] = dict(_hermetic.NUMPY_DTYPE_CODES)
# hermetic dtype code -> numpy dtype (little-endian).
_CODE_NP: dict[str, str] = {v: "<" + k for k, v in _NP_CODES.items()}


# The frameworks and torch's dtype table are shared with the evaluator's maker.
_torch = _tensors.torch
_np = _tensors.np
_torch_dtypes = _tensors.torch_dtypes


# ------------------------------------------------------------------ saving


_TORCH_BY_DTYPE: dict[Any, str] = {}


def _torch_unsupported(t: Any) -> str | None:
    torch = _torch()
    if t.layout != torch.strided:
        return f"{t.layout} tensors are not supported (only dense strided tensors)"
    if t.is_quantized:
        return "quantized tensors are not supported"
    if t.is_nested:
        return "nested tensors are not supported"
    if t.device.type == "meta":
        return "a meta tensor has no data to save"
    if t.is_conj() or t.is_neg():
        return "a lazily conjugated/negated view; call .resolve_conj()/.resolve_neg()"
    return None


def _torch_info(t: Any) -> tuple[Any, ...]:
    """(code, shape, strides, storage offset, itemsize, device, storage ptr, storage
    bytes, requires_grad, CPU?); strides and offset in elements."""
    if not _TORCH_BY_DTYPE:
        dtypes = _torch_dtypes()
        for name, known in _TORCH_CODES.items():
            dt = dtypes.get(name)
            if dt is not None:
                _TORCH_BY_DTYPE[dt] = known
        _TORCH_BY_DTYPE[None] = "strided"  # marks the table as filled
    problem = _torch_unsupported(t)
    if problem is not None:
        raise TypeError(problem)
    dtype = t.dtype
    code = _TORCH_BY_DTYPE.get(dtype)
    if code is None:
        raise TypeError(f"torch dtype {dtype} has no hermetic dtype")
    st = t.untyped_storage()
    dev = t.device
    cpu = dev.type == "cpu"
    return (
        code,
        t.shape,
        t.stride(),
        t.storage_offset(),
        dtype.itemsize,
        "cpu" if cpu else str(dev),
        st.data_ptr(),
        st.nbytes(),
        t.requires_grad,
        cpu,
    )


def _torch_span(t: Any, lo: int, hi: int) -> Any:
    """Bytes lo..hi of a tensor's storage, as a uint8 numpy array (no copy on CPU)."""
    torch = _torch()
    with torch.no_grad():
        u8 = torch.empty(0, dtype=torch.uint8, device=t.device).set_(t.untyped_storage())
        piece = u8[lo:hi]
        if piece.device.type != "cpu":
            piece = piece.cpu()
        return _with_pointer(piece.numpy())


def _descr_json(dt: Any) -> str:
    np = _np()
    if dt.fields is None and dt.subdtype is None and np.dtype(dt.str) == dt:
        return json.dumps(dt.str)
    return json.dumps(np.lib.format.dtype_to_descr(dt))


# The type strings an np_dtype may hold: numpy's ``dtype.str`` of a scalar type,
# with its byte order, kind and item size (datetimes with their unit). A closed
# grammar: a numpy type *name* ("float64", "object", "T", "f4,i4") is never
# handed to numpy, which resolves names through its own tables and modules.
_NP_TYPESTR = re.compile(r"[<>|][biufcSUV][1-9][0-9]{0,6}")
_NP_DATETIME = re.compile(
    r"[<>|][mM]8(\[([1-9][0-9]{0,9})?(Y|M|W|D|h|m|s|ms|us|ns|ps|fs|as|generic)\])?"
)
_NP_TYPESTR_EXPECTED = (
    "a byte order (<, > or |), a kind (b i u f c S U V, or m/M with 8 and an optional "
    'unit) and an item size, as numpy\'s dtype.str writes it ("<f4", "|S3", "<M8[ns]")'
)


def _typestr(text: str) -> str:
    if _NP_TYPESTR.fullmatch(text) or _NP_DATETIME.fullmatch(text):
        return text
    if re.fullmatch(r"[<>|=]?O[0-9]*", text):
        raise FormatError(f"np_dtype {text!r}: object dtypes cannot be loaded")
    raise FormatError(
        f"np_dtype: {text!r} is not a numpy type string: expected {_NP_TYPESTR_EXPECTED}"
    )


def _field_name(name: Any) -> Any:
    if isinstance(name, str):
        return name
    if isinstance(name, list) and len(name) == 2 and all(isinstance(n, str) for n in name):
        return tuple(name)  # (title, name)
    raise FormatError(
        f"np_dtype: a record field name must be a string or [title, name], not {name!r}"
    )


def _descr_from(obj: Any) -> Any:
    """JSON lists back into the tuples numpy's descriptors use, checking every
    type string against the closed grammar above."""
    if isinstance(obj, str):
        return _typestr(obj)
    if isinstance(obj, list):
        out: list[tuple[Any, ...]] = []
        for field in obj:
            if not isinstance(field, list) or len(field) not in (2, 3):
                raise FormatError(f"np_dtype: malformed record field {field!r}")
            name = _field_name(field[0])
            sub = _descr_from(field[1])
            if len(field) == 3:
                shape = field[2]
                if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
                    raise FormatError(f"np_dtype: malformed sub-array shape {shape!r}")
                out.append((name, sub, tuple(shape)))
            else:
                out.append((name, sub))
        return out
    raise FormatError(f"np_dtype: expected a string or a list, got {obj!r}")


def _np_dtype(text: str, itemsize: int | None = None) -> Any:
    np = _np()
    try:
        dt = np.lib.format.descr_to_dtype(_descr_from(json.loads(text)))
    except FormatError:
        raise
    except Exception as e:
        raise FormatError(f"np_dtype {text}: not a numpy dtype ({e})") from None
    if dt.hasobject:
        raise FormatError(f"np_dtype {text}: object dtypes cannot be loaded")
    if itemsize is not None and dt.itemsize != itemsize:
        raise FormatError(f"np_dtype {text}: item size {dt.itemsize}, expected {itemsize}")
    return dt


def _np_info(a: Any) -> tuple[Any, ...]:
    """(code, np_dtype json|None, shape, byte strides, byte pos, region key, region size,
    region as uint8)."""
    np = _np()
    dt = a.dtype
    if dt.hasobject:
        raise TypeError(f"numpy arrays of dtype {dt} hold Python objects and cannot be saved")
    if dt.itemsize == 0:
        raise TypeError(f"numpy dtype {dt} has zero-size elements")
    simple = dt.fields is None and dt.subdtype is None
    key = f"{dt.kind}{dt.itemsize}"
    big = dt.byteorder == ">" or (dt.byteorder == "=" and sys.byteorder == "big")
    np_dtype = None
    if simple and dt.kind in "biufc" and key in _NP_CODES and dt.type is not np.longdouble:
        code = _NP_CODES[key]
        if big:
            np_dtype = json.dumps(dt.str)
    elif simple and dt.kind in "mM":
        code = "I64"
        np_dtype = json.dumps(dt.str)
    else:
        code = f"RAW{dt.itemsize}"
        np_dtype = _descr_json(dt)
        if _np_dtype(np_dtype, dt.itemsize) != dt:
            raise TypeError(f"numpy dtype {dt} cannot be described exactly")
        big = False
    if big:
        # Stored little-endian like every safetensors payload; comes back as
        # the same big-endian dtype (a copy, not a view of the file).
        a = a.astype(dt.newbyteorder("<"), order="C")
    root = a
    while isinstance(root.base, np.ndarray):
        root = root.base
    if not (root.flags.c_contiguous or root.flags.f_contiguous):
        root = a = a.copy(order="C")
    region = root.reshape(-1, order="A").view(np.uint8)
    base = root.__array_interface__["data"][0]
    pos = a.__array_interface__["data"][0] - base
    return (code, np_dtype, tuple(a.shape), tuple(a.strides), pos, id(root), root.nbytes, region)


def _with_pointer(a: Any) -> tuple[Any, int, int]:
    """A C-contiguous uint8 array with its data pointer and length, for the writer."""
    if not a.flags.c_contiguous or a.dtype.itemsize != 1:
        a = _np().ascontiguousarray(a).view(_np().uint8)
    return a, a.__array_interface__["data"][0], a.nbytes


def _np_span(region: Any, lo: int, hi: int) -> tuple[Any, int, int]:
    return _with_pointer(region[lo:hi])


def _np_scalar_info(x: Any) -> tuple[str, bytes]:
    dt = x.dtype
    if dt.hasobject:
        raise TypeError(f"numpy scalar of dtype {dt} holds a Python object")
    return _descr_json(dt), x.tobytes()


# ------------------------------------------------------------------ loading


def _np_scalar(text: str, data: bytes) -> Any:
    np = _np()
    dt = _np_dtype(text)
    if len(data) != dt.itemsize:
        raise FormatError(f"numpy scalar of {dt} needs {dt.itemsize} bytes, has {len(data)}")
    return np.frombuffer(data, dtype=dt)[0].copy()


def _torch_dtype(name: str) -> Any:
    """A ``$torch_dtype`` node's dtype, from the closed table only."""
    dt = _torch_dtypes().get(name)
    if dt is not None:
        return dt
    if name in _hermetic.TORCH_DTYPE_NAMES:
        raise FormatError(
            f"$torch_dtype {name!r}: this torch ({_torch().__version__}) has no such dtype"
        )
    raise FormatError(
        f"$torch_dtype {name!r} is not a torch dtype: expected one of "
        + ", ".join(_hermetic.TORCH_DTYPE_NAMES)
    )


def _torch_device(text: str) -> Any:
    return _torch().device(text)


def _torch_size(dims: list[int]) -> Any:
    return _torch().Size(dims)


@dataclass(frozen=True)
class TensorInfo:
    """A tensor in a lazily opened file: what it is, without loading it."""

    entry: str
    kind: Literal["torch", "parameter", "numpy"]
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


_KINDS = {"torch", "parameter", "numpy"}


def _framework(framework: str | None) -> str | None:
    if framework is None:
        return None
    f = {"pt": "torch", "torch": "torch", "np": "numpy", "numpy": "numpy"}.get(framework)
    if f is None:
        raise ValueError(f"framework must be 'torch' or 'numpy', not {framework!r}")
    return f


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
        #: Whether torch tensors take the one-view path of __call__.
        self.fast = mmap and device is None and framework in (None, "torch")

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
        # The common case first, with nothing looked up twice: a torch
        # tensor on the CPU, mapped, that is its whole entry (see _torch_view).
        if (
            kind == "torch"
            and self.fast
            and not offset
            and not requires_grad
            and np_dtype is None
            and ("torch", entry) not in self.bases
        ):
            dtype = _torch_dtypes().get(_CODE_TORCH.get(code, ""))
            if dtype is not None and nbytes:
                size = dtype.itemsize
                if _row_major(shape, size) == (strides, nbytes):
                    t = _torch().frombuffer(
                        self.buffer(file), dtype=dtype, count=nbytes // size, offset=start
                    )
                    self.bases[("torch", entry)] = t
                    if len(shape) == 1:
                        return t  # frombuffer made it 1-D of this length
                    # view(*shape) costs a third less than view(shape).
                    return t.view(*shape) if shape else t.view(shape)
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


def _info_maker(
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
) -> TensorInfo:
    del file, start, strides, offset, requires_grad, np_dtype
    return TensorInfo(entry=entry, kind=kind, dtype=code, shape=tuple(shape), nbytes=nbytes)  # type: ignore[arg-type]


# ------------------------------------------------------------------ public API


def save(
    obj: Any,
    path: PathLike,
    *,
    metadata: Mapping[str, str] | None = None,
    max_shard_size: int | str | None = None,
    fsync: bool = False,
) -> None:
    """Save a tree of containers, scalars, tensors and arrays to ``path``.

    The file is a valid safetensors file; a flat ``dict[str, Tensor]`` gets
    exactly its keys as tensor names. With ``max_shard_size`` (bytes, or a
    string such as ``"5GB"``), ``path`` is a folder that receives shards and a
    ``model.safetensors.index.json``. The file appears at ``path`` only when
    complete (an interrupted or failed save leaves an existing file intact);
    ``fsync=True`` also flushes it to stable storage before the rename, so a
    power loss cannot leave a torn file either (it roughly doubles save time).
    Instances of dataclasses, attrs classes and NamedTuples, enum members,
    datetime/pathlib/uuid/decimal values and functions, classes and
    ``functools.partial`` by reference are recorded with their class names
    (docs/SPEC.md, section 10; load them with ``type=``, ``allow=`` or
    ``plain=True``). Anything the format cannot represent (a lambda, a closure,
    an arbitrary object) raises :class:`FormatError` naming its place in the
    tree and the reason. A missing parent folder is created.
    """
    md = _metadata(metadata)
    shard = _size(max_shard_size) if max_shard_size is not None else None
    # Like torch.save via Lightning's IO: a missing folder is created.
    parent = os.path.dirname(os.path.abspath(os.fspath(path)))
    os.makedirs(parent, exist_ok=True)
    _hermetic.format_save(obj, os.fspath(path), md, shard, fsync)


def dumps(obj: Any, *, metadata: Mapping[str, str] | None = None) -> bytes:
    """Like :func:`save`, returning the file's bytes."""
    return _hermetic.format_dumps(obj, _metadata(metadata))


Extra = Literal["forbid", "ignore"]


def load(
    path: PathLike,
    *,
    type: Any = None,
    allow: Iterable[Any] | None = None,
    extra: Extra = "forbid",
    plain: bool = False,
    framework: Framework | None = None,
    device: Any = None,
    verify: bool = False,
    mmap: bool = True,
) -> Any:
    """Load what :func:`save` wrote (or any safetensors file, as a flat dict).

    Tensors come back as the type they were saved as unless ``framework``
    asks for ``"torch"`` or ``"numpy"``; ``device`` puts torch tensors there
    directly (``"meta"`` reads no data). ``verify=True`` checks every
    tensor's digest first.

    By default tensors are zero-copy views of a private copy-on-write map of
    the file: writable, and pages are read only when touched. A map faults
    (``SIGBUS``) if the file is truncated or rewritten *in place* while the
    tensors live (``hermetic.save`` never does that: it writes a new file and
    renames it, so readers keep the old one). ``mmap=False`` reads every
    tensor into memory the caller owns instead (a resumed optimizer state
    that must outlive the file, a file on storage that may change).

    A file holding class instances (dataclasses, attrs classes, NamedTuples,
    enums) or callables needs one of:

    - ``type=T``: rebuild the tree as ``T`` from its annotations (the class
      names in the file only tag unions); callables still need ``allow``;
    - ``allow=[Config, "mypkg.configs:*", gelu]``: rebuild the classes and
      callables the file names, but only these (objects, exact
      ``"module:qualname"`` names, or ``"module:*"``), plus those passed to
      :func:`hermetic.register`;
    - ``plain=True``: plain dicts and lists, each object a dict tagged with its
      recorded class (``{"$class": "mypkg.configs:Config", ...}``).

    No module is ever imported because the file names it. ``extra="ignore"``
    drops fields the file has and the class does not; by default they are an
    error. A mismatch raises :class:`SchemaError` naming each place, the
    expected and the found type; a name outside the allowlist raises
    :class:`ClassNotAllowedError`.
    """
    with open_archive(path) as h:
        return h.load(
            type=type,
            allow=allow,
            extra=extra,
            plain=plain,
            framework=framework,
            device=device,
            verify=verify,
            mmap=mmap,
        )


def loads(
    data: bytes | bytearray | memoryview,
    *,
    type: Any = None,
    allow: Iterable[Any] | None = None,
    extra: Extra = "forbid",
    plain: bool = False,
    framework: Framework | None = None,
    device: Any = None,
    verify: bool = False,
) -> Any:
    """Like :func:`load`, from bytes. Tensors are views of a private copy of ``data``."""
    # The one copy of the input hermetic holds: Rust reads this bytearray in
    # place and the tensors are views of it. Nothing else may see it.
    buf = bytearray(data)
    h = Handle(_hermetic.format_open_buffer(buf), [buf], "<bytes>")
    return h.load(
        type=type,
        allow=allow,
        extra=extra,
        plain=plain,
        framework=framework,
        device=device,
        verify=verify,
    )


def open_archive(path: PathLike) -> Handle:
    """Open a file (or sharded folder) lazily: only the header is read.

    ``handle.tree`` shows the structure with :class:`TensorInfo` in place of
    tensors; ``handle["model", "layer.weight"]`` loads just that subtree.
    """
    try:
        ar = _hermetic.format_open(os.fspath(path))
    except FormatError as e:
        hint = not_hermetic_hint(path)
        if hint is None:
            raise
        raise FormatError(f"{e}\n{hint}") from e
    return Handle(ar, [None] * len(ar.paths()), os.fspath(path))


# What reads a file in each pickle-bearing format the scanner recognises.
_READERS = {
    "torch-zip": "a PyTorch pickle checkpoint (torch.save's zip)",
    "torch-legacy": "a PyTorch pickle checkpoint (the legacy format)",
    "torch-tar": "a PyTorch pickle checkpoint (the old tar format)",
    "pickle": "a pickle (a torch.save checkpoint of the legacy format is one too)",
    "joblib": "a joblib dump (a pickle)",
    "npy": "a numpy .npy file",
    "npz": "a numpy .npz archive",
}


def not_hermetic_hint(path: PathLike) -> str | None:
    """What to do with a file that is not in hermetic's format, judged by its
    content (a zip with ``data.pkl``, a pickle, a legacy torch file ...), or
    ``None`` when it is not one hermetic knows another reader for."""
    if os.path.isdir(path):
        return None
    from hermetic._scan import scan

    try:
        found = scan(path, include_clean=True)
    except Exception:  # noqa: BLE001 - a hint must never hide the real error
        return None
    if len(found) != 1 or found[0].error is not None:
        return None
    what = _READERS.get(found[0].format)
    if what is None:
        return None
    return (
        f"this is {what}, not a hermetic/safetensors file: use hermetic.torch.load to read "
        "its tensors without running it, or `hermetic convert IN OUT` to convert it"
    )


def _index(part: Any) -> str:
    return f"[{json.dumps(part, ensure_ascii=False)}]" if isinstance(part, str) else f"[{part!r}]"


class Handle:
    """A lazily opened hermetic or safetensors file (see :func:`hermetic.open`)."""

    def __init__(self, archive: Any, buffers: list[Any], source: str = "<file>") -> None:
        self._archive = archive
        self._buffers = buffers
        self._source = source
        self._tree: Any = None

    def __enter__(self) -> Handle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop this handle's maps; tensors already loaded keep theirs alive."""
        self._buffers = [None] * len(self._buffers)

    @property
    def metadata(self) -> dict[str, str]:
        """``__metadata__`` without hermetic's own key."""
        return self._archive.metadata()

    @property
    def has_tree(self) -> bool:
        """False for a plain safetensors file (which reads as a flat dict)."""
        return self._archive.has_tree()

    @property
    def tree(self) -> Any:
        """The saved structure with a :class:`TensorInfo` for every tensor (class
        instances as dicts tagged with their recorded class, as ``plain=True``)."""
        if self._tree is None:
            self._tree = self._archive.build([], _info_maker, _typed.PLAIN_HOOKS)
        return self._tree

    def _build(
        self,
        parts: list[Any],
        maker: Any,
        type: Any = None,
        allow: Iterable[Any] | None = None,
        extra: Extra = "forbid",
        plain: bool = False,
    ) -> Any:
        archive = self._archive
        if extra not in ("forbid", "ignore"):
            raise ValueError(f"extra must be 'forbid' or 'ignore', not {extra!r}")
        if plain:
            if type is not None:
                raise ValueError("plain=True returns plain data; it cannot be combined with type=")
            return archive.build(parts, maker, _typed.PLAIN_HOOKS)
        refs = archive.named_refs(parts) if archive.is_typed() else []
        if type is None:
            if not refs:
                return archive.build(parts, maker)
            ctx = _typed.Context(allow, extra, True)
            missing = [name for _, name, *_ in refs if not ctx.allow.permits(name)]
            if missing:
                raise ClassNotAllowedError(
                    _typed.not_allowed_message(self._source, refs, missing, allow is not None)
                )
            with ctx.active():
                return archive.build(parts, maker, _typed.AllowHooks(ctx))
        ctx = _typed.Context(allow, extra, any(kind != "callable" for kind, *_ in refs))
        missing = [
            name for kind, name, *_ in refs if kind == "callable" and not ctx.allow.permits(name)
        ]
        if missing:
            raise ClassNotAllowedError(_typed.callables_not_allowed_message(self._source, missing))
        tree = archive.build(parts, maker, _typed.TypedHooks(ctx))
        try:
            return ctx.structure(tree, type, "tree" + "".join(_index(p) for p in parts))
        except SchemaError as e:
            raise SchemaError(f"{self._source}: {e}") from e.__cause__

    def keys(self) -> list[str]:
        """The safetensors entry names, in file order."""
        return [e[0] for e in self._archive.entries()]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def _maker(self, framework: str | None, device: Any, mmap: bool = True) -> _Maker:
        return _Maker(self._archive, self._buffers, _framework(framework), device, mmap)

    def _run(self, maker: _Maker, build: Any) -> Any:
        try:
            return build(maker)
        finally:
            maker.close()

    def __getitem__(self, key: Any) -> Any:
        """Load the subtree at a key path: ``h["a"]``, ``h["a", 0, "b"]`` (class
        records by field name; classes only from :func:`hermetic.register`)."""
        parts = list(key) if isinstance(key, tuple) else [key]
        return self._build(parts, self._maker(None, None))

    def get(
        self,
        *path: Any,
        type: Any = None,
        allow: Iterable[Any] | None = None,
        extra: Extra = "forbid",
        plain: bool = False,
        framework: Framework | None = None,
        device: Any = None,
        mmap: bool = True,
    ) -> Any:
        """Like indexing, with :func:`load`'s options."""
        return self._run(
            self._maker(framework, device, mmap),
            lambda m: self._build(list(path), m, type, allow, extra, plain),
        )

    def get_tensor(
        self,
        name: str,
        *,
        framework: Framework | None = None,
        device: Any = None,
        mmap: bool = True,
    ) -> Any:
        """The whole entry ``name`` as one tensor, as ``safe_open`` gives it
        (``mmap=False``: in memory of its own, as for :func:`load`)."""
        return self._run(
            self._maker(framework, device, mmap),
            lambda m: self._archive.entry_tensor(name, m),
        )

    def load(
        self,
        *,
        type: Any = None,
        allow: Iterable[Any] | None = None,
        extra: Extra = "forbid",
        plain: bool = False,
        framework: Framework | None = None,
        device: Any = None,
        verify: bool = False,
        mmap: bool = True,
    ) -> Any:
        """The whole tree (see :func:`load` for the options)."""
        if verify:
            self.verify()
        return self._run(
            self._maker(framework, device, mmap),
            lambda m: self._build([], m, type, allow, extra, plain),
        )

    def verify(self) -> None:
        """Check every tensor's digest; raises :class:`FormatError` on corruption."""
        self._archive.verify()


def _metadata(metadata: Mapping[str, str] | None) -> list[tuple[str, str]]:
    if metadata is None:
        return []
    out = []
    for k, v in metadata.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise FormatError(f"metadata[{k!r}]: keys and values must be str")
        out.append((k, v))
    return out


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS.update({"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40})


def _size(size: int | str) -> int:
    if isinstance(size, int) and not isinstance(size, bool):
        n = size
    elif isinstance(size, str):
        s = size.strip().upper()
        num = s.rstrip("KMGTIB")
        unit = s[len(num) :]
        if unit not in _UNITS or not num.strip():
            raise ValueError(f"max_shard_size: cannot read {size!r}")
        n = int(float(num) * _UNITS[unit])
    else:
        raise TypeError(f"max_shard_size must be an int or a string, not {type(size).__name__}")
    if n <= 0:
        raise ValueError("max_shard_size must be positive")
    return n
