"""The folder of a ``hermetic.dcp`` checkpoint and its ``.metadata.json`` document.

Each rank's shards are ``__{rank}_tensors.safetensors`` and
``__{rank}_objects.safetensors``; the global ``Metadata`` is a JSON document
(docs/SPEC.md, "Distributed checkpoints (DCP)") that :class:`Writer` encodes
last and :class:`Reader` decodes field by field, checking every name, number
and file it lists, so no pickle is needed on either side.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path
from typing import Any

# torch is the `torch` extra; hermetic.dcp imports this module only when used.
try:
    import torch
    from torch.distributed.checkpoint.metadata import (
        BytesStorageMetadata,
        ChunkStorageMetadata,
        Metadata,
        MetadataIndex,
        StorageMeta,
        TensorProperties,
        TensorStorageMetadata,
    )
except ImportError as e:  # pragma: no cover - exercised without torch installed
    raise ImportError("hermetic.dcp needs torch: pip install 'hermetic[torch]'") from e

from hermetic import _tensors
from hermetic._hermetic import FormatError

METADATA = ".metadata.json"
FORMAT = "hermetic-dcp"
FORMAT_VERSION = 1

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


def _folder(path: PathLike) -> Path:
    return Path(os.fspath(path))


def _local_path(checkpoint_id: PathLike) -> bool:
    return "://" not in os.fspath(checkpoint_id)


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
