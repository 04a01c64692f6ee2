"""Every attack in the corpus is refused by hermetic.torch.load and
hermetic.load_pickle with an error naming every offending import, and no
payload ever runs (the canary file is never created).

Nothing here opens an attack file with a real unpickler."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import hermetic
from corpus import attack_files

ATTACKS = attack_files()


def expected_imports(path: Path) -> set[str]:
    (result,) = hermetic.scan(path, include_clean=True)
    return {f.qualname for f in result.all_findings() if f.module}


def check(err: Any, path: Path) -> None:
    named = expected_imports(path)
    assert named <= set(err.imports), f"{sorted(named - set(err.imports))} not named"
    for name in named:
        assert name in str(err)
    if not named:
        # Nothing nameable (a computed global): the finding code is named instead.
        assert err.findings, "no finding reported"
        assert err.findings[0][0] in str(err)
    assert "hermetic inspect" in str(err)


@pytest.mark.parametrize(("path", "meta"), ATTACKS, ids=[p.name for p, _ in ATTACKS])
def test_torch_load_refuses(path: Path, meta: dict[str, Any], canary: Path) -> None:
    for source in (path, path.read_bytes()):
        with pytest.raises(hermetic.UnsafePickleError) as e:
            hermetic.torch.load(source)
        check(e.value, path)
    assert not canary.exists()


@pytest.mark.parametrize(("path", "meta"), ATTACKS, ids=[p.name for p, _ in ATTACKS])
def test_load_pickle_refuses(path: Path, meta: dict[str, Any], canary: Path) -> None:
    with pytest.raises(hermetic.UnsafePickleError) as e:
        hermetic.load_pickle(path)
    check(e.value, path)
    assert not canary.exists()
