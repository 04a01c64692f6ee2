"""hermetic.save/load against safetensors.torch and torch.save/torch.load.

    python bench/bench_format.py            # full sizes (~500 MB, ~1.5 GB ...)
    python bench/bench_format.py --quick    # a tenth of the sizes, one repeat

Cases: a GPT-2-small-like state dict (~500 MB fp32), 10,000 small tensors,
~1.5 GB of bf16 tensors, and a training checkpoint (model + AdamW state +
config). For each: save time, peak extra memory during save, eager load time
(the call, then touching every page), and lazy open + one tensor. Files go to
a temporary folder (page cache warm: the loads read what was just written).
Timings are the best of the repeats; on a shared machine they are noisy.
Results go to bench/results/format.json; nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import gpt2_layout, touch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import hermetic

RESULTS = Path(__file__).resolve().parent / "results" / "format.json"


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_extra(fn: Callable[[], Any]) -> tuple[float, int]:
    """(seconds, peak RSS above the starting RSS while fn ran)."""
    gc.collect()
    base = rss()
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss())
            time.sleep(0.001)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    done.set()
    th.join()
    return dt, max(0, peak - base)


def nbytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(nbytes(v) for v in obj)
    return 0


def flatten(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors of a tree under dotted names (what safetensors can store)."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix or "tensor"] = obj.detach().contiguous()
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}.{i}" if prefix else str(i)))
    return out


# ------------------------------------------------------------------ cases


def gpt2_like(scale: float) -> dict[str, torch.Tensor]:
    d, vocab, ctx, layers = 768, int(50257 * scale), 1024, max(1, int(12 * scale))
    g = torch.Generator().manual_seed(0)
    return {
        name: torch.randn(*shape, generator=g)
        for name, shape, _ in gpt2_layout(d, vocab, ctx, layers)
    }


def small_tensors(scale: float) -> dict[str, torch.Tensor]:
    n = 10_000 if scale >= 1 else 2_000
    return {f"t.{i}": torch.full((16,), float(i)) for i in range(n)}


def bf16(scale: float) -> dict[str, torch.Tensor]:
    n = max(1, int(24 * scale))
    return {f"layer.{i}.weight": torch.ones(4096, 8192, dtype=torch.bfloat16) for i in range(n)}


def checkpoint(scale: float) -> dict[str, Any]:
    d = int(1024 * max(scale, 0.25))
    model = torch.nn.Sequential(
        *[
            torch.nn.Sequential(
                torch.nn.Linear(d, 4 * d), torch.nn.GELU(), torch.nn.Linear(4 * d, d)
            )
            for _ in range(4)
        ]
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model(torch.randn(2, d)).sum().backward()
    opt.step()
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "step": 1,
        "epoch": 0,
        "config": {"d_model": d, "lr": 1e-4, "betas": (0.9, 0.999), "name": "bench"},
        "rng": torch.get_rng_state(),
    }


CASES: dict[str, Callable[[float], Any]] = {
    "gpt2_small_state_dict": gpt2_like,
    "10k_small_tensors": small_tensors,
    "bf16_1.5GB": bf16,
    "training_checkpoint": checkpoint,
}


# ------------------------------------------------------------------ runs


def load_time(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(seconds for the call, seconds for the call plus touching every page)."""
    calls, totals = [], []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        obj = fn()
        t1 = time.perf_counter()
        touch(obj)
        t2 = time.perf_counter()
        calls.append(t1 - t0)
        totals.append(t2 - t0)
        del obj
    return min(calls), min(totals)


def run_case(name: str, obj: Any, tmp: Path, repeats: int) -> dict[str, Any]:
    flat = flatten(obj)
    meta = {"config": json.dumps(obj.get("config", {}))} if isinstance(obj, dict) else None
    size = nbytes(obj)
    h_path, hn_path, s_path, t_path = (tmp / f"{name}.{x}" for x in ("h", "hn", "st", "pt"))
    r: dict[str, Any] = {"tensor_bytes": size, "tensors": len(flat)}

    # Round-robin over the tools, each save starting with no dirty pages
    # (sync, untimed): otherwise a save pays for writing back what the one
    # before it left in the page cache, and the order decides the ratios.
    # Use --repeats 4 or more so every tool goes first at least once.
    # Each save goes to a path that does not exist yet (the last run's file
    # is removed, untimed). Replacing a file makes ext4 start writing the new
    # data back inside the rename (hermetic) or the close after truncation
    # (safetensors, torch): a kernel cost, the same for every tool, that
    # swamps the writers' own differences on this VM.
    savers: dict[str, Callable[[], Any]] = {
        "hermetic": lambda: hermetic.save(obj, h_path),
        "hermetic_fsync": lambda: hermetic.save(obj, hn_path, fsync=True),
        "safetensors": lambda: save_file(flat, s_path, metadata=meta),
        "torch": lambda: torch.save(obj, t_path),
    }
    targets = {
        "hermetic": h_path,
        "hermetic_fsync": hn_path,
        "safetensors": s_path,
        "torch": t_path,
    }
    runs: dict[str, list[tuple[float, int]]] = {k: [] for k in savers}
    labels = list(savers)
    for i in range(repeats):
        # Rotate which tool goes first: whoever follows another's save can
        # pay for reclaiming the memory that save used.
        for label in labels[i % len(labels) :] + labels[: i % len(labels)]:
            targets[label].unlink(missing_ok=True)
            os.sync()
            runs[label].append(peak_extra(savers[label]))
    r["save_s"] = {k: min(t for t, _ in v) for k, v in runs.items()}
    r["save_median_s"] = {k: statistics.median(t for t, _ in v) for k, v in runs.items()}
    r["save_runs_s"] = {k: [t for t, _ in v] for k, v in runs.items()}
    r["save_peak_extra_bytes"] = {k: max(p for _, p in v) for k, v in runs.items()}
    r["file_bytes"] = {"hermetic": h_path.stat().st_size, "safetensors": s_path.stat().st_size}

    r["load_s"], r["load_touch_s"] = {}, {}
    for label, fn in {
        "hermetic": lambda: hermetic.load(h_path),
        "hermetic_verify": lambda: hermetic.load(h_path, verify=True),
        "safetensors": lambda: load_file(s_path),
        "torch": lambda: torch.load(t_path),
    }.items():
        r["load_s"][label], r["load_touch_s"][label] = load_time(fn, repeats)

    # Lazy open + one tensor (the middle entry), against safe_open on the
    # same tensors. Each handle is dropped outside the timed region.
    names = list(flat)
    middle = names[len(names) // 2]
    lazy: dict[str, list[float]] = {"hermetic": [], "safetensors": []}
    for _ in range(max(repeats, 20)):
        t0 = time.perf_counter()
        h = hermetic.open(h_path)
        h.get_tensor(middle)
        lazy["hermetic"].append(time.perf_counter() - t0)
        del h
        t0 = time.perf_counter()
        f = safe_open(s_path, "pt")
        f.get_tensor(middle)
        lazy["safetensors"].append(time.perf_counter() - t0)
        del f
    r["lazy_open_one_tensor_s"] = {k: min(v) for k, v in lazy.items()}
    r["lazy_open_one_tensor_median_s"] = {k: statistics.median(v) for k, v in lazy.items()}

    s, lo, lt = r["save_s"], r["load_s"], r["load_touch_s"]
    r["ratios"] = {
        "save_hermetic/safetensors": s["hermetic"] / s["safetensors"],
        "save_median_hermetic/safetensors": r["save_median_s"]["hermetic"]
        / r["save_median_s"]["safetensors"],
        "save_hermetic_fsync/safetensors": s["hermetic_fsync"] / s["safetensors"],
        "load_touch_hermetic/safetensors": lt["hermetic"] / lt["safetensors"],
        "torch_save/hermetic_save": s["torch"] / s["hermetic"],
        "torch_load/hermetic_load": lo["torch"] / lo["hermetic"],
        "torch_load_touch/hermetic_load_touch": lt["torch"] / lt["hermetic"],
        "save_peak_extra/tensor_bytes": r["save_peak_extra_bytes"]["hermetic"] / max(size, 1),
        "lazy_hermetic/safetensors": r["lazy_open_one_tensor_s"]["hermetic"]
        / r["lazy_open_one_tensor_s"]["safetensors"],
    }
    for p in (h_path, hn_path, s_path, t_path):
        p.unlink(missing_ok=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tenth of the sizes, one repeat")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--only", nargs="*", choices=list(CASES), default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    scale = 0.1 if args.quick else 1.0
    repeats = args.repeats or (1 if args.quick else 3)
    tmp = Path(tempfile.mkdtemp(prefix="hermetic-bench-", dir=os.environ.get("BENCH_DIR")))
    results: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "repeats": repeats,
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "note": "shared machine; numbers are noisy. Page cache warm for loads.",
        },
        "cases": {},
    }
    try:
        for name, make in CASES.items():
            if args.only and name not in args.only:
                continue
            obj = make(scale)
            res = run_case(name, obj, tmp, repeats)
            results["cases"][name] = res
            del obj
            gc.collect()
            print(f"{name}: {res['tensors']} tensors, {res['tensor_bytes'] / 1e6:.1f} MB")
            for k, v in res["ratios"].items():
                print(f"  {k:40s} {v:8.2f}")
            lazy = res["lazy_open_one_tensor_s"]
            print(
                f"  {'lazy open + one tensor (ms)':40s} {lazy['hermetic'] * 1e3:8.2f}"
                f"   (safe_open + get_tensor {lazy['safetensors'] * 1e3:.2f})"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
