"""Pieces the bench scripts share (imported as `_common`: scripts run from bench/)."""

from __future__ import annotations

from typing import Any

# A GPT-2 block in Hugging Face's key names and Conv1D layout: (suffix, shape as
# multiples of d_model, how the real model initialises it).
_BLOCK: list[tuple[str, tuple[int, ...], str]] = [
    ("ln_1.weight", (1,), "ones"),
    ("ln_1.bias", (1,), "zeros"),
    ("attn.c_attn.weight", (1, 3), "w"),
    ("attn.c_attn.bias", (3,), "zeros"),
    ("attn.c_proj.weight", (1, 1), "w"),
    ("attn.c_proj.bias", (1,), "zeros"),
    ("ln_2.weight", (1,), "ones"),
    ("ln_2.bias", (1,), "zeros"),
    ("mlp.c_fc.weight", (1, 4), "w"),
    ("mlp.c_fc.bias", (4,), "zeros"),
    ("mlp.c_proj.weight", (4, 1), "w"),
    ("mlp.c_proj.bias", (1,), "zeros"),
]


def gpt2_layout(
    d: int, vocab: int, positions: int, layers: int
) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, init) of every tensor of a GPT-2-style state dict, in order;
    init is "w" (random weights), "ones" or "zeros"."""
    out: list[tuple[str, tuple[int, ...], str]] = [
        ("transformer.wte.weight", (vocab, d), "w"),
        ("transformer.wpe.weight", (positions, d), "w"),
    ]
    for i in range(layers):
        for suffix, mult, init in _BLOCK:
            out.append((f"transformer.h.{i}.{suffix}", tuple(m * d for m in mult), init))
    out += [("transformer.ln_f.weight", (d,), "ones"), ("transformer.ln_f.bias", (d,), "zeros")]
    return out


def touch(obj: Any) -> None:
    """Read one byte per page of every tensor in a tree (faults mapped data in)."""
    import torch

    if isinstance(obj, torch.Tensor):
        if obj.numel():
            flat = obj.detach().reshape(-1).view(torch.uint8)
            flat[::4096].sum()
    elif isinstance(obj, dict):
        for v in obj.values():
            touch(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            touch(v)
