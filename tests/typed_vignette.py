"""The research vignette as a script: a ModelConfig dataclass (ints, floats, an
Enum, a tuple, an activation function and an optional build override) builds a
small transformer that trains with AdamW; checkpoints are hermetic files.

    python typed_vignette.py full STEPS            # train without stopping
    python typed_vignette.py first CKPT STEPS      # train STEPS, save CKPT
    python typed_vignette.py resume CKPT STEPS     # load CKPT (a new process), go on to STEPS

Each prints its losses as a JSON list of float.hex() strings, so a test can
compare them bit for bit. CPU only, deterministic.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
from collections.abc import Callable
from typing import Any, TypedDict

import torch
from torch import nn

import hermetic


class Norm(enum.Enum):
    LAYER = "layer"
    RMS = "rms"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    vocab: int = 61
    d_model: int = 32
    n_heads: int = 4
    n_layers: int = 2
    seq_len: int = 16
    dropout: float = 0.1
    lr: float = 3e-3
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.01
    norm: Norm = Norm.RMS
    activation: Callable[[torch.Tensor], torch.Tensor] = torch.nn.functional.gelu
    build_override: Callable[[ModelConfig], nn.Module | None] | None = None


class Checkpoint(TypedDict):
    config: ModelConfig
    model: dict[str, torch.Tensor]
    optim: dict[str, Any]
    step: int
    rng: torch.Tensor


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        norm = nn.RMSNorm if cfg.norm is Norm.RMS else nn.LayerNorm
        self.norm1 = norm(cfg.d_model)
        self.attn = nn.MultiheadAttention(
            cfg.d_model, cfg.n_heads, dropout=cfg.dropout, batch_first=True
        )
        self.norm2 = norm(cfg.d_model)
        self.up = nn.Linear(cfg.d_model, 4 * cfg.d_model)
        self.down = nn.Linear(4 * cfg.d_model, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.activation = cfg.activation

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.drop(self.down(self.activation(self.up(self.norm2(x)))))


class TinyLM(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab, cfg.d_model)
        self.pos = nn.Parameter(torch.randn(cfg.seq_len, cfg.d_model) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.head = nn.Linear(cfg.d_model, cfg.vocab)
        mask = torch.triu(torch.full((cfg.seq_len, cfg.seq_len), float("-inf")), 1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.pos[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x, self.mask)
        return self.head(x)  # type: ignore[no-any-return]


def build(cfg: ModelConfig) -> nn.Module:
    if cfg.build_override is not None:
        model = cfg.build_override(cfg)
        if model is not None:
            return model
    return TinyLM(cfg)


def batch(cfg: ModelConfig, step: int) -> torch.Tensor:
    """The data of a step: independent of the global RNG (which dropout uses)."""
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randint(0, cfg.vocab, (8, cfg.seq_len + 1), generator=g)


def train(
    cfg: ModelConfig, model: nn.Module, opt: torch.optim.Optimizer, start: int, stop: int
) -> list[str]:
    losses = []
    model.train()
    for step in range(start, stop):
        tokens = batch(cfg, step)
        logits = model(tokens[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab), tokens[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()).hex())
    return losses


def fresh(cfg: ModelConfig) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = build(cfg)
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
    )
    return model, opt


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    mode = argv[1]
    if mode == "full":
        cfg = ModelConfig()
        model, opt = fresh(cfg)
        losses = train(cfg, model, opt, 0, int(argv[2]))
    elif mode == "first":
        cfg = ModelConfig()
        model, opt = fresh(cfg)
        stop = int(argv[3])
        losses = train(cfg, model, opt, 0, stop)
        ckpt: Checkpoint = {
            "config": cfg,
            "model": model.state_dict(),
            "optim": opt.state_dict(),
            "step": stop,
            "rng": torch.get_rng_state(),
        }
        hermetic.save(ckpt, argv[2])
    elif mode == "resume":
        ckpt = hermetic.load(argv[2], type=Checkpoint, allow=[torch.nn.functional.gelu])
        cfg = ckpt["config"]
        assert isinstance(cfg, ModelConfig) and cfg.norm is Norm.RMS
        assert cfg.activation is torch.nn.functional.gelu
        model = build(cfg)
        model.load_state_dict(ckpt["model"])
        opt = torch.optim.AdamW(
            model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
        )
        opt.load_state_dict(ckpt["optim"])
        torch.set_rng_state(ckpt["rng"])
        losses = train(cfg, model, opt, ckpt["step"], int(argv[3]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(json.dumps(losses))


if __name__ == "__main__":
    main(sys.argv)
