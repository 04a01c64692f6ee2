"""Reading the DCP checkpoints torch writes, without running their pickles.

``torch.distributed.checkpoint``'s default ``FileSystemWriter`` leaves a folder
with a ``.metadata`` file (``pickle.dump`` of a ``Metadata``) and one or more
``__R_I.distcp`` files, each the items of one writer back to back: every item,
tensor or not, is one ``torch.save`` archive, found by the ``(relative_path,
offset, length)`` of its ``_StorageInfo`` in ``Metadata.storage_data``. The
default ``FileSystemReader`` unpickles ``.metadata`` with ``pickle.load`` and
every non-tensor item with ``torch.load(weights_only=False)``: a checkpoint from
anywhere runs whatever it holds.

:class:`SafeReader` is a drop-in ``StorageReader`` for such folders::

    dcp.load(state, storage_reader=hermetic.dcp.SafeReader(path))

``.metadata`` is read by hermetic's evaluator, which rebuilds only DCP's own
metadata classes (``hermetic_pickle::policy::DCP_METADATA_CLASSES``; anything else
is refused with the imports named); tensors and non-tensor items are read from
their archives by :func:`hermetic.torch.load`, which never unpickles. Nothing in
the folder is imported or run.
"""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path
from typing import Any, cast

# torch is the `torch` extra; hermetic.dcp imports this module only when used.
try:
    import torch
    from torch.distributed._shard._utils import narrow_tensor_by_index
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
    from torch.distributed.checkpoint.filesystem import _StorageInfo
    from torch.distributed.checkpoint.metadata import (
        BytesStorageMetadata,
        ChunkStorageMetadata,
        Metadata,
        MetadataIndex,
        StorageMeta,
        TensorProperties,
        TensorStorageMetadata,
    )
    from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, LoadPlanner
    from torch.distributed.checkpoint.storage import StorageReader
    from torch.futures import Future
except ImportError as e:  # pragma: no cover - exercised without torch installed
    raise ImportError("hermetic.dcp needs torch: pip install 'hermetic[torch]'") from e

from hermetic import torch as _htorch
from hermetic._evaluate import load_pickle
from hermetic.errors import DcpFormatError

__all__ = ["DcpFormatError", "SafeReader"]

_METADATA = ".metadata"


def _plain_name(name: object) -> str:
    # FileSystemReader opens `path / relative_path`, which would follow `../`
    # or an absolute path; the writer only ever writes `__R_I.distcp`.
    if (
        type(name) is not str
        or name in ("", ".", "..")
        or any(c in name for c in "/\\\0")
        or name == _METADATA
    ):
        raise DcpFormatError(f"storage_data names {name!r}, not a plain file name in the folder")
    return name


def _is_int(v: object) -> bool:
    return type(v) is int


def _check_size(v: object, what: str) -> torch.Size:
    if type(v) is not torch.Size or any(d < 0 for d in v):
        raise DcpFormatError(f"{what} is {type(v).__name__}, not a torch.Size of sizes")
    return v


def _check_tensor_md(fqn: str, md: TensorStorageMetadata) -> None:
    props = getattr(md, "properties", None)
    if type(props) is not TensorProperties or not isinstance(
        getattr(props, "dtype", None), torch.dtype
    ):
        raise DcpFormatError(f"{fqn}: properties are not TensorProperties with a dtype")
    size = _check_size(getattr(md, "size", None), f"{fqn}: size")
    chunks = getattr(md, "chunks", None)
    if type(chunks) is not list:
        raise DcpFormatError(f"{fqn}: chunks are not a list")
    for c in chunks:
        if type(c) is not ChunkStorageMetadata:
            raise DcpFormatError(f"{fqn}: a chunk is {type(c).__name__}")
        off = _check_size(getattr(c, "offsets", None), f"{fqn}: chunk offsets")
        sizes = _check_size(getattr(c, "sizes", None), f"{fqn}: chunk sizes")
        if len(off) != len(size) or len(sizes) != len(size):
            raise DcpFormatError(f"{fqn}: a chunk has another rank than the tensor")
        if any(o + s > d for o, s, d in zip(off, sizes, size, strict=True)):
            raise DcpFormatError(f"{fqn}: a chunk lies outside the tensor")


def _check_metadata(md: object) -> Metadata:
    """Checks every field the readers use, beyond what the classes allow: the
    evaluator rebuilt only DCP's classes and data, but their fields can hold
    any data a tampered file chose."""
    if type(md) is not Metadata:
        raise DcpFormatError(f".metadata holds {type(md).__name__}, not a DCP Metadata")
    sdm = getattr(md, "state_dict_metadata", None)
    if type(sdm) is not dict:
        raise DcpFormatError("state_dict_metadata is not a dict")
    for fqn, item in sdm.items():
        if type(fqn) is not str:
            raise DcpFormatError(f"state_dict_metadata has a key of type {type(fqn).__name__}")
        if type(item) is TensorStorageMetadata:
            _check_tensor_md(fqn, item)
        elif type(item) is not BytesStorageMetadata:
            raise DcpFormatError(f"{fqn}: {type(item).__name__} is not a DCP storage type")
    storage = getattr(md, "storage_data", None)
    if type(storage) is not dict:
        raise DcpFormatError("storage_data is not a dict (not written by FileSystemWriter)")
    for index, info in storage.items():
        if type(index) is not MetadataIndex or type(getattr(index, "fqn", None)) is not str:
            raise DcpFormatError(f"storage_data has a key of type {type(index).__name__}")
        offset = getattr(index, "offset", None)
        if offset is not None:
            _check_size(offset, f"{index.fqn}: index offset")
        if type(info) is not _StorageInfo:
            raise DcpFormatError(f"{index.fqn}: storage info is {type(info).__name__}")
        _plain_name(getattr(info, "relative_path", None))
        off, length = getattr(info, "offset", None), getattr(info, "length", None)
        if not (_is_int(off) and _is_int(length)) or off < 0 or length < 0:  # type: ignore[operator]
            raise DcpFormatError(f"{index.fqn}: offset and length are not sizes")
        td = getattr(info, "transform_descriptors", None)
        if td is not None and (
            not isinstance(td, (list, tuple)) or any(type(t) is not str for t in td)
        ):
            raise DcpFormatError(f"{index.fqn}: transform_descriptors are not strings")
    meta = getattr(md, "storage_meta", None)
    if meta is not None and type(meta) is not StorageMeta:
        raise DcpFormatError(f"storage_meta is {type(meta).__name__}")
    version = getattr(md, "version", None)
    if version is not None and type(version) is not str:
        raise DcpFormatError("version is not a str")
    return md


class SafeReader(StorageReader):
    """A ``StorageReader`` for the folders DCP's ``FileSystemWriter`` writes
    that runs nothing from them (see the module's documentation).

    Tampered or foreign content is refused: :class:`hermetic.UnsafePickleError`
    (naming every import) for a ``.metadata`` or an item whose pickle imports
    anything but data constructors and DCP's metadata classes,
    :class:`DcpFormatError` for a metadata field of the wrong type, an item that
    does not lie in its file, a ``relative_path`` that is not a plain file name,
    and any ``transform_descriptors`` (stream extensions such as compression are
    not implemented here)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = Path(path)
        self.storage_data: dict[MetadataIndex, _StorageInfo] = {}
        self.load_id = str(uuid.uuid4())
        self.rank: int | None = None

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        self.storage_data = {}
        if checkpoint_id:
            self.path = Path(checkpoint_id)
        self.load_id = str(uuid.uuid4())

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        rank = kwargs.get("rank")
        name = _METADATA if rank is None else f"__{int(rank)}{_METADATA}"
        md = _check_metadata(load_pickle(self.path / name))
        if getattr(md, "storage_meta", None) is None:
            md.storage_meta = StorageMeta()
        assert md.storage_meta is not None
        md.storage_meta.load_id = self.load_id
        return md

    def set_up_storage_reader(
        self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any
    ) -> None:
        self.storage_data = cast(dict[MetadataIndex, _StorageInfo], metadata.storage_data)
        self.rank = kwargs.get("rank")
        if self.storage_data is None:
            raise DcpFormatError("storage_data must not be None in metadata")

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        return plans

    def _item_bytes(self, index: MetadataIndex) -> bytes:
        try:
            info = self.storage_data[index]
        except KeyError:
            raise DcpFormatError(f"{index.fqn}: not in storage_data") from None
        if info.transform_descriptors:
            raise DcpFormatError(
                f"{index.fqn}: stored through the stream transforms "
                f"{list(info.transform_descriptors)}, which SafeReader does not implement"
            )
        path = self.path / _plain_name(info.relative_path)
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if info.offset + info.length > size:
                raise DcpFormatError(
                    f"{index.fqn}: bytes {info.offset}..{info.offset + info.length} "
                    f"lie outside {info.relative_path} ({size} bytes)"
                )
            f.seek(info.offset)
            return f.read(info.length)

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        for req in plan.items:
            data = self._item_bytes(req.storage_index)
            if req.type == LoadItemType.BYTE_IO:
                # FileSystemReader hands the planner the bytes, which the
                # default planner unpickles (torch.load(weights_only=False)).
                value = _htorch.load(data, map_location="cpu", mmap=False)
                _load_bytes(planner, req, value)
                continue
            tensor = _htorch.load(data, map_location="cpu", mmap=False)
            if not isinstance(tensor, torch.Tensor):
                raise DcpFormatError(
                    f"{req.storage_index.fqn}: the item holds {type(tensor).__name__}, not a tensor"
                )
            tensor = narrow_tensor_by_index(tensor, req.storage_offsets, req.lengths)
            target = planner.resolve_tensor(req).detach()
            if target.size() != tensor.size():
                raise DcpFormatError(
                    f"req {req.storage_index} mismatch sizes {target.size()} vs {tensor.size()}"
                )
            target.copy_(tensor)
            planner.commit_tensor(req, target)
        fut: Future[None] = Future()
        fut.set_result(None)
        return fut

    @property
    def checkpoint_id(self) -> str | os.PathLike[str]:
        return self.path

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        return (Path(checkpoint_id) / _METADATA).is_file()


def _load_bytes(planner: LoadPlanner, req: Any, value: Any) -> None:
    """What ``planner.load_bytes`` does with the item, given its value rather
    than its pickle. For the default planner its two assignments, done here;
    another planner gets the value saved again by ``torch.save`` (from data
    hermetic rebuilt: only data constructors), which is what it would load."""
    if type(planner).load_bytes is DefaultLoadPlanner.load_bytes:
        from torch.distributed.checkpoint._traverse import set_element

        default = cast(DefaultLoadPlanner, planner)
        if default.flatten_state_dict:
            set_element(default.original_state_dict, default.mappings[req.dest_index.fqn], value)
        else:
            default.state_dict[req.dest_index.fqn] = value
        return
    buf = io.BytesIO()
    torch.save(value, buf)
    buf.seek(0)
    planner.load_bytes(req, buf)
