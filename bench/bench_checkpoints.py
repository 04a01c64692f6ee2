"""Checkpoints as frameworks write them (tests/fixtures/checkpoints/, made by
tests/fixtures/make_checkpoints.py): which loaders read each one, whether hermetic's value
equals the real loader's, and load times against the real loader, in one run.

Run:  python bench/bench_checkpoints.py [--repeats 7]

Columns: `torch.load(weights_only=True)`; the same inside `torch.serialization.safe_globals`
with the file's allow list (torch's `add_safe_globals` mechanism); hermetic (hermetic.torch.load
for torch files, hermetic.load_pickle otherwise) without and with `allow=` (the same list);
whether hermetic's value equals the real loader's (`torch.load(weights_only=False)`,
`joblib.load`, `numpy.load(allow_pickle=True)` or `pickle.load`: types, attributes, tensors and
arrays bitwise, sharing); best and median load time of each. Needs the frameworks the
fixtures came from (lightning, omegaconf, transformers, accelerate, scikit-learn): the real
loaders import their classes. The fixtures are our own files, so running the real loaders on
them is safe.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pickle
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import hermetic
import hermetic.torch as ht

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "checkpoints"
sys.path.insert(0, str(ROOT / "tests"))

from evaluate_compare import assert_same  # noqa: E402  (tests/ on sys.path)


def resolve(name: str) -> Any:
    module, _, qualname = name.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def real_loader(entry: dict[str, Any], path: Path) -> Callable[[], Any]:
    loader = entry["loader"]
    if loader == "torch.load":
        return lambda: torch.load(path, weights_only=False)
    if loader == "joblib.load":
        import joblib

        return lambda: joblib.load(path)
    if loader == "numpy.load":

        def load_np() -> Any:
            v = np.load(path, allow_pickle=True, encoding=entry.get("encoding", "ASCII"))
            return dict(v) if path.suffix == ".npz" else v

        return load_np

    def load_pickle() -> Any:
        with open(path, "rb") as f:
            return pickle.load(f)

    return load_pickle


def hermetic_loader(entry: dict[str, Any], path: Path, allow: list[Any] | None) -> Any:
    if entry["loader"] == "torch.load":
        return lambda: ht.load(path, allow=allow)
    if entry["loader"] == "joblib.load":
        return lambda: hermetic.joblib.load(path, allow=allow)
    encoding = entry.get("encoding", "ASCII")
    return lambda: hermetic.load_pickle(path, allow=allow, encoding=encoding)


def attempt(fn: Callable[[], Any]) -> tuple[bool, Any, str]:
    try:
        return True, fn(), ""
    except Exception as e:
        return False, None, f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return min(runs), statistics.median(runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "checkpoints.json")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    meta = json.loads((FIXTURES / "CHECKPOINTS.json").read_text())
    rows = []
    for name, entry in sorted(meta["files"].items()):
        path = FIXTURES / name
        names: list[str] = entry["allow"]
        row: dict[str, Any] = {"file": name, "loader": entry["loader"], "allow": names}
        ok_ref, ref, why = attempt(real_loader(entry, path))
        row["real_loader"] = ok_ref or why
        if entry["loader"] == "torch.load":
            row["weights_only"] = attempt(lambda p=path: torch.load(p, weights_only=True))[0]
            objs = [resolve(n) for n in names] if ok_ref else []

            def safe_load(p: Path = path, objs: list[Any] = objs) -> Any:
                with torch.serialization.safe_globals(objs):
                    return torch.load(p, weights_only=True)

            row["weights_only_safe_globals"] = attempt(safe_load)[0]
        else:
            row["weights_only"] = row["weights_only_safe_globals"] = None
        row["hermetic"], _, row["hermetic_error"] = attempt(hermetic_loader(entry, path, None))
        ok_h, got, why_h = attempt(hermetic_loader(entry, path, names))
        row["hermetic_allow"] = ok_h
        row["hermetic_allow_error"] = why_h
        if ok_h and ok_ref:
            eq = attempt(lambda g=got, r=ref: assert_same(g, r))
            row["equal"] = eq[0] or eq[2]
            row["hermetic_s"] = timed(hermetic_loader(entry, path, names), args.repeats)
            row["real_s"] = timed(real_loader(entry, path), args.repeats)
        rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"generated_with": meta["generated_with"], "rows": rows}, indent=1)
    )

    def mark(v: Any) -> str:
        return "—" if v is None else ("yes" if v is True else "no")

    print(
        "| file | real loader | weights_only | + safe_globals | hermetic | hermetic, allow= "
        "| equal | hermetic / real (best, ms) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        t = ""
        if "hermetic_s" in r:
            h, real = r["hermetic_s"][0] * 1e3, r["real_s"][0] * 1e3
            t = f"{h:.2f} / {real:.2f} ({h / real:.2f}x)"
        eq = r.get("equal")
        same = mark(eq) if isinstance(eq, bool) or eq is None else "no"
        print(
            f"| {r['file']} | {r['loader']} | {mark(r['weights_only'])} "
            f"| {mark(r['weights_only_safe_globals'])} | {mark(r['hermetic'])} "
            f"| {mark(r['hermetic_allow'])} | {same} "
            f"| {t} |"
        )
    for r in rows:
        if not r["hermetic_allow"]:
            print(f"- {r['file']}: {r['hermetic_allow_error']}")
        if isinstance(r.get("equal"), str):
            print(f"- {r['file']}: differs: {r['equal']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
