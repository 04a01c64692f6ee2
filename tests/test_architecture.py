"""Import circles among source files (issue #16): `scripts/import_cycles.py` reads
each crate's `use`/`mod` lines and the package's imports. None may appear beyond the
one listed here, which is the evaluator's interpreter and its builtins calling each
other (the shared pickle machine of issue #16 is what removes it)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

KNOWN = {
    (
        "hermetic-pickle",
        (
            "eval/calls.rs",
            "eval/checkpoint.rs",
            "eval/machine.rs",
            "eval/numpy.rs",
            "eval/torch.rs",
        ),
    ),
}


def _checker():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "import_cycles", ROOT / "scripts/import_cycles.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["import_cycles"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_no_import_circle_beyond_the_known_one() -> None:
    ic = _checker()
    found = set()
    for crate in sorted((ROOT / "crates").iterdir()):
        if (crate / "src").is_dir():
            found |= {(crate.name, tuple(c)) for c in ic.cycles(ic.rust_graph(crate / "src"))}
    found |= {("python", tuple(c)) for c in ic.cycles(ic.python_graph(ROOT / "python/hermetic"))}
    assert found <= KNOWN, sorted(found - KNOWN)


def test_the_checker_sees_a_circle() -> None:
    ic = _checker()
    assert ic.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
