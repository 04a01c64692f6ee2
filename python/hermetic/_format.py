"""`hermetic.save` / `hermetic.load`: whole checkpoint trees in one safetensors file.

The tree walk, the layout and every check of the file happen in Rust
(``hermetic._hermetic``); this module is its Python face: the public functions,
the lazily opened :class:`Handle` and the choice of hooks for class records
(``type=``, ``allow=``, ``plain=``). Tensors become byte buffers in
``_format_codec`` and byte buffers become tensors in ``_format_maker``.
Nothing here unpickles or executes anything from a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from hermetic import _hermetic, _typed
from hermetic._format_maker import _Maker
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
