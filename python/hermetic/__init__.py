"""hermetic: safe persistence for machine learning.

``hermetic.scan`` tells whether loading a file can run code, and which imports
make it so, without loading it. ``hermetic.save`` / ``hermetic.load`` keep
whole checkpoint trees in one safetensors file, with no pickle anywhere.
"""

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
from hermetic._hermetic import (
    HermeticError,
    PolicyError,
    UnsafePickleError,
    __version__,
)
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

__all__ = [
    "FormatError",
    "Handle",
    "TensorInfo",
    "dumps",
    "load",
    "loads",
    "open",
    "save",
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
