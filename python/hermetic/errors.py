"""Every exception (and the one warning) hermetic raises, in one place.

All exceptions derive from :class:`HermeticError`. Each has a stable
snake_case ``code``: the class's own (below), or, for an error the Rust core
raised, the code of that failure (``FormatError``: ``invalid_safetensors``,
``digest_mismatch``, ...; ``CheckpointError``: ``malformed``,
``unsupported``, ``limit_exceeded``; ``PolicyError``: ``bad_pattern``,
``io_error``, ``invalid_policy``; ``ManifestError``: ``bad_blob_id``,
``invalid_manifest``, ...). Where the failure has a place it is there too:
``offset`` (``CheckpointError``, ``UnsafePickleError``) and ``path``
(``UnsafePickleError``, ``PolicyError``, ``ManifestError``; ``None`` when
unknown). The classes are also importable from where they were first
defined (``hermetic``, ``hermetic.firewall``, ``hermetic.dcp._safe``).

Finding codes (what a scan reports) are another catalogue:
``hermetic._hermetic.FINDING_CODES`` and the README's table.

======================== ======================= ==========================
class                    base                    ``code`` (class default)
======================== ======================= ==========================
``HermeticError``        ``Exception``           ``hermetic_error``
``UnsafePickleError``    ``HermeticError``       ``unsafe_pickle``
``PolicyError``          ``HermeticError``       ``invalid_policy``
``ManifestError``        ``HermeticError``       ``invalid_manifest``
``FormatError``          ``HermeticError``       ``format_error``
``SchemaError``          ``FormatError``         ``schema_mismatch``
``ClassNotAllowedError`` ``FormatError``         ``class_not_allowed``
``CheckpointError``      ``HermeticError``       ``checkpoint_error``
``DcpFormatError``       ``CheckpointError``     ``invalid_dcp``
``NoPickleError``        ``HermeticError``       ``pickle_refused``
``BadTokenError``        ``HermeticError``       ``bad_token``
``PickleWarning``        ``UserWarning``         ``unlisted_pickle``
======================== ======================= ==========================
"""

from __future__ import annotations

from hermetic._hermetic import (
    CheckpointError,
    FormatError,
    HermeticError,
    ManifestError,
    PolicyError,
    UnsafePickleError,
)

__all__ = [
    "BadTokenError",
    "CheckpointError",
    "ClassNotAllowedError",
    "DcpFormatError",
    "FormatError",
    "HermeticError",
    "ManifestError",
    "NoPickleError",
    "PickleWarning",
    "PolicyError",
    "SchemaError",
    "UnsafePickleError",
]


class SchemaError(FormatError):
    """The file's data does not fit the type asked for: the message names each
    place in the tree, the type expected there and what the file holds."""

    code = "schema_mismatch"


class ClassNotAllowedError(FormatError):
    """A file names classes, enums or callables that the caller has not allowed
    (``type=``, ``allow=`` or :func:`hermetic.register`)."""

    code = "class_not_allowed"


class DcpFormatError(CheckpointError):
    """The folder is not a DCP checkpoint this reader can read faithfully (a
    metadata field of the wrong type, an item outside its file, a stream
    transform it does not implement)."""

    code = "invalid_dcp"


class NoPickleError(HermeticError):
    """An unpickle was refused.

    Raised inside ``hermetic.no_pickles()`` without a matching
    ``allow_pickles``, and by the process-wide ``deny`` and ``enforce``
    modes. The message teaches: it names the blob, its size, the file when
    known, the call site, what the scanner found, and the exact manifest
    line that would allow the load. The same facts are attributes, ``None``
    when unknown.
    """

    code = "pickle_refused"
    blob_id: str | None
    size: int | None
    file: str | None
    call_site: str | None
    scanner: str | None
    manifest_line: str | None
    mode: str | None

    def __init__(
        self,
        message: str,
        *,
        blob_id: str | None = None,
        size: int | None = None,
        file: str | None = None,
        call_site: str | None = None,
        scanner: str | None = None,
        manifest_line: str | None = None,
        mode: str | None = None,
    ) -> None:
        super().__init__(message)
        self.blob_id = blob_id
        self.size = size
        self.file = file
        self.call_site = call_site
        self.scanner = scanner
        self.manifest_line = manifest_line
        self.mode = mode

    @property
    def path(self) -> str | None:
        """The file the blob came from (``file``), when known."""
        return self.file


class BadTokenError(HermeticError):
    """``allow_pickles`` was given something other than the token of an active
    ``no_pickles()`` context."""

    code = "bad_token"


class PickleWarning(UserWarning):
    """``warn`` mode loaded a blob the manifest does not list."""

    code = "unlisted_pickle"
