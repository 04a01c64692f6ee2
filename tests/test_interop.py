"""Interop matrix (issue #14): files written by ``hermetic.save`` read by every
safetensors reader exactly as ``hermetic.load`` reads them.

Every reader must return, under every name the tree saved a tensor at, its
dtype, its shape and its bytes (docs/SPEC.md section 3), and agree with
``hermetic.load``. Two documented forms qualify "exactly":

- dtypes without a safetensors code (C128, C32, F8_E8M0, F4_E2M1_X2, BITS*,
  numpy RAW dtypes) are ``U8`` entries with the element size as a last
  dimension (SPEC 5): a plain reader gets those bytes as uint8;
- a tied weight (exact alias) is stored once; the other names are
  ``__metadata__[alias] = entry``, as ``safetensors.torch.save_model`` writes.

Readers: ``safetensors.torch.load_file``, ``safetensors.numpy.load_file``,
``safe_open(framework="pt")`` and ``"np"``, ``huggingface_hub``'s
``load_state_dict_from_file`` / ``load_torch_model``, ``safetensors.torch
.load_model``, and transformers' ``AutoModelForCausalLM.from_pretrained``.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")
pytest.importorskip("safetensors")

import safetensors.numpy as st_numpy  # noqa: E402
import safetensors.torch as st_torch  # noqa: E402
from safetensors import safe_open  # noqa: E402

import hermetic  # noqa: E402
from hermetic._format_codec import _CODE_NP, _TORCH_CODES  # noqa: E402

# The codes every safetensors reader knows (SPEC 5); others are stored as U8.
ST_CODES = {
    "BOOL",
    "U8",
    "I8",
    "U16",
    "I16",
    "U32",
    "I32",
    "U64",
    "I64",
    "F16",
    "BF16",
    "F32",
    "F64",
    "C64",
    "F8_E4M3",
    "F8_E4M3FNUZ",
    "F8_E5M2",
    "F8_E5M2FNUZ",
}
_NP_OF_CODE = {code: np.dtype(s) for code, s in _CODE_NP.items()}


# ------------------------------------------------------------------ helpers


def _torch_code(t: Any) -> str:
    return _TORCH_CODES[str(t.dtype).removeprefix("torch.")]


def _raw(t: Any) -> bytes:
    """The row-major bytes of a tensor or array, any dtype."""
    if isinstance(t, np.ndarray):
        return np.ascontiguousarray(t).tobytes()
    # Through a uint8 view of the storage: no kernel of the dtype is needed
    # (torch has none for the bits types).
    k = t.dtype.itemsize
    u8 = torch.empty(0, dtype=torch.uint8).set_(
        t.untyped_storage(),
        t.storage_offset() * k,
        (*t.shape, k),
        (*(s * k for s in t.stride()), 1),
    )
    return u8.contiguous().numpy().tobytes()


class Want:
    """What a plain reader must return for one saved tensor or array."""

    def __init__(self, value: Any) -> None:
        self.value = value
        if isinstance(value, np.ndarray):
            dt = value.dtype
            self.code = _np_code(dt)
            self.shape = tuple(value.shape)
            # Stored little-endian, like every safetensors payload.
            le = dt.newbyteorder("<") if dt.byteorder == ">" else dt
            self.bytes = np.ascontiguousarray(value.astype(le)).tobytes()
            self.itemsize = dt.itemsize
        else:
            self.code = _torch_code(value)
            self.shape = tuple(value.shape)
            self.bytes = _raw(value)
            self.itemsize = value.dtype.itemsize

    @property
    def st_shape(self) -> tuple[int, ...]:
        """The entry's shape: the U8 form adds the element size."""
        return self.shape if self.code in ST_CODES else (*self.shape, self.itemsize)

    @property
    def torch_dtype(self) -> Any:
        if self.code not in ST_CODES:
            return torch.uint8
        return st_torch._TYPES[self.code]

    @property
    def np_dtype(self) -> Any:
        if self.code not in ST_CODES:
            return np.dtype(np.uint8)
        return _NP_OF_CODE.get(self.code)  # None: numpy has no such dtype

    def check(self, got: Any, where: str) -> None:
        """A plain reader's tensor or array for this name."""
        if isinstance(got, np.ndarray):
            assert got.dtype == self.np_dtype, f"{where}: dtype {got.dtype}, want {self.np_dtype}"
        else:
            assert got.dtype == self.torch_dtype, (
                f"{where}: dtype {got.dtype}, want {self.torch_dtype}"
            )
        assert tuple(got.shape) == self.st_shape, (
            f"{where}: shape {got.shape}, want {self.st_shape}"
        )
        assert _raw(got) == self.bytes, f"{where}: values differ"

    def check_hermetic(self, got: Any, where: str) -> None:
        """``hermetic.load``'s object: the saved dtype itself, in any form."""
        assert type(got) is type(self.value), f"{where}: {type(got)}"
        assert got.dtype == self.value.dtype, f"{where}: dtype {got.dtype}"
        assert tuple(got.shape) == self.shape, f"{where}: shape {got.shape}"
        assert Want(got).bytes == self.bytes, f"{where}: values differ"


def _np_code(dt: Any) -> str:
    if dt.kind in "mM":
        return "I64"
    key = f"{dt.kind}{dt.itemsize}"
    for code, s in _CODE_NP.items():
        if s[1:] == key and dt.fields is None and dt.type is not np.longdouble:
            return code
    return f"RAW{dt.itemsize}"


def _leaves(tree: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """(entry name per SPEC 3, value) of every tensor and array in a tree."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaves(v, (*path, str(k)))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from _leaves(v, (*path, str(i)))
    elif isinstance(tree, (torch.Tensor, np.ndarray)):
        yield ".".join(path) if path else "tensor", tree


def _header(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return header, header.pop("__metadata__", {})


def _files(path: Path) -> list[Path]:
    """The safetensors files of a save: the file, or a sharded folder's shards."""
    if path.is_dir():
        return sorted(path.glob("*.safetensors"))
    return [path]


def _aliases(path: Path) -> dict[str, str]:
    """``__metadata__`` (or the sharded index's ``metadata``) without hermetic's
    own keys and ``format``: the tied-weight aliases."""
    if path.is_dir():
        md = json.loads((path / "model.safetensors.index.json").read_text())["metadata"]
        md.pop("total_size")
    else:
        md = _header(path)[1]
    return {k: v for k, v in md.items() if not k.startswith("__hermetic") and k != "format"}


# ------------------------------------------------------------------ readers

Read = Callable[[Path], dict[str, Any]]


def _read_load_file_pt(f: Path) -> dict[str, Any]:
    return st_torch.load_file(f)


def _read_load_file_np(f: Path) -> dict[str, Any]:
    return st_numpy.load_file(f)


def _safe_open(framework: str) -> Read:
    def read(f: Path) -> dict[str, Any]:
        with safe_open(f, framework=framework) as h:
            return {k: h.get_tensor(k) for k in h.keys()}  # noqa: SIM118 - not a dict

    return read


def _read_hub(f: Path) -> dict[str, Any]:
    ser = pytest.importorskip("huggingface_hub.serialization")
    load = getattr(ser, "load_state_dict_from_file", None)
    if load is None:
        pytest.skip("this huggingface_hub has no serialization.load_state_dict_from_file")
    return load(f)


def _read_hermetic_get_tensor(f: Path) -> dict[str, Any]:
    with hermetic.open(f) as h:
        return {k: h.get_tensor(k) for k in h.keys()}  # noqa: SIM118 - not a dict


READERS: dict[str, Read] = {
    "safetensors.torch.load_file": _read_load_file_pt,
    "safetensors.numpy.load_file": _read_load_file_np,
    "safe_open(pt)": _safe_open("pt"),
    "safe_open(np)": _safe_open("np"),
    "huggingface_hub.load_state_dict_from_file": _read_hub,
    "hermetic.open().get_tensor": _read_hermetic_get_tensor,
}
NP_READERS = {"safetensors.numpy.load_file", "safe_open(np)"}


def _check_reader(reader: str, path: Path, tree: Any) -> None:
    """``reader`` returns exactly what was saved under every name of ``tree``,
    the way ``hermetic.load`` does."""
    want = dict(_leaves(tree))
    got: dict[str, Any] = {}
    for f in _files(path):
        part = READERS[reader](f)
        assert not set(part) & set(got), f"{f}: names in two shards"
        got.update(part)
    aliases = _aliases(path)
    loaded = dict(_leaves(hermetic.load(path)))
    assert set(loaded) == set(want)
    seen = set()
    for name, w in want.items():
        entry = name
        if name not in got:
            # A tied weight: stored once, recorded as save_model records it.
            assert name in aliases, f"{reader}: {name!r} is neither an entry nor an alias"
            entry = aliases[name]
            assert entry in got, f"{reader}: alias {name!r} names a missing entry {entry!r}"
            if entry in want:
                assert Want(want[entry]).bytes == Want(w).bytes
        seen.add(entry)
        Want(w).check(got[entry], f"{reader}[{entry!r}] for {name!r}")
        Want(w).check_hermetic(loaded[name], f"hermetic.load[{name!r}]")
        # hermetic's own view of the entry agrees with the plain reader's.
        if reader == "safe_open(pt)":
            with hermetic.open(path) as h:
                Want(w).check(h.get_tensor(entry), f"hermetic get_tensor({entry!r})")
    assert set(got) == seen, f"{reader}: entries no name was saved under: {set(got) - seen}"


# ------------------------------------------------------------------ cases


def _g(seed: int) -> Any:
    return torch.Generator().manual_seed(seed)


def _fused() -> Any:
    return torch.randn(12, 4, generator=_g(1))


def case_flat() -> Any:
    g = _g(0)
    return {
        "embed.weight": torch.randn(10, 4, generator=g),
        "layer.weight": torch.randn(4, 4, generator=g).to(torch.bfloat16),
        "layer.bias": torch.randn(4, generator=g).half(),
        "steps": torch.arange(5, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "empty": torch.empty(0, 3),
    }


def case_nested() -> Any:
    g = _g(2)
    return {
        "model": {
            "layers": [
                {"w": torch.randn(3, 2, generator=g), "b": torch.randn(2, generator=g)},
                {"w": torch.randn(3, 2, generator=g), "b": torch.randn(2, generator=g)},
            ],
            "head": torch.randn(2, 5, generator=g),
        },
        "optimizer": {
            "state": {0: {"exp_avg": torch.randn(3, 2, generator=g), "step": 7}},
            "param_groups": [{"lr": 1e-3, "params": [0]}],
        },
        "epoch": 3,
        "name": "run-1",
    }


def case_qkv_views() -> Any:
    W = _fused()
    return {"q": W[:4], "k": W[4:8], "v": W[8:]}


def case_fused_and_views() -> Any:
    W = _fused()
    return {"W": W, "q": W[:4], "k": W[4:8], "v": W[8:]}


def case_column_chunks() -> Any:
    return dict(zip("abc", torch.randn(6, 6, generator=_g(3)).chunk(3, dim=1), strict=True))


def case_transposed() -> Any:
    return {"wt": _fused().t()}


def case_weight_and_transpose() -> Any:
    W = _fused()
    return {"w": W, "wt": W.t()}


def case_offset_view() -> Any:
    return {"o": _fused().view(-1)[5:17].view(3, 4)}


def case_weight_and_offset_view() -> Any:
    W = _fused()
    return {"w": W, "o": W.view(-1)[5:17].view(3, 4), "row": W[7]}


def case_strided_and_broadcast() -> Any:
    W = _fused()
    return {"every_other": W[::2, 1:], "expanded": W[0].expand(3, 4), "perm": W.view(3, 4, 4)[:, 1]}


def case_tied_same_object() -> Any:
    W = _fused()
    return {"embed.weight": W, "lm_head.weight": W}


def case_tied_two_objects() -> Any:
    W = _fused()
    return {"embed.weight": W, "lm_head.weight": W.detach(), "bias": torch.zeros(4)}


def case_numpy_tied() -> Any:
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    return {"a": a, "same_object": a, "same_layout": a[:], "t": a.T}


CASES: dict[str, Callable[[], Any]] = {
    "flat": case_flat,
    "nested": case_nested,
    "qkv_views": case_qkv_views,
    "fused_and_views": case_fused_and_views,
    "column_chunks": case_column_chunks,
    "transposed": case_transposed,
    "weight_and_transpose": case_weight_and_transpose,
    "offset_view": case_offset_view,
    "weight_and_offset_view": case_weight_and_offset_view,
    "strided_and_broadcast": case_strided_and_broadcast,
    "tied_same_object": case_tied_same_object,
    "tied_two_objects": case_tied_two_objects,
    "numpy_tied": case_numpy_tied,
}

# Cases whose dtypes numpy lacks (bfloat16): the numpy readers' cell is the error.
NP_LACKS = {"flat"}


def _save(tmp_path: Path, tree: Any, sharded: bool) -> Path:
    if sharded:
        out = tmp_path / "sharded"
        # Small shards: several files, views still beside their base.
        hermetic.save(tree, out, max_shard_size=64)
        return out
    out = tmp_path / "file.safetensors"
    hermetic.save(tree, out)
    return out


@pytest.mark.parametrize("sharded", [False, True], ids=["file", "sharded"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("reader", list(READERS))
def test_reader_reads_what_was_saved(tmp_path: Path, reader: str, case: str, sharded: bool) -> None:
    tree = CASES[case]()
    path = _save(tmp_path, tree, sharded)
    if reader in NP_READERS and case in NP_LACKS:
        # bfloat16: numpy has no such dtype; both sides refuse, clearly.
        with pytest.raises(TypeError, match="bfloat16"):
            for f in _files(path):
                READERS[reader](f)
        with pytest.raises(hermetic.FormatError, match="BF16 has no numpy equivalent"):
            hermetic.load(path, framework="numpy")
        rest = {k: v for k, v in tree.items() if v.dtype != torch.bfloat16}
        path = _save(tmp_path / "rest", rest, sharded)
        tree = rest
    _check_reader(reader, path, tree)


def test_tied_alias_is_recorded_as_save_model_does(tmp_path: Path) -> None:
    """Both kinds of tie leave one entry and ``__metadata__[alias] = entry``:
    what ``safetensors.torch.save_model`` writes for the same state dict."""
    for case in (case_tied_same_object, case_tied_two_objects):
        tree = case()
        hermetic.save(tree, tmp_path / "h.safetensors")
        hdr, md = _header(tmp_path / "h.safetensors")
        assert [k for k in hdr] == [k for k in tree if k != "lm_head.weight"]
        assert md["lm_head.weight"] == "embed.weight"
        loaded = hermetic.load(tmp_path / "h.safetensors")
        assert loaded["lm_head.weight"].data_ptr() == loaded["embed.weight"].data_ptr()


def test_safetensors_load_model_restores_tied_weights(tmp_path: Path) -> None:
    """``safetensors.torch.load_model`` (strict) on a tied module's state dict."""

    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(10, 4)
            self.head = torch.nn.Linear(4, 10, bias=False)
            self.head.weight = self.embed.weight

    torch.manual_seed(0)
    m = Tied()
    hermetic.save(m.state_dict(), tmp_path / "m.safetensors")
    m2 = Tied()
    missing, unexpected = st_torch.load_model(m2, tmp_path / "m.safetensors", strict=True)
    assert not missing and not unexpected
    assert torch.equal(m2.embed.weight, m.embed.weight)
    assert m2.head.weight is m2.embed.weight


# ------------------------------------------------------------------ dtypes


def _torch_dtype_cases() -> list[str]:
    return [name for name in _TORCH_CODES if isinstance(getattr(torch, name, None), torch.dtype)]


def _of_dtype(name: str) -> Any:
    dt = getattr(torch, name)
    raw = torch.randint(0, 256, (3, 5 * dt.itemsize), dtype=torch.uint8, generator=_g(4))
    if dt == torch.bool:
        raw = raw % 2
    return raw.view(dt)


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("dtype", _torch_dtype_cases())
def test_every_torch_dtype(tmp_path: Path, reader: str, dtype: str) -> None:
    t = _of_dtype(dtype)
    # A view too: every other row of the same storage.
    tree = {"x": t, "rows": t[::2]}
    path = tmp_path / "d.safetensors"
    hermetic.save(tree, path)
    code = _TORCH_CODES[dtype]
    hdr, _ = _header(path)
    assert hdr["x"]["dtype"] == (code if code in ST_CODES else "U8")
    if reader in NP_READERS and code in ST_CODES and code not in _NP_OF_CODE:
        # numpy has no such dtype (bfloat16, float8): each side says so.
        with pytest.raises((TypeError, AttributeError), match=dtype):
            READERS[reader](path)
        with pytest.raises(hermetic.FormatError, match=f"{code} has no numpy equivalent"):
            hermetic.load(path, framework="numpy")
        return
    _check_reader(reader, path, tree)
    if reader in NP_READERS and code not in _NP_OF_CODE:
        with pytest.raises(hermetic.FormatError, match=f"{code} has no numpy equivalent"):
            hermetic.load(path, framework="numpy")
    elif reader in NP_READERS:
        arr = hermetic.load(path, framework="numpy")["x"]
        assert arr.dtype == _NP_OF_CODE[code] and _raw(arr) == _raw(t)


def _np_arrays() -> dict[str, Any]:
    rng = np.random.default_rng(5)
    out: dict[str, Any] = {}
    for code, s in _CODE_NP.items():
        dt = np.dtype(s)
        out[code] = rng.integers(0, 256, size=(3, 4 * dt.itemsize), dtype=np.uint8).view(dt)
    out["BOOL"] = out["BOOL"].view(np.uint8) % 2 == 1
    out["big_endian_f4"] = np.arange(6, dtype=">f4").reshape(2, 3)
    out["datetime64"] = np.array(["2024-01-02", "2025-03-04"], dtype="datetime64[ns]")
    out["unicode"] = np.array(["ab", "cde"], dtype="<U3")
    out["record"] = np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8")])
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    out["base"], out["t"], out["cols"] = base, base.T, base[:, 1::2]
    return out


@pytest.mark.parametrize("reader", list(READERS))
def test_every_numpy_dtype(tmp_path: Path, reader: str) -> None:
    """Arrays saved from numpy: the native codes as themselves, big-endian
    data little-endian, datetimes as their I64 counts, the rest in U8 form."""
    tree = _np_arrays()
    path = tmp_path / "np.safetensors"
    hermetic.save(tree, path)
    _check_reader(reader, path, tree)


# ------------------------------------------------------------------ hub / transformers


def _hub_load_torch_model() -> Any:
    ser = pytest.importorskip("huggingface_hub.serialization")
    load = getattr(ser, "load_torch_model", None)
    if load is None:
        pytest.skip("this huggingface_hub has no serialization.load_torch_model")
    return load


class _Small(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(10, 8)
        self.qkv = torch.nn.Linear(8, 24)
        self.out = torch.nn.Linear(8, 10, bias=False)
        self.out.weight = self.embed.weight


@pytest.mark.parametrize("sharded", [False, True], ids=["file", "sharded"])
def test_hub_load_torch_model(tmp_path: Path, sharded: bool) -> None:
    """``huggingface_hub.load_torch_model`` reads hermetic's save of a state
    dict as it reads ``huggingface_hub.save_torch_model``'s own: the same
    entries, the same tied-weight record, the same result (the hub loader
    reports a tied weight as missing either way: it does not re-tie)."""
    load_torch_model = _hub_load_torch_model()
    from huggingface_hub import save_torch_model

    torch.manual_seed(0)
    m = _Small()
    shard = 300 if sharded else None
    ref, ours = tmp_path / "hub", tmp_path / "hermetic"
    ref.mkdir()
    save_torch_model(m, ref, max_shard_size=shard or "5GB")
    sd = m.state_dict()
    # Saved as a view: the transpose of a transposed copy.
    sd["qkv.weight"] = sd["qkv.weight"].t().contiguous().t()
    if sharded:
        hermetic.save(sd, ours, max_shard_size=shard)
        assert len(_files(ours)) > 1
    else:
        hermetic.save(sd, ours / "model.safetensors")
    assert _aliases(ours if sharded else ours / "model.safetensors") == _aliases(
        ref if sharded else ref / "model.safetensors"
    )
    results = []
    for folder in (ref, ours):
        m2 = _Small()
        results.append(load_torch_model(m2, folder, strict=False))
        for k, v in m.state_dict().items():
            assert torch.equal(m2.state_dict()[k], v), (folder.name, k)
        assert m2.out.weight is m2.embed.weight
    assert results[0] == results[1]
    assert results[1].missing_keys == ["out.weight"] and not results[1].unexpected_keys


def _transformers() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return pytest.importorskip("transformers")


def _llama(tie: bool) -> Any:
    tr = _transformers()
    cfg = tr.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=100,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
    )
    torch.manual_seed(0)
    return tr.AutoModelForCausalLM.from_config(cfg).eval()


def _gpt2() -> Any:
    tr = _transformers()
    cfg = tr.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100, n_positions=64)
    torch.manual_seed(0)
    return tr.AutoModelForCausalLM.from_config(cfg).eval()


IDS = [[1, 5, 9, 42, 7, 3, 99, 0]]


def _logits(model: Any) -> Any:
    with torch.no_grad():
        return model(torch.tensor(IDS)).logits


def _fuse_qkv(sd: dict[str, Any]) -> dict[str, Any]:
    """Each layer's q/k/v weights as row views of one fused tensor."""
    sd = dict(sd)
    for name in [k for k in sd if k.endswith("self_attn.q_proj.weight")]:
        pre = name.removesuffix("q_proj.weight")
        parts = [sd[pre + f"{p}_proj.weight"] for p in "qkv"]
        W = torch.cat(parts)
        at = 0
        for p, t in zip("qkv", parts, strict=True):
            sd[pre + f"{p}_proj.weight"] = W[at : at + t.shape[0]]
            at += t.shape[0]
    return sd


def _transpose_views(sd: dict[str, Any]) -> dict[str, Any]:
    """Every 2-D weight as the transpose of its transposed copy: equal
    values, column-major strides."""
    out = {}
    for k, v in sd.items():
        out[k] = v.t().contiguous().t() if v.dim() == 2 else v
        if v.dim() == 2 and v.shape[0] != v.shape[1]:
            assert not out[k].is_contiguous()
    return out


def _variant(
    make: Callable[[], Any], edit: Callable[[dict[str, Any]], dict[str, Any]] = dict
) -> Any:
    def build() -> tuple[Any, dict[str, Any]]:
        model = make()
        return model, edit(model.state_dict())

    return build


VARIANTS: dict[str, Callable[[], tuple[Any, dict[str, Any]]]] = {
    "llama": _variant(lambda: _llama(False)),
    "llama_tied": _variant(lambda: _llama(True)),
    "gpt2_tied": _variant(_gpt2),
    # The two acceptance cases of issue #14.
    "llama_fused_qkv_views": _variant(lambda: _llama(False), _fuse_qkv),
    "llama_transposed_views": _variant(lambda: _llama(True), _transpose_views),
}


@pytest.mark.parametrize("sharded", [False, True], ids=["file", "sharded"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_transformers_from_pretrained(tmp_path: Path, variant: str, sharded: bool) -> None:
    tr = _transformers()
    model, sd = VARIANTS[variant]()
    want = _logits(model)
    model.config.save_pretrained(tmp_path)
    if sharded:
        hermetic.save(sd, tmp_path, max_shard_size=20_000)
        index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
        shards = set(index["weight_map"].values())
        assert len(shards) > 1
        assert shards == {f.name for f in _files(tmp_path)}
    else:
        hermetic.save(sd, tmp_path / "model.safetensors")
    if variant == "llama_fused_qkv_views":
        # The file keeps the fusion: hermetic.load rebuilds q, k, v as views
        # of one storage, while plain readers see three weights.
        back = hermetic.load(tmp_path if sharded else tmp_path / "model.safetensors")
        pre = "model.layers.0.self_attn."
        ptrs = {back[f"{pre}{p}_proj.weight"].untyped_storage().data_ptr() for p in "qkv"}
        assert len(ptrs) == 1
    # Every reader sees the state dict (tied names as aliases).
    _check_reader(
        "safetensors.torch.load_file", tmp_path if sharded else tmp_path / "model.safetensors", sd
    )
    loaded = tr.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    if model.config.tie_word_embeddings:
        emb = loaded.get_input_embeddings().weight
        assert loaded.get_output_embeddings().weight.data_ptr() == emb.data_ptr()
    assert torch.equal(_logits(loaded), want)
