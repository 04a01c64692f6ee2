"""hermetic: safe persistence for machine learning.

``hermetic.scan`` tells whether loading a file can run code, and which imports
make it so, without loading it. ``hermetic.save`` / ``hermetic.load`` keep
whole checkpoint trees in one safetensors file, with no pickle anywhere.
``hermetic.torch.load`` and ``hermetic.load_pickle`` read existing pickle-based
checkpoints without running them.
"""

# The public names are imported on first use (PEP 562), so that `import
# hermetic` and the `hermetic` command cost the interpreter and the extension
# module, not the typed-tree, evaluator and firewall modules (38 ms measured).
from __future__ import annotations

import importlib

from hermetic._hermetic import __version__

# Not `typing.TYPE_CHECKING`: importing typing alone costs 8 ms (mypy reads
# any name TYPE_CHECKING this way).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from hermetic import joblib, torch
    from hermetic._evaluate import load_pickle
    from hermetic._format import (
        FormatError,
        Handle,
        TensorInfo,
        dumps,
        load,
        loads,
        save,
    )
    from hermetic._format import open_archive as open
    from hermetic._hermetic import __version__
    from hermetic._scan import (
        Finding,
        GlobalRef,
        ScanResult,
        Stream,
        Verdict,
        blob_id,
        scan,
        scan_bytes,
    )
    from hermetic._typed import field, register
    from hermetic.errors import (
        CheckpointError,
        ClassNotAllowedError,
        HermeticError,
        ManifestError,
        PolicyError,
        SchemaError,
        UnsafePickleError,
    )
    from hermetic.firewall import (
        BadTokenError,
        NoPickleError,
        PickleToken,
        PickleWarning,
        allow_pickles,
        no_pickles,
    )

#: name -> (module, attribute); attribute None for a submodule.
_LAZY: dict[str, tuple[str, str | None]] = {
    "joblib": ("hermetic.joblib", None),
    "torch": ("hermetic.torch", None),
    "load_pickle": ("hermetic._evaluate", "load_pickle"),
    "FormatError": ("hermetic._format", "FormatError"),
    "Handle": ("hermetic._format", "Handle"),
    "TensorInfo": ("hermetic._format", "TensorInfo"),
    "dumps": ("hermetic._format", "dumps"),
    "load": ("hermetic._format", "load"),
    "loads": ("hermetic._format", "loads"),
    "save": ("hermetic._format", "save"),
    "open": ("hermetic._format", "open_archive"),
    "Finding": ("hermetic._scan", "Finding"),
    "GlobalRef": ("hermetic._scan", "GlobalRef"),
    "ScanResult": ("hermetic._scan", "ScanResult"),
    "Stream": ("hermetic._scan", "Stream"),
    "Verdict": ("hermetic._scan", "Verdict"),
    "blob_id": ("hermetic._scan", "blob_id"),
    "scan": ("hermetic._scan", "scan"),
    "scan_bytes": ("hermetic._scan", "scan_bytes"),
    "field": ("hermetic._typed", "field"),
    "register": ("hermetic._typed", "register"),
    "CheckpointError": ("hermetic.errors", "CheckpointError"),
    "ClassNotAllowedError": ("hermetic.errors", "ClassNotAllowedError"),
    "HermeticError": ("hermetic.errors", "HermeticError"),
    "ManifestError": ("hermetic.errors", "ManifestError"),
    "PolicyError": ("hermetic.errors", "PolicyError"),
    "SchemaError": ("hermetic.errors", "SchemaError"),
    "UnsafePickleError": ("hermetic.errors", "UnsafePickleError"),
    "BadTokenError": ("hermetic.firewall", "BadTokenError"),
    "NoPickleError": ("hermetic.firewall", "NoPickleError"),
    "PickleToken": ("hermetic.firewall", "PickleToken"),
    "PickleWarning": ("hermetic.firewall", "PickleWarning"),
    "allow_pickles": ("hermetic.firewall", "allow_pickles"),
    "no_pickles": ("hermetic.firewall", "no_pickles"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'hermetic' has no attribute {name!r}") from None
    mod = importlib.import_module(module)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "CheckpointError",
    "load_pickle",
    "joblib",
    "torch",
    "ClassNotAllowedError",
    "SchemaError",
    "field",
    "register",
    "FormatError",
    "Handle",
    "TensorInfo",
    "dumps",
    "load",
    "loads",
    "open",
    "save",
    "BadTokenError",
    "ManifestError",
    "NoPickleError",
    "PickleToken",
    "PickleWarning",
    "allow_pickles",
    "no_pickles",
    "Finding",
    "GlobalRef",
    "HermeticError",
    "PolicyError",
    "ScanResult",
    "Stream",
    "UnsafePickleError",
    "Verdict",
    "__version__",
    "blob_id",
    "scan",
    "scan_bytes",
]
