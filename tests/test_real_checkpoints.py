"""Checkpoints as the frameworks write them (tests/fixtures/checkpoints/, made by
make_checkpoints.py with Lightning, transformers' Trainer, numpy, scikit-learn and
joblib): hermetic loads at least what torch.load(weights_only=True) loads, its refusal
names exactly the classes to allow, and with them its value equals the real loader's.

The comparisons need the frameworks whose classes the files name and are skipped
where they are not installed (the fixtures themselves are committed). The real loaders
run only on these files, which the generator wrote."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from evaluate_compare import assert_same

import hermetic
import hermetic.torch as ht
from corpus import attack_files

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints"
META = json.loads((FIXTURES / "CHECKPOINTS.json").read_text())
FILES = sorted(META["files"].items())


def hermetic_load(name: str, entry: dict[str, Any], allow: list[Any] | None) -> Any:
    path = FIXTURES / name
    if entry["loader"] == "torch.load":
        return ht.load(path, allow=allow)
    if entry["loader"] == "joblib.load":
        return hermetic.joblib.load(path, allow=allow)
    return hermetic.load_pickle(path, allow=allow, encoding=entry.get("encoding", "ASCII"))


def frameworks_of(entry: dict[str, Any]) -> list[str]:
    return sorted({n.partition(":")[0].split(".")[0] for n in entry["allow"]})


@pytest.mark.parametrize(("name", "entry"), FILES, ids=[n for n, _ in FILES])
def test_hermetic_loads_what_weights_only_loads(name: str, entry: dict[str, Any]) -> None:
    if entry["loader"] != "torch.load":
        pytest.skip("torch.load does not read this kind of file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.load(FIXTURES / name, weights_only=True)
        except Exception:
            pytest.skip("torch.load(weights_only=True) refuses it too")
    hermetic_load(name, entry, None)


@pytest.mark.parametrize(("name", "entry"), FILES, ids=[n for n, _ in FILES])
def test_the_refusal_names_exactly_what_to_allow(name: str, entry: dict[str, Any]) -> None:
    if not entry["allow"]:
        hermetic_load(name, entry, None)
        return
    with pytest.raises(hermetic.UnsafePickleError) as e:
        hermetic_load(name, entry, None)
    hint = str(e.value).rsplit("pass allow=", 1)[1].rstrip(".")
    assert sorted(eval(hint)) == entry["allow"]


@pytest.mark.parametrize(("name", "entry"), FILES, ids=[n for n, _ in FILES])
def test_with_allow_the_value_equals_the_real_loaders(name: str, entry: dict[str, Any]) -> None:
    for mod in frameworks_of(entry):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{mod} is not installed (its classes are needed to compare)")
    path = FIXTURES / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if entry["loader"] == "torch.load":
            ref = torch.load(path, weights_only=False)
        elif entry["loader"] == "numpy.load":
            ref = np.load(path, allow_pickle=True, encoding=entry["encoding"])
            ref = dict(ref) if path.suffix == ".npz" else ref
        elif entry["loader"] == "joblib.load":
            import joblib

            ref = joblib.load(path)
        else:
            import pickle

            ref = pickle.loads(path.read_bytes())
        got = hermetic_load(name, entry, entry["allow"] or None)
    assert_same(got, ref)


ALL_ALLOWED = sorted({n for _, e in FILES for n in e["allow"]})


@pytest.mark.parametrize(("path", "meta"), attack_files(), ids=lambda v: getattr(v, "name", ""))
def test_no_attack_loads_with_every_framework_class_allowed(
    canary: Path, path: Path, meta: dict[str, Any]
) -> None:
    # The allow lists of all the real checkpoints above at once, as strings (nothing
    # is imported unless a file names one of them).
    for load in (hermetic.load_pickle, ht.load):
        with pytest.raises((hermetic.UnsafePickleError, hermetic.CheckpointError)):
            load(path, allow=ALL_ALLOWED)
