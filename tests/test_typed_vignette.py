"""The research vignette end to end (tests/typed_vignette.py): train, save a
checkpoint holding a ModelConfig dataclass (with an Enum, a tuple and an
activation function) next to model, optimizer and RNG state; a second process
loads it with `hermetic.load(path, type=Checkpoint, allow=[gelu])`, resumes,
and its losses are bit-identical to an uninterrupted run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import hermetic

SCRIPT = Path(__file__).resolve().parent / "typed_vignette.py"


def run(*args: str | Path) -> list[str]:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_resume_in_a_second_process_is_bit_identical(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt.safetensors"
    uninterrupted = run("full", 8)
    first = run("first", ckpt, 4)
    resumed = run("resume", ckpt, 8)
    assert first + resumed == uninterrupted
    assert len(set(uninterrupted)) == 8  # it did train

    # What the file holds, without the script's classes.
    plain = hermetic.load(ckpt, plain=True)
    cfg: dict[str, Any] = plain["config"]
    assert cfg["$class"] == "__main__:ModelConfig"
    assert cfg["norm"] == {"$enum": "__main__:Norm", "value": "rms"}
    assert cfg["betas"] == (0.9, 0.95)
    assert cfg["activation"] == {"$callable": "torch._C._nn:gelu"}
    assert cfg["build_override"] is None
    assert plain["step"] == 4
    with pytest.raises(hermetic.ClassNotAllowedError, match="__main__:ModelConfig"):
        hermetic.load(ckpt)
    # The tensors are plain safetensors entries.
    with hermetic.open(ckpt) as h:
        assert "model.embed.weight" in h.keys()
        assert "optim.state.0.exp_avg" in h.keys()


def test_resume_refuses_an_activation_outside_allow(tmp_path: Path) -> None:
    script = tmp_path / "swap.py"
    script.write_text(
        SCRIPT.read_text().replace(
            "activation: Callable[[torch.Tensor], torch.Tensor] = torch.nn.functional.gelu",
            "activation: Callable[[torch.Tensor], torch.Tensor] = torch.nn.functional.silu",
        )
    )
    ckpt = tmp_path / "ckpt.safetensors"
    subprocess.run([sys.executable, str(script), "first", str(ckpt), "1"], check=True, timeout=300)
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "resume", str(ckpt), "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode != 0
    assert "ClassNotAllowedError" in out.stderr
    assert "torch.nn.functional:silu" in out.stderr
