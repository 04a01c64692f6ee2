"""What the pickle firewall costs: ``enforce`` against an unguarded process.

Two measurements, each run in fresh child processes, unguarded and guarded
alternately, several rounds, medians reported side by side:

* ``torch.load`` of a ~500 MB checkpoint (a state dict of float32 tensors,
  torch's zip format), target: under 5% overhead;
* ``pickle.loads`` of a small object, target: under 20 microseconds of
  overhead per call.

The guarded child runs ``enforce`` with a manifest listing both blobs, so
every load is checked and allowed: the cost of the common, allowed path.

    python bench/bench_firewall.py [--size-mb 500] [--rounds 5] [--out bench/results/firewall.json]

Results go to ``bench/results/firewall.json``. Use a release build of the
extension (``maturin build --release``); a debug build hashes far slower.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, os, pickle, sys, time
mode, manifest, ckpt, loops = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if mode == "enforce":
    import hermetic.firewall
    hermetic.firewall.activate("enforce", manifest)
import torch
SMALL = pickle.dumps({"id": 7, "name": "small", "tags": ["a", "b"], "score": 0.5}, protocol=4)
out = {}
# torch.load of the big checkpoint (the page cache is warm after the first round)
t = time.perf_counter()
sd = torch.load(ckpt, weights_only=True)
out["torch_load_s"] = time.perf_counter() - t
assert sum(v.numel() for v in sd.values()) > 0
del sd
# pickle.loads of a small object
for _ in range(1000):
    pickle.loads(SMALL)
best = float("inf")
for _ in range(5):
    t = time.perf_counter()
    for _ in range(loops):
        pickle.loads(SMALL)
    best = min(best, (time.perf_counter() - t) / loops)
out["pickle_loads_us"] = best * 1e6
if mode == "enforce":
    from hermetic.firewall import status
    assert status()["mode"] == "enforce"
    # Prove the guarded path ran: an unlisted blob is refused.
    try:
        pickle.loads(pickle.dumps(12345))
        raise SystemExit("not enforcing")
    except Exception as e:
        assert type(e).__name__ == "NoPickleError", e
print(json.dumps(out))
"""


def make_checkpoint(path: Path, size_mb: int) -> None:
    import torch

    n = size_mb * 1024 * 1024 // 4 // 8
    state = {f"layer{i}.weight": torch.randn(n) for i in range(8)}
    torch.save(state, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--loops", type=int, default=20000)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "firewall.json"))
    args = ap.parse_args()

    import pickle

    import hermetic

    small = pickle.dumps({"id": 7, "name": "small", "tags": ["a", "b"], "score": 0.5}, protocol=4)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="hermetic-bench-") as tmp:
        ckpt = Path(tmp) / "checkpoint.pt"
        make_checkpoint(ckpt, args.size_mb)
        manifest = Path(tmp) / "hermetic.toml"
        add = subprocess.run(
            [sys.executable, "-m", "hermetic", "manifest", "add", str(ckpt), "--to", str(manifest)],
            capture_output=True,
            text=True,
            check=True,
        )
        with manifest.open("a") as f:
            f.write(f'"{hermetic.blob_id(small)}" = {{ size = {len(small)} }}\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERMETIC_")}
        runs: dict[str, list[dict[str, float]]] = {"unguarded": [], "enforce": []}
        # Warm the page cache once, then alternate the two kinds of child.
        cmd = [sys.executable, "-c", CHILD]
        subprocess.run(
            [*cmd, "none", str(manifest), str(ckpt), "100"],
            env=env,
            check=True,
            capture_output=True,
        )
        for r in range(args.rounds):
            order = ("unguarded", "enforce") if r % 2 == 0 else ("enforce", "unguarded")
            for mode in order:
                proc = subprocess.run(
                    [*cmd, mode, str(manifest), str(ckpt), str(args.loops)],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                runs[mode].append(json.loads(proc.stdout))
        size = ckpt.stat().st_size

    def med(mode: str, key: str) -> float:
        return statistics.median(x[key] for x in runs[mode])

    load_u, load_e = med("unguarded", "torch_load_s"), med("enforce", "torch_load_s")
    small_u, small_e = med("unguarded", "pickle_loads_us"), med("enforce", "pickle_loads_us")
    result = {
        "benchmark": "hermetic pickle firewall: enforce vs unguarded",
        "command": "python bench/bench_firewall.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "torch": __import__("torch").__version__,
            "hermetic": hermetic.__version__,
            "hermetic_module": hermetic.__file__,
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
        },
        "rounds": args.rounds,
        "torch_load": {
            "checkpoint_bytes": size,
            "manifest_entries": add.stdout.strip().splitlines()[-1],
            "unguarded_s": load_u,
            "enforce_s": load_e,
            "ratio": load_e / load_u,
            "overhead_pct": (load_e / load_u - 1) * 100,
            "target_pct": 5.0,
            "all_unguarded_s": [x["torch_load_s"] for x in runs["unguarded"]],
            "all_enforce_s": [x["torch_load_s"] for x in runs["enforce"]],
        },
        "pickle_loads_small": {
            "blob_bytes": len(small),
            "loops": args.loops,
            "unguarded_us": small_u,
            "enforce_us": small_e,
            "ratio": small_e / small_u,
            "overhead_us": small_e - small_u,
            "target_overhead_us": 20.0,
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    t, p = result["torch_load"], result["pickle_loads_small"]
    print(f"{'':28}{'unguarded':>12}{'enforce':>12}{'ratio':>8}")
    print(
        f"torch.load {size / 1e6:.0f} MB (s)  {t['unguarded_s']:12.3f}{t['enforce_s']:12.3f}"
        f"{t['ratio']:8.3f}  ({t['overhead_pct']:+.1f}%)"
    )
    print(
        f"pickle.loads small (us)     {p['unguarded_us']:12.2f}{p['enforce_us']:12.2f}"
        f"{p['ratio']:8.2f}  ({p['overhead_us']:+.2f} us/call)"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
