"""The tensor codec of ``hermetic.save`` / ``hermetic.load``: what the Rust
writer and reader call back for each tensor, array or dtype.

On the way out, a torch tensor or numpy array becomes its hermetic dtype code,
shape, strides and a pointer to its bytes (``_torch_info``, ``_np_info`` and
their spans); on the way in, a dtype text becomes a numpy or torch dtype, from
closed tables and a closed grammar only (``_np_dtype``, ``_torch_dtype``).
Rust reaches these through ``hermetic._bridge``; the format's maker
(``_format_maker``) reads the same tables. Nothing here reads a file.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from hermetic import _hermetic, _tensors
from hermetic._hermetic import FormatError

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
