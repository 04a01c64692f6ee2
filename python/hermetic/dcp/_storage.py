"""``hermetic.dcp.Writer`` / ``hermetic.dcp.Reader``: a ``torch.distributed.checkpoint``
storage layer with no pickle anywhere.

DCP's own ``FileSystemWriter`` pickles the global metadata (``.metadata``) and
``torch.save``\\ s every non-tensor value; its reader unpickles both. Here:

* each rank writes its tensor shards, contiguous, as one hermetic file
  (``__{rank}_tensors.safetensors``: a flat safetensors file with hermetic's
  per-tensor digests, one entry per chunk) and its non-tensor values as a
  hermetic tree (``__{rank}_objects.safetensors``), both with ``hermetic.save``'s
  atomic write;
* the coordinator writes the global ``Metadata`` last, atomically, as the JSON
  document ``.metadata.json`` (docs/SPEC.md, "Distributed checkpoints (DCP)"),
  rebuilt field by field on load. A folder without it (an interrupted or
  failed save) is refused.

Non-tensor values never go through ``torch.save``: with DCP's default planners
(``DefaultSavePlanner``/``DefaultLoadPlanner`` and their subclasses that keep
``transform_object``/``load_bytes``), the writer takes the original object
(``planner.lookup_object``) and stores it as a hermetic tree, and the reader puts
the rebuilt object where ``DefaultLoadPlanner.load_bytes`` would, without its
``torch.load``. Objects of your own classes need ``Reader(path, allow=[...])``
as :func:`hermetic.load` does.

This module is the writer; the folder's layout and the metadata document are
``_document``, the reader is ``_reader``.
"""

from __future__ import annotations

import dataclasses
import io
import os
import uuid
from pathlib import Path
from typing import Any

# torch is the `torch` extra; hermetic.dcp imports this module only when used.
try:
    import torch
    from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
    from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
    from torch.distributed.checkpoint.planner import (
        SavePlan,
        SavePlanner,
        WriteItem,
        WriteItemType,
    )
    from torch.distributed.checkpoint.storage import StorageWriter, WriteResult
    from torch.futures import Future
except ImportError as e:  # pragma: no cover - exercised without torch installed
    raise ImportError("hermetic.dcp needs torch: pip install 'hermetic[torch]'") from e

from hermetic import _format
from hermetic._hermetic import FormatError
from hermetic.dcp._document import (
    METADATA,
    OBJECTS,
    TENSORS,
    PathLike,
    _encode,
    _folder,
    _local_path,
    _metadata_name,
    _Stored,
)

__all__ = ["Writer"]

# DCP's own version string for the metadata (what FileSystemWriter records).
_DCP_VERSION = "1.0.0"
try:  # pragma: no branch - present in every torch with this storage API
    from torch.distributed.checkpoint.filesystem import CURRENT_DCP_VERSION as _DCP_VERSION
except ImportError:  # pragma: no cover
    pass


# ------------------------------------------------------------------ helpers


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes, fsync: bool) -> None:
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    if fsync:
        _fsync_dir(path.parent)


def _compact(t: Any) -> Any:
    """A tensor that owns exactly its bytes, contiguous (a shard view of a larger
    buffer would otherwise take the whole buffer into the file)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"a tensor write item resolved to {type(t).__name__}, not a tensor")
    to_local = getattr(t, "to_local", None)
    if to_local is not None and type(t) is not torch.Tensor and hasattr(t, "placements"):
        t = to_local()
    t = t.detach()
    if (
        t.is_contiguous()
        and t.storage_offset() == 0
        and t.untyped_storage().nbytes() == t.numel() * t.element_size()
    ):
        return t
    return t.clone(memory_format=torch.contiguous_format)


def _entry_name(item: WriteItem, used: set[str]) -> str:
    td = item.tensor_data
    fqn = item.index.fqn
    name = fqn
    if td is not None:
        offsets = list(td.chunk.offsets)
        if any(offsets) or list(td.chunk.sizes) != list(td.size):
            name = f"{fqn}@{','.join(str(o) for o in offsets)}"
    base, n = name, 1
    while name in used:
        name = f"{base}#{n}"
        n += 1
    used.add(name)
    return name


def _default_transform(planner: SavePlanner) -> bool:
    """Whether the planner's only treatment of a non-tensor value is
    ``DefaultSavePlanner``'s ``torch.save``, so the object itself can be taken."""
    return (
        isinstance(planner, DefaultSavePlanner)
        and type(planner).transform_object is DefaultSavePlanner.transform_object
    )


def _refuse_pickled(data: bytes, fqn: str, planner: object) -> None:
    from hermetic._scan import scan_bytes

    try:
        found = scan_bytes(data, name=fqn)
    except Exception:  # noqa: BLE001 - not a format the scanner knows: not a pickle
        return
    if found.has_pickle or found.format in ("pickle", "torch-zip", "torch-legacy", "torch-tar"):
        raise FormatError(
            f"{fqn}: the save planner {type(planner).__name__} serialised this non-tensor value "
            f"as a pickle ({found.format}); hermetic.dcp.Writer never stores pickles. Keep "
            "DefaultSavePlanner.transform_object (the writer then stores the object itself as a "
            "hermetic tree) or serialise it without pickle."
        )


# ------------------------------------------------------------------ writer


class Writer(StorageWriter):
    """Writes a DCP checkpoint into the folder ``path`` with no pickle.

    ``dcp.save(state, storage_writer=hermetic.dcp.Writer(path))`` and
    ``dcp.async_save(...)`` as with ``FileSystemWriter``. ``sync_files`` (the
    default, as DCP's) flushes every file to stable storage before it is
    renamed into place; ``overwrite=False`` refuses a folder that already holds
    a checkpoint. Overwriting first removes the old metadata document, so a save
    that fails midway never leaves a loadable mix of old and new shards.
    """

    def __init__(self, path: PathLike, *, sync_files: bool = True, overwrite: bool = True) -> None:
        super().__init__()
        self.path = _folder(path)
        self.sync_files = sync_files
        self.overwrite = overwrite
        self.save_id = str(uuid.uuid4())
        self.rank: int | None = None
        self.is_coordinator = False
        self.use_collectives = True

    @property
    def checkpoint_id(self) -> Path:
        return self.path

    def reset(self, checkpoint_id: PathLike | None = None) -> None:
        if checkpoint_id:
            self.path = _folder(checkpoint_id)
        self.save_id = str(uuid.uuid4())

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: PathLike) -> bool:
        if isinstance(checkpoint_id, Path):
            return True
        if not _local_path(checkpoint_id):
            return False
        return any(p.exists() and os.access(p, os.W_OK) for p in Path(checkpoint_id).parents)

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        self.is_coordinator = is_coordinator
        self.rank = kwargs.get("rank")
        self.use_collectives = kwargs.get("use_collectives", True)

    def storage_meta(self) -> StorageMeta | None:
        return StorageMeta(checkpoint_id=self.path, save_id=self.save_id)

    def _remove_metadata(self, rank: int | None) -> None:
        path = self.path / _metadata_name(rank)
        if path.exists():
            if not self.overwrite:
                raise RuntimeError(
                    f"{self.path} already holds a checkpoint ({path.name}) and overwrite=False"
                )
            path.unlink()
            if self.sync_files:
                _fsync_dir(self.path)

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        self.path.mkdir(parents=True, exist_ok=True)
        if not self.overwrite and (self.path / METADATA).exists():
            raise RuntimeError(f"{self.path} already holds a checkpoint and overwrite=False")
        if not self.use_collectives and self.rank is not None:
            self._remove_metadata(self.rank)
            plan = dataclasses.replace(plan, storage_data=f"__{self.rank}_")
        return plan

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        if self.use_collectives:
            # Before any rank writes a shard: a failed overwrite must not load.
            self._remove_metadata(None)
        return [
            dataclasses.replace(p, storage_data=f"__{i}_") if p.storage_data is None else p
            for i, p in enumerate(plans)
        ]

    def _object_of(self, item: WriteItem, planner: SavePlanner) -> tuple[Any, str]:
        if _default_transform(planner):
            return planner.lookup_object(item.index), "object"  # type: ignore[attr-defined]
        data = planner.resolve_data(item)
        if isinstance(data, io.BytesIO):
            raw = data.getvalue()
        elif isinstance(data, (bytes, bytearray, memoryview)):
            raw = bytes(data)
        else:
            return data, "object"
        _refuse_pickled(raw, item.index.fqn, planner)
        return raw, "bytes"

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        prefix = plan.storage_data
        if not isinstance(prefix, str):
            prefix = f"__{self.rank or 0}_"
        tensor_file, object_file = prefix + TENSORS, prefix + OBJECTS
        tensors: dict[str, Any] = {}
        objects: dict[str, Any] = {}
        placed: list[tuple[WriteItem, str, str, str, int]] = []
        used: set[str] = set()
        for item in plan.items:
            if item.type == WriteItemType.BYTE_IO:
                obj, kind = self._object_of(item, planner)
                name = item.index.fqn
                objects[name] = obj
                placed.append((item, object_file, name, kind, 0))
            else:
                t = _compact(planner.resolve_data(item))
                name = _entry_name(item, used)
                tensors[name] = t
                placed.append((item, tensor_file, name, "tensor", t.numel() * t.element_size()))
        sizes: dict[str, int] = {}
        for file, tree in ((tensor_file, tensors), (object_file, objects)):
            if tree:
                try:
                    _format.save(tree, self.path / file, fsync=self.sync_files)
                except FormatError as e:
                    raise FormatError(f"{self.path / file}: {e}") from e
                sizes[file] = (self.path / file).stat().st_size
        results = [
            WriteResult(
                index=item.index,
                size_in_bytes=nbytes,
                storage_data=_Stored(file, name, kind, sizes[file]),
            )
            for item, file, name, kind, nbytes in placed
        ]
        fut: Future[list[WriteResult]] = Future()
        fut.set_result(results)
        return fut

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        metadata.version = _DCP_VERSION
        metadata.storage_data = {wr.index: wr.storage_data for rs in results for wr in rs}
        metadata.storage_meta = self.storage_meta()
        doc = _encode(metadata)
        rank = None if self.use_collectives or self.rank is None else self.rank
        _write_atomic(self.path / _metadata_name(rank), doc, self.sync_files)
