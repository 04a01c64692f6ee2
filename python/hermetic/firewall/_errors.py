"""The firewall's exceptions and warning, in hermetic's one error hierarchy."""

from __future__ import annotations

import os

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


# Characters a name from a file, a pickle or the program must not bring raw
# into a message: C0 and C1 controls, DEL, the line and paragraph separators
# and the bidirectional marks, embeddings, overrides and isolates. The same
# set as ``hermetic_manifest::text`` (the Rust refusals).
_UNSAFE = frozenset(
    [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, 0x200E, 0x200F]
    + [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def display(text: str) -> str:
    """``text`` with every control, separator and bidi character escaped
    (``\\n``, ``\\x1b``, ``\\u{202e}``), so one name is one run of visible
    characters on one line: a file named ``"x\\n  why: listed"`` cannot forge
    a line of a refusal. Plain text comes back unchanged."""
    if not any(ord(c) in _UNSAFE for c in text):
        return text
    out = []
    for c in text:
        o = ord(c)
        if o not in _UNSAFE:
            out.append(c)
        elif c in _NAMED:
            out.append(_NAMED[c])
        elif o < 0x100:
            out.append(f"\\x{o:02x}")
        else:
            out.append(f"\\u{{{o:04x}}}")
    return "".join(out)


def text_safe(name: str | None) -> str | None:
    """A file name as text the Rust side and JSON can carry: a name that is
    not UTF-8 (``os.fsdecode`` keeps its bytes as lone surrogates) gets those
    bytes as ``\\xNN``. Without this, such a name turned a refusal into a
    ``UnicodeEncodeError`` and made a recorded inventory unreadable."""
    if name is None:
        return None
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        pass
    try:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    except UnicodeError:
        return name.encode("utf-8", "backslashreplace").decode("utf-8")
