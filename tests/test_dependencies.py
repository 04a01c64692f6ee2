"""Every third-party module the package or the tests import is declared where pip
installs it from.

The package's imports must be in pyproject.toml: an import at module level in
`dependencies` (its environment marker may narrow it only where a version guard
narrows the import), an import the code guards (inside a function, under
`try/except ImportError`, behind a version check) in `dependencies` or an
optional extra. The tests' and benches' imports must be in requirements-test.txt
or the package's own `dependencies`, which scripts/test installs with the wheel.
A module that is only installed by chance (an earlier venv, a transitive
dependency of something else) fails here instead of on a user's fresh machine.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "python" / "hermetic"
FIRST_PARTY = {"hermetic", "hermetic_firewall"}


@dataclass(frozen=True)
class Import:
    module: str
    path: Path
    line: int
    guarded: bool
    version_guarded: bool


def _is_import_error_handler(node: ast.Try) -> bool:
    for h in node.handlers:
        names = []
        if isinstance(h.type, ast.Name):
            names = [h.type.id]
        elif isinstance(h.type, ast.Tuple):
            names = [e.id for e in h.type.elts if isinstance(e, ast.Name)]
        if {"ImportError", "ModuleNotFoundError"} & set(names):
            return True
    return False


def _is_version_check(test: ast.expr) -> bool:
    return "version_info" in ast.unparse(test) or "TYPE_CHECKING" in ast.unparse(test)


def imports_of(path: Path) -> list[Import]:
    """Absolute imports of a file, each with how it is guarded."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Import] = []

    def visit(node: ast.AST, guarded: bool, version: bool) -> None:
        for child in ast.iter_child_nodes(node):
            g, v = guarded, version
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                g = True
            elif isinstance(child, ast.Try) and _is_import_error_handler(child):
                g = True
            elif isinstance(child, ast.If) and _is_version_check(child.test):
                g, v = True, True
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(alias.name.split(".")[0], path, child.lineno, g, v))
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append(Import(child.module.split(".")[0], path, child.lineno, g, v))
            elif isinstance(child, ast.Call) and ast.unparse(child.func).endswith("importorskip"):
                arg = child.args[0] if child.args else None
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.append(Import(arg.value.split(".")[0], path, child.lineno, True, False))
            visit(child, g, v)

    visit(tree, False, False)
    return found


def _local_modules(*dirs: Path) -> set[str]:
    names = set()
    for d in dirs:
        for p in d.rglob("*.py"):
            names.add(p.stem)
        names.update(p.name for p in d.rglob("*") if (p / "__init__.py").exists())
    return names


def third_party(imports: list[Import], local: set[str]) -> list[Import]:
    skip = set(sys.stdlib_module_names) | FIRST_PARTY | local | {"__future__"}
    return [i for i in imports if i.module not in skip and not i.module.startswith("_")]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def _installed() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


def distributions(module: str) -> set[str]:
    """The distributions that provide a top-level module; a module that is not
    installed is assumed to come from the distribution of its own name."""
    found = _installed().get(module)
    return {_norm(d) for d in found} if found else {_norm(module)}


def requirement_names(lines: list[str]) -> dict[str, str]:
    """Requirement name -> its environment marker ('' when none)."""
    out = {}
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        assert m, f"cannot read requirement {raw!r}"
        out[_norm(m.group(1))] = line.split(";", 1)[1].strip() if ";" in line else ""
    return out


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def package_problems(project: dict) -> list[str]:
    required = requirement_names(project.get("dependencies", []))
    extras = {
        name
        for reqs in project.get("optional-dependencies", {}).values()
        for name in requirement_names(reqs)
    }
    problems = []
    files = sorted(PACKAGE.rglob("*.py"))
    for imp in third_party([i for f in files for i in imports_of(f)], set()):
        dists = distributions(imp.module)
        where = f"{imp.path.relative_to(ROOT)}:{imp.line} imports {imp.module}"
        if dists & required.keys():
            marked = [required[d] for d in dists & required.keys()]
            if any(marked) and not imp.version_guarded:
                problems.append(f"{where} at every Python version, but it is declared {marked}")
        elif imp.guarded and dists & extras:
            continue
        elif imp.guarded:
            problems.append(f"{where} (guarded): declare it in an optional extra")
        else:
            problems.append(f"{where}: declare it in [project] dependencies")
    return problems


def requirements_test_problems(project: dict) -> list[str]:
    lines = (ROOT / "requirements-test.txt").read_text(encoding="utf-8").splitlines()
    declared = set(requirement_names(lines)) | set(
        requirement_names(project.get("dependencies", []))
    )
    dirs = [ROOT / "tests", ROOT / "bench", ROOT / "examples"]
    local = _local_modules(*dirs)
    files = sorted(p for d in dirs for p in d.rglob("*.py") if "attacks" not in p.parts)
    problems = []
    bench_only = set(
        requirement_names(
            (ROOT / "bench" / "requirements.txt").read_text(encoding="utf-8").splitlines()
        )
    )
    for imp in third_party([i for f in files for i in imports_of(f)], local):
        dists = distributions(imp.module)
        if dists & declared:
            continue
        if "bench" in imp.path.relative_to(ROOT).parts[:1] and dists & bench_only:
            continue
        problems.append(
            f"{imp.path.relative_to(ROOT)}:{imp.line} imports {imp.module}, "
            "which requirements-test.txt does not name"
        )
    return problems


def test_package_imports_are_declared() -> None:
    assert package_problems(pyproject()["project"]) == []


def test_test_imports_are_declared() -> None:
    assert requirements_test_problems(pyproject()["project"]) == []


def test_the_check_fails_without_cattrs() -> None:
    project = pyproject()["project"]
    project["dependencies"] = [
        d for d in project["dependencies"] if _norm(d.split(">")[0]) != "cattrs"
    ]
    problems = package_problems(project)
    assert any("imports cattrs" in p and "dependencies" in p for p in problems), problems
    # Nor may the tests rely on the package's dependency for it.
    assert any("imports cattrs" in p for p in requirements_test_problems(project))


def test_the_check_sees_guarded_imports() -> None:
    project = pyproject()["project"]
    project["optional-dependencies"] = {}
    problems = package_problems(project)
    assert any("imports torch" in p and "optional extra" in p for p in problems), problems
    assert any("imports numpy" in p for p in problems), problems
