"""Scan files with fickling in one Python process: the fickling side of bench_scan.py.

    python bench/_fickling_driver.py PATH...    # files or folders (walked recursively)

fickling checks one pickle or one archive per call, so this loops over the files. Each file
goes where fickling's own command line sends it when it scans a Hugging Face repository
(`fickling.cli._scan_huggingface`):

- a zip (torch's format, also .npz) -> `fickling.scan_zip_archive(path, graceful=True)`,
  which runs `check_safety` on every .pkl/.pickle/.bin member (for torch, `*/data.pkl`);
- a .npy file -> not scanned: fickling reports NumPy files as "not yet supported";
- anything else (raw pickles, legacy torch files, joblib) -> `fickling.scan_file(path,
  graceful=True)`, which runs `check_safety` on every stacked pickle in the file.

The dispatch uses the standard library's zip check and the NumPy magic bytes rather than
`fickling.polyglot.find_file_properties`, which imports torch (about 1.4 s) just to tell a
zip from a pickle. `fickling.pytorch.PyTorchModelWrapper` was not used for the same reason:
it also imports torch, and its `.pickled` reads the same `*/data.pkl` member.

Prints one JSON object: {"files": [{"path", "status", "severity", "errors"}]}, where status is
"safe", "unsafe" (severity above LIKELY_SAFE), "error" (fickling could not parse it) or
"unsupported". A file counts as flagged when it is unsafe or an error, as fickling's
`ScanResult.__bool__` has it. fickling's own warnings go to stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import zipfile
from pathlib import Path
from typing import Any

import fickling
from fickling.analysis import Severity

NUMPY_MAGIC = b"\x93NUMPY"


def _files(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            for root, _dirs, names in os.walk(p):
                out += [Path(root) / n for n in names]
        else:
            out.append(p)
    return sorted(out)


def scan_one(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        head = f.read(len(NUMPY_MAGIC))
    if head == NUMPY_MAGIC:
        return {"path": str(path), "status": "unsupported", "severity": None, "errors": []}
    if zipfile.is_zipfile(path):
        results = list(fickling.scan_zip_archive(str(path), graceful=True).values())
    else:
        results = [fickling.scan_file(str(path), graceful=True)]
    severity = max((r.severity for r in results), default=Severity.LIKELY_SAFE)
    errors = [e for r in results for e in r.errors]
    if errors:
        status = "error"
    elif severity > Severity.LIKELY_SAFE:
        status = "unsafe"
    else:
        status = "safe"
    if not results:
        status = "no_pickle"
    return {"path": str(path), "status": status, "severity": severity.name, "errors": errors}


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    # fickling prints its warnings ("Warning: malformed pickle file ...") to stdout, which
    # carries the JSON report: send them to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        report = {"files": [scan_one(p) for p in _files(argv)]}
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
