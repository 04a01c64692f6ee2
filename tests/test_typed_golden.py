"""The version-2 golden file (tests/golden/typed.safetensors, written by
tests/golden/generate_typed.py): it loads to the object that made it, by type
and by allowlist, reads as the plain data docs/SPEC.md section 10.8 defines,
and the writer still produces it byte for byte."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import torch
from _typed_util import document

import hermetic

GOLDEN = Path(__file__).resolve().parent / "golden"
_spec = importlib.util.spec_from_file_location("golden_typed", GOLDEN / "generate_typed.py")
assert _spec and _spec.loader
gen = importlib.util.module_from_spec(_spec)
sys.modules["golden_typed"] = gen
_spec.loader.exec_module(gen)
PATH = GOLDEN / gen.NAME


def check(out: dict[str, Any]) -> None:
    want = gen.tree()
    got, cfg = out["config"], want["config"]
    # Partials compare by identity; compare what they hold.
    assert (got.schedule.func, got.schedule.args, got.schedule.keywords) == (
        cfg.schedule.func,
        cfg.schedule.args,
        cfg.schedule.keywords,
    )
    assert dataclasses.replace(got, schedule=None) == dataclasses.replace(cfg, schedule=None)
    assert out["again"] is out["config"]
    assert out["values"] == want["values"]
    assert torch.equal(out["weights"]["w"], want["weights"]["w"])


def test_writer_output_is_unchanged() -> None:
    assert hermetic.dumps(gen.tree()) == PATH.read_bytes(), (
        "the writer's output changed; if intended, bump the spec and run generate_typed.py"
    )
    assert document(PATH.read_bytes())["version"] == 2


def test_loads_by_type_and_by_allowlist() -> None:
    check(hermetic.load(PATH, type=gen.Golden, allow=gen.ALLOW, verify=True))
    check(hermetic.load(PATH, allow=[*gen.TYPES, *gen.ALLOW]))
    check(hermetic.load(PATH, allow=[*gen.TYPES, "math:sqrt", "_operator:*"]))


def test_plain_reading() -> None:
    out = hermetic.load(PATH, plain=True)
    norm = {"$enum": "golden.typed:Norm", "value": "rms"}
    layer = {"$class": "golden.typed:Layer", "width": 64, "norm": norm}
    cfg = out["config"]
    assert cfg["$class"] == "golden.typed:Config"
    assert cfg["layers"][0] == layer and cfg["layers"][2] == layer
    assert cfg["optim"] == {"$class": "golden.typed:Optim", "lr": 3e-4, "betas": (0.9, 0.95)}
    assert cfg["perm"] == {"$enum": "golden.typed:Perm", "value": 6}
    assert cfg["activation"] == {"$callable": "math:sqrt"}
    assert cfg["schedule"] == {"$partial": "_operator:mul", "args": [0.5], "keywords": {}}
    assert out["again"] is cfg
    # Plain data throughout (the tuple aside): JSON can hold it.
    json.dumps({k: v for k, v in cfg.items() if k != "optim"})
