"""A short, deterministic campaign of the differential fuzzer (tests/difffuzz.py).

Every seed (benign files the real libraries write now, and the attack corpus) and a
fixed number of mutants, each mutator in turn, go to the real loaders in a sandboxed
subprocess and to `hermetic scan`. The fail-closed rule: no file that a real loader
runs code from may scan `safe` or be left out of the report.
"""

from __future__ import annotations

import hashlib
import sys

import pytest

import difffuzz

SEED = 20240611
MUTANTS = 3 * len(difffuzz.MUTATORS)  # every mutator three times: 30-60 s on two cores


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> difffuzz.Result:
    for module in ("torch", "numpy", "joblib", "safetensors", "lz4"):
        pytest.importorskip(module)
    cfg = difffuzz.Config(
        hermetic=[sys.executable, "-m", "hermetic"],
        out=tmp_path_factory.mktemp("difffuzz"),
        seed=SEED,
        max_mutants=MUTANTS,
        round_robin=True,
        minimize=False,
    )
    return difffuzz.run_campaign(cfg)


def test_oracle_works(campaign: difffuzz.Result) -> None:
    s = campaign.stats
    assert s.controls["attack_fires"] and s.controls["benign_quiet"], s.controls
    assert s.controls["attack_verdict"] == "dangerous", s.controls
    assert s.by_mutator["identity"]["n"] > 20
    # The benign seeds fire nothing; so only the attack seeds fire unmutated.
    attacks = [p for p in difffuzz.ATTACKS_DIR.iterdir() if not p.name.endswith(".json")]
    assert 0 < s.by_mutator["identity"]["fired"] <= len(attacks)
    # Most mutants carry a payload that some loader really runs.
    assert s.fired - s.by_mutator["identity"]["fired"] >= MUTANTS // 3, dict(s.by_loader)
    for loader in ("pickle.load", "torch.load(weights_only=False)", "joblib.load"):
        assert s.by_loader[loader] > 0, loader
    assert s.by_loader["numpy.load(allow_pickle=True)"] > 0


def test_every_mutator_ran(campaign: difffuzz.Result) -> None:
    ran = {part for chain in campaign.stats.by_mutator for part in chain.split("+")}
    assert set(difffuzz.MUTATORS) <= ran, set(difffuzz.MUTATORS) - ran


def test_no_fired_file_scans_safe(campaign: difffuzz.Result) -> None:
    lines = [r.describe() for r in campaign.failures]
    assert not lines, (
        f"{campaign.stats.failures} files that a real loader ran code from scanned "
        "`safe` or were missing from hermetic's report (each mutant is saved with a "
        ".json beside it: which loaders fired and how each ended, hermetic's report; "
        f"rerun with `python tests/difffuzz.py --seed {SEED} --max-mutants {MUTANTS} "
        "--round-robin --hermetic 'python -m hermetic' --out DIR`):\n" + "\n".join(lines)
    )


def test_mutants_are_reproducible() -> None:
    """The same seed number gives the same mutants: the seeds are reproducible bytes
    (torch's random serialization id is pinned) and all randomness is one Random."""
    for module in ("torch", "numpy", "joblib", "safetensors"):
        pytest.importorskip(module)
    seeds = difffuzz.make_seeds()

    def digests(n: int) -> list[tuple[str, int, str]]:
        source = difffuzz.MutantSource(seeds, SEED, round_robin=True)
        out = []
        for i in range(1, n + 1):
            m = source.mutate(i)
            if m is not None:
                out.append(("+".join(m.chain), len(m.data), hashlib.sha256(m.data).hexdigest()))
        return out

    first = digests(2 * len(difffuzz.MUTATORS))
    assert first == digests(2 * len(difffuzz.MUTATORS))
    assert len({d for _, _, d in first}) > len(first) // 2
