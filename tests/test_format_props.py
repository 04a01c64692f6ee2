"""Property tests: arbitrary trees of every supported type round-trip
bit-exactly through hermetic.dumps/loads, with identity and storage sharing."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import pytest
import torch
from format_compare import assert_round_trip, tensor_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hermetic

TORCH_DTYPES = [
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.uint16,
    torch.uint32,
    torch.uint64,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.complex32,
    torch.complex64,
    torch.complex128,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
    torch.float8_e8m0fnu,
]
NUMPY_DTYPES = [
    "?",
    "u1",
    "i2",
    "<u4",
    "<i8",
    "<f2",
    "<f4",
    "<f8",
    "<c8",
    "<c16",
    ">f4",
    "<M8[us]",
    "S3",
    "<U2",
]

hashable = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=5)
    | st.binary(max_size=5),
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=4,
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.complex_numbers(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=40)
    | st.binary(min_size=1025, max_size=1100)
)


@st.composite
def torch_tensors(draw: st.DrawFn) -> torch.Tensor:
    dtype = draw(st.sampled_from(TORCH_DTYPES))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    n = int(np.prod(shape)) * dtype.itemsize
    raw = torch.tensor(list(draw(st.binary(min_size=n, max_size=n))), dtype=torch.uint8)
    if dtype == torch.bool:
        raw = raw % 2
    t = raw.view(dtype).reshape(shape) if n else torch.empty(shape, dtype=dtype)
    if draw(st.booleans()) and dtype.is_floating_point:
        t = torch.nn.Parameter(t, requires_grad=draw(st.booleans()))
    return t


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    dt = np.dtype(draw(st.sampled_from(NUMPY_DTYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    n = int(np.prod(shape)) * dt.itemsize
    raw = np.frombuffer(draw(st.binary(min_size=n, max_size=n)), np.uint8).copy()
    if dt.kind == "b":
        raw %= 2
    if dt.kind == "U":
        raw[:] = 0  # code points must be valid
    return raw.view(dt).reshape(shape)


@st.composite
def views(draw: st.DrawFn, base: Any) -> Any:
    """A view of a base tensor/array: itself, a slice, a transpose, a stride."""
    if base.ndim == 0 or min(base.shape) == 0:
        return base
    kind = draw(st.sampled_from(["same", "slice", "T", "step", "flat"]))
    if kind == "same":
        return base
    if kind == "slice":
        return base[draw(st.integers(0, base.shape[0] - 1)) :]
    if kind == "T":
        if isinstance(base, np.ndarray):
            return base.T
        # torch deprecates `.T` below and above two dimensions; this is the same view.
        return base.detach().permute(*reversed(range(base.dim())))
    if kind == "step":
        return base[::2]
    contiguous = base.is_contiguous() if isinstance(base, torch.Tensor) else base.flags.c_contiguous
    return base.reshape(-1)[1:] if contiguous else base


@st.composite
def trees(draw: st.DrawFn) -> Any:
    pool_t = draw(st.lists(torch_tensors(), max_size=3))
    pool_n = [a for a in draw(st.lists(arrays(), max_size=3)) if a.dtype.byteorder != ">"]
    shared_list = draw(st.lists(scalars, max_size=3))
    leaves = scalars | st.just(shared_list)
    if pool_t:
        leaves = leaves | st.sampled_from(pool_t).flatmap(views)
    if pool_n:
        leaves = leaves | st.sampled_from(pool_n).flatmap(views)
    leaves = leaves | arrays() | torch_tensors()
    tree = draw(
        st.recursive(
            leaves,
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.tuples(inner, inner)
                | st.dictionaries(hashable, inner, max_size=4)
                | st.dictionaries(st.text(max_size=4), inner, max_size=4).map(OrderedDict)
                | st.sets(hashable, max_size=3)
                | st.frozensets(hashable, max_size=3)
            ),
            max_leaves=12,
        )
    )
    # The pools ride along, so every drawn view has its base in the tree:
    # then SPEC 3.1 promises the caller's strides and sharing back. A view
    # saved without its base is a copy (test_lone_views_come_back_contiguous).
    return [tree, pool_t, pool_n]


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")  # complex32 on purpose
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(trees())
def test_arbitrary_trees_round_trip(tree: Any) -> None:
    data = hermetic.dumps(tree)
    assert_round_trip(tree, hermetic.loads(data, verify=True))


def test_lone_views_come_back_contiguous() -> None:
    """SPEC 3.1: a view whose storage no saved dense view covers is stored as
    its row-major copy; it loads equal in dtype, shape and values, contiguous,
    sharing nothing."""
    base = torch.arange(24, dtype=torch.int16).reshape(4, 6)
    flags = torch.tensor([False, True, False, True, True])
    lone = {
        "T": base.T,
        "step": base[::2],
        "cols": base[:, 1:3],
        "bools": flags[::2],
        "np_T": np.arange(12.0).reshape(3, 4).T,
    }
    for name, v in lone.items():
        out = hermetic.loads(hermetic.dumps({name: v}), verify=True)[name]
        assert type(out) is type(v), name
        if isinstance(v, torch.Tensor):
            assert out.dtype == v.dtype and out.shape == v.shape and out.is_contiguous(), name
            assert torch.equal(out, v), name
        else:
            assert out.dtype == v.dtype and out.shape == v.shape, name
            assert out.flags.c_contiguous and np.array_equal(out, v), name
    # Two copies of one unsaved storage come back as separate tensors.
    out = hermetic.loads(hermetic.dumps([base.T, base[::2]]), verify=True)
    assert out[0].untyped_storage().data_ptr() != out[1].untyped_storage().data_ptr()
    assert torch.equal(out[0], base.T) and torch.equal(out[1], base[::2])


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")  # complex32 on purpose
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(st.text(min_size=1, max_size=8), torch_tensors(), max_size=6))
def test_flat_dicts_are_plain_safetensors(sd: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import load

    sd = {k: v.detach() for k, v in sd.items()}
    data = hermetic.dumps(sd)
    plain = {
        k: v
        for k, v in sd.items()
        if v.dtype not in (torch.complex32, torch.complex128, torch.float8_e8m0fnu)
    }
    got = load(data)
    for k, v in plain.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape
        assert tensor_bytes(got[k]) == tensor_bytes(v)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=300))
def test_random_bytes_raise_format_error(data: bytes) -> None:
    try:
        hermetic.loads(data, verify=True)
    except hermetic.FormatError:
        pass


PLAIN_DTYPES = [
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
]


@st.composite
def storage_views(draw: st.DrawFn, base: torch.Tensor) -> torch.Tensor:
    """Any storable view of a base: slices, chunks, narrows, transposes and
    permutes, strided slices, flat windows (expand is not storable)."""
    kind = draw(st.sampled_from(["same", "slice", "chunk", "T", "step", "window", "twice"]))
    n = base.shape[0]
    if kind == "same":
        return base
    if kind == "slice":
        lo = draw(st.integers(0, n - 1))
        return base[lo : draw(st.integers(lo + 1, n))]
    if kind == "chunk":
        parts = base.chunk(draw(st.integers(1, n)))
        return parts[draw(st.integers(0, len(parts) - 1))]
    if kind == "T":
        dims = draw(st.permutations(list(range(base.dim()))))
        return base.permute(*dims)
    if kind == "step":
        return base[:: draw(st.integers(2, 3))]
    if kind == "window":
        flat = base.reshape(-1)
        lo = draw(st.integers(0, flat.numel() - 1))
        return flat[lo : draw(st.integers(lo + 1, flat.numel()))]
    inner = draw(storage_views(base))
    return draw(storage_views(inner)) if inner.dim() and min(inner.shape) > 0 else inner


@st.composite
def view_dicts(draw: st.DrawFn) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A flat dict of views of one or two storages; and, for each storage
    saved whole, the views of it (name -> the base's name)."""
    out: dict[str, torch.Tensor] = {}
    of_base: dict[str, str] = {}
    for b in range(draw(st.integers(1, 2))):
        dtype = draw(st.sampled_from(PLAIN_DTYPES))
        shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
        n = int(np.prod(shape)) * dtype.itemsize
        raw = torch.tensor(list(draw(st.binary(min_size=n, max_size=n))), dtype=torch.uint8)
        base = (raw % 2 if dtype == torch.bool else raw).view(dtype).reshape(shape)
        whole = draw(st.booleans())
        if whole:
            out[f"base{b}"] = base
        for i in range(draw(st.integers(1, 4))):
            name = f"v{b}_{i}"
            out[name] = view = draw(storage_views(base))
            # `reshape` of a non-contiguous view copies: that one is not a view.
            shares = view.untyped_storage().data_ptr() == base.untyped_storage().data_ptr()
            if whole and shares:
                of_base[name] = f"base{b}"
    return out, of_base


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(view_dicts())
def test_views_read_exactly_in_plain_readers_and_share_in_hermetic(
    case: tuple[dict[str, torch.Tensor], dict[str, str]],
) -> None:
    from safetensors.torch import load

    tree, of_base = case
    data = hermetic.dumps(tree)

    def bits(t: torch.Tensor) -> bytes:
        # A fresh row-major copy: a size-1 dimension may have any stride.
        return tensor_bytes(torch.empty(t.shape, dtype=t.dtype).copy_(t))

    def layout(t: torch.Tensor) -> tuple[Any, ...]:
        ptr = t.untyped_storage().data_ptr()
        return (ptr, t.dtype, t.shape, t.stride(), t.storage_offset())

    # Every name a plain reader sees is exactly that tensor; only exact
    # aliases of an earlier name are left out (recorded as metadata).
    firsts: dict[tuple[Any, ...], str] = {}
    expect_names = set()
    for k, v in tree.items():
        if firsts.setdefault(layout(v), k) == k:
            expect_names.add(k)
    plain = load(data)
    assert set(plain) == expect_names
    for k in expect_names:
        v = tree[k]
        assert plain[k].dtype == v.dtype and plain[k].shape == v.shape, k
        assert bits(plain[k]) == bits(v), k
    # hermetic gives the same values, and rebuilds sharing with each saved base.
    out = hermetic.loads(data, verify=True)
    assert list(out) == list(tree)
    for k, v in tree.items():
        assert out[k].dtype == v.dtype and out[k].shape == v.shape, k
        assert bits(out[k]) == bits(v), k
    for k, b in of_base.items():
        assert out[k].untyped_storage().data_ptr() == out[b].untyped_storage().data_ptr(), k
        assert out[k].stride() == tree[k].stride(), k
        assert out[k].storage_offset() == tree[k].storage_offset(), k
    # ... and never invents sharing.
    for a in tree:
        for b in tree:
            if out[a].untyped_storage().data_ptr() == out[b].untyped_storage().data_ptr():
                ptr = tree[a].untyped_storage().data_ptr()
                assert ptr == tree[b].untyped_storage().data_ptr(), (a, b)


def test_numpy_views_read_exactly_in_safetensors_numpy(tmp_path: Any) -> None:
    from safetensors.numpy import load_file

    base = np.arange(24.0).reshape(4, 6)
    tree = {"a": base[:2], "b": base[2:], "t": base.T, "s": base[::2, ::-1], "w": base[1, 2:5]}
    path = tmp_path / "np.safetensors"
    hermetic.save(tree, path)
    plain = load_file(str(path))
    assert sorted(plain) == sorted(tree)
    for k, v in tree.items():
        assert plain[k].dtype == v.dtype and plain[k].shape == v.shape, k
        assert np.array_equal(plain[k], v), k
    out = hermetic.load(path, verify=True)
    for k, v in tree.items():
        assert np.array_equal(out[k], v) and out[k].strides == v.strides, k
        assert np.shares_memory(out[k], out["t"]), k  # t covers the whole buffer
