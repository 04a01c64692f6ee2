"""Checks that need a CUDA device: saving GPU tensors, loading straight onto a
device. Skipped where torch sees no GPU (CI has none); run on a GPU machine with
`python -m pytest tests/test_gpu.py`."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

import hermetic  # noqa: E402


def _tree(device: str) -> dict[str, object]:
    g = torch.Generator(device="cpu").manual_seed(0)
    w = torch.randn(64, 32, generator=g).to(device)
    return {
        "w": w,
        "tied": w,
        "view": w[8:16].t(),
        "bf16": torch.randn(16, generator=g).to(device=device, dtype=torch.bfloat16),
        "step": 3,
    }


def test_save_gpu_tensors_and_load_on_cpu(tmp_path: Path) -> None:
    tree = _tree("cuda")
    p = tmp_path / "gpu.safetensors"
    hermetic.save(tree, p)
    out = hermetic.load(p)
    assert out["w"].device.type == "cpu"
    assert torch.equal(out["w"], tree["w"].cpu())
    assert torch.equal(out["bf16"], tree["bf16"].cpu())
    assert out["tied"] is out["w"]


def test_load_straight_onto_the_device(tmp_path: Path) -> None:
    tree = _tree("cpu")
    p = tmp_path / "cpu.safetensors"
    hermetic.save(tree, p)
    out = hermetic.load(p, device="cuda")
    for key in ("w", "view", "bf16"):
        assert out[key].device.type == "cuda"
        assert torch.equal(out[key].cpu(), tree[key])
    assert out["tied"] is out["w"]
    assert out["view"].untyped_storage().data_ptr() == out["w"].untyped_storage().data_ptr()
    with hermetic.open(p) as h:
        assert h.get("bf16", device="cuda").device.type == "cuda"


def test_torch_load_map_location(tmp_path: Path) -> None:
    hermetic_torch = pytest.importorskip("hermetic.torch")
    sd = {k: v for k, v in _tree("cpu").items() if k != "step"}
    p = tmp_path / "ckpt.pt"
    torch.save(sd, p)
    ours = hermetic_torch.load(p, map_location="cuda")
    ref = torch.load(p, map_location="cuda", weights_only=True)
    for key in ref:
        assert ours[key].device == ref[key].device
        assert torch.equal(ours[key], ref[key])
