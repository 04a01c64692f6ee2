"""The shape of the source tree (issue #16).

`scripts/import_cycles.py` reads each crate's `use`/`mod` lines and the package's
imports: no circle may appear among the source files of any crate or of
`python/hermetic`. A source file over 600 lines must say at its top why it is one
room (`Over 600 lines: <reason>`), so that a long file is a decision, not drift."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LONG = 600
MARK = "Over 600 lines:"


def _checker():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "import_cycles", ROOT / "scripts/import_cycles.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["import_cycles"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_no_import_circle() -> None:
    ic = _checker()
    found = []
    for crate in sorted((ROOT / "crates").iterdir()):
        if (crate / "src").is_dir():
            found += [(crate.name, c) for c in ic.cycles(ic.rust_graph(crate / "src"))]
    found += [("python", c) for c in ic.cycles(ic.python_graph(ROOT / "python/hermetic"))]
    assert found == []


def test_the_checker_sees_a_circle() -> None:
    ic = _checker()
    assert ic.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _sources() -> list[Path]:
    files = sorted(ROOT.glob("crates/*/src/**/*.rs"))
    return files + sorted((ROOT / "python/hermetic").glob("**/*.py"))


def test_long_files_say_why() -> None:
    unexplained = []
    for path in _sources():
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > LONG and not any(MARK in line for line in lines[:30]):
            unexplained.append(f"{path.relative_to(ROOT)} ({len(lines)} lines)")
    assert unexplained == [], "say why at the top, or split: " + ", ".join(unexplained)


def test_the_length_rule_sees_the_tree() -> None:
    # A glob that matched nothing would make the rule above pass vacuously.
    names = {p.name for p in _sources()}
    assert {"lib.rs", "__init__.py", "dis.rs"} & names or {"mod.rs"} & names
    assert len(_sources()) > 50
