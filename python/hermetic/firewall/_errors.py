"""The firewall's exceptions and warning, in hermetic's one error hierarchy."""

from __future__ import annotations

from hermetic._hermetic import HermeticError


class NoPickleError(HermeticError):
    """An unpickle was refused.

    Raised inside ``hermetic.no_pickles()`` without a matching
    ``allow_pickles``, and by the process-wide ``deny`` and ``enforce``
    modes. The message teaches: it names the blob, its size, the file when
    known, the call site, what the scanner found, and the exact manifest
    line that would allow the load. The same facts are attributes, ``None``
    when unknown.
    """

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


class BadTokenError(HermeticError):
    """``allow_pickles`` was given something other than the token of an active
    ``no_pickles()`` context."""


class PickleWarning(UserWarning):
    """``warn`` mode loaded a blob the manifest does not list."""
