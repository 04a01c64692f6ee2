"""Writes the golden files of docs/SPEC.md with the reference writer.

    python tests/golden/generate.py          # rewrite the files
    python tests/golden/generate.py --check  # exit 1 if any file would change

Valid files come with `trees()`, the objects they hold; invalid ones with the
error text a reader must give (`INVALID`). tests/test_format_golden.py checks
both, and that the writer still produces these exact bytes.
"""

from __future__ import annotations

import json
import struct
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

import hermetic

HERE = Path(__file__).resolve().parent


def trees() -> dict[str, Any]:
    """name -> the object its golden file holds. Deterministic (no str sets)."""
    w = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    flat = {
        "embed.weight": w,
        "norm.weight": torch.tensor([1.0, 2.0], dtype=torch.bfloat16),
        "steps": torch.tensor([7], dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
    }
    shared = [1, 2]
    nd = np.arange(6, dtype=np.float64).reshape(2, 3)
    tree = {
        "ints": [0, -1, 2**63 - 1, -(2**63), 2**70, -(2**100)],
        "floats": [1.5, -0.0, float("inf"), float("-inf"), float("nan"), 5e-324, 0.1],
        "complex": complex(1.0, -2.5),
        "str": "héllo ✓",
        "bytes": b"\x00\x01\xff",
        "big_bytes": bytes(range(256)) * 5,
        "none_bool": (None, True, False),
        "keys": {1: "int", 2.5: "float", None: "none", False: "bool", (1, "a"): "tuple"},
        "odict": OrderedDict([("z", 1), ("a", 2)]),
        "set": {3, 1, 2},
        "frozenset": frozenset({(1, 2)}),
        "shared": shared,
        "again": shared,
        "torch": {
            "w": w,
            "tied": w,
            "t": w.T,
            "row": w[1],
            "param": torch.nn.Parameter(torch.ones(2)),
            "c128": torch.tensor([1 + 2j], dtype=torch.complex128),
            "dtype": torch.float16,
            "device": torch.device("cpu"),
            "size": torch.Size([3, 4]),
        },
        "numpy": {
            "a": nd,
            "view": nd[:, ::-1],
            "be": np.arange(3, dtype=">i4"),
            "dt": np.array([1, 2], dtype="<M8[s]"),
            "rec": np.zeros(2, dtype=[("x", "<f4"), ("y", "S2")]),
            "scalar": np.float32(2.5),
        },
    }
    return {"flat.safetensors": flat, "tree.safetensors": tree}


def _st(header: Any, data: bytes) -> bytes:
    h = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(h)) + h + data


def invalid() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, error text a reader must report)."""
    good = hermetic.dumps({"a": torch.arange(4, dtype=torch.float32)})
    flipped = bytearray(good)
    flipped[-1] ^= 0x01
    entry = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    deep = "[" * 60 + "]" * 60
    n = struct.unpack("<Q", good[:8])[0]
    doc = json.loads(json.loads(good[8 : 8 + n])["__metadata__"]["__hermetic__"])
    digest = doc["digests"]["a"]
    deep_doc = json.dumps({"version": 1, "digest": "xxh3-128", "digests": {"a": digest}})
    deep_doc = deep_doc[:-1] + ',"tree":' + deep + "}"
    hdr = {
        "__metadata__": {"format": "pt", "__hermetic__": deep_doc},
        "a": {**entry, "shape": [4], "data_offsets": [0, 16]},
    }
    return {
        "invalid/truncated.safetensors": (good[:-4], "truncated"),
        "invalid/huge_header.safetensors": (
            struct.pack("<Q", 2**60) + b"{}",
            "header length exceeds",
        ),
        "invalid/overlap.safetensors": (
            _st({"a": entry, "b": {**entry, "data_offsets": [4, 12]}}, bytes(12)),
            "data_offsets",
        ),
        "invalid/dtype_size.safetensors": (
            _st({"a": {**entry, "dtype": "F64"}}, bytes(8)),
            "dtype size",
        ),
        "invalid/deep.safetensors": (_st(hdr, good[8 + n :]), "nesting depth"),
        "invalid/flipped.safetensors": (bytes(flipped), "corrupt"),
    }


def build() -> dict[str, bytes]:
    out = {name: hermetic.dumps(obj) for name, obj in trees().items()}
    out.update({name: data for name, (data, _) in invalid().items()})
    return out


def main() -> int:
    check = "--check" in sys.argv
    changed = []
    for name, data in build().items():
        path = HERE / name
        if path.exists() and path.read_bytes() == data:
            continue
        changed.append(name)
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    for name in changed:
        print(("would change: " if check else "wrote: ") + name)
    return 1 if check and changed else 0


if __name__ == "__main__":
    raise SystemExit(main())
