"""A torch DataLoader with worker processes keeps working under ``deny``:
the built-in python-ipc rule allows exactly its inter-process pickling."""

from __future__ import annotations

import pytest
from _firewall_util import ok, run_py

pytest.importorskip("torch")

SCRIPT = """
import pickle, sys
import torch
from torch.utils.data import DataLoader, Dataset

class Squares(Dataset):
    def __len__(self):
        return 16
    def __getitem__(self, i):
        return torch.tensor([float(i)]), {"label": i * i}

def main(method):
    loader = DataLoader(Squares(), batch_size=4, num_workers=2, multiprocessing_context=method)
    seen = []
    for x, y in loader:
        seen.extend(y["label"].tolist())
    assert sorted(seen) == [i * i for i in range(16)], seen
    print(method, "batches ok", flush=True)

if __name__ == "__main__":
    for method in sys.argv[1:]:
        main(method)
    # The process is still under deny: its own loads are refused.
    try:
        pickle.loads(pickle.dumps(1))
    except Exception as e:
        print("own load:", type(e).__name__)
"""


def test_dataloader_with_two_workers_runs_under_deny() -> None:
    proc = run_py(SCRIPT, mode="deny", args=["fork", "spawn"], timeout=600)
    out = ok(proc)
    assert "fork batches ok" in out and "spawn batches ok" in out
    assert "own load: NoPickleError" in out
