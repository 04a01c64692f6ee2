"""hermetic: safe persistence for machine learning.

``hermetic.scan`` tells whether loading a file can run code, and which imports
make it so, without loading it. ``hermetic.save`` / ``hermetic.load`` keep
whole checkpoint trees in one safetensors file, with no pickle anywhere.
``hermetic.torch.load`` and ``hermetic.load_pickle`` read existing pickle-based
checkpoints without running them.
"""

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
