"""Names in a hermetic file resolve only through closed tables (docs/SPEC.md
6.2, 6.4 and 10.8): a dtype, device, numpy type or class name that a file
holds is never looked up as an attribute of torch or numpy, never imported.

Each file is written by the real writer and then has one name in its tree
replaced (the header is JSON, so this is a small rewrite). Every load runs in
a fresh interpreter, which reports what was raised and which modules the load
added to ``sys.modules``: ``getattr(torch, "_dynamo")`` alone imports
hundreds of modules, so "none at all" is the check.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import hermetic


@dataclasses.dataclass
class Cfg:
    lr: float


def act(x: float) -> float:
    return x


# ------------------------------------------------------------------ rewriting files


def rewrite_tree(blob: bytes, edit: Callable[[Any], Any]) -> bytes:
    """``blob`` with its hermetic tree replaced by ``edit(tree)`` (tensor data,
    entries and digests unchanged; the header stays 8-byte aligned)."""
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8 : 8 + n])
    doc = json.loads(header["__metadata__"]["__hermetic__"])
    doc["tree"] = edit(doc["tree"])
    header["__metadata__"]["__hermetic__"] = json.dumps(doc)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + blob[8 + n :]


def replace(tree: Any, old: Any, new: Any) -> Any:
    """The tree with every JSON value equal to ``old`` replaced by ``new``."""
    if tree == old and type(tree) is type(old):
        return new
    if isinstance(tree, list):
        return [replace(x, old, new) for x in tree]
    if isinstance(tree, dict):
        return {k: replace(v, old, new) for k, v in tree.items()}
    return tree


def hostile(tmp_path: Path, obj: Any, old: Any, new: Any, name: str) -> str:
    """A file of ``obj`` by the real writer, with ``old`` in its tree replaced by ``new``."""

    def edit(tree: Any) -> Any:
        out = replace(tree, old, new)
        assert out != tree, (old, tree)
        return out

    p = tmp_path / f"{name}.safetensors"
    p.write_bytes(rewrite_tree(hermetic.dumps(obj), edit))
    return str(p)


# ------------------------------------------------------------------ the child process

CHILD = textwrap.dedent(
    """
    import dataclasses, json, sys
    import numpy, torch
    import hermetic

    @dataclasses.dataclass
    class Cfg:
        lr: float

    def load(path, how):
        if how == "load":
            return hermetic.load(path)
        if how == "numpy":
            return hermetic.load(path, framework="numpy")
        if how == "tree":
            with hermetic.open(path) as h:
                return h.tree
        if how == "type":
            return hermetic.load(path, type=dict[str, Cfg])
        if how == "plain":
            return hermetic.load(path, plain=True)
        if how == "allow_torch":
            return hermetic.load(path, allow=["torch:*"])
        raise AssertionError(how)

    warm, cases = json.loads(sys.argv[1])
    # Every code path a load takes, once, before counting modules.
    for path, how in warm:
        load(path, how)
    # hermetic's own modules load on first use (a refusal's hint scans the
    # file); only modules a name in a file could reach are counted.
    import hermetic._scan
    before = set(sys.modules)
    out = []
    for path, how in cases:
        try:
            load(path, how)
            outcome = ["ok", ""]
        except Exception as e:
            outcome = [type(e).__name__, str(e)]
        out.append(outcome + [sorted(set(sys.modules) - before)])
    print(json.dumps(out))
    """
)


def run_child(warm: list[tuple[str, str]], cases: list[tuple[str, str]]) -> list[Any]:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    r = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps([warm, cases])],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


# Names that reach torch's lazy submodules (or other attributes that are not
# dtypes) when looked up with getattr, and names that are not names at all.
HOSTILE_NAMES = [
    "_inductor",
    "_dynamo",
    "onnx",
    "nn",
    "distributed",
    "__class__",
    "Tensor",
    "dtype",
    "nn.functional",
    "_C._nn",
    "float32.__class__",
    "",
]

MODULES = ["torch._inductor", "torch._dynamo", "torch.onnx"]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str, str], Any]:
    """Every hostile case, loaded in one fresh interpreter: (kind, name, how) ->
    (exception class, message, modules added)."""
    tmp = tmp_path_factory.mktemp("closed")
    base = {"w": torch.ones(2)}
    warm_obj = {
        "w": torch.ones(2),
        "dt": torch.bfloat16,
        "dev": torch.device("cpu"),
        "a": np.arange(3, dtype=">f4"),
        "s": np.float32(1.5),
    }
    warm_path = tmp / "warm.safetensors"
    hermetic.save(warm_obj, warm_path)
    warm_cfg = tmp / "warm_cfg.safetensors"
    hermetic.save({"c": Cfg(0.5), "f": act}, warm_cfg)
    warm_typed = tmp / "warm_typed.safetensors"
    hermetic.save({"c": Cfg(0.5)}, warm_typed)
    warm = [
        (str(warm_path), "load"),
        (str(warm_path), "numpy"),
        (str(warm_path), "tree"),
        (str(warm_typed), "type"),
        (str(warm_cfg), "plain"),
    ]
    cases: list[tuple[str, str, str, str]] = []  # (kind, name, how, path)

    def add(kind: str, name: Any, path: str, hows: list[str]) -> None:
        for how in hows:
            cases.append((kind, json.dumps(name), how, path))

    for i, name in enumerate(HOSTILE_NAMES):
        p = hostile(
            tmp,
            {**base, "dt": torch.float32},
            {"$torch_dtype": "float32"},
            {"$torch_dtype": name},
            f"dtype{i}",
        )
        add("torch_dtype", name, p, ["load", "tree"])
    for i, name in enumerate(["_inductor", "onnx:0", "_dynamo", "npu:0", "cuda:-1", "cpu.x"]):
        p = hostile(
            tmp,
            {**base, "dev": torch.device("cpu")},
            {"$torch_device": "cpu"},
            {"$torch_device": name},
            f"device{i}",
        )
        add("torch_device", name, p, ["load", "tree"])
    np_names: list[Any] = [
        "float64",
        "object",
        "O",
        "|O",
        "T",
        "f4,i4",
        "numpy.core.multiarray",
        ">f4 ",
        "rational",
        [["x", "object"]],
        [["x", "<f4"], ["y", "float64"]],
        [[["title", "x"], "O"]],
    ]
    for i, name in enumerate(np_names):
        p = hostile(tmp, {**base, "a": np.arange(3, dtype=">f4")}, ">f4", name, f"np{i}")
        add("np_dtype", name, p, ["load", "numpy"])
        p = hostile(tmp, {**base, "s": np.float32(1.5)}, "<f4", name, f"scalar{i}")
        add("np_scalar", name, p, ["load"])
    here = f"{__name__}:Cfg"
    for i, name in enumerate(
        [
            "torch:_dynamo",
            "torch:onnx",
            "torch:_inductor",
            "torch._dynamo:Cfg",
            "torch:nn.Module",
            "torch:__class__",
            "torch:_inductor.config",
        ]
    ):
        p = hostile(tmp, {"c": Cfg(0.1)}, here, name, f"class{i}")
        add("class", name, p, ["allow_torch", "type", "plain", "load"])
    for i, name in enumerate(["torch:_dynamo", "torch:onnx", "torch:_inductor.config"]):
        p = hostile(tmp, {"f": act}, f"{__name__}:act", name, f"callable{i}")
        add("callable", name, p, ["allow_torch"])

    results = run_child(warm, [(path, how) for *_, how, path in cases])
    return {(kind, name, how): r for (kind, name, how, _), r in zip(cases, results, strict=True)}


def test_no_load_imports_anything(outcomes: dict[tuple[str, str, str], Any]) -> None:
    added = {k: v[2] for k, v in outcomes.items() if v[2]}
    assert not added, added
    assert len(outcomes) > 100


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_torch_dtype_names(outcomes: dict[tuple[str, str, str], Any], name: str) -> None:
    for how in ("load", "tree"):
        exc, msg, _ = outcomes["torch_dtype", json.dumps(name), how]
        assert exc == "FormatError", (how, msg)
        assert "dtype" in msg and ".safetensors" in msg and 'tree["dt"]' in msg, msg
        assert "expected one of" in msg and "bfloat16" in msg, msg


def test_torch_devices(outcomes: dict[tuple[str, str, str], Any]) -> None:
    for (kind, name, how), (exc, msg, _) in outcomes.items():
        if kind == "torch_device":
            assert exc == "FormatError", (name, how, msg)
            assert 'tree["dev"]' in msg and "is not a torch device" in msg, msg
            assert "expected a type (cpu, cuda" in msg, msg


def test_np_dtypes(outcomes: dict[tuple[str, str, str], Any]) -> None:
    for (kind, name, how), (exc, msg, _) in outcomes.items():
        if kind in ("np_dtype", "np_scalar"):
            assert exc == "FormatError", (kind, name, how, msg)
            key = "a" if kind == "np_dtype" else "s"
            # The builder names dict keys by repr, the parser by JSON.
            assert f'tree["{key}"]' in msg or f"tree['{key}']" in msg, msg
            assert ".safetensors" in msg, msg
            assert "np_dtype" in msg, msg
            assert "expected" in msg or "object dtypes cannot be loaded" in msg, msg


def test_class_names_never_resolve_outside_the_callers_tables(
    outcomes: dict[tuple[str, str, str], Any],
) -> None:
    for (kind, name, how), (exc, msg, _) in outcomes.items():
        if kind != "class":
            continue
        if how in ("type", "plain"):
            # type= rebuilds from the caller's annotations, whatever the file
            # calls the class; plain= resolves nothing.
            assert exc == "ok", (name, how, msg)
        else:
            assert exc == "ClassNotAllowedError", (name, how, msg)
            assert json.loads(name) in msg, msg
    for (kind, name, _how), (exc, msg, _) in outcomes.items():
        if kind == "callable":
            assert exc == "ClassNotAllowedError", (name, msg)
            assert json.loads(name) in msg and "nothing is imported" in msg, msg


def test_modules_were_importable(outcomes: dict[tuple[str, str, str], Any]) -> None:
    """The check is meaningful: what the old reader did imports these modules."""
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, torch; getattr(torch, '_dynamo'); getattr(torch, 'onnx');"
            f"print(all(m in sys.modules for m in {MODULES[1:]!r}))",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )
    assert r.stdout.strip() == "True", r.stderr


def test_every_torch_dtype_round_trips() -> None:
    # Every dtype (and alias) this torch has is in the closed table.
    dtypes = [v for v in vars(torch).values() if isinstance(v, torch.dtype)]
    out = hermetic.loads(hermetic.dumps({"d": dtypes}))
    assert out["d"] == dtypes


def test_writer_refuses_a_device_a_reader_rejects() -> None:
    script = textwrap.dedent(
        """
        import torch, hermetic
        torch.utils.rename_privateuse1_backend("hermetictest")
        try:
            hermetic.dumps({"d": torch.device("hermetictest:0")})
        except hermetic.FormatError as e:
            print(e)
        """
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert 'cannot save tree["d"]' in r.stdout and "device type" in r.stdout, r.stdout + r.stderr
