"""``hermetic.dcp.Reader``: loads a checkpoint :class:`hermetic.dcp.Writer` wrote,
with no pickle.

The metadata document is decoded field by field (``_document``), the tensor
shards are read through :func:`hermetic.open` (straight into the state dict's
tensor when it matches the stored entry) and non-tensor values are rebuilt as
hermetic trees, with ``allow=`` as :func:`hermetic.load` takes it, and put
where ``DefaultLoadPlanner.load_bytes`` would, without its ``torch.load``.
"""

from __future__ import annotations

import ctypes
import io
import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

# torch is the `torch` extra; hermetic.dcp imports this module only when used.
try:
    import torch
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
    from torch.distributed.checkpoint.metadata import Metadata, MetadataIndex, StorageMeta
    from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, LoadPlanner, ReadItem
    from torch.distributed.checkpoint.storage import StorageReader
    from torch.futures import Future
except ImportError as e:  # pragma: no cover - exercised without torch installed
    raise ImportError("hermetic.dcp needs torch: pip install 'hermetic[torch]'") from e

from hermetic import _format, _format_codec
from hermetic._hermetic import FormatError
from hermetic._typed import ClassNotAllowedError
from hermetic.dcp._document import (
    METADATA,
    PathLike,
    _decode,
    _folder,
    _local_path,
    _metadata_name,
    _Stored,
)

__all__ = ["ObjectBytesIO", "Reader"]


class ObjectBytesIO(io.BytesIO):
    """What a load planner that overrides ``load_bytes`` receives for a
    non-tensor value: ``.object`` is the value, already rebuilt (no pickle); the
    bytes are its hermetic encoding (``hermetic.loads`` reads them)."""

    def __init__(self, obj: Any, data: bytes) -> None:
        super().__init__(data)
        self.object = obj


def _default_load_bytes(planner: LoadPlanner) -> bool:
    return (
        isinstance(planner, DefaultLoadPlanner)
        and type(planner).load_bytes is DefaultLoadPlanner.load_bytes
    )


def _narrow(t: Any, offsets: Sequence[int], lengths: Sequence[int]) -> Any:
    for dim, (o, n) in enumerate(zip(offsets, lengths, strict=True)):
        if o != 0 or n != t.size(dim):
            t = t.narrow(dim, o, n)
    return t


def _set_element(root: Any, path: Sequence[Any], value: Any) -> None:
    from torch.distributed.checkpoint._traverse import set_element

    set_element(root, tuple(path), value)


# ------------------------------------------------------------------ reader


class _Direct:
    """Reads a whole stored entry straight from the file into the state dict's
    tensor, when that tensor is a contiguous CPU tensor of the entry's dtype and
    shape: one copy, no map faulted in (the common case: a load with the
    sharding of the save). Everything else goes through the mapped tree."""

    def __init__(self, h: Any) -> None:
        self.h = h
        self.entries: dict[str, Any] | None = None
        self.files: dict[int, Any] = {}

    def __enter__(self) -> _Direct:
        return self

    def __exit__(self, *exc: object) -> None:
        for f in self.files.values():
            f.close()

    def read(self, name: str, req: ReadItem, target: Any) -> bool:
        if (
            target.device.type != "cpu"
            or not target.is_contiguous()
            or any(req.storage_offsets)
            or list(req.lengths) != list(target.shape)
        ):
            return False
        if self.entries is None:
            tree = self.h.tree
            flat = tree if isinstance(tree, dict) else {}
            self.entries = {
                e[0]: e
                for e in self.h._archive.entries()
                if isinstance(flat.get(e[0]), _format.TensorInfo) and flat[e[0]].entry == e[0]
            }
        e = self.entries.get(name)
        if e is None:
            return False
        _, code, shape, file, start, nbytes = e
        want = _format_codec._TORCH_CODES.get(str(target.dtype).removeprefix("torch."))
        size = target.numel() * target.element_size()
        if code != want or list(shape) != list(target.shape) or nbytes != size:
            return False
        f = self.files.get(file)
        if f is None:
            f = self.files[file] = open(self.h._archive.paths()[file], "rb")
        if size:
            view = memoryview((ctypes.c_char * size).from_address(target.data_ptr())).cast("B")
            f.seek(start)
            got = 0
            while got < size:
                n = f.readinto(view[got:])
                if not n:
                    raise FormatError(f"{self.h._archive.paths()[file]}: ends inside {name}")
                got += n
        return True


class Reader(StorageReader):
    """Reads a checkpoint :class:`Writer` wrote, with no pickle.

    ``dcp.load(state, storage_reader=hermetic.dcp.Reader(path))`` with DCP's
    default load planner (or a subclass keeping its ``load_bytes``). Non-tensor
    values holding instances of your own classes need ``allow=[...]`` (or
    ``plain=True``), as :func:`hermetic.load` does. ``verify=True`` checks every
    tensor's digest of each file read first. A planner that overrides
    ``load_bytes`` receives an :class:`ObjectBytesIO` with the rebuilt value as
    ``.object``.
    """

    def __init__(
        self,
        path: PathLike,
        *,
        allow: Iterable[Any] | None = None,
        plain: bool = False,
        verify: bool = False,
    ) -> None:
        super().__init__()
        self.path = _folder(path)
        self.allow = list(allow) if allow is not None else None
        self.plain = plain
        self.verify = verify
        self.storage_data: dict[MetadataIndex, _Stored] = {}
        self.load_id = str(uuid.uuid4())

    @property
    def checkpoint_id(self) -> Path:
        return self.path

    def reset(self, checkpoint_id: PathLike | None = None) -> None:
        self.storage_data = {}
        if checkpoint_id:
            self.path = _folder(checkpoint_id)
        self.load_id = str(uuid.uuid4())

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: PathLike) -> bool:
        if not isinstance(checkpoint_id, Path) and not _local_path(checkpoint_id):
            return False
        return (_folder(checkpoint_id) / METADATA).is_file()

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        rank = kwargs.get("rank")
        path = self.path / _metadata_name(rank)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise FormatError(self._missing(path)) from None
        md, files = _decode(data, os.fspath(path))
        for name, size in files.items():
            try:
                have = (self.path / name).stat().st_size
            except FileNotFoundError:
                raise FormatError(
                    f"{self.path}: the shard {name} that {path.name} lists is missing"
                ) from None
            if have != size:
                raise FormatError(
                    f"{self.path / name}: {have} bytes, {path.name} says {size} (written by "
                    "another save, or changed since?)"
                )
        if md.storage_meta is None:
            md.storage_meta = StorageMeta()
        md.storage_meta.load_id = self.load_id
        return md

    def _missing(self, path: Path) -> str:
        if not self.path.is_dir():
            return f"{self.path}: no such checkpoint folder"
        msg = (
            f"{self.path}: no {path.name}: not a complete hermetic DCP checkpoint (the metadata "
            "document is written last, so a save that was interrupted or failed never loads)"
        )
        if (self.path / ".metadata").exists():
            msg += (
                "; this folder holds DCP's pickled .metadata (FileSystemWriter): read it "
                "without unpickling with hermetic.dcp.SafeReader"
            )
        return msg

    def set_up_storage_reader(
        self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any
    ) -> None:
        sd = metadata.storage_data
        if not isinstance(sd, dict) or not all(isinstance(v, _Stored) for v in sd.values()):
            raise FormatError("hermetic.dcp.Reader reads only metadata its read_metadata returned")
        self.storage_data = sd

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        return plans

    def _deliver(self, planner: LoadPlanner, req: ReadItem, st: _Stored, value: Any) -> None:
        fqn = req.dest_index.fqn
        if st.kind == "bytes":
            if _default_load_bytes(planner):
                raise FormatError(
                    f"{fqn}: stored as the bytes of the save planner's own serialisation; "
                    "DefaultLoadPlanner would torch.load them: pass the load planner that "
                    "reads them"
                )
            planner.load_bytes(req, io.BytesIO(value))
        elif _default_load_bytes(planner):
            # DefaultLoadPlanner.load_bytes, without its torch.load.
            dp: Any = planner
            if dp.flatten_state_dict:
                _set_element(dp.original_state_dict, dp.mappings[fqn], value)
            else:
                dp.state_dict[fqn] = value
        else:
            planner.load_bytes(req, ObjectBytesIO(value, _format.dumps(value)))

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        per_file: dict[str, list[ReadItem]] = {}
        for req in plan.items:
            st = self.storage_data.get(req.storage_index)
            if st is None:
                raise FormatError(f"{req.storage_index}: not in the checkpoint's storage data")
            per_file.setdefault(st.file, []).append(req)
        for file, reqs in per_file.items():
            with _format.open_archive(self.path / file) as h, _Direct(h) as direct:
                if self.verify:
                    h.verify()
                for req in reqs:
                    st = self.storage_data[req.storage_index]
                    if req.type == LoadItemType.BYTE_IO:
                        if st.kind == "tensor":
                            raise FormatError(f"{file}: {st.name} is a tensor, not a value")
                        try:
                            value = h.get(st.name, allow=self.allow, plain=self.plain)
                        except ClassNotAllowedError as e:
                            raise ClassNotAllowedError(
                                f"{e}\nWith hermetic.dcp, pass them to the reader: "
                                "hermetic.dcp.Reader(path, allow=[...]) (or plain=True)"
                            ) from None
                        self._deliver(planner, req, st, value)
                        continue
                    if st.kind != "tensor":
                        raise FormatError(f"{file}: {st.name} is a value, not a tensor")
                    target = planner.resolve_tensor(req).detach()
                    if direct.read(st.name, req, target):
                        planner.commit_tensor(req, target)
                        continue
                    t = h.get(st.name, framework="torch")
                    if not isinstance(t, torch.Tensor):
                        raise FormatError(f"{file}: {st.name} is not a tensor")
                    try:
                        src = _narrow(t, req.storage_offsets, req.lengths)
                    except (RuntimeError, ValueError, IndexError) as e:
                        raise FormatError(
                            f"{file}: {st.name} {list(t.shape)} does not hold the chunk "
                            f"{list(req.storage_offsets)} +{list(req.lengths)} ({e})"
                        ) from None
                    if target.size() != src.size():
                        raise FormatError(
                            f"{file}: {st.name}[{list(req.storage_offsets)} +{list(req.lengths)}]"
                            f" is {list(src.size())}; the state dict wants {list(target.size())}"
                        )
                    target.copy_(src)  # converting the dtype, as FileSystemReader does
                    planner.commit_tensor(req, target)
        fut: Future[None] = Future()
        fut.set_result(None)
        return fut
