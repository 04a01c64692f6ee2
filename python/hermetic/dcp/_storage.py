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
"""

from __future__ import annotations

import ctypes
import dataclasses
import io
import json
import math
import os
import re
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

# torch is the `torch` extra; hermetic.dcp imports this module only when used.
try:
    import torch
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner, DefaultSavePlanner
    from torch.distributed.checkpoint.metadata import (
        BytesStorageMetadata,
        ChunkStorageMetadata,
        Metadata,
        MetadataIndex,
        StorageMeta,
        TensorProperties,
        TensorStorageMetadata,
    )
    from torch.distributed.checkpoint.planner import (
        LoadItemType,
        LoadPlan,
        LoadPlanner,
        ReadItem,
        SavePlan,
        SavePlanner,
        WriteItem,
        WriteItemType,
    )
    from torch.distributed.checkpoint.storage import StorageReader, StorageWriter, WriteResult
    from torch.futures import Future
except ImportError as e:  # pragma: no cover - exercised without torch installed
    raise ImportError("hermetic.dcp needs torch: pip install 'hermetic[torch]'") from e

from hermetic import _format, _format_codec, _tensors
from hermetic._hermetic import FormatError
from hermetic._typed import ClassNotAllowedError

__all__ = ["METADATA", "ObjectBytesIO", "Reader", "Writer"]

METADATA = ".metadata.json"
FORMAT = "hermetic-dcp"
FORMAT_VERSION = 1
# DCP's own version string for the metadata (what FileSystemWriter records).
_DCP_VERSION = "1.0.0"
try:  # pragma: no branch - present in every torch with this storage API
    from torch.distributed.checkpoint.filesystem import CURRENT_DCP_VERSION as _DCP_VERSION
except ImportError:  # pragma: no cover
    pass

TENSORS = "tensors.safetensors"
OBJECTS = "objects.safetensors"
# The file names a metadata document may point at: one folder, no paths.
_FILE_NAME = re.compile(r"__[0-9]{1,9}_(tensors|objects)\.safetensors")

PathLike = str | os.PathLike[str]


@dataclasses.dataclass(frozen=True)
class _Stored:
    """Where one write item went: a ``WriteResult.storage_data`` (it travels to
    the coordinator in DCP's own collectives) and, on load, a ``storage_data``
    value of the rebuilt ``Metadata``."""

    file: str
    name: str
    kind: str  # "tensor", "object" (a hermetic tree) or "bytes" (a planner's own bytes)
    file_size: int = 0


class ObjectBytesIO(io.BytesIO):
    """What a load planner that overrides ``load_bytes`` receives for a
    non-tensor value: ``.object`` is the value, already rebuilt (no pickle); the
    bytes are its hermetic encoding (``hermetic.loads`` reads them)."""

    def __init__(self, obj: Any, data: bytes) -> None:
        super().__init__(data)
        self.object = obj


# ------------------------------------------------------------------ helpers


def _folder(path: PathLike) -> Path:
    return Path(os.fspath(path))


def _local_path(checkpoint_id: PathLike) -> bool:
    return "://" not in os.fspath(checkpoint_id)


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


def _default_load_bytes(planner: LoadPlanner) -> bool:
    return (
        isinstance(planner, DefaultLoadPlanner)
        and type(planner).load_bytes is DefaultLoadPlanner.load_bytes
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


def _narrow(t: Any, offsets: Sequence[int], lengths: Sequence[int]) -> Any:
    for dim, (o, n) in enumerate(zip(offsets, lengths, strict=True)):
        if o != 0 or n != t.size(dim):
            t = t.narrow(dim, o, n)
    return t


def _set_element(root: Any, path: Sequence[Any], value: Any) -> None:
    from torch.distributed.checkpoint._traverse import set_element

    set_element(root, tuple(path), value)


# ------------------------------------------------------------------ JSON values
#
# planner_data (DefaultSavePlanner: fqn -> path tuple) and other free-form values
# in a closed tagged encoding (docs/SPEC.md): JSON scalars, arrays for lists, and
# one-key objects "$tuple", "$dict", "$float" for what JSON lacks.


def _enc(v: Any, where: str) -> Any:
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        if math.isfinite(v):
            return v
        return {"$float": "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")}
    if isinstance(v, list):
        return [_enc(x, f"{where}[{i}]") for i, x in enumerate(v)]
    if isinstance(v, tuple):
        return {"$tuple": [_enc(x, f"{where}[{i}]") for i, x in enumerate(v)]}
    if isinstance(v, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in v):
            return {k: _enc(x, f"{where}[{k!r}]") for k, x in v.items()}
        return {"$dict": [[_enc(k, where), _enc(x, f"{where}[{k!r}]")] for k, x in v.items()]}
    raise FormatError(
        f"{where}: a {type(v).__module__}.{type(v).__qualname__} cannot go into {METADATA} "
        "(it holds None, bool, int, float, str, lists, tuples and dicts of them)"
    )


def _dec(v: Any, where: str) -> Any:
    if v is None or isinstance(v, (bool, str, int, float)):
        return v
    if isinstance(v, list):
        return [_dec(x, where) for x in v]
    if isinstance(v, dict):
        tags = [k for k in v if k.startswith("$")]
        if not tags:
            return {k: _dec(x, where) for k, x in v.items()}
        if len(v) != 1:
            raise FormatError(f"{METADATA}: {where}: a tagged value has one key, not {list(v)}")
        tag, body = next(iter(v.items()))
        if tag == "$tuple" and isinstance(body, list):
            return tuple(_dec(x, where) for x in body)
        if tag == "$dict" and isinstance(body, list):
            out: dict[Any, Any] = {}
            for pair in body:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise FormatError(f"{METADATA}: {where}: a $dict item is a [key, value] pair")
                key = _dec(pair[0], where)
                try:
                    out[key] = _dec(pair[1], where)
                except TypeError:
                    raise FormatError(f"{METADATA}: {where}: unhashable $dict key") from None
            return out
        if tag == "$float" and body in ("nan", "inf", "-inf"):
            return float(body)
        raise FormatError(f"{METADATA}: {where}: unknown tagged value {tag!r}")
    raise FormatError(f"{METADATA}: {where}: unexpected {type(v).__name__}")


# ------------------------------------------------------------------ the document

_LAYOUTS = {"strided": torch.strided}
_MEMORY_FORMATS = {
    "contiguous_format": torch.contiguous_format,
    "channels_last": torch.channels_last,
    "channels_last_3d": torch.channels_last_3d,
    "preserve_format": torch.preserve_format,
}
_PROPERTY_FIELDS = {f.name for f in dataclasses.fields(TensorProperties)}


def _name_of(table: dict[str, Any], value: Any, what: str, fqn: str) -> str:
    for name, v in table.items():
        if v == value:
            return name
    raise FormatError(f"{fqn}: {what} {value} cannot go into {METADATA}")


def _dtype_name(dtype: Any, fqn: str) -> str:
    name = str(dtype).removeprefix("torch.")
    if _tensors.torch_dtypes().get(name) is not dtype:
        raise FormatError(f"{fqn}: torch dtype {dtype} has no name hermetic knows")
    return name


def _ints(v: Any, where: str) -> list[int]:
    if not isinstance(v, list) or not all(type(x) is int and x >= 0 for x in v):
        raise FormatError(f"{METADATA}: {where}: expected a list of non-negative integers")
    return v


def _encode_entry(fqn: str, md: Any) -> dict[str, Any]:
    if isinstance(md, BytesStorageMetadata):
        return {"type": "bytes"}
    if not isinstance(md, TensorStorageMetadata):
        raise FormatError(f"{fqn}: unknown storage metadata {type(md).__name__}")
    p = md.properties
    props: dict[str, Any] = {
        "dtype": _dtype_name(p.dtype, fqn),
        "layout": _name_of(_LAYOUTS, p.layout, "layout", fqn),
        "requires_grad": bool(p.requires_grad),
        "memory_format": _name_of(_MEMORY_FORMATS, p.memory_format, "memory format", fqn),
        "pin_memory": bool(p.pin_memory),
    }
    strides = getattr(p, "strides", None)
    props["strides"] = None if strides is None else [int(s) for s in strides]
    return {
        "type": "tensor",
        "size": [int(s) for s in md.size],
        "properties": props,
        "chunks": [
            {"offsets": [int(o) for o in c.offsets], "sizes": [int(s) for s in c.sizes]}
            for c in md.chunks
        ],
    }


def _decode_entry(fqn: str, e: Any) -> Any:
    where = f"state_dict_metadata[{fqn!r}]"
    if not isinstance(e, dict) or e.get("type") not in ("tensor", "bytes"):
        raise FormatError(f"{METADATA}: {where}: expected a tensor or bytes entry")
    if e["type"] == "bytes":
        return BytesStorageMetadata()
    p = e.get("properties")
    if not isinstance(p, dict):
        raise FormatError(f"{METADATA}: {where}: no properties")
    dtype = _tensors.torch_dtypes().get(p.get("dtype"))  # type: ignore[arg-type]
    if dtype is None:
        raise FormatError(f"{METADATA}: {where}: unknown dtype {p.get('dtype')!r}")
    layout = _LAYOUTS.get(p.get("layout", "strided"))
    memory_format = _MEMORY_FORMATS.get(p.get("memory_format", "contiguous_format"))
    if layout is None or memory_format is None:
        raise FormatError(f"{METADATA}: {where}: unknown layout or memory format")
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "layout": layout,
        "requires_grad": bool(p.get("requires_grad", False)),
        "memory_format": memory_format,
        "pin_memory": bool(p.get("pin_memory", False)),
    }
    strides = p.get("strides")
    if "strides" in _PROPERTY_FIELDS:
        kwargs["strides"] = None if strides is None else tuple(_ints(strides, where))
    size = _ints(e.get("size"), where)
    chunks = []
    for c in e.get("chunks", []):
        if not isinstance(c, dict):
            raise FormatError(f"{METADATA}: {where}: a chunk is an object")
        offsets = _ints(c.get("offsets"), where)
        sizes = _ints(c.get("sizes"), where)
        if len(offsets) != len(size) or len(sizes) != len(size):
            raise FormatError(f"{METADATA}: {where}: a chunk's rank differs from the tensor's")
        if any(o + s > n for o, s, n in zip(offsets, sizes, size, strict=True)):
            raise FormatError(f"{METADATA}: {where}: a chunk reaches past the tensor")
        chunks.append(ChunkStorageMetadata(offsets=torch.Size(offsets), sizes=torch.Size(sizes)))
    return TensorStorageMetadata(
        properties=TensorProperties(**kwargs), size=torch.Size(size), chunks=chunks
    )


def _encode(metadata: Metadata) -> bytes:
    known = {"state_dict_metadata", "planner_data", "storage_data", "storage_meta", "version"}
    for f in dataclasses.fields(metadata):
        if f.name not in known and getattr(metadata, f.name) not in (None, f.default):
            raise FormatError(f"Metadata.{f.name} is new to hermetic.dcp and cannot be stored")
    storage: list[dict[str, Any]] = []
    files: dict[str, int] = {}
    for index, st in (metadata.storage_data or {}).items():
        if not isinstance(st, _Stored):
            raise FormatError(f"{index.fqn}: storage data {st!r} was not written by hermetic.dcp")
        storage.append(
            {
                "fqn": index.fqn,
                "offset": None if index.offset is None else [int(o) for o in index.offset],
                "index": index.index,
                "file": st.file,
                "name": st.name,
                "kind": st.kind,
            }
        )
        files[st.file] = st.file_size
    sm = metadata.storage_meta
    storage_meta = None
    if sm is not None:
        cid = sm.checkpoint_id
        storage_meta = {
            "checkpoint_id": None if cid is None else os.fspath(cid),
            "save_id": sm.save_id,
            "load_id": sm.load_id,
            "modules": [str(m) for m in sm.modules],
        }
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "version": metadata.version,
        "files": dict(sorted(files.items())),
        "state_dict_metadata": {
            fqn: _encode_entry(fqn, md) for fqn, md in metadata.state_dict_metadata.items()
        },
        "planner_data": _enc(metadata.planner_data, "planner_data"),
        "storage_data": storage,
        "storage_meta": storage_meta,
    }
    text = json.dumps(doc, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.encode("utf-8") + b"\n"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise FormatError(f"{METADATA}: key {k!r} appears twice")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise FormatError(f"{METADATA}: {name} is not JSON")


def _decode(data: bytes, source: str) -> tuple[Metadata, dict[str, int]]:
    try:
        doc = json.loads(
            data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"{source}: not a {METADATA} document ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise FormatError(f"{source}: not a hermetic DCP metadata document")
    if doc.get("format_version") != FORMAT_VERSION:
        raise FormatError(
            f"{source}: format_version {doc.get('format_version')!r}; this hermetic reads "
            f"{FORMAT_VERSION}"
        )
    files = doc.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and _FILE_NAME.fullmatch(k) and type(v) is int and v >= 0
        for k, v in files.items()
    ):
        raise FormatError(f"{source}: files: expected shard file names and sizes")
    sdm = doc.get("state_dict_metadata")
    if not isinstance(sdm, dict):
        raise FormatError(f"{source}: no state_dict_metadata")
    state_dict_metadata = {fqn: _decode_entry(fqn, e) for fqn, e in sdm.items()}
    storage_data: dict[MetadataIndex, _Stored] = {}
    storage = doc.get("storage_data")
    if not isinstance(storage, list):
        raise FormatError(f"{source}: storage_data: expected a list")
    for rec in storage:
        if not (
            isinstance(rec, dict)
            and isinstance(rec.get("fqn"), str)
            and rec.get("file") in files
            and isinstance(rec.get("name"), str)
            and rec.get("kind") in ("tensor", "object", "bytes")
            and (rec.get("index") is None or type(rec.get("index")) is int)
        ):
            raise FormatError(f"{source}: storage_data: malformed record {rec!r}")
        offset = rec.get("offset")
        idx = MetadataIndex(
            rec["fqn"],
            None if offset is None else _ints(offset, "storage_data offset"),
            rec.get("index"),
        )
        storage_data[idx] = _Stored(rec["file"], rec["name"], rec["kind"], files[rec["file"]])
    sm = doc.get("storage_meta")
    storage_meta = None
    if sm is not None:
        if not isinstance(sm, dict):
            raise FormatError(f"{source}: storage_meta: expected an object")
        storage_meta = StorageMeta(
            checkpoint_id=sm.get("checkpoint_id"),
            save_id=sm.get("save_id"),
            load_id=sm.get("load_id"),
            modules=[str(m) for m in sm.get("modules") or []],
        )
    version = doc.get("version")
    md = Metadata(
        state_dict_metadata=state_dict_metadata,  # type: ignore[arg-type]
        planner_data=_dec(doc.get("planner_data"), "planner_data"),
        storage_data=storage_data,
        storage_meta=storage_meta,
        version=version if isinstance(version, str) else None,
    )
    return md, files


def _metadata_name(rank: int | None) -> str:
    return METADATA if rank is None else f"__{rank}{METADATA}"


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
