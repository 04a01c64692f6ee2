"""hermetic: safe persistence for machine learning.

``hermetic.scan`` tells whether loading a file can run code, and which imports
make it so, without loading it.
"""

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
