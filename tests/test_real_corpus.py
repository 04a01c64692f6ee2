"""Real files shipped inside public packages (tests/fixtures/real_corpus.json): hermetic never
calls one that imports non-data classes `safe`, and calls every data-only one `safe`.

The manifest names each file by distribution and path and pins its sha256, with the truth the
real loaders gave for it (tests/real_corpus.py). Only the files of distributions installed in
this venv, with the same bytes, are checked: numpy, joblib, torch (and what torch pulls in)
always are; any other corpus package counts once it is installed. No file of a third party is
kept in this repository.
"""

from __future__ import annotations

import collections
import importlib.metadata
from pathlib import Path
from typing import Any

import pytest

import hermetic
import real_corpus

ENTRIES = real_corpus.load_manifest()
BY_DIST: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
for _e in ENTRIES:
    BY_DIST[_e["dist"]].append(_e)

# Data-only files hermetic does not call safe yet: (dist, path) -> the finding code it gives.
# Empty since the scanner reads joblib's inline arrays as data and ignores bytes after the
# last stream that a second load would fail on (the mtcnn lz4 dumps and numpy's
# numpy_2_0_array.pkl were the four).
KNOWN_FALSE_NON_SAFE: dict[tuple[str, str], str] = {}


def installed(dist: str) -> list[tuple[dict[str, Any], Path]]:
    """The manifest's files of `dist` present in this venv with the same bytes; skips if none."""
    try:
        d = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{dist} is not installed")
    out = []
    for e in BY_DIST[dist]:
        p = Path(str(d.locate_file(e["path"])))
        if (
            p.is_file()
            and p.stat().st_size == e["size"]
            and real_corpus.sha256_of(p) == e["sha256"]
        ):
            out.append((e, p))
    if not out:
        versions = sorted({e["version"] for e in BY_DIST[dist]})
        pytest.skip(f"{dist} {d.version} is installed; the manifest has {', '.join(versions)}")
    return out


def verdicts(paths: list[Path]) -> dict[Path, hermetic.ScanResult]:
    return {Path(r.path).resolve(): r for r in hermetic.scan(paths, include_clean=True)}


def _codes(r: hermetic.ScanResult | None) -> list[str]:
    return sorted({f.code for f in r.all_findings()}) if r is not None else []


def test_manifest_is_a_real_corpus() -> None:
    kinds = collections.Counter(e["kind"].rsplit("/", 1)[-1] for e in ENTRIES)
    assert len(ENTRIES) >= 200
    for kind in ("pickle", "joblib", "npy", "npz", "torch-legacy", "torch-zip", "zip"):
        assert kinds[kind] > 0, kind
    truths = collections.Counter(e["truth"] for e in ENTRIES)
    assert truths["code"] > 0 and truths["data"] > 0
    for e in ENTRIES:
        assert e["expected"] == real_corpus.expected_verdict(e["truth"])
        assert (e["truth"] == "code") == bool(e["non_data_globals"])


@pytest.mark.parametrize("dist", sorted(BY_DIST))
def test_hermetic_agrees_with_the_loaders(dist: str) -> None:
    files = installed(dist)
    got = verdicts([p for _, p in files])
    false_safe, false_non_safe = [], []
    for e, p in files:
        r = got.get(p.resolve())
        verdict = r.verdict if r is not None else "safe"  # not listed: nothing to load
        if e["expected"] == "not_safe" and verdict == "safe":
            false_safe.append(f"{e['path']} (needs {', '.join(e['non_data_globals'])})")
        elif e["expected"] == "safe" and verdict != "safe":
            if (dist, e["path"]) not in KNOWN_FALSE_NON_SAFE:
                false_non_safe.append(f"{e['path']} -> {verdict} {_codes(r)}")
    assert not false_safe, f"called safe, but loading imports non-data classes: {false_safe}"
    assert not false_non_safe, f"data only, but not called safe: {false_non_safe}"


@pytest.mark.parametrize("dist", ["numpy", "joblib"])
def test_truth_still_holds(dist: str) -> None:
    """The real loaders, rerun on the installed files, give the manifest's truth."""
    files = installed(dist)
    truths = real_corpus.ground_truth([p for _, p in files], [e["kind"] for e, _ in files])
    wrong = [
        f"{e['path']}: manifest {e['truth']}, loaders now {t.truth} {t.non_data}"
        for (e, _), t in zip(files, truths, strict=True)
        if t.truth != e["truth"]
    ]
    assert not wrong
