"""The test corpora and their expectations, for any test that wants them.

- `tests/fixtures/benign/`: real checkpoints written by torch, numpy and pickle,
  made by `tests/fixtures/make_benign.py`. Every one is data only (`safe`),
  except `model_whole*.pt` (`suspicious`, naming model classes).
- `tests/fixtures/attacks/`: harmless exploits, each creating the file named by
  `$HERMETIC_CANARY` when its loader opens it, made by
  `tests/fixtures/make_attacks.py`.

Never open an attack file with a real unpickler except in a subprocess that
sets HERMETIC_CANARY (see tests/test_corpus_fires.py).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures"
BENIGN_DIR = FIXTURES / "benign"
ATTACKS_DIR = FIXTURES / "attacks"

# Files in the corpus folders that are not corpus members.
META_FILES = frozenset({"EXPECTED.json", "GENERATED_BY.json"})

VERDICTS = ("safe", "suspicious", "dangerous")
LOADERS = frozenset({"pickle.load", "pickle.load_all", "torch.load", "np.load", "joblib.load"})
FINDING_CODES = frozenset(
    {
        "dangerous_import",
        "unknown_import",
        "attribute_traversal",
        "dynamic_global",
        "indirect_call",
        "method_call",
        "build_on_global",
        "extension_code",
        "proto_mid_stream",
        "frame_violation",
        "truncated_stream",
        "malformed_stream",
        "trailing_data",
        "polyglot_pickle_zip",
        "ambiguous_zip",
        "decompression_limit",
    }
)


def verdict_rank(verdict: str) -> int:
    """0 for safe, 1 for suspicious, 2 for dangerous."""
    return VERDICTS.index(verdict)


def at_least(verdict: str, minimum: str) -> bool:
    return verdict_rank(verdict) >= verdict_rank(minimum)


@cache
def benign_expected() -> dict[str, dict[str, Any]]:
    """file name -> {verdict, classes, has_pickle, description}."""
    data: dict[str, dict[str, Any]] = json.loads((BENIGN_DIR / "EXPECTED.json").read_text())
    return data


@cache
def attack_expected() -> dict[str, dict[str, Any]]:
    """file name -> {technique, loader, min_verdict, finding_codes, requires[, note]}."""
    data: dict[str, dict[str, Any]] = json.loads((ATTACKS_DIR / "EXPECTED.json").read_text())
    return data


def benign_files() -> list[tuple[Path, str, list[str]]]:
    """(path, expected verdict, class names the findings must name) per benign file."""
    return [
        (BENIGN_DIR / name, meta["verdict"], list(meta["classes"]))
        for name, meta in sorted(benign_expected().items())
    ]


def attack_files() -> list[tuple[Path, dict[str, Any]]]:
    """(path, metadata) per attack file; see attack_expected() for the keys."""
    return [(ATTACKS_DIR / name, dict(meta)) for name, meta in sorted(attack_expected().items())]


def corpus_members(folder: Path) -> set[str]:
    """Names of the corpus files actually present in `folder`."""
    return {p.name for p in folder.iterdir() if p.is_file() and p.name not in META_FILES}


# Runs in a subprocess: open one file with one real loader (`python -c HARNESS LOADER PATH
# [ARCHIVE_OFFSETS]`). Exceptions after the load starts are expected (several attacks leave a
# broken stream behind the payload) and are only reported. Never run it without
# HERMETIC_CANARY pointing into a fresh temporary folder.
HARNESS = r"""
import io, os, pickle, sys
loader, path = sys.argv[1], sys.argv[2]
try:
    if loader == "pickle.load":
        with open(path, "rb") as f:
            pickle.load(f)
    elif loader == "pickle.load_all":
        with open(path, "rb") as f:
            while True:
                try:
                    pickle.load(f)
                except EOFError:
                    break
    elif loader == "torch.load":
        import torch
        torch.load(path, weights_only=False)
    elif loader == "torch.load@archives":
        # torch.distributed.checkpoint reads each item of a .distcp file by
        # handing its byte range to torch.load.
        import torch, zipfile
        data = open(path, "rb").read()
        for start in [int(s) for s in sys.argv[3].split(",")]:
            try:
                torch.load(io.BytesIO(data[start:]), weights_only=False)
            except Exception as exc:
                print("archive at", start, "raised", exc, file=sys.stderr)
    elif loader == "dcp.load":
        import torch.distributed.checkpoint as dcp
        state = {"x": None, "w": __import__("torch").zeros(2)}
        dcp.load(state, checkpoint_id=path)
    elif loader == "np.load":
        import numpy as np
        loaded = np.load(path, allow_pickle=True)
        if hasattr(loaded, "files"):
            for key in loaded.files:
                loaded[key]
    elif loader == "joblib.load":
        import joblib
        joblib.load(path)
    else:
        sys.exit("unknown loader " + loader)
except BaseException as exc:
    print("loader raised", type(exc).__name__, exc, file=sys.stderr)
"""
