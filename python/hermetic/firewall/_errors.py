"""The firewall's exceptions and warning (defined in :mod:`hermetic.errors`)
and the escaping of names in its messages."""

from __future__ import annotations

import os

# The classes live in hermetic.errors with every other hermetic exception.
from hermetic.errors import BadTokenError, NoPickleError, PickleWarning

__all__ = ["BadTokenError", "NoPickleError", "PickleWarning", "display", "text_safe"]


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
