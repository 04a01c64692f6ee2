"""The golden files of docs/SPEC.md: they load to the objects that made them,
the writer still produces them byte for byte, and the invalid ones fail with
the documented error."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from format_compare import assert_round_trip

import hermetic

GOLDEN = Path(__file__).resolve().parent / "golden"
_spec = importlib.util.spec_from_file_location("golden_generate", GOLDEN / "generate.py")
assert _spec and _spec.loader
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)


@pytest.mark.parametrize("name", sorted(gen.trees()))
def test_valid_golden_files(name: str) -> None:
    expected = gen.trees()[name]
    path = GOLDEN / name
    assert_round_trip(expected, hermetic.load(path, verify=True))
    assert hermetic.dumps(expected) == path.read_bytes(), (
        "the writer's output changed; if intended, bump the spec and run generate.py"
    )


def test_version_1_golden_file_still_reads() -> None:
    # tests/golden/v1/tree.safetensors is tree.safetensors as the version-1
    # writer wrote it (one span entry per storage, views into it); kept, not
    # regenerated, so readers keep reading such files.
    expected = gen.trees()["tree.safetensors"]
    out = hermetic.load(GOLDEN / "v1" / "tree.safetensors", verify=True)
    assert_round_trip(expected, out)


@pytest.mark.parametrize("name", ["flat.safetensors", "tree.safetensors"])
def test_files_without_a_layout_digest_still_verify(name: str) -> None:
    # tests/golden/v4/ holds the golden files as the writer wrote them before
    # it recorded a layout digest (SPEC 4.1); kept, not regenerated.
    assert_round_trip(gen.trees()[name], hermetic.load(GOLDEN / "v4" / name, verify=True))


@pytest.mark.parametrize("name", sorted(gen.invalid()))
def test_invalid_golden_files(name: str) -> None:
    _, message = gen.invalid()[name]
    path = GOLDEN / name
    with pytest.raises(hermetic.FormatError, match=message):
        hermetic.load(path, verify=True)


def test_cli_verify_and_inspect_golden(capsys: pytest.CaptureFixture[str]) -> None:
    from hermetic._hermetic import run_cli

    assert run_cli(["hermetic", "verify", str(GOLDEN / "tree.safetensors")]) == 0
    assert run_cli(["hermetic", "verify", str(GOLDEN / "invalid/flipped.safetensors")]) == 1
    assert run_cli(["hermetic", "inspect", str(GOLDEN / "flat.safetensors")]) == 0
