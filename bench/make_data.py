"""Generate the benchmark data in bench/data/ with the real libraries (torch, numpy, joblib).

    ~/.cache/hermetic/venv/bin/python bench/make_data.py          # 200 small files
    ~/.cache/hermetic/venv/bin/python bench/make_data.py --big    # and the 50 MB / 500 MB ones

bench_scan.py calls this itself when data is missing or stale. Everything is seeded, so a
regeneration gives the same tensors and the same mix of files.

The 200-file folder (bench/data/small/) holds what a model directory accumulates:

- 90 state dicts of small MLPs in torch's zip format (.pt / .pth),
- 25 of them in the legacy (pre-1.6) format (.bin),
- 15 optimizer states and 15 training checkpoints (model + optimizer + RNG state),
- 10 whole pickled models (5 torch-only nn.Sequential, 5 with a class from a research package),
- 20 np.save files (15 numeric, 5 object arrays, which numpy stores as a pickle),
- 10 raw pickles and 5 joblib dumps of configs and arrays,
- 10 malicious files: a `__reduce__` payload inside a raw pickle, a zip checkpoint, a legacy
  checkpoint, an object .npy and a joblib dump.

The payloads are harmless even if something did load them (`os.system(":")`, `eval("0")`,
`exec("pass")`, `subprocess.getoutput(":")`), and nothing here loads them: pickling an object
with `__reduce__` only records the call. manifest.json labels every file (benign, model,
malicious) so bench_scan.py can count what each scanner flags.

The big checkpoints (bench/data/big/) are GPT-2-small-shaped state dicts (148 float32 tensors):
gpt2_500mb.pt has GPT-2 small's real shapes (124M parameters, ~498 MB); gpt2_50mb.pt has the
same keys and tensor count with d_model 240 and a 16,000-token vocabulary (~50 MB).
"""

from __future__ import annotations

import argparse
import builtins
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import gpt2_layout

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
SMALL_DIR = DATA / "small"
BIG_DIR = DATA / "big"
MANIFEST = DATA / "manifest.json"

# Bump when the mix or the generator changes, so stale data is regenerated.
GENERATOR_VERSION = 1
SEED = 20240601

# name -> (d_model, vocab) for the big checkpoints, smallest first; 12 layers and 1024
# positions for both.
BIG_SPECS: dict[str, tuple[int, int]] = {
    "gpt2_50mb.pt": (240, 16000),
    "gpt2_500mb.pt": (768, 50257),
}
GPT2_LAYERS = 12
GPT2_POSITIONS = 1024


class Payload:
    """An object whose pickle calls `func(arg)` on load. Pickling it calls nothing."""

    def __init__(self, func: Callable[[str], Any], arg: str) -> None:
        self.func = func
        self.arg = arg

    def __reduce__(self) -> tuple[Callable[[str], Any], tuple[str]]:
        return (self.func, (self.arg,))


# Each is a no-op if it ever ran.
PAYLOADS: list[tuple[Callable[[str], Any], str]] = [
    (os.system, ":"),
    (builtins.eval, "0"),
    (builtins.exec, "pass"),
    (subprocess.getoutput, ":"),
]


def _payload(i: int) -> Payload:
    func, arg = PAYLOADS[i % len(PAYLOADS)]
    return Payload(func, arg)


def _mlp_state(torch: Any, nn: Any, rng: Any) -> dict[str, Any]:
    """The state dict of a small MLP with 2-4 linear layers (4-8 tensors)."""
    depth = int(rng.integers(2, 5))
    widths = [int(w) for w in rng.choice([8, 16, 32, 64], size=depth + 1)]
    layers: list[Any] = []
    for a, b in zip(widths, widths[1:], strict=False):
        layers += [nn.Linear(a, b), nn.ReLU()]
    state: dict[str, Any] = nn.Sequential(*layers[:-1]).state_dict()
    return state


def _register_research_module(cls: type) -> None:
    """Make `cls` importable as research.models.<name>, as a class in a user's package is."""
    pkg = sys.modules.setdefault("research", types.ModuleType("research"))
    mod = sys.modules.setdefault("research.models", types.ModuleType("research.models"))
    pkg.models = mod  # type: ignore[attr-defined]
    cls.__module__ = "research.models"
    setattr(mod, cls.__name__, cls)


def make_small(out: Path = SMALL_DIR) -> dict[str, dict[str, str]]:
    """Write the 200 small files into `out` (emptied first); return name -> {kind, label}."""
    import joblib
    import numpy as np
    import torch
    from torch import nn

    class ResearchNet(nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.encoder = nn.Linear(16, width)
            self.head = nn.Linear(width, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.head(torch.relu(self.encoder(x)))
            return out

    ResearchNet.__qualname__ = "ResearchNet"
    _register_research_module(ResearchNet)

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    files: dict[str, dict[str, str]] = {}

    def add(name: str, kind: str, label: str) -> Path:
        files[name] = {"kind": kind, "label": label}
        return out / name

    def seeded(i: int) -> Any:
        torch.manual_seed(SEED + i)
        return np.random.default_rng(SEED + i)

    n = 0
    for i in range(90):
        rng = seeded(n)
        n += 1
        ext = ".pt" if i % 2 == 0 else ".pth"
        torch.save(_mlp_state(torch, nn, rng), add(f"sd_zip_{i:03d}{ext}", "zip_state", "benign"))
    for i in range(25):
        rng = seeded(n)
        n += 1
        path = add(f"sd_legacy_{i:03d}.bin", "legacy_state", "benign")
        torch.save(_mlp_state(torch, nn, rng), path, _use_new_zipfile_serialization=False)
    for i in range(30):
        seeded(n)
        n += 1
        model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
        opt: torch.optim.Optimizer
        if i % 2 == 0:
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        else:
            opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        model(torch.randn(4, 16)).sum().backward()
        opt.step()
        if i < 15:
            torch.save(opt.state_dict(), add(f"optim_{i:03d}.pt", "optimizer_state", "benign"))
        else:
            ckpt = {
                "model": model.state_dict(),
                "optim": opt.state_dict(),
                "epoch": i,
                "rng": torch.get_rng_state(),
            }
            torch.save(ckpt, add(f"train_{i:03d}.ckpt", "training_checkpoint", "benign"))
    for i in range(10):
        seeded(n)
        n += 1
        whole: nn.Module
        if i < 5:
            whole = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 4))
            name = f"model_seq_{i:03d}.pt"
        else:
            whole = ResearchNet(32)
            name = f"model_research_{i:03d}.pt"
        torch.save(whole, add(name, "whole_model", "model"))
    for i in range(20):
        rng = seeded(n)
        n += 1
        if i < 15:
            arr = rng.standard_normal((int(rng.integers(4, 64)), 32)).astype(np.float32)
            np.save(add(f"array_{i:03d}.npy", "numpy", "benign"), arr)
        else:
            obj = np.array([f"label-{j}" for j in range(8)] + [j for j in range(8)], dtype=object)
            np.save(add(f"objects_{i:03d}.npy", "numpy_object", "benign"), obj, allow_pickle=True)
    for i in range(10):
        rng = seeded(n)
        n += 1
        config = {
            "lr": float(rng.uniform(1e-4, 1e-2)),
            "layers": [int(x) for x in rng.integers(8, 128, size=4)],
            "name": f"run-{i}",
            "mean": rng.standard_normal(16).astype(np.float32),
        }
        with add(f"config_{i:03d}.pkl", "raw_pickle", "benign").open("wb") as f:
            pickle.dump(config, f, protocol=2 + i % 4)
    for i in range(5):
        rng = seeded(n)
        n += 1
        arrays = {"w": rng.standard_normal((64, 16)), "b": rng.standard_normal(16)}
        joblib.dump(arrays, add(f"features_{i:03d}.joblib", "joblib", "benign"))
    # Malicious: a payload object next to ordinary data, the way an injected checkpoint looks.
    for i in range(3):
        seeded(n)
        n += 1
        with add(f"evil_raw_{i:03d}.pkl", "raw_pickle", "malicious").open("wb") as f:
            pickle.dump({"weights": [0.1, 0.2], "hook": _payload(i)}, f, protocol=[0, 2, 4][i])
    for i in range(3):
        seeded(n)
        n += 1
        state = {"w": torch.randn(8, 8), "hook": _payload(i + 1)}
        torch.save(state, add(f"evil_zip_{i:03d}.pt", "zip_state", "malicious"))
    for i in range(2):
        seeded(n)
        n += 1
        state = {"w": torch.randn(8, 8), "hook": _payload(i + 2)}
        path = add(f"evil_legacy_{i:03d}.bin", "legacy_state", "malicious")
        torch.save(state, path, _use_new_zipfile_serialization=False)
    seeded(n)
    n += 1
    evil_obj = np.array(["a", _payload(0)], dtype=object)
    np.save(add("evil_objects_000.npy", "numpy_object", "malicious"), evil_obj, allow_pickle=True)
    rng = seeded(n)
    n += 1
    evil_joblib = {"w": rng.standard_normal((8, 8)), "hook": _payload(3)}
    joblib.dump(evil_joblib, add("evil_features_000.joblib", "joblib", "malicious"))
    assert len(files) == 200, len(files)
    return files


def gpt2_state(torch: Any, d: int, vocab: int, gen: Any) -> dict[str, Any]:
    """A GPT-2-style state dict (HF key names, Conv1D layout): 148 float32 tensors."""
    make = {
        "w": lambda *shape: torch.randn(*shape, generator=gen) * 0.02,
        "ones": lambda *shape: torch.ones(*shape),
        "zeros": lambda *shape: torch.zeros(*shape),
    }
    return {
        name: make[init](*shape)
        for name, shape, init in gpt2_layout(d, vocab, GPT2_POSITIONS, GPT2_LAYERS)
    }


def make_big(names: list[str], out: Path = BIG_DIR) -> dict[str, dict[str, Any]]:
    """Write the named GPT-2-shaped checkpoints; return name -> {params, tensors, bytes, ...}."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    info: dict[str, dict[str, Any]] = {}
    for name in names:
        d, vocab = BIG_SPECS[name]
        gen = torch.Generator().manual_seed(SEED + 1000 + list(BIG_SPECS).index(name))
        sd = gpt2_state(torch, d, vocab, gen)
        path = out / name
        tmp = path.with_suffix(".tmp")
        torch.save(sd, tmp)
        tmp.replace(path)
        info[name] = {
            "d_model": d,
            "vocab": vocab,
            "tensors": len(sd),
            "params": sum(t.numel() for t in sd.values()),
            "bytes": path.stat().st_size,
        }
        del sd
    return info


def _read_manifest() -> dict[str, Any]:
    try:
        data = json.loads(MANIFEST.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != GENERATOR_VERSION:
        return {}
    return data


def _write_manifest(data: dict[str, Any]) -> None:
    data["version"] = GENERATOR_VERSION
    buf = io.StringIO()
    json.dump(data, buf, indent=2, sort_keys=True)
    tmp = MANIFEST.with_suffix(".tmp")
    tmp.write_text(buf.getvalue() + "\n")
    tmp.replace(MANIFEST)


def ensure_data(
    big: list[str], force: bool = False, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Generate the small folder and the named big checkpoints where missing or stale.

    Returns the manifest: {"small": {name: {kind, label}}, "big": {name: {bytes, ...}}}.
    """
    DATA.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {} if force else _read_manifest()
    small = manifest.get("small")
    if not small or any(not (SMALL_DIR / n).is_file() for n in small):
        log(f"generating 200 small files in {SMALL_DIR.relative_to(HERE.parent)} ...")
        manifest["small"] = make_small()
        _write_manifest(manifest)
    big_info: dict[str, Any] = manifest.setdefault("big", {})
    stale = [
        n
        for n in big
        if n not in big_info
        or not (BIG_DIR / n).is_file()
        or (BIG_DIR / n).stat().st_size != big_info[n]["bytes"]
    ]
    if stale:
        log(f"generating {', '.join(stale)} in {BIG_DIR.relative_to(HERE.parent)} ...")
        big_info.update(make_big(stale))
        _write_manifest(manifest)
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", action="store_true", help="also the 50 MB and 500 MB files")
    parser.add_argument("--force", action="store_true", help="regenerate even if present")
    args = parser.parse_args()
    big = list(BIG_SPECS) if args.big else []
    manifest = ensure_data(big=big, force=args.force)
    print(f"{len(manifest['small'])} small files in {SMALL_DIR}")
    for name in big:
        info = manifest["big"][name]
        print(f"{BIG_DIR / name}: {info['bytes'] / 1e6:.1f} MB, {info['tensors']} tensors")


if __name__ == "__main__":
    main()
