"""The Rust-Python bridge is declared: every Python name the extension calls
exists, and every call the extension makes is declared.

Rust calls our Python code through two doors only: the functions of
`hermetic._bridge` (its `__all__`) and the methods of
`hermetic._evaluate.Maker` (`_hermetic.BRIDGE_MAKER`). A helper renamed on one
side and not the other would otherwise only fail when a user loads a file that
reaches it.
"""

from __future__ import annotations

import re
from pathlib import Path

from hermetic import _bridge, _evaluate, _hermetic

SRC = Path(__file__).resolve().parent.parent / "crates" / "hermetic-py" / "src"


def _rust_sources() -> str:
    return "\n".join(
        p.read_text(encoding="utf-8") for p in sorted(SRC.rglob("*.rs")) if p.name != "bridge.rs"
    )


def test_helpers_are_the_bridge_module() -> None:
    for name in _bridge.__all__:
        assert callable(getattr(_bridge, name)), name


def test_maker_has_every_method_rust_calls() -> None:
    for name in _hermetic.BRIDGE_MAKER:
        assert callable(getattr(_evaluate.Maker, name, None)), name


def test_every_helper_call_in_rust_is_declared() -> None:
    src = _rust_sources()
    # Our own helpers are the underscore names Rust spells out (attribute
    # names of other objects, such as Enum's `_value_`, are not ours).
    called = set(re.findall(r'"(_[a-z][a-z0-9_]*[a-z0-9])"', src)) - {"_value_"}
    assert called == set(_bridge.__all__), (
        "undeclared",
        called - set(_bridge.__all__),
        "declared but never called",
        set(_bridge.__all__) - called,
    )


def test_every_maker_call_in_rust_is_declared() -> None:
    src = "".join(
        p.read_text(encoding="utf-8")
        for p in [SRC / "evaluate.rs", *sorted((SRC / "evaluate").rglob("*.rs"))]
    )
    called = set(re.findall(r'maker\s*\.call_method[01]\(\s*"([a-z_]+)"', src))
    assert called, "the pattern no longer finds the Maker calls"
    assert called == set(_hermetic.BRIDGE_MAKER), (
        "undeclared",
        called - set(_hermetic.BRIDGE_MAKER),
        "declared but never called",
        set(_hermetic.BRIDGE_MAKER) - called,
    )


def test_rust_imports_only_the_bridge_of_our_modules() -> None:
    imported = set(re.findall(r'import\(\s*"(hermetic[a-z_.]*)"', _rust_sources()))
    # hermetic._structure raises the typed-tree Mismatch error; everything
    # else of ours goes through hermetic._bridge.
    assert imported <= {"hermetic._structure"}, imported
