"""hermetic.torch.load against torch.load(weights_only=True), with and without mmap,
and `hermetic convert` against the machine's page-cache copy bandwidth.

    python bench/bench_load.py            # full run (repeats 5)
    python bench/bench_load.py --quick    # one repeat, no 10,000-tensor touch pass

Checkpoints (bench/data/big/, made by bench/make_data.py and this script):

- gpt2_500mb.pt: a GPT-2-small-shaped state dict, 148 float32 tensors, ~498 MB;
- gpt2_50mb.pt: the same keys and tensor count, ~50 MB (to show that a mapped load does
  not grow with the payload);
- many_10k.pt: 10,000 small tensors (16x16 float32 each, ~10 MB).

Every loader runs on a warm page cache; each timing is the best of the repeats (the JSON
also has the medians of the load calls). "load"
is the call alone; "load+touch" also reads one byte per page of every tensor, which is
when a mapped load actually reads the file. Each hermetic result is checked against
torch's before it is timed. `hermetic convert` runs in-process (the same Rust code as
the CLI) on the 500 MB checkpoint; the page-cache copy bandwidth is measured twice: a
cached file read into a preallocated buffer (memory copy out of the page cache), and a
cached file copied to a new file (`shutil.copyfile`, kernel copy, as `cp` does).
Results go to bench/results/load.json; nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import touch

import hermetic
from hermetic import _hermetic

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import make_data  # noqa: E402  (bench/ on sys.path)

RESULTS = HERE / "results" / "load.json"
MANY = make_data.BIG_DIR / "many_10k.pt"
MANY_COUNT = 10_000


def ensure_many() -> None:
    """10,000 small tensors (seeded), as one state dict."""
    if MANY.is_file():
        return
    gen = torch.Generator().manual_seed(make_data.SEED + 7)
    sd = {f"layers.{i}.weight": torch.randn(16, 16, generator=gen) for i in range(MANY_COUNT)}
    tmp = MANY.with_suffix(".tmp")
    torch.save(sd, tmp)
    tmp.replace(MANY)


def warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def timings(
    fn: Callable[[], Any], repeats: int, then: Callable[[Any], None] | None = None
) -> list[float]:
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        if then is not None:
            then(out)
        times.append(time.perf_counter() - t0)
        del out
    return times


def best(fn: Callable[[], Any], repeats: int, then: Callable[[Any], None] | None = None) -> float:
    return min(timings(fn, repeats, then))


def check_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for k in a:
        x, y = a[k], b[k]
        assert (x.dtype, x.shape, x.stride(), x.storage_offset()) == (
            y.dtype,
            y.shape,
            y.stride(),
            y.storage_offset(),
        ), k
        assert torch.equal(x, y), k


LOADERS: dict[str, Callable[[Path], Any]] = {
    "torch_weights_only": lambda p: torch.load(p, weights_only=True),
    "torch_weights_only_mmap": lambda p: torch.load(p, weights_only=True, mmap=True),
    "hermetic_mmap": lambda p: hermetic.torch.load(p),
    "hermetic_copy": lambda p: hermetic.torch.load(p, mmap=False),
}


def bench_file(path: Path, repeats: int, touch_pass: bool) -> dict[str, Any]:
    warm(path)
    reference = torch.load(path, weights_only=True)
    for mmap in (True, False):
        check_equal(hermetic.torch.load(path, mmap=mmap), reference)
    tensors = len(reference)
    nbytes = sum(t.untyped_storage().nbytes() for t in reference.values())
    del reference
    row: dict[str, Any] = {
        "file": path.name,
        "file_bytes": path.stat().st_size,
        "tensors": tensors,
        "tensor_bytes": nbytes,
        "load_s": {},
        "load_median_s": {},
        "load_touch_s": {},
    }
    for name, fn in LOADERS.items():
        ts = timings(lambda fn=fn: fn(path), repeats)
        row["load_s"][name] = min(ts)
        row["load_median_s"][name] = statistics.median(ts)
        if touch_pass:
            row["load_touch_s"][name] = best(lambda fn=fn: fn(path), repeats, touch)
    ls = row["load_s"]
    row["speedup_vs_weights_only"] = {
        "hermetic_mmap": ls["torch_weights_only"] / ls["hermetic_mmap"],
        "hermetic_copy": ls["torch_weights_only"] / ls["hermetic_copy"],
    }
    row["speedup_vs_weights_only_mmap"] = {
        "hermetic_mmap": ls["torch_weights_only_mmap"] / ls["hermetic_mmap"],
    }
    return row


def read_bandwidth(path: Path, repeats: int) -> float:
    """Bytes per second reading a cached file into a preallocated buffer."""
    size = path.stat().st_size
    buf = bytearray(size)
    warm(path)

    def read() -> None:
        with open(path, "rb", buffering=0) as f:
            view = memoryview(buf)
            got = 0
            while got < size:
                n = f.readinto(view[got:])
                if not n:
                    break
                got += n

    return size / best(read, repeats)


def copy_bandwidth(path: Path, tmp: Path, repeats: int) -> float:
    """Bytes per second copying a cached file to a new file (as cp does)."""
    warm(path)
    dst = tmp / "copy.bin"

    def copy() -> None:
        shutil.copyfile(path, dst)
        dst.unlink()

    return path.stat().st_size / best(copy, repeats)


def convert_bandwidth(path: Path, tmp: Path, repeats: int) -> tuple[float, int]:
    warm(path)
    out = tmp / "converted.safetensors"
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(1)

    def convert() -> None:
        # The CLI writes a summary line to stdout; keep the report clean.
        sys.stdout.flush()
        os.dup2(devnull, 1)
        try:
            code = _hermetic.run_cli(["hermetic", "convert", str(path), str(out)])
        finally:
            os.dup2(saved, 1)
        assert code == 0, code
        out.unlink()

    seconds = best(convert, repeats)
    os.close(devnull)
    os.close(saved)
    return path.stat().st_size / seconds, path.stat().st_size


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=HERE,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "hermetic": hermetic.__version__,
        "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "loadavg_start": os.getloadavg(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one repeat, no touch pass")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    repeats = 1 if args.quick else args.repeats
    warnings.simplefilter("ignore")
    info = machine()
    make_data.ensure_data(big=["gpt2_50mb.pt", "gpt2_500mb.pt"], log=print)
    ensure_many()
    big = make_data.BIG_DIR / "gpt2_500mb.pt"
    files = [big, make_data.BIG_DIR / "gpt2_50mb.pt", MANY]
    rows = [bench_file(p, repeats, touch_pass=not args.quick) for p in files]
    with tempfile.TemporaryDirectory(dir=make_data.DATA) as t:
        tmp = Path(t)
        read_bw = read_bandwidth(big, repeats)
        copy_bw = copy_bandwidth(big, tmp, repeats)
        conv_bw, size = convert_bandwidth(big, tmp, repeats)
    by_name = {r["file"]: r for r in rows}
    mmap_500 = by_name["gpt2_500mb.pt"]["load_s"]["hermetic_mmap"]
    mmap_50 = by_name["gpt2_50mb.pt"]["load_s"]["hermetic_mmap"]
    info["loadavg_end"] = os.getloadavg()
    results = {
        "mode": "quick" if args.quick else "full",
        "repeats": repeats,
        "machine": info,
        "loads": rows,
        "mmap_size_independence": {
            "hermetic_mmap_500mb_s": mmap_500,
            "hermetic_mmap_50mb_s": mmap_50,
            "ratio_500mb_over_50mb": mmap_500 / mmap_50,
            "payload_ratio": by_name["gpt2_500mb.pt"]["tensor_bytes"]
            / by_name["gpt2_50mb.pt"]["tensor_bytes"],
        },
        "convert": {
            "file": big.name,
            "bytes": size,
            "convert_bytes_per_s": conv_bw,
            "page_cache_read_bytes_per_s": read_bw,
            "page_cache_file_copy_bytes_per_s": copy_bw,
            "ratio_to_read": conv_bw / read_bw,
            "ratio_to_file_copy": conv_bw / copy_bw,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")

    print(f"\n{'file':16} {'loader':26} {'load ms':>10} {'median':>8} {'load+touch ms':>14}")
    for r in rows:
        for name, s in r["load_s"].items():
            touched = r["load_touch_s"].get(name)
            t = f"{touched * 1e3:14.1f}" if touched is not None else f"{'-':>14}"
            med = r["load_median_s"][name]
            print(f"{r['file']:16} {name:26} {s * 1e3:10.1f} {med * 1e3:8.1f} {t}")
        sp = r["speedup_vs_weights_only"]
        print(
            f"{'':16} hermetic vs weights_only: mmap {sp['hermetic_mmap']:.1f}x, "
            f"copy {sp['hermetic_copy']:.1f}x; vs weights_only+mmap: "
            f"{r['speedup_vs_weights_only_mmap']['hermetic_mmap']:.1f}x"
        )
    m = results["mmap_size_independence"]
    print(
        f"\nhermetic mmap load: 500 MB {m['hermetic_mmap_500mb_s'] * 1e3:.2f} ms, "
        f"50 MB {m['hermetic_mmap_50mb_s'] * 1e3:.2f} ms "
        f"(x{m['ratio_500mb_over_50mb']:.2f} for x{m['payload_ratio']:.1f} the payload)"
    )
    c = results["convert"]
    print(
        f"convert {big.name}: {c['convert_bytes_per_s'] / 1e9:.2f} GB/s; page cache read "
        f"{c['page_cache_read_bytes_per_s'] / 1e9:.2f} GB/s (ratio {c['ratio_to_read']:.2f}), "
        f"file copy {c['page_cache_file_copy_bytes_per_s'] / 1e9:.2f} GB/s "
        f"(ratio {c['ratio_to_file_copy']:.2f})"
    )
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
