"""Scan a folder with picklescan's own API, file by file: the picklescan side of bench_catch.py.

    python bench/_picklescan_driver.py FOLDER

`picklescan -p FOLDER` stops at the first file its scanner raises on (picklescan 1.0.5 raises
OSError from `data.seek(-1, 1)` in `_list_globals` on some files that are not pickles), and
leaves every later file unscanned. This driver walks the folder the way
`picklescan.scanner.scan_directory_path` does, with the same extension filter, and calls
`scanner.scan_file_path` on each file the command line would open, so one such file costs
only itself: its exception is reported as an error of that file.

Prints one JSON object: {"files": [{"path", "status", "globals", "error"}]}, where status is
"dangerous" (a global picklescan calls dangerous: what its command line reports as FOUND and
counts as infected), "error" (a parse error after some globals, which the command line
prints as ERROR, or an exception), "safe" or "skipped" (an extension the command line does not
open). picklescan's log goes to stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from picklescan import scanner


def _extensions() -> frozenset[str]:
    return frozenset(
        scanner._zip_file_extensions
        | scanner._pickle_file_extensions
        | scanner._pytorch_file_extensions
    )


def scan_one(path: Path, extensions: frozenset[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"path": str(path), "status": "safe", "globals": [], "error": None}
    if os.path.splitext(path.name)[1] not in extensions:
        out["status"] = "skipped"
        return out
    try:
        result = scanner.scan_file_path(str(path))
    except Exception as e:  # noqa: BLE001 - picklescan's own failure, reported per file
        out["status"] = "error"
        out["error"] = f"{type(e).__name__}: {e}"
        return out
    dangerous = [
        f"{g.module}.{g.name}" for g in result.globals if g.safety == scanner.SafetyLevel.Dangerous
    ]
    out["globals"] = dangerous
    if dangerous:
        out["status"] = "dangerous"
    elif result.scan_err:
        out["status"] = "error"
        out["error"] = "parse error"
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    extensions = _extensions()
    files = sorted(Path(root) / n for root, _dirs, names in os.walk(argv[0]) for n in names)
    with contextlib.redirect_stdout(sys.stderr):
        report = {"files": [scan_one(p, extensions) for p in files]}
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
