"""Helpers for tests/test_trust_corpus.py: pickles that name what an
attacker chooses, and checks that text built from those names stays one
name per line."""

from __future__ import annotations

import struct

# The lines of a refusal; a forged one must never start a line.
FORGED = "  why:       FORGED"
# A name that would forge a refusal line and clear the terminal.
EVIL_NAME = "x\n" + FORGED + "\x1b[2J\u202e.pkl"


def short(text: str) -> bytes:
    b = text.encode("utf-8", "surrogatepass")
    if len(b) < 256:
        return b"\x8c" + bytes([len(b)]) + b
    return b"\x8d" + struct.pack("<Q", len(b)) + b


def stack_global(module: str, name: str, arg: str = "x") -> bytes:
    """A protocol-4 pickle calling ``module.name(arg)`` through
    STACK_GLOBAL, whose names may hold any character (GLOBAL's cannot hold
    a newline)."""
    return b"\x80\x04" + short(module) + short(name) + b"\x93" + short(arg) + b"\x85R."


def canary_pickle(path: str) -> bytes:
    """Creates ``path`` when it runs: ``builtins.open(path, "w")``."""
    return f"c__builtin__\nopen\n(S'{path}'\nS'w'\ntR.".encode()


def assert_one_line_per_name(text: str) -> None:
    """No line of ``text`` is forged, and no raw control character or bidi
    override reaches it."""
    for line in text.splitlines():
        assert not line.startswith(FORGED), text
        assert line.strip() != FORGED.strip(), text
    for bad in ("\x1b", "\u202e", "\r"):
        assert bad not in text, repr(text)
