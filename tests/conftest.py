"""Fixtures the test modules share."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture()
def canary(tmp_path: Path) -> Iterator[Path]:
    """HERMETIC_CANARY names a fresh path, which the corpus payloads create
    when they run; the test fails if it exists afterwards."""
    path = tmp_path / "canary"
    old = os.environ.get("HERMETIC_CANARY")
    os.environ["HERMETIC_CANARY"] = str(path)
    try:
        yield path
    finally:
        if old is None:
            del os.environ["HERMETIC_CANARY"]
        else:
            os.environ["HERMETIC_CANARY"] = old
        assert not path.exists(), "a payload ran"
