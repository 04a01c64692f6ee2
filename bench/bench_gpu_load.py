"""Loading a bf16 checkpoint straight onto a GPU: hermetic against safetensors.

Issue #14's device check: `hermetic.load(path, device="cuda")` against
`safe_open(path, framework="pt", device="cuda")` (and `safetensors.torch.load_file`
with `device="cuda"`) on the same ~1.6 GB bf16 file written by `hermetic.save`. Each
load ends with `torch.cuda.synchronize()`; the file is in the page cache after the first
round, as it is for a researcher reloading a checkpoint. Prints best-of and median of
`--rounds` and checks every tensor is bitwise equal between the readers.

    python bench/bench_gpu_load.py --gb 1.6 --rounds 5 --out results/gpu_load.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import hermetic


def _timed(fn: Callable[[], Any], rounds: int) -> tuple[list[float], Any]:
    times, out = [], None
    for _ in range(rounds):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        if _ != rounds - 1:
            del out
            torch.cuda.empty_cache()
    return times, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=1.6)
    ap.add_argument("--tensors", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    n = int(args.gb * 1e9 / 2 / args.tensors)
    gen = torch.Generator().manual_seed(0)
    sd = {
        f"layer{i}.weight": torch.randn(n, generator=gen).to(torch.bfloat16)
        for i in range(args.tensors)
    }
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "bytes": sum(t.numel() * 2 for t in sd.values()),
        "tensors": args.tensors,
        "rounds": args.rounds,
    }
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "model.safetensors"
        t0 = time.perf_counter()
        hermetic.save(sd, path)
        results["save_s"] = time.perf_counter() - t0
        readers: dict[str, Callable[[], Any]] = {
            "hermetic.load(device=cuda)": lambda: hermetic.load(path, device="cuda"),
            "hermetic.load(device=cuda, mmap=False)": lambda: hermetic.load(
                path, device="cuda", mmap=False
            ),
        }
        try:
            import safetensors
            import safetensors.torch
            from safetensors import safe_open

            def st_open() -> dict[str, Any]:
                with safe_open(str(path), framework="pt", device="cuda") as f:
                    return {k: f.get_tensor(k) for k in f.keys()}

            readers["safe_open(pt, device=cuda)"] = st_open
            readers["safetensors.torch.load_file(device=cuda)"] = lambda: (
                safetensors.torch.load_file(str(path), device="cuda")
            )
            results["safetensors"] = safetensors.__version__
        except ImportError as e:
            results["safetensors"] = f"not installed: {e}"
        outs: dict[str, Any] = {}
        for name, fn in readers.items():
            times, out = _timed(fn, args.rounds)
            results[name] = {"best_s": min(times), "median_s": statistics.median(times)}
            gbps = results["bytes"] / min(times) / 1e9
            print(
                f"{name:45s} best {min(times):.3f} s  "
                f"median {statistics.median(times):.3f} s  ({gbps:.1f} GB/s)"
            )
            outs[name] = out
        ref = outs["hermetic.load(device=cuda)"]
        for name, out in outs.items():
            assert set(out) == set(sd), name
            for k, t in out.items():
                assert t.device.type == "cuda" and t.dtype == torch.bfloat16, (name, k)
                assert torch.equal(t.view(torch.int16), ref[k].view(torch.int16)), (name, k)
        assert all(
            torch.equal(ref[k].cpu().view(torch.int16), v.view(torch.int16)) for k, v in sd.items()
        )
        results["bitwise_equal"] = True
    print(json.dumps(results, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
