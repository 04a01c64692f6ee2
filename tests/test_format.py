"""hermetic.save / load / dumps / loads / open: round trips, safetensors
interop, sharding, hostile files and verify."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch
from format_compare import assert_round_trip, assert_same
from safetensors import safe_open
from safetensors.torch import load_file, save_file, save_model

import hermetic
from hermetic import FormatError

NAN_PAYLOAD = struct.unpack("<d", struct.pack("<Q", 0x7FF8_0000_DEAD_BEEF))[0]


def rt(obj: Any, tmp_path: Path, **kw: Any) -> Any:
    p = tmp_path / "x.safetensors"
    hermetic.save(obj, p)
    out = hermetic.load(p, verify=True, **kw)
    assert_round_trip(obj, out)
    again = hermetic.loads(hermetic.dumps(obj), **kw)
    assert_round_trip(obj, again)
    return out


LEAVES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**63,
    2**64 + 1,
    -(2**300),
    10**5000,
    0.0,
    -0.0,
    1.5,
    1e-320,
    float("inf"),
    float("-inf"),
    float("nan"),
    NAN_PAYLOAD,
    1.7976931348623157e308,
    0.1 + 0.2,
    complex(1.5, -0.0),
    complex(float("nan"), float("inf")),
    "",
    "héllo ✓ \x00 \U0001f600",
    b"",
    b"\x00\xff" * 10,
    b"x" * 5000,
]


@pytest.mark.parametrize("leaf", LEAVES, ids=lambda x: type(x).__name__)
def test_leaves(leaf: Any, tmp_path: Path) -> None:
    rt({"v": leaf, "in_list": [leaf], "in_tuple": (leaf,)}, tmp_path)
    rt(leaf, tmp_path)


def test_containers_and_keys(tmp_path: Path) -> None:
    tree = {
        "str": 1,
        3: "int key",
        2.5: "float key",
        True: "bool key",
        None: "none key",
        (1, "a", (2.0, None)): "tuple key",
        "od": OrderedDict([("b", 1), ("a", 2)]),
        "set": {1, "x", (2, 3)},
        "frozen": frozenset({b"a", 5}),
        "empty": [[], (), {}, set(), frozenset(), OrderedDict()],
        "nested": {"a": [{"b": ({"c": [1]},)}]},
    }
    out = rt(tree, tmp_path)
    assert list(out) == list(tree), "insertion order is kept"
    assert type(out["od"]) is OrderedDict


def test_identity_and_cycles(tmp_path: Path) -> None:
    shared = [1, 2]
    t = (shared, shared)
    cyc: list[Any] = [1]
    cyc.append(cyc)
    d: dict[str, Any] = {}
    d["self"] = d
    blob = b"y" * 3000
    out = rt(
        {"a": shared, "b": shared, "t": t, "cyc": cyc, "d": d, "b1": blob, "b2": blob}, tmp_path
    )
    assert out["a"] is out["b"] is out["t"][0] is out["t"][1]
    assert out["cyc"][1] is out["cyc"]
    assert out["d"]["self"] is out["d"]
    assert out["b1"] is out["b2"]


def test_cycle_through_tuple_is_an_error(tmp_path: Path) -> None:
    lst: list[Any] = []
    tup = (lst,)
    lst.append(tup)
    with pytest.raises(FormatError, match=r'tree\["x"\]\[0\]\[0\]'):
        hermetic.save({"x": tup}, tmp_path / "c.safetensors")


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
    torch.float8_e4m3fnuz,
    torch.float8_e5m2,
    torch.float8_e5m2fnuz,
    torch.float8_e8m0fnu,
    torch.float4_e2m1fn_x2,
    torch.bits8,
    torch.bits16,
]


def random_tensor(dtype: torch.dtype, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = math.prod(shape) * dtype.itemsize
    raw = torch.randint(0, 256, (n,), dtype=torch.uint8, generator=g)
    if dtype == torch.bool:
        raw = raw % 2
    return raw.view(dtype).reshape(shape) if n else torch.empty(shape, dtype=dtype)


@pytest.mark.parametrize("dtype", TORCH_DTYPES, ids=str)
def test_every_torch_dtype(dtype: torch.dtype, tmp_path: Path) -> None:
    t = random_tensor(dtype, (3, 4))
    rt({"t": t, "view": t[1:, ::2], "empty": torch.empty(0, 2, dtype=dtype)}, tmp_path)


def test_parameters_and_torch_objects(tmp_path: Path) -> None:
    tree = {
        "p": torch.nn.Parameter(torch.randn(3)),
        "frozen": torch.nn.Parameter(torch.randn(2), requires_grad=False),
        "grad": torch.ones(2).requires_grad_(),
        "dtype": torch.bfloat16,
        "device": torch.device("cuda", 1),
        "size": torch.Size([2, 3]),
        "scalar": torch.tensor(3.5),
    }
    out = rt(tree, tmp_path)
    assert type(out["p"]) is torch.nn.Parameter and out["p"].requires_grad
    assert not out["frozen"].requires_grad
    assert out["device"] == torch.device("cuda:1")


NUMPY_DTYPES = [
    "?",
    "u1",
    "i1",
    "<u2",
    "<i2",
    "<u4",
    "<i4",
    "<u8",
    "<i8",
    "<f2",
    "<f4",
    "<f8",
    "<c8",
    "<c16",
    ">i4",
    ">f8",
    ">c16",
    "<M8[ns]",
    "<m8[s]",
    ">M8[D]",
    "<U5",
    ">U3",
    "S7",
    "V6",
    "g",
    [("a", "<f4"), ("b", "S3"), ("c", ">i2", (2,))],
]


@pytest.mark.parametrize("dtype", NUMPY_DTYPES, ids=str)
def test_every_numpy_dtype(dtype: Any, tmp_path: Path) -> None:
    dt = np.dtype(dtype)
    raw = np.random.default_rng(0).integers(0, 256, 6 * dt.itemsize, dtype=np.uint8)
    if dt.kind == "b":
        raw = raw % 2
    if dt.kind == "U":
        raw = np.frombuffer(
            np.array(["ab", "xyz", "", "é", "q", "zz"], dtype=dt).tobytes(), np.uint8
        )
    a = raw.view(dt).reshape(2, 3)
    tree = {"a": a, "scalar": a[0, 0]}
    if dt.byteorder != ">":
        tree["view"] = a[:, 1:]
    out = rt(tree, tmp_path)
    assert out["a"].dtype == dt
    assert isinstance(out["scalar"], type(a[0, 0]))


def test_numpy_scalars(tmp_path: Path) -> None:
    rt(
        [np.float32(1.5), np.int64(-3), np.bool_(True), np.float64("nan"), np.str_("hi")],
        tmp_path,
    )


def test_storage_sharing(tmp_path: Path) -> None:
    base = torch.arange(24, dtype=torch.float32)
    m = base.view(4, 6)
    tree = {
        "base": base,
        "tied": base,
        "view": m,
        "slice": m[1:3],
        "offset": base[5:],
        "transposed": m.T,
        "strided": m[:, ::2],
        "bytes_view": base.view(torch.uint8)[4:12],
        "lone_slice": torch.arange(10.0)[3:7],
        "lone_t": torch.randn(3, 5).T,
        "np": np.arange(12.0).reshape(3, 4),
    }
    tree["np_view"] = tree["np"][::-1, 1:]
    tree["np_T"] = tree["np"].T
    # A view with no saved dense base comes back as a contiguous copy.
    lone_t = tree.pop("lone_t")
    out = rt(tree, tmp_path)
    hermetic.save({"lone_t": lone_t}, tmp_path / "lone.safetensors")
    back = hermetic.load(tmp_path / "lone.safetensors")["lone_t"]
    assert back.is_contiguous() and torch.equal(back, lone_t)
    assert out["base"] is out["tied"]
    storage = out["base"].untyped_storage().data_ptr()
    for k in ["view", "slice", "offset", "transposed", "strided", "bytes_view"]:
        assert out[k].untyped_storage().data_ptr() == storage, k
        assert out[k].stride() == tree[k].stride(), k
        assert out[k].storage_offset() == tree[k].storage_offset(), k
    assert np.shares_memory(out["np"], out["np_view"])
    assert out["np_view"].strides == tree["np_view"].strides
    assert np.shares_memory(out["np"], out["np_T"])
    # Each name but the tied alias is an entry a plain reader sees exactly.
    with hermetic.open(tmp_path / "x.safetensors") as h:
        assert sorted(h.keys()) == sorted(set(tree) - {"tied"})
    plain = safetensors.torch.load_file(tmp_path / "x.safetensors")
    for k, v in tree.items():
        if isinstance(v, torch.Tensor) and k != "tied":
            assert torch.equal(plain[k], v.contiguous()), k


def test_loaded_tensors_are_writable_private_copies(tmp_path: Path) -> None:
    p = tmp_path / "w.safetensors"
    hermetic.save({"t": torch.zeros(4), "n": np.zeros(4)}, p)
    before = p.read_bytes()
    out = hermetic.load(p)
    out["t"] += 1
    out["n"] += 1
    assert out["n"].flags.writeable
    assert p.read_bytes() == before, "writes never reach the file"
    assert hermetic.load(p)["t"].sum() == 0


def test_frameworks_and_devices(tmp_path: Path) -> None:
    p = tmp_path / "f.safetensors"
    t = torch.arange(6, dtype=torch.int32).reshape(2, 3)
    hermetic.save({"t": t, "v": t.T, "n": np.arange(3.0)}, p)
    as_np = hermetic.load(p, framework="numpy")
    assert isinstance(as_np["t"], np.ndarray) and np.shares_memory(as_np["t"], as_np["v"])
    assert (as_np["v"] == t.T.numpy()).all()
    as_pt = hermetic.load(p, framework="pt")
    assert isinstance(as_pt["n"], torch.Tensor) and as_pt["n"].dtype == torch.float64
    meta = hermetic.load(p, device="meta")
    assert meta["t"].device.type == "meta" and meta["v"].stride() == (1, 3)
    cpu = hermetic.load(p, device="cpu")
    assert cpu["t"].device.type == "cpu"
    hermetic.save({"b": torch.ones(2, dtype=torch.bfloat16)}, p)
    with pytest.raises(FormatError, match=r"tree\[.b.\].*BF16 has no numpy"):
        hermetic.load(p, framework="numpy")
    with pytest.raises(ValueError, match="framework"):
        hermetic.load(p, framework="jax")  # type: ignore[arg-type]


class Custom:
    pass


class MyTensor(torch.Tensor):
    pass


@pytest.mark.parametrize(
    ("tree", "place", "what"),
    [
        ({"a": [1, Custom()]}, r'tree\["a"\]\[1\]', "Custom"),
        ({"f": lambda: 1}, r'tree\["f"\]', "function"),
        ({"s": torch.eye(3).to_sparse()}, r'tree\["s"\]', "sparse"),
        ({"sub": torch.zeros(2).as_subclass(MyTensor)}, r'tree\["sub"\]', "tensor subclass"),
        ({"o": np.array([object()])}, r'tree\["o"\]', "Python objects"),
        ({"m": torch.empty(2, device="meta")}, r'tree\["m"\]', "meta"),
        ({"d": {1: {"k": bytearray(b"x")}}}, r'tree\["d"\]\[1\]\["k"\]', "bytearray"),
        ({"s": "\ud800"}, r'tree\["s"\]', "surrogate"),
        ({"n": [].append, "x": 1}, r'tree\["n"\]', "bound method"),
    ],
)
def test_unsupported_objects_name_their_path(
    tree: Any, place: str, what: str, tmp_path: Path
) -> None:
    p = tmp_path / "u.safetensors"
    with pytest.raises(FormatError, match=f"{place}.*{what}"):
        hermetic.save(tree, p)
    assert not p.exists()
    assert list(tmp_path.iterdir()) == [], "no temporary file is left behind"


def test_too_deep(tmp_path: Path) -> None:
    deep: Any = 1
    for _ in range(60):
        deep = [deep]
    with pytest.raises(FormatError, match="deeper than 50"):
        hermetic.save(deep, tmp_path / "d.safetensors")


def test_metadata(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    hermetic.save({"a": torch.ones(1)}, p, metadata={"step": "10", "format": "pt"})
    with hermetic.open(p) as h:
        assert h.metadata == {"step": "10", "format": "pt"}
    with pytest.raises(FormatError, match="reserved"):
        hermetic.save({}, p, metadata={"__hermetic__": "x"})
    with pytest.raises(FormatError, match="must be str"):
        hermetic.save({}, p, metadata={"a": 1})  # type: ignore[dict-item]


# ---------------------------------------------------------------- safetensors interop


def state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {
        "emb.weight": torch.randn(10, 4),
        "layer.0.weight": torch.randn(4, 4).to(torch.bfloat16),
        "layer.0.bias": torch.randn(4).to(torch.float16),
        "layer.1.idx": torch.arange(5),
        "mask": torch.tensor([True, False]),
    }


def header(path: Path) -> dict[str, Any]:
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + n])


def test_flat_state_dict_is_what_save_file_writes(tmp_path: Path) -> None:
    sd = state_dict()
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
    hermetic.save(sd, ours)
    save_file(sd, theirs)
    h1, h2 = header(ours), header(theirs)
    strip = lambda h: {k: (v["dtype"], v["shape"]) for k, v in h.items() if k != "__metadata__"}  # noqa: E731
    assert strip(h1) == strip(h2)
    assert h1["__metadata__"]["format"] == "pt"
    assert (8 + struct.unpack("<Q", ours.read_bytes()[:8])[0]) % 64 == 0
    for framework in ["pt", "numpy"]:
        with safe_open(ours, framework) as f, safe_open(theirs, framework) as g:
            assert sorted(f.keys()) == sorted(sd)
            for k in sd:
                if framework == "numpy" and sd[k].dtype == torch.bfloat16:
                    continue  # numpy has no bfloat16
                a, b = f.get_tensor(k), g.get_tensor(k)
                if framework == "pt":
                    assert torch.equal(a, b) and a.dtype == b.dtype
                else:
                    assert np.array_equal(a, b) and a.dtype == b.dtype


def test_safetensors_files_load_as_flat_dicts(tmp_path: Path) -> None:
    sd = state_dict()
    p = tmp_path / "st.safetensors"
    save_file(sd, p, metadata={"k": "v"})
    out = hermetic.load(p)
    assert list(out) == sorted(sd)
    for k in sd:
        assert torch.equal(out[k], sd[k]) and out[k].dtype == sd[k].dtype
    with hermetic.open(p) as h:
        assert not h.has_tree and h.metadata == {"k": "v"}
        with pytest.raises(FormatError, match="no digests"):
            h.verify()
    with pytest.raises(FormatError, match="BF16 has no numpy equivalent"):
        hermetic.load(p, framework="numpy")


def test_tied_weights_like_save_model(tmp_path: Path) -> None:
    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Linear(3, 3)
            self.b = torch.nn.Linear(3, 3)
            self.b.weight = self.a.weight

    m = Tied()
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
    hermetic.save(m.state_dict(), ours)
    save_model(m, str(theirs))
    assert header(ours)["__metadata__"]["b.weight"] == "a.weight"
    assert set(header(ours)) == set(header(theirs))
    out = hermetic.load(ours)
    assert (
        out["a.weight"].untyped_storage().data_ptr() == out["b.weight"].untyped_storage().data_ptr()
    )
    assert set(load_file(ours)) == {"a.weight", "a.bias", "b.bias"}


def test_training_checkpoint(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    ckpt = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "step": 1,
        "config": {"lr": 1e-3, "betas": (0.9, 0.999), "name": "tiny"},
        "rng": torch.get_rng_state(),
        "np_rng": np.random.default_rng(0).bit_generator.state,
    }
    out = rt(ckpt, tmp_path)
    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt2.load_state_dict(out["optimizer"])
    assert out["optimizer"]["state"][0]["step"].dtype == ckpt["optimizer"]["state"][0]["step"].dtype
    with hermetic.open(tmp_path / "x.safetensors") as h:
        assert "optimizer.state.0.exp_avg" in h.keys()
        assert "model.0.weight" in h.keys()


# ---------------------------------------------------------------- lazy open


def test_whole_entry_tensors_take_the_short_path_and_stay_shared(tmp_path: Path) -> None:
    # Rust hands a plain torch tensor that is its whole entry to the maker's
    # make_whole; everything else, and any entry already made, goes the
    # general way, so values, dtypes, shapes and sharing are the same.
    dtypes = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8]
    dtypes += [torch.uint8, torch.int64, torch.bool, torch.complex64]
    tree: dict[str, Any] = {}
    for i, dt in enumerate(dtypes):
        for shape in [(), (5,), (2, 3), (1, 4, 1)]:
            x = torch.arange(math.prod(shape) or 1).reshape(shape).to(dt)
            tree[f"{i}_{len(shape)}"] = x
    base = torch.arange(12.0)
    tree["base"], tree["tail"] = base, base[4:]
    other = torch.arange(12.0) * 2
    # A view first, then another tensor object that is the whole entry.
    tree["o_head"], tree["o_whole"] = other[:4], other.view(3, 4)
    tree["param"] = torch.nn.Parameter(torch.ones(3))
    p = tmp_path / "w.safetensors"
    hermetic.save(tree, p)
    out = hermetic.load(p)
    for k, v in tree.items():
        assert out[k].dtype == v.dtype and out[k].shape == v.shape and torch.equal(out[k], v), k
    assert isinstance(out["param"], torch.nn.Parameter) and out["param"].requires_grad
    # One storage object for the entry, not two over the same bytes.
    for names in [["base", "tail"], ["o_head", "o_whole"]]:
        assert len({out[k].untyped_storage()._cdata for k in names}) == 1, names
    copied = hermetic.load(p, mmap=False)
    assert all(torch.equal(copied[k], v) for k, v in tree.items())


def test_open_is_lazy(tmp_path: Path) -> None:
    p = tmp_path / "l.safetensors"
    tree = {"model": {"w": torch.randn(4, 4), "b": torch.randn(4)}, "step": 3, "np": [np.ones(2)]}
    hermetic.save(tree, p)
    with hermetic.open(p) as h:
        info = h.tree["model"]["w"]
        assert isinstance(info, hermetic.TensorInfo)
        assert (info.dtype, info.shape, info.nbytes, info.kind) == ("F32", (4, 4), 64, "torch")
        assert h.tree["step"] == 3
        w = h["model", "w"]
        assert torch.equal(w, tree["model"]["w"])
        sub = h["model"]
        assert set(sub) == {"w", "b"}
        assert h["np", 0].dtype == np.float64
        assert torch.equal(h.get_tensor("model.b"), tree["model"]["b"])
        assert isinstance(h.get("model", "b", framework="numpy"), np.ndarray)
        with pytest.raises(KeyError):
            h["nope"]
        with pytest.raises(IndexError):
            h["np", 5]


# ---------------------------------------------------------------- sharding


def test_sharded(tmp_path: Path) -> None:
    sd = {f"layer.{i}.weight": torch.full((256,), float(i)) for i in range(6)}
    tree = {"model": sd, "tied": sd["layer.0.weight"], "step": 7}
    d = tmp_path / "ckpt"
    hermetic.save(tree, d, max_shard_size="2.5KB")
    index = json.loads((d / "model.safetensors.index.json").read_text())
    files = sorted(p.name for p in d.iterdir())
    shards = [f for f in files if f.endswith(".safetensors")]
    assert len(shards) == 3 and shards[0] == "model-00001-of-00003.safetensors"
    assert index["metadata"]["total_size"] == 6 * 1024
    assert set(index["weight_map"]) == {f"model.{k}" for k in sd}
    for name, shard in index["weight_map"].items():
        with safe_open(d / shard, "pt") as f:
            assert name in f.keys()
    for src in [d, d / "model.safetensors.index.json"]:
        out = hermetic.load(src, verify=True)
        assert_round_trip(tree, out)
        assert out["tied"] is out["model"]["layer.0.weight"]


# ---------------------------------------------------------------- hostile files


def make(tmp_path: Path, raw: bytes, name: str = "h.safetensors") -> Path:
    p = tmp_path / name
    p.write_bytes(raw)
    return p


def st_file(header_obj: Any, data: bytes) -> bytes:
    h = json.dumps(header_obj).encode()
    return struct.pack("<Q", len(h)) + h + data


def good_file(tmp_path: Path) -> bytes:
    p = tmp_path / "good.safetensors"
    hermetic.save({"a": torch.arange(16, dtype=torch.float32), "b": [1, 2]}, p)
    return p.read_bytes()


def test_truncated_and_garbage(tmp_path: Path) -> None:
    raw = good_file(tmp_path)
    for cut in [0, 3, 8, 20, len(raw) // 2, len(raw) - 1]:
        p = make(tmp_path, raw[:cut])
        with pytest.raises(FormatError, match=str(p)):
            hermetic.load(p)
    with pytest.raises(FormatError, match="truncated"):
        hermetic.load(make(tmp_path, raw[:-1]))
    with pytest.raises(FormatError):
        hermetic.loads(b"\x00" * 7)


_U8_EMPTY = '{"dtype":"U8","shape":[0],"data_offsets":[0,0]}'


def _raw_header(text: str) -> bytes:
    h = text.encode()
    return struct.pack("<Q", len(h)) + h


def test_hostile_headers(tmp_path: Path) -> None:
    cases = [
        (struct.pack("<Q", 2**62) + b"{}", "header length exceeds the limit"),
        (struct.pack("<Q", 10**9) + b"{}", "header length exceeds"),
        (
            st_file({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8),
            "truncated",
        ),
        (
            st_file(
                {
                    "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                    "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
                },
                b"\0" * 12,
            ),
            "data_offsets",
        ),
        (
            st_file({"a": {"dtype": "F64", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8),
            "dtype size",
        ),
        (
            st_file(
                {"a": {"dtype": "F32", "shape": [2**62, 2**62], "data_offsets": [0, 8]}}, b"\0" * 8
            ),
            "overflow",
        ),
        (st_file({"a": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 1]}}, b"\0"), "JSON"),
        (b"\x05\0\0\0\0\0\0\0[1,2]", "JSON"),
        # safetensors keeps the last of two same-named entries; we refuse.
        (_raw_header(f'{{"a":{_U8_EMPTY},"a":{_U8_EMPTY}}}'), "`a` appears twice"),
        (_raw_header('{"__metadata__":{"k":"1","k":"2"}}'), "key `k` appears twice"),
    ]
    for raw, msg in cases:
        p = make(tmp_path, raw)
        with pytest.raises(FormatError, match=msg) as e:
            hermetic.load(p)
        assert str(p) in str(e.value)


def hermetic_header(tree: str, digests: dict[str, str] | None = None, extra: Any = None) -> bytes:
    data = b"\0" * 8
    if digests is None:
        digests = {"a": _digest_of(data)}
    doc = {"version": 1, "digest": "xxh3-128", "digests": digests}
    doc_text = json.dumps(doc)[:-1] + ',"tree":' + tree + "}"
    h = {"__metadata__": {"format": "pt", "__hermetic__": doc_text}}
    h["a"] = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    if extra:
        h.update(extra)
    return st_file(h, data)


def _digest_of(data: bytes) -> str:
    # The writer's digest of these bytes, read back from a file it wrote.
    blob = hermetic.dumps({"a": torch.frombuffer(bytearray(data), dtype=torch.float32)})
    n = struct.unpack("<Q", blob[:8])[0]
    doc = json.loads(json.loads(blob[8 : 8 + n])["__metadata__"]["__hermetic__"])
    return doc["digests"]["a"]


def test_hostile_trees(tmp_path: Path) -> None:
    assert hermetic.loads(hermetic_header('{"$tensor":"a"}')).shape == (2,)
    deep = "[" * 5000 + "]" * 5000
    cases = [
        ('{"$tensor":"missing"}', "missing entry"),
        ('{"$tensor":{"entry":"a","dtype":"F32","shape":[3]}}', "the entry has 8 bytes"),
        ('{"$tensor":{"entry":"a","dtype":"F32","shape":[1],"offset":8}}', "reaches bytes"),
        ('{"$tensor":{"entry":"a","dtype":"F32","shape":[2],"strides":[-4]}}', "reaches bytes -4"),
        (
            '{"$tensor":{"entry":"a","dtype":"F32","shape":[1],"strides":[-4],"offset":4}}',
            "strides",
        ),
        ('{"$tensor":{"entry":"a","dtype":"RAW4","shape":[2]}}', "RAW dtype needs np_dtype"),
        ('{"$ndarray":{"entry":"a","dtype":"F64","shape":[1],"np_dtype":"O"}}', "object"),
        ('{"$ndarray":{"entry":"a","dtype":"RAW8","shape":[1],"np_dtype":"<f4"}}', "8-byte"),
        ('{"$ref":3}', "names no earlier object"),
        ('{"$set":[[1]]}', "unhashable"),
        ('{"$dict":[[1],2]}', "unhashable"),
        ('{"$torch_dtype":"os"}', "is not a torch dtype"),
        ('{"$what":1}', "unknown tag"),
        ('{"$int":"zz"}', "hex"),
        (deep, "depth"),
        ("[" * 60 + "]" * 60, "container nesting depth exceeds the limit of 50"),
    ]
    for tree, msg in cases:
        with pytest.raises(FormatError, match=msg):
            hermetic.loads(hermetic_header(tree))
    with pytest.raises(FormatError, match="no digest for entry"):
        hermetic.loads(hermetic_header('{"$tensor":"a"}', digests={}))


def test_verify_catches_a_flipped_payload_byte(tmp_path: Path) -> None:
    raw = bytearray(good_file(tmp_path))
    raw[-3] ^= 0x01
    p = make(tmp_path, bytes(raw))
    hermetic.load(p)  # without verify, the flip goes unnoticed
    with pytest.raises(FormatError, match="entry `a` is corrupt"):
        hermetic.load(p, verify=True)
    with hermetic.open(p) as h, pytest.raises(FormatError, match="corrupt"):
        h.verify()


def _flip_file(tmp_path: Path) -> tuple[bytes, range]:
    """A small file with tensors, an array, containers and user metadata, and
    the bytes of its layout digest's key in the header."""
    p = tmp_path / "flips.safetensors"
    tree = {
        "a": torch.arange(16, dtype=torch.float32),
        "b": [1, 2],
        "c": {"s": "text", "n": np.arange(4, dtype=np.int16), "t": (1.5, None)},
    }
    hermetic.save(tree, p, metadata={"note": "x"})
    raw = p.read_bytes()
    key = b'"__hermetic_layout__"'
    at = raw.index(key, 8, 8 + struct.unpack("<Q", raw[:8])[0])
    return raw, range(at + 1, at + len(key) - 1)


def _metadata_of(tmp_path: Path, raw: bytes) -> dict[str, str]:
    p = tmp_path / "flipped.safetensors"
    p.write_bytes(raw)
    with hermetic.open(p) as h:
        return h.metadata


def _silent_changes(tmp_path: Path, raw: bytes, positions: Iterable[int]) -> list[str]:
    """Every single-bit flip of ``raw`` at ``positions`` that ``loads(verify=True)``
    does not refuse, yet reads differently (tree, tensor bytes or metadata)."""
    original = hermetic.loads(raw, verify=True)
    metadata = _metadata_of(tmp_path, raw)
    assert metadata == {"format": "pt", "note": "x"}
    silent: list[str] = []
    for i in positions:
        for bit in range(8):
            flipped = bytearray(raw)
            flipped[i] ^= 1 << bit
            try:
                got = hermetic.loads(bytes(flipped), verify=True)
            except FormatError:
                continue
            place = f"bit {bit} of byte {i} ({raw[i : i + 1]!r})"
            try:
                assert_same(original, got, place)
            except AssertionError as e:
                silent.append(str(e))
                continue
            got_metadata = _metadata_of(tmp_path, bytes(flipped))
            if got_metadata != metadata:
                silent.append(f"{place}: metadata {got_metadata}")
    return silent


def test_bit_flips_are_refused_or_change_nothing(tmp_path: Path) -> None:
    """Under ``verify=True`` every single-bit flip either raises FormatError or
    loads the same tree, tensors bit for bit, with the same metadata: entry
    digests cover the data, the layout digest the rest of the header (SPEC
    4.1); flips in the layout digest's own key are the next test."""
    raw, layout_key = _flip_file(tmp_path)
    positions = [i for i in range(len(raw)) if i not in layout_key]
    assert _silent_changes(tmp_path, raw, positions) == []


def test_bit_flips_in_the_layout_key_are_refused(tmp_path: Path) -> None:
    """A renamed layout key does not pass for a file written before layout
    digests: the digest is found under its new name and no longer matches."""
    raw, layout_key = _flip_file(tmp_path)
    assert _silent_changes(tmp_path, raw, layout_key) == []


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "a.safetensors"
    hermetic.save({"a": torch.ones(3)}, p)
    before = p.read_bytes()
    from hermetic import _bridge

    def boom(*a: Any) -> Any:
        raise RuntimeError("preempted")

    # Fails while the second entry streams out (numpy bytes come through a helper).
    monkeypatch.setattr(_bridge, "_np_span", boom)
    with pytest.raises(RuntimeError, match="preempted"):
        hermetic.save({"a": torch.zeros(1000), "b": np.zeros(1000)}, p)
    assert p.read_bytes() == before
    assert [x.name for x in tmp_path.iterdir()] == ["a.safetensors"]


def test_loads_holds_its_input_once(tmp_path: Path) -> None:
    """issue #16: `loads` makes one private copy of its input, which Rust
    reads in place and the tensors view; a second copy (Rust's own, as
    before) shows as a peak of twice the input over the caller's bytes."""
    n = 64 << 20
    p = tmp_path / "big.hmt"
    hermetic.save({"a": np.ones(n, np.uint8)}, p)
    child = (
        "import resource, sys, hermetic\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
        "out = hermetic.loads(data, framework='numpy', verify=True)\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
        "assert int(out['a'].sum()) == len(out['a'])\n"
        "print((peak - base) / len(data))\n"
    )
    r = subprocess.run([sys.executable, "-c", child, str(p)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout) < 1.5, r.stdout
