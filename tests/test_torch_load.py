"""hermetic.torch.load against torch.load on the benign corpus: same structure
and types, same tensors (dtype, shape, stride, storage offset, bytes,
Parameter, requires_grad), same storage sharing, in both mmap modes."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from evaluate_compare import assert_same

import hermetic
from corpus import benign_files

TORCH_FILES = [p for p, verdict, _ in benign_files() if p.suffix == ".pt" and verdict == "safe"]
WHOLE_MODELS = [p for p, verdict, _ in benign_files() if verdict == "suspicious"]


def torch_load(source: Any, **kw: Any) -> Any:
    # The benign corpus was written by this project's generator; opening it
    # with the real unpickler is safe, and weights_only=False is the reference.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(source, weights_only=False, **kw)


def quiet_load(source: Any, **kw: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ComplexHalf is "experimental"
        return hermetic.torch.load(source, **kw)


@pytest.mark.parametrize("mmap", [True, False], ids=["mmap", "copy"])
@pytest.mark.parametrize("path", TORCH_FILES, ids=[p.name for p in TORCH_FILES])
def test_equals_torch_load(path: Path, mmap: bool) -> None:
    assert_same(quiet_load(path, mmap=mmap), torch_load(path))


@pytest.mark.parametrize("path", TORCH_FILES, ids=[p.name for p in TORCH_FILES])
def test_equals_weights_only_from_a_file_object(path: Path) -> None:
    data = path.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = torch.load(io.BytesIO(data), weights_only=True)
    assert_same(quiet_load(io.BytesIO(data)), reference)
    assert_same(quiet_load(data), reference)


def test_tied_weights_and_views_stay_shared() -> None:
    sd = quiet_load(next(p for p in TORCH_FILES if p.name == "transformer_state_zip.pt"))
    assert sd["embed.weight"].untyped_storage().data_ptr() == (
        sd["head.weight"].untyped_storage().data_ptr()
    )
    v = quiet_load(next(p for p in TORCH_FILES if p.name == "views_tied.pt"))
    assert v["base"] is v["alias"]
    base_ptr = v["base"].untyped_storage().data_ptr()
    for k in ("flat_view", "row_slice", "col_slice", "transposed"):
        assert v[k].untyped_storage().data_ptr() == base_ptr, k
    v["base"][0, 0] = 100.0
    assert v["transposed"][0, 0] == 100.0


def test_parameters_keep_type_grad_and_state() -> None:
    p = quiet_load(next(p for p in TORCH_FILES if p.name == "parameters.pt"))
    assert type(p["trained"]) is torch.nn.Parameter and p["trained"].requires_grad
    assert type(p["frozen"]) is torch.nn.Parameter and not p["frozen"].requires_grad
    assert p["tagged"].lr_scale == 0.5
    assert p["trained"] is p["trained_again"]


def test_mmap_is_zero_copy_private_and_writable(tmp_path: Path) -> None:
    src = next(p for p in TORCH_FILES if p.name == "transformer_state_zip.pt")
    path = tmp_path / "ckpt.pt"
    path.write_bytes(src.read_bytes())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    sd = quiet_load(path, mmap=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = torch.load(path, weights_only=True, mmap=True)
    # torch.load(mmap=True) slices one map of the file; so does hermetic:
    # every storage sits at the same distance from the others.
    ptrs = {k: t.untyped_storage().data_ptr() for k, t in sd.items()}
    ref_ptrs = {k: t.untyped_storage().data_ptr() for k, t in ref.items()}
    assert {k: p - min(ptrs.values()) for k, p in ptrs.items()} == {
        k: p - min(ref_ptrs.values()) for k, p in ref_ptrs.items()
    }
    # Writable, and writes never reach the file.
    for t in sd.values():
        if t.dtype.is_floating_point:
            t.add_(1)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert_same(quiet_load(path), torch_load(path))


def test_map_location() -> None:
    path = next(p for p in TORCH_FILES if p.name == "mlp_state_zip.pt")
    meta = quiet_load(path, map_location="meta")
    assert all(t.device.type == "meta" for t in meta.values())
    cpu = quiet_load(path, map_location={"cpu": "cpu"})
    assert all(t.device.type == "cpu" for t in cpu.values())
    seen = []

    def ml(storage: Any, location: str) -> Any:
        seen.append(location)
        return storage

    quiet_load(path, map_location=ml)
    assert seen and set(seen) == {"cpu"}


@pytest.mark.parametrize("path", WHOLE_MODELS, ids=[p.name for p in WHOLE_MODELS])
def test_whole_models_are_refused_with_every_class(path: Path) -> None:
    with pytest.raises(hermetic.UnsafePickleError) as e:
        hermetic.torch.load(path)
    assert "fixture_models.TinyNet" in e.value.imports
    assert "torch.nn.modules.linear.Linear" in e.value.imports
    assert "hermetic inspect" in str(e.value)


def test_plain_pickles_are_not_checkpoints(tmp_path: Path) -> None:
    p = tmp_path / "x.pkl"
    p.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(hermetic.CheckpointError, match="magic number"):
        hermetic.torch.load(p)
    with pytest.raises(FileNotFoundError):
        hermetic.torch.load(tmp_path / "missing.pt")


def test_big_endian_zip_checkpoint(tmp_path: Path) -> None:
    """A checkpoint whose byteorder record says `big`: torch byte-swaps every
    storage on load (complex numbers half by half); so must hermetic."""
    src = next(p for p in TORCH_FILES if p.name == "all_dtypes.pt")
    out = tmp_path / "be.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("/byteorder"):
                data = b"big"
            zout.writestr(info, data)
    reference = torch_load(out)
    assert not torch.equal(reference["float32"], torch_load(src)["float32"])
    assert_same(quiet_load(out), reference)
    assert_same(quiet_load(out, mmap=False), reference)


def _edge_cases() -> dict[str, Any]:
    c = torch.tensor([1 + 2j, 3 - 1j])
    return {
        "conj_neg": {"c": c.conj(), "n": torch._neg_view(torch.tensor([1.0, 2.0]))},
        "meta": {"m": torch.empty(3, 4, device="meta")},
        "values": {
            "size": torch.Size([2, 3]),
            "dtype": torch.bfloat16,
            "cpu": torch.device("cpu"),
            "cuda1": torch.device("cuda", 1),
            "layout": torch.strided,
            "qdtype": torch.qint8,
        },
        "nested": [torch.ones(2), (torch.zeros(1), {"x": torch.arange(3)}), {1: torch.ones(1)}],
        "grad": {"g": torch.ones(2, requires_grad=True)},
        "numpy": {"a": np.arange(3.0), "s": np.float32(1.5), "be": np.array([1, 2], ">i4")},
        "channels_last": {"t": torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last)},
        "new_dtypes": {
            "u16": torch.tensor([1, 2], dtype=torch.uint16),
            "f8": torch.tensor([1.0]).to(torch.float8_e4m3fn),
        },
    }


EDGE = _edge_cases()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("name", sorted(EDGE))
def test_edge_cases_equal_torch_load(name: str, legacy: bool) -> None:
    buf = io.BytesIO()
    try:
        torch.save(EDGE[name], buf, _use_new_zipfile_serialization=not legacy)
        reference = torch_load(io.BytesIO(buf.getvalue()))
    except (AttributeError, RuntimeError, TypeError):
        pytest.skip("torch itself cannot round-trip this in this format")
    assert_same(quiet_load(buf.getvalue()), reference)
    assert_same(quiet_load(buf.getvalue(), mmap=False), reference)


def test_import_hermetic_does_not_import_torch() -> None:
    code = (
        "import sys, hermetic, hermetic.torch; "
        "hermetic.load_pickle(b'\\x80\\x04K\\x01.'); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
