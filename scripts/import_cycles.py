#!/usr/bin/env python3
"""Import circles among source files: each crate's Rust modules (`use crate::..`,
`super::..`, `mod`) and the `python/hermetic` package (`import`/`from .. import`).

Prints every strongly connected group of two or more files and exits 1 if there
is one (docs/ARCHITECTURE.md: "no file imports, directly or not, a file that
imports it"). Run from the repository root: `python scripts/import_cycles.py`.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rust_graph(src: Path) -> dict[str, set[str]]:
    """File -> files it uses, for one crate's `src/`. A `use crate::a::b::C`
    resolves to the longest module path that is a file (`a/b.rs`, `a/b/mod.rs`)."""
    files = {p: p.relative_to(src) for p in src.rglob("*.rs")}

    def module_of(rel: Path) -> list[str]:
        parts = list(rel.with_suffix("").parts)
        if parts[-1] in ("mod", "lib", "main"):
            parts = parts[:-1]
        return parts

    by_module = {tuple(module_of(r)): str(r) for r in files.values()}
    graph: dict[str, set[str]] = {str(r): set() for r in files.values()}
    use_re = re.compile(r"\b(crate|super|self)((?:::\w+)+)")
    for path, rel in files.items():
        here = module_of(rel)
        text = re.sub(r"//[^\n]*", "", path.read_text())
        text = re.sub(r"#\[cfg\(test\)\]\s*mod tests\s*\{.*", "", text, flags=re.S)
        # `use super::{a, b::C}`: one path per item of the group.
        paths = [(m.group(1), m.group(2)) for m in use_re.finditer(text)]
        for m in re.finditer(r"\b(crate|super|self)((?:::\w+)*)::\{([^{}]*)\}", text):
            for item in m.group(3).split(","):
                item = item.strip().split(" as ")[0]
                if re.fullmatch(r"\w+(::\w+)*", item):
                    paths.append((m.group(1), f"{m.group(2)}::{item}"))
        for head, rest in paths:
            tail = rest.split("::")[1:]
            if head == "crate":
                base: list[str] = []
            elif head == "super":
                base = here[:-1] if rel.stem not in ("mod", "lib") else here[:-1]
            else:
                base = here
            path_parts = base + tail
            for n in range(len(path_parts), 0, -1):
                target = by_module.get(tuple(path_parts[:n]))
                if target is not None:
                    if target != str(rel) and not _is_ancestor(path_parts[:n], here):
                        graph[str(rel)].add(target)
                    break
    return graph


def _is_ancestor(module: list[str], of: list[str]) -> bool:
    """A parent module (`mod.rs` declaring its children) is not an import."""
    return len(module) < len(of) and of[: len(module)] == module


def python_graph(pkg: Path) -> dict[str, set[str]]:
    files = {p: p.relative_to(pkg.parent) for p in pkg.rglob("*.py")}
    names: dict[str, str] = {}
    for rel in files.values():
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = str(rel)
    # Extension modules (their `.pyi` stubs name them) import nothing of ours.
    for stub in pkg.rglob("*.pyi"):
        parts = list(stub.relative_to(pkg.parent).with_suffix("").parts)
        names.setdefault(".".join(parts), str(stub.relative_to(pkg.parent)))
    graph: dict[str, set[str]] = {str(r): set() for r in files.values()}
    for p, rel in files.items():
        parts = list(rel.with_suffix("").parts)
        package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
        if parts[-1] == "__init__":
            package = parts[:-1]
        tree = ast.parse(p.read_text())
        for node in ast.walk(tree):
            # Only imports run at module load: a function-level import (the
            # lazy ones) cannot close a circle at import time.
            if not _top_level(tree, node):
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                # `from pkg import sub` needs pkg's __init__ only for names
                # that are not submodules of it.
                subs = [f"{mod}.{a.name}" for a in node.names]
                targets = subs if all(t in names for t in subs) else [mod, *subs]
            for t in targets:
                f = names.get(t)
                if f and f != str(rel):
                    graph[str(rel)].add(f)
    return graph


def _top_level(tree: ast.Module, node: ast.AST) -> bool:
    if not isinstance(node, (ast.Import, ast.ImportFrom)):
        return False
    for stmt in tree.body:
        if stmt is node:
            return True
        if isinstance(stmt, (ast.If, ast.Try)):
            if any(n is node for n in ast.walk(stmt)) and not any(
                isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in ast.walk(stmt)
            ):
                # `if TYPE_CHECKING:` imports do not run.
                return not (isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test))
    return False


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of two or more nodes."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    found = 0
    for crate in sorted((ROOT / "crates").iterdir()):
        src = crate / "src"
        if src.is_dir():
            for c in cycles(rust_graph(src)):
                found += 1
                print(f"{crate.name}: " + " <-> ".join(c))
    for c in cycles(python_graph(ROOT / "python" / "hermetic")):
        found += 1
        print("python/hermetic: " + " <-> ".join(c))
    print(f"{found} import circle(s)")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
