"""A short, deterministic campaign of the value-level differential fuzzer
(tests/valuefuzz.py): argument mutants of data-only pickles, torch zips, .npy and .npz
files go to hermetic's evaluator and to the real loaders (a restricted `pickle.loads`,
`torch.load(weights_only=True)`, `np.load`). Every mutant must be refused by both, or
load to equal values on both; reproducers of failures are kept under the tmp path.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import valuefuzz

SEED = 20260512
MUTANTS = 400  # about 20-40 s on two busy cores
SECONDS = 60.0  # a cap, should the machine be slow


@pytest.fixture(scope="module")
def stats(tmp_path_factory: pytest.TempPathFactory) -> valuefuzz.Stats:
    for module in ("torch", "numpy"):
        pytest.importorskip(module)
    out = tmp_path_factory.mktemp("valuefuzz")
    return valuefuzz.campaign(SECONDS, SEED, out, max_mutants=MUTANTS, verbose=False)


def test_seeds_load_equal(stats: valuefuzz.Stats) -> None:
    assert not stats.controls_failed, "\n".join(stats.controls_failed)


def test_oracle_sees_both_outcomes(stats: valuefuzz.Stats) -> None:
    assert stats.mutants >= 100, stats.mutants
    assert stats.outcomes["agree_raise"] and stats.outcomes["agree_equal"], stats.outcomes


def _describe(paths: list[Path]) -> str:
    return "\n".join(f"{p}\n  {p.with_suffix('.json').read_text()[:600]}" for p in paths[:10])


def test_no_mismatch(stats: valuefuzz.Stats) -> None:
    assert not stats.mismatches, (
        f"{len(stats.mismatches)} mismatches\n{valuefuzz.summary(stats)}\n"
        + _describe(stats.mismatches)
    )


def test_no_hermetic_crash(stats: valuefuzz.Stats) -> None:
    assert not stats.crashes, _describe(stats.crashes)
