"""One rank of the multi-process hermetic.dcp tests (tests/test_dcp.py).

Run as ``python _dcp_worker.py SCENARIO FOLDER`` with RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT set; joins a gloo group on CPU. Every pickle
and torch load or save entry point raises inside the rank (DCP's collectives
move plans between ranks with ``pickle.Pickler``/``Unpickler`` objects, in
memory, which stay), so a checkpoint that needed pickle fails here.

Scenarios:

* ``save``: a small model sharded with FSDP2 (``fully_shard``) or, where this
  torch cannot shard on CPU, with DTensor ``Shard(0)``, an AdamW step, and a
  DTensor sharded on dim 0; saved with ``hermetic.dcp.Writer`` into
  FOLDER/ckpt and, with ``dcp.async_save``, FOLDER/async; the full
  (unsharded) state as a hermetic file FOLDER/ref.safetensors for the checks;
  then loaded back into a freshly initialised sharded model on these ranks,
  the DTensor resharded to ``Shard(1)``, and compared bit for bit.
* ``load``: only the load and compare of ``save``, from FOLDER/ckpt (for a
  checkpoint written by another world size).
* ``train``: a sharded model and Adam trained ``STEPS`` steps on fixed data,
  each rank's losses written (raw float32 bytes) to FOLDER/straight-R.bin and
  the final full state to FOLDER/straight.safetensors; then a fresh model of
  the same seed trained ``STEPS // 2`` steps (losses in FOLDER/first-R.bin) and
  saved with ``hermetic.dcp.Writer`` to FOLDER/resume (model and optimizer
  through ``get_state_dict``, and the step count).
* ``resume``: in fresh processes, a model of another seed loaded from
  FOLDER/resume with ``hermetic.dcp.Reader`` (``set_state_dict``) and trained
  the remaining steps (losses in FOLDER/second-R.bin, final full state in
  FOLDER/resumed.safetensors).
"""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

import hermetic
import hermetic.dcp


def _forbid(name: str):
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"{name} was called inside a rank")

    return refuse


def forbid_pickle() -> None:
    pickle.load = _forbid("pickle.load")  # type: ignore[assignment]
    pickle.loads = _forbid("pickle.loads")  # type: ignore[assignment]
    pickle.dump = _forbid("pickle.dump")  # type: ignore[assignment]
    pickle.dumps = _forbid("pickle.dumps")  # type: ignore[assignment]
    torch.load = _forbid("torch.load")  # type: ignore[assignment]
    torch.save = _forbid("torch.save")  # type: ignore[assignment]


def model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 6), torch.nn.Linear(6, 4)
    )


def shard(m: torch.nn.Module, mesh: object) -> str:
    """FSDP2 where it runs on CPU with gloo, DTensor Shard(0) parameters otherwise."""
    try:
        from torch.distributed.fsdp import fully_shard

        for layer in m:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(m, mesh=mesh)
        return "fsdp2"
    except Exception:  # noqa: BLE001 - fall back to plain DTensor parameters
        for mod in m.modules():
            for name, p in list(mod.named_parameters(recurse=False)):
                dp = torch.nn.Parameter(distribute_tensor(p.detach(), mesh, [Shard(0)]))
                mod.register_parameter(name, dp)
        return "dtensor"


def trained(seed: int, mesh: object) -> tuple[torch.nn.Module, torch.optim.Optimizer, str]:
    m = model(seed)
    how = shard(m, mesh)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    torch.manual_seed(100 + seed)
    m(torch.randn(5, 8)).pow(2).sum().backward()
    opt.step()
    opt.zero_grad()
    return m, opt, how


def full_state(m: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, object]:
    msd, osd = get_state_dict(
        m, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    return {"model": msd, "optim": osd}


def dtensor_full() -> torch.Tensor:
    return torch.arange(12 * 10, dtype=torch.float64).reshape(12, 10) / 7


def state(m: torch.nn.Module, opt: torch.optim.Optimizer, dt: object) -> dict[str, object]:
    msd, osd = get_state_dict(m, opt)
    return {"model": msd, "optim": osd, "dt": dt, "extra": {"step": 7, "tag": "run-1"}}


def same(a: object, b: object, where: str) -> None:
    if isinstance(a, torch.Tensor):
        if isinstance(a, DTensor):
            a = a.full_tensor()
        if isinstance(b, DTensor):
            b = b.full_tensor()
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, sorted(a), sorted(b))
        for k in a:
            same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def load_and_compare(folder: Path, mesh: object, rank: int) -> None:
    m, opt, _ = trained(seed=rank + 50, mesh=mesh)  # different values everywhere
    dt = distribute_tensor(torch.zeros(12, 10, dtype=torch.float64), mesh, [Shard(1)])
    st = state(m, opt, dt)
    st["extra"] = {"step": 0, "tag": ""}
    dcp.load(st, storage_reader=hermetic.dcp.Reader(folder / "ckpt"))
    set_state_dict(m, opt, model_state_dict=st["model"], optim_state_dict=st["optim"])
    got = full_state(m, opt)  # a collective; only rank 0 receives the full state
    if rank == 0:
        ref = hermetic.load(folder / "ref.safetensors")
        same(ref["model"], got["model"], "model")
        same(ref["optim"], got["optim"], "optim")
    assert isinstance(st["dt"], DTensor) and st["dt"].placements == (Shard(1),)
    same(dtensor_full(), st["dt"], "dt")
    assert st["extra"] == {"step": 7, "tag": "run-1"}, st["extra"]


STEPS = 6


def batch(step: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed data of one step on one rank."""
    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(4, 8, generator=g), torch.randn(4, 4, generator=g)


def train_steps(
    m: torch.nn.Module, opt: torch.optim.Optimizer, start: int, stop: int, rank: int
) -> bytes:
    losses = []
    for step in range(start, stop):
        x, y = batch(step, rank)
        loss = torch.nn.functional.mse_loss(m(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.detach())
    return torch.stack(losses).numpy().tobytes()


def fresh(seed: int, mesh: object) -> tuple[torch.nn.Module, torch.optim.Optimizer, str]:
    m = model(seed)
    how = shard(m, mesh)
    return m, torch.optim.Adam(m.parameters(), lr=1e-2), how


def main() -> None:
    scenario, folder = sys.argv[1], Path(sys.argv[2])
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        mesh = init_device_mesh("cpu", (world,))
        forbid_pickle()
        if scenario == "save":
            m, opt, how = trained(seed=0, mesh=mesh)
            dt = distribute_tensor(dtensor_full(), mesh, [Shard(0)])
            ref = full_state(m, opt)
            if rank == 0:
                hermetic.save(ref, folder / "ref.safetensors")
            dcp.save(state(m, opt, dt), storage_writer=hermetic.dcp.Writer(folder / "ckpt"))
            fut = dcp.async_save(
                state(m, opt, dt), storage_writer=hermetic.dcp.Writer(folder / "async")
            )
            fut.result()  # type: ignore[union-attr]
            dist.barrier()
            load_and_compare(folder, mesh, rank)
            if rank == 0:
                (folder / "how").write_text(how)
        elif scenario == "load":
            load_and_compare(folder, mesh, rank)
        elif scenario == "train":
            m, opt, how = fresh(seed=3, mesh=mesh)
            (folder / f"straight-{rank}.bin").write_bytes(train_steps(m, opt, 0, STEPS, rank))
            ref = full_state(m, opt)
            if rank == 0:
                hermetic.save(ref, folder / "straight.safetensors")
                (folder / "how").write_text(how)
            m, opt, _ = fresh(seed=3, mesh=mesh)
            half = STEPS // 2
            (folder / f"first-{rank}.bin").write_bytes(train_steps(m, opt, 0, half, rank))
            msd, osd = get_state_dict(m, opt)
            st = {"model": msd, "optim": osd, "step": half}
            dcp.save(st, storage_writer=hermetic.dcp.Writer(folder / "resume"))
        elif scenario == "resume":
            m, opt, _ = fresh(seed=99, mesh=mesh)  # other values until the load
            msd, osd = get_state_dict(m, opt)
            st = {"model": msd, "optim": osd, "step": 0}
            dcp.load(st, storage_reader=hermetic.dcp.Reader(folder / "resume"))
            set_state_dict(m, opt, model_state_dict=st["model"], optim_state_dict=st["optim"])
            half = st["step"]
            assert half == STEPS // 2, half
            (folder / f"second-{rank}.bin").write_bytes(train_steps(m, opt, half, STEPS, rank))
            got = full_state(m, opt)
            if rank == 0:
                hermetic.save(got, folder / "resumed.safetensors")
        else:
            raise SystemExit(f"unknown scenario {scenario}")
        dist.barrier()
        if rank == 0:
            (folder / f"{scenario}-{world}.ok").write_text("ok")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
