"""The scanner against the corpora: every attack technique is caught, every
benign checkpoint made by real torch/numpy is safe, whole pickled models are
suspicious and name their classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import hermetic
from corpus import at_least, attack_files, benign_files

BENIGN = benign_files()
ATTACKS = attack_files()


@pytest.mark.parametrize(("path", "verdict", "classes"), BENIGN, ids=[p.name for p, _, _ in BENIGN])
def test_benign(path: Path, verdict: str, classes: list[str]) -> None:
    (result,) = hermetic.scan(path, include_clean=True)
    assert result.error is None
    assert result.verdict == verdict, result.all_findings()
    named = {f.qualname for f in result.all_findings()}
    for cls in classes:
        assert cls in named, f"{cls} not named in {sorted(named)}"


@pytest.mark.parametrize(("path", "meta"), ATTACKS, ids=[p.name for p, _ in ATTACKS])
def test_attack_is_caught(path: Path, meta: dict[str, Any]) -> None:
    (result,) = hermetic.scan(path, include_clean=True)
    assert result.verdict != "safe"
    assert at_least(result.verdict, meta["min_verdict"]), result.all_findings()
    codes = {f.code for f in result.all_findings()}
    missing = set(meta["finding_codes"]) - codes
    assert not missing, f"expected codes {missing} among {sorted(codes)}"


def test_most_attacks_are_dangerous() -> None:
    verdicts = [hermetic.scan(p, include_clean=True)[0].verdict for p, _ in ATTACKS]
    assert len(ATTACKS) >= 30
    assert "safe" not in verdicts
    assert verdicts.count("dangerous") / len(verdicts) > 0.9


def test_folder_scan_finds_every_attack() -> None:
    folder = ATTACKS[0][0].parent
    found = {Path(r.path).name: r.verdict for r in hermetic.scan(folder)}
    for path, _ in ATTACKS:
        assert found.get(path.name) not in (None, "safe"), path.name
