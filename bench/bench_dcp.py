"""hermetic.dcp.Writer/Reader against DCP's FileSystemWriter/Reader and
HuggingFaceStorageWriter/Reader, on one sharded state saved and loaded by 2 ranks.

    python bench/bench_dcp.py                 # ~256 MB of float32, 3 rounds
    python bench/bench_dcp.py --mb 64 --rounds 3

The state is a GPT-2-shaped set of float32 tensors (bench/_common.py), each a
DTensor sharded on dim 0 over a 2-rank CPU mesh (gloo), so every rank writes and
reads half of every tensor. Tensors only: the Hugging Face writer stores no
non-tensor values. Each round saves into a fresh folder and loads into zeroed
DTensors of the same sharding; a timing is from a barrier before the call to a
barrier after it, on rank 0. Every storage layer runs with its defaults (files
flushed to stable storage: ``sync_files=True``), then hermetic's and DCP's file
system writer again without flushing (``sync_files=False``: what the CPU side
costs); loads run on a warm page cache. Loaded
values are checked bit for bit once per storage layer. Reports the best and the
median of the rounds; results go to bench/results/dcp.json. Nothing asserts a
timing.

Run it on a release build of the extension (what ``scripts/test`` installs, or
``maturin develop --release``): a debug ``maturin develop`` build makes
``hermetic.save`` about ten times slower.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _layout(mb: int) -> list[tuple[str, tuple[int, ...]]]:
    sys.path.insert(0, str(HERE))
    from _common import gpt2_layout

    d, layers = 512, 1
    while True:
        lay = gpt2_layout(d, 8192, 1024, layers)
        size = sum(4 * _prod(s) for _, s, _ in lay)
        if size >= mb * 1_000_000 or layers >= 48:
            return [(n, s) for n, s, _ in lay]
        layers += 1


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def rank_main(folder: Path, mb: int, rounds: int) -> None:
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    import hermetic.dcp

    warnings.simplefilter("ignore")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    torch.manual_seed(0)
    layout = _layout(mb)
    state = {
        name: distribute_tensor(torch.randn(shape), mesh, [Shard(0)]) for name, shape in layout
    }
    nbytes = sum(4 * _prod(s) for _, s in layout)

    def hf_writer(p: Path) -> Any:
        from torch.distributed.checkpoint import HuggingFaceStorageWriter

        return HuggingFaceStorageWriter(str(p), save_distributed=True)

    def hf_reader(p: Path) -> Any:
        from torch.distributed.checkpoint import HuggingFaceStorageReader

        return HuggingFaceStorageReader(str(p))

    backends = {
        "hermetic.dcp.Writer/Reader": (
            lambda p: hermetic.dcp.Writer(p),
            lambda p: hermetic.dcp.Reader(p),
        ),
        "FileSystemWriter/Reader": (
            lambda p: dcp.FileSystemWriter(p),
            lambda p: dcp.FileSystemReader(p),
        ),
        "HuggingFaceStorageWriter/Reader": (hf_writer, hf_reader),
        "hermetic.dcp.Writer/Reader, sync_files=False": (
            lambda p: hermetic.dcp.Writer(p, sync_files=False),
            lambda p: hermetic.dcp.Reader(p),
        ),
        "FileSystemWriter/Reader, sync_files=False": (
            lambda p: dcp.FileSystemWriter(p, sync_files=False),
            lambda p: dcp.FileSystemReader(p),
        ),
    }
    results: dict[str, Any] = {}
    for name, (make_writer, make_reader) in backends.items():
        saves: list[float] = []
        loads: list[float] = []
        error = None
        try:
            for r in range(rounds):
                target = folder / f"{len(results)}-{r}"
                dist.barrier()
                t0 = time.perf_counter()
                dcp.save(state, storage_writer=make_writer(target))
                dist.barrier()
                saves.append(time.perf_counter() - t0)
                out = {
                    k: distribute_tensor(torch.zeros(v.shape), mesh, [Shard(0)])
                    for k, v in state.items()
                }
                dist.barrier()
                t0 = time.perf_counter()
                dcp.load(out, storage_reader=make_reader(target))
                dist.barrier()
                loads.append(time.perf_counter() - t0)
                if r == 0:
                    for k, v in state.items():
                        if not torch.equal(v.to_local(), out[k].to_local()):
                            raise AssertionError(f"{name}: {k} differs after the load")
                del out
        except Exception as e:  # noqa: BLE001 - report a storage layer that does not run here
            error = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        res: dict[str, Any] = {"error": error}
        if saves and loads and error is None:
            res.update(
                save_s_best=min(saves),
                save_s_median=statistics.median(saves),
                load_s_best=min(loads),
                load_s_median=statistics.median(loads),
                save_mb_s_best=nbytes / 1e6 / min(saves),
                load_mb_s_best=nbytes / 1e6 / min(loads),
                saves=saves,
                loads=loads,
            )
        results[name] = res
        dist.barrier()
    if rank == 0:
        (folder / "result.json").write_text(
            json.dumps(
                {"bytes": nbytes, "tensors": len(layout), "world": world, "results": results}
            )
        )
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=256, help="approximate state size in MB")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "dcp.json"))
    ap.add_argument("--dir", default=None, help="where to write the checkpoints (a temp folder)")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-dcp-", dir=args.dir))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--rank-run",
                    str(folder),
                    str(args.mb),
                    str(args.rounds),
                ],
                env=dict(
                    os.environ,
                    MASTER_ADDR="127.0.0.1",
                    MASTER_PORT=str(port),
                    RANK=str(rank),
                    WORLD_SIZE=str(args.world),
                    OMP_NUM_THREADS="1",
                ),
            )
            for rank in range(args.world)
        ]
        codes = [p.wait() for p in procs]
        if any(codes):
            raise SystemExit(f"a rank failed: exit codes {codes}")
        data = json.loads((folder / "result.json").read_text())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    import torch

    data.update(
        rounds=args.rounds,
        python=platform.python_version(),
        torch=torch.__version__,
        machine=f"{platform.machine()}, {os.cpu_count()} cores",
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(data, indent=2) + "\n")
    print(
        f"{data['tensors']} tensors, {data['bytes'] / 1e6:.0f} MB, {data['world']} ranks, "
        f"best / median of {args.rounds}"
    )
    print(f"{'storage layer':46} {'save s':>16} {'load s':>16} {'save MB/s':>10} {'load MB/s':>10}")
    for name, r in data["results"].items():
        if r.get("error"):
            print(f"{name:46} {r['error']}")
            continue
        print(
            f"{name:46} {r['save_s_best']:7.3f} / {r['save_s_median']:6.3f} "
            f"{r['load_s_best']:7.3f} / {r['load_s_median']:6.3f} "
            f"{r['save_mb_s_best']:10.0f} {r['load_mb_s_best']:10.0f}"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--rank-run":
        rank_main(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
