"""Helpers for the typed-tree tests: reading a file's hermetic document and
crafting files whose tree is given as JSON text."""

from __future__ import annotations

import json
import struct
from typing import Any

import torch

import hermetic


def document(blob: bytes) -> dict[str, Any]:
    """The hermetic document of a file's bytes."""
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8 : 8 + n])
    return json.loads(header["__metadata__"]["__hermetic__"])  # type: ignore[no-any-return]


def tree_json(obj: Any) -> Any:
    """The tree `hermetic.dumps(obj)` records, as parsed JSON."""
    return document(hermetic.dumps(obj))["tree"]


_DATA = b"\0" * 8


def _digest() -> str:
    blob = hermetic.dumps({"a": torch.frombuffer(bytearray(_DATA), dtype=torch.float32)})
    return document(blob)["digests"]["a"]  # type: ignore[no-any-return]


def crafted(tree: str, version: int = 2) -> bytes:
    """A valid file with one 8-byte entry `a` and the given tree JSON text."""
    doc = {"version": version, "digest": "xxh3-128", "digests": {"a": _digest()}}
    doc_text = json.dumps(doc)[:-1] + ',"tree":' + tree + "}"
    header = {
        "__metadata__": {"format": "pt", "__hermetic__": doc_text},
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
    }
    text = json.dumps(header).encode()
    text += b" " * ((-8 - len(text)) % 64)
    return struct.pack("<Q", len(text)) + text + _DATA
