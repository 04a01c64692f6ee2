"""Regenerate the bundled examples with the real libraries.

    python examples/make_examples.py

Writes small files next to this script: checkpoints a researcher would have
lying around, and one sample whose payload (harmless: it would create a file
named by $HERMETIC_CANARY) shows what `hermetic scan` flags. Nothing here is
ever loaded with the real unpickler.
"""

from __future__ import annotations

import io
import pickle
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent


class TinyClassifier(nn.Module):
    """A model class that only exists in this script, as in research code."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _payload_pickle() -> bytes:
    """`os.system('touch "$HERMETIC_CANARY"')`, written as protocol 2 opcodes."""
    cmd = b'touch "$HERMETIC_CANARY"'
    return (
        pickle.PROTO
        + b"\x02"
        + pickle.GLOBAL
        + b"os\nsystem\n"
        + pickle.SHORT_BINUNICODE
        + bytes([len(cmd)])
        + cmd
        + pickle.TUPLE1
        + pickle.REDUCE
        + pickle.STOP
    )


def main() -> None:
    torch.manual_seed(0)
    model = TinyClassifier()
    state = model.state_dict()

    # A state dict in torch's zip format: safe.
    torch.save(state, HERE / "state_dict.pt")
    # The same in the legacy (pre-1.6) format many old checkpoints use: safe.
    torch.save(state, HERE / "state_dict_legacy.bin", _use_new_zipfile_serialization=False)
    # A training checkpoint with optimizer state: safe.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 8)).sum().backward()
    opt.step()
    torch.save(
        {"model": state, "optim": opt.state_dict(), "step": 1, "rng": torch.get_rng_state()},
        HERE / "training_checkpoint.pt",
    )
    # A whole pickled model: suspicious, because loading imports TinyClassifier's module.
    # Pretend the class lives in the researcher's package, as it would.
    pkg, mod = types.ModuleType("research"), types.ModuleType("research.models")
    mod.TinyClassifier = TinyClassifier  # type: ignore[attr-defined]
    sys.modules.update({"research": pkg, "research.models": mod})
    TinyClassifier.__module__ = "research.models"
    torch.save(model, HERE / "whole_model.pt")
    # numpy arrays: safe.
    np.save(HERE / "embeddings.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
    # A checkpoint whose data.pkl was replaced by a payload: dangerous.
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(HERE / "tampered_checkpoint.pt", "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):
                data = _payload_pickle()
            dst.writestr(info, data)
    # A README that is not a pickle at all: skipped quickly.
    (HERE / "notes.txt").write_text("Checkpoints from the ablation runs.\n")


if __name__ == "__main__":
    main()
