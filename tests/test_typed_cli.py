"""`hermetic inspect` on files with class records, enums, callables and
standard-library values: recorded class names and fields, text and JSON."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import functools
import json
import subprocess
import sys
from pathlib import Path

import torch

import hermetic


class Norm(enum.Enum):
    RMS = "rms"


@dataclasses.dataclass
class Cfg:
    d_model: int
    norm: Norm
    activation: object
    when: datetime.date


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hermetic", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_inspect_shows_recorded_classes_and_fields(tmp_path: Path) -> None:
    p = tmp_path / "c.safetensors"
    cfg = Cfg(64, Norm.RMS, torch.nn.functional.gelu, datetime.date(2024, 5, 1))
    partial = functools.partial(torch.nn.functional.softmax, dim=-1)
    hermetic.save({"cfg": cfg, "more": [cfg, Cfg(1, Norm.RMS, None, cfg.when)], "p": partial}, p)
    out = run("inspect", p)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "format: hermetic tree v2 on safetensors" in text
    assert "classes (rebuilt only from the loader's type= or allow=):" in text
    assert f"object    {__name__}:Cfg (2x) fields: d_model, norm, activation, when" in text
    assert f"enum      {__name__}:Norm (2x)" in text
    assert "callable  torch._C._nn:gelu" in text
    assert "callable  torch.nn.functional:softmax" in text
    assert f'"cfg": {__name__}:Cfg(\n' in text
    assert "d_model: 64" in text
    assert f'norm: {__name__}:Norm("rms")' in text
    assert "activation: <function or class torch._C._nn:gelu>" in text
    assert "when: date(2024-05-01)" in text
    assert "<same object as #" in text
    assert '"p": functools.partial(torch.nn.functional:softmax,\n' in text
    assert "dim: -1" in text

    doc = json.loads(run("inspect", "--json", p).stdout)
    assert doc["version"] == 2
    assert doc["classes"][0] == {
        "kind": "object",
        "name": f"{__name__}:Cfg",
        "count": 2,
        "fields": ["d_model", "norm", "activation", "when"],
    }
    kinds = {(c["kind"], c["name"]) for c in doc["classes"]}
    assert ("enum", f"{__name__}:Norm") in kinds
    assert ("callable", "torch._C._nn:gelu") in kinds
    assert doc["tree"]["$dict"][1]["$object"][0] == f"{__name__}:Cfg"


def test_inspect_of_a_plain_file_has_no_classes(tmp_path: Path) -> None:
    p = tmp_path / "c.safetensors"
    hermetic.save({"w": torch.ones(2)}, p)
    out = run("inspect", p)
    assert "tree v1" in out.stdout and "classes" not in out.stdout
    assert json.loads(run("inspect", "--json", p).stdout)["classes"] == []
