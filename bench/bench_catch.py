"""What hermetic, picklescan and fickling catch: the attack corpus and real package files.

    python tests/real_corpus.py install /tmp/corpus    # the corpus packages, from PyPI
    python bench/bench_catch.py /tmp/corpus/old /tmp/corpus/current [--hermetic LABEL=BIN ...]

Build the native binary first: `cargo build --release -p hermetic-cli` (or pass --hermetic).

Two sets of files, each scanned by every tool once, on the whole folder:

1. tests/fixtures/attacks: every file in its EXPECTED.json is an exploit that runs code when its
   loader opens it. A tool catches it when it flags it (hermetic: suspicious or dangerous;
   picklescan: a dangerous global; fickling: severity above LIKELY_SAFE); an error (the tool
   could not parse the file) is counted apart, and so is a file the tool skips.
2. The real-file corpus of tests/fixtures/real_corpus.json (files shipped inside public
   packages; see tests/real_corpus.py), found under the ROOTs by path and sha256. Each file is
   hard-linked into one folder under its own name (an index in front), so that tools which go
   by file extension see the real one. For the files the real loaders show to be data only
   (truth `data` or `none`), a flag or an error is a false positive.

hermetic runs as `hermetic scan --format json --fail-on never --all FOLDER`, fickling through
bench/_fickling_driver.py (as in bench_scan.py) and picklescan through
bench/_picklescan_driver.py: its API on every file `picklescan -p FOLDER` opens, because the
command line stops at the first file its scanner raises on (the run notes when it does).
Markdown goes to stdout and everything to bench/results/catch.json.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))

from bench_scan import (  # noqa: E402
    ERROR,
    FLAGGED,
    NOT_SCANNED,
    SAFE,
    FileVerdict,
    parse_fickling_driver,
    parse_hermetic,
)

import real_corpus  # noqa: E402

ATTACKS = REPO / "tests" / "fixtures" / "attacks"
DRIVER = HERE / "_fickling_driver.py"
PICKLESCAN_DRIVER = HERE / "_picklescan_driver.py"
DEFAULT_OUTPUT = HERE / "results" / "catch.json"
VENV_BIN = Path(sys.executable).parent
# What a file a tool's output does not mention means.
ABSENT = {"hermetic": SAFE, "picklescan": NOT_SCANNED, "fickling": NOT_SCANNED}


def parse_picklescan_driver(stdout: str, _rcs: list[int], root: Path) -> dict[str, FileVerdict]:
    status = {"dangerous": FLAGGED, "error": ERROR, "safe": SAFE, "skipped": NOT_SCANNED}
    out: dict[str, FileVerdict] = {}
    for f in json.loads(stdout)["files"]:
        detail = ", ".join(f["globals"]) or f["error"] or f["status"]
        out[str(Path(f["path"]).relative_to(root))] = FileVerdict(status[f["status"]], detail)
    return out


def picklescan_cli_problem(target: Path) -> str:
    """Whether `picklescan -p target` itself gets through the folder (it stops at the first
    file its scanner raises on); '' when it does."""
    argv = [str(VENV_BIN / "picklescan"), "-p", str(target)]
    p = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, check=False)
    text = p.stdout + p.stderr
    if "Traceback (most recent call last)" not in text:
        return ""
    last = text.strip().splitlines()[-1]
    return (
        f"`picklescan -p` stops with a traceback ({last}) part way through this folder; "
        "the numbers come from bench/_picklescan_driver.py, which scans the same files one by one"
    )


PARSERS = {
    "hermetic": parse_hermetic,
    "picklescan": parse_picklescan_driver,
    "fickling": parse_fickling_driver,
}


@dataclass(frozen=True)
class Tool:
    label: str
    kind: str  # "hermetic", "picklescan" or "fickling"
    binary: Path | None = None  # hermetic's

    def argv(self, target: Path) -> list[str]:
        if self.kind == "hermetic":
            assert self.binary is not None
            t = str(target)
            return [str(self.binary), "scan", "--format", "json", "--fail-on", "never", "--all", t]
        if self.kind == "picklescan":
            return [sys.executable, str(PICKLESCAN_DRIVER), str(target)]
        return [sys.executable, str(DRIVER), str(target)]


def run_tool(tool: Tool, target: Path) -> tuple[dict[str, FileVerdict], float, str]:
    """Per-file verdicts (names relative to target), wall seconds, and a problem or ''."""
    t0 = time.perf_counter()
    p = subprocess.run(tool.argv(target), capture_output=True, text=True, cwd=REPO, check=False)
    wall = time.perf_counter() - t0
    try:
        verdicts = PARSERS[tool.kind](p.stdout, [p.returncode], target)
    except (ValueError, KeyError) as e:
        return {}, wall, f"could not parse output (exit {p.returncode}): {e!r}; {p.stderr[-300:]}"
    return verdicts, wall, ""


def _status(verdicts: dict[str, FileVerdict], name: str, tool: Tool) -> FileVerdict:
    return verdicts.get(name) or FileVerdict(ABSENT[tool.kind], "not in the output")


def attack_rows(tools: list[Tool]) -> dict[str, dict[str, Any]]:
    expected: dict[str, Any] = json.loads((ATTACKS / "EXPECTED.json").read_text())
    out: dict[str, dict[str, Any]] = {}
    for tool in tools:
        verdicts, wall, problem = run_tool(tool, ATTACKS)
        if tool.kind == "picklescan" and not problem:
            problem = picklescan_cli_problem(ATTACKS)
        files = {n: _status(verdicts, n, tool) for n in sorted(expected)}
        out[tool.label] = {
            "wall_s": round(wall, 2),
            "problem": problem,
            "caught": sorted(n for n, v in files.items() if v.status == FLAGGED),
            "errored": sorted(n for n, v in files.items() if v.status == ERROR),
            "skipped": sorted(n for n, v in files.items() if v.status == NOT_SCANNED),
            "missed": sorted(n for n, v in files.items() if v.status == SAFE),
            "detail": {n: f"{v.status}: {v.detail}" for n, v in files.items()},
        }
    return out


def link_corpus(
    located: list[tuple[dict[str, Any], Path]], into: Path
) -> dict[str, dict[str, Any]]:
    """Hard-links (or copies) every file into one folder; link name -> manifest entry."""
    names: dict[str, dict[str, Any]] = {}
    for i, (entry, path) in enumerate(located):
        name = f"{i:04d}_{path.name}"
        try:
            os.link(path, into / name)
        except OSError:
            shutil.copyfile(path, into / name)
        names[name] = entry
    return names


def real_rows(tools: list[Tool], roots: list[Path], manifest: Path) -> dict[str, Any]:
    located = real_corpus.locate(real_corpus.load_manifest(manifest), roots)
    out: dict[str, Any] = {"files": len(located), "tools": {}}
    with tempfile.TemporaryDirectory(prefix="hermetic-catch-") as tmp:
        folder = Path(tmp)
        names = link_corpus(located, folder)
        data_only = [n for n, e in names.items() if e["expected"] == "safe"]
        code = [n for n, e in names.items() if e["expected"] == "not_safe"]
        out["data_only"] = len(data_only)
        out["code"] = len(code)
        for tool in tools:
            verdicts, wall, problem = run_tool(tool, folder)
            if tool.kind == "picklescan" and not problem:
                problem = picklescan_cli_problem(folder)
            st = {n: _status(verdicts, n, tool) for n in names}
            fp = [n for n in data_only if st[n].status == FLAGGED]
            err = [n for n in data_only if st[n].status == ERROR]
            out["tools"][tool.label] = {
                "wall_s": round(wall, 2),
                "problem": problem,
                "opened": sum(st[n].status != NOT_SCANNED for n in names),
                "data_only_flagged": len(fp),
                "data_only_errors": len(err),
                "code_flagged_or_error": sum(st[n].status in (FLAGGED, ERROR) for n in code),
                "code_not_flagged": sum(st[n].status in (SAFE, NOT_SCANNED) for n in code),
                "false_positives": [
                    f"{names[n]['dist']}: {names[n]['path']} ({names[n]['kind']}) -> {st[n].detail}"
                    for n in fp + err
                ],
            }
    return out


def _pct(n: int, d: int) -> str:
    return f"{100 * n / d:.1f}%" if d else "n/a"


def render(results: dict[str, Any]) -> str:
    att = results["attacks"]
    real = results["real"]
    n_att = results["attack_count"]
    v = results["versions"]
    out = ["# What each scanner catches\n"]
    out.append(
        f"{results['date']} · "
        + " · ".join(f"{k}: {v[k]}" for k in results["tools"])
        + f" · attack corpus at {results['attack_corpus']}\n"
    )
    rows = []
    d = real["data_only"]
    for tool in results["tools"]:
        a, r = att[tool], real["tools"][tool]
        fp = r["data_only_flagged"] + r["data_only_errors"]
        rows.append(
            [
                tool,
                f"{len(a['caught'])} / {n_att}",
                str(len(a["missed"])),
                str(len(a["errored"])),
                str(len(a["skipped"])),
                f"{r['opened']} / {real['files']}",
                f"{fp} / {d} ({_pct(fp, d)})",
                f"{r['data_only_flagged']} / {r['data_only_errors']}",
                f"{r['code_flagged_or_error']} / {real['code']}",
            ]
        )
    header = [
        "tool",
        "attacks caught",
        "missed (said safe)",
        "errored",
        "not scanned",
        "real files opened",
        "real data-only files: false positives",
        "of which flagged / errors",
        "real files importing non-data classes: flagged",
    ]
    out.append(real_corpus.md_table(header, rows))
    out.append(
        f"\nAttacks: tests/fixtures/attacks ({n_att} exploits; caught = flagged, an error is not "
        f"counted as caught). Real files: {real['files']} files shipped inside public packages "
        f"({d} data-only by the real loaders, {real['code']} importing classes outside the data "
        "allowlist; tests/real_corpus.py); a false positive is a data-only file flagged or "
        "failed on.\n"
    )
    for tool in results["tools"]:
        a = att[tool]
        for what in ("missed", "errored", "skipped"):
            if a[what]:
                word = "not scanned" if what == "skipped" else what
                out.append(f"- {tool} {word}: {', '.join(a[what])}")
        if a["problem"]:
            out.append(f"- {tool}, attack corpus: {a['problem']}")
        if real["tools"][tool]["problem"]:
            out.append(f"- {tool}, real files: {real['tools'][tool]['problem']}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("roots", nargs="+", type=Path, help="folders the corpus packages are in")
    ap.add_argument(
        "--hermetic",
        action="append",
        metavar="[LABEL=]BIN",
        help="a hermetic binary (repeatable); default target/release/hermetic",
    )
    ap.add_argument("--manifest", type=Path, default=real_corpus.MANIFEST)
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = ap.parse_args(argv)
    tools: list[Tool] = []
    versions: dict[str, str | None] = {}
    for spec in args.hermetic or [str(REPO / "target" / "release" / "hermetic")]:
        label, _, binary = spec.rpartition("=")
        label = f"hermetic ({label})" if label else "hermetic"
        if not Path(binary).exists():
            print(f"{binary} not found: cargo build --release -p hermetic-cli", file=sys.stderr)
            return 2
        tools.append(Tool(label, "hermetic", Path(binary)))
        versions[label] = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    for kind in ("picklescan", "fickling"):
        tools.append(Tool(kind, kind))
        versions[kind] = _version(kind)
    commit = subprocess.run(
        ["git", "log", "-1", "--format=%h", "--", str(ATTACKS)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    ).stdout.strip()
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tools": [t.label for t in tools],
        "versions": versions,
        "attack_corpus": commit or "?",
        "attack_count": len(json.loads((ATTACKS / "EXPECTED.json").read_text())),
        "attacks": attack_rows(tools),
        "real": real_rows(tools, [r.resolve() for r in args.roots], args.manifest),
    }
    text = render(results)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({**results, "markdown": text}, indent=1) + "\n")
    return 0


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
