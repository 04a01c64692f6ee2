"""The catalogues of codes: every finding code the scanner can report is in the
README's table with its meaning, and every hermetic exception lives in
``hermetic.errors`` with a stable ``code``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import hermetic
import hermetic.errors
import hermetic.firewall
from corpus import FINDING_CODES as CORPUS_CODES
from hermetic import _hermetic

ROOT = Path(__file__).resolve().parent.parent
SNAKE = re.compile(r"[a-z]+(_[a-z]+)*")


def readme_codes() -> list[str]:
    """The codes of the README's "finding code | meaning" table, in order."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("| finding code | meaning |") + 2
    codes = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        m = re.fullmatch(r"\| `([a-z_]+)` \| (.+) \|", line)
        assert m, f"not a row of the table: {line!r}"
        codes.append(m.group(1))
    return codes


def test_the_readme_lists_every_finding_code_in_catalogue_order() -> None:
    codes = _hermetic.FINDING_CODES
    assert isinstance(codes, tuple) and codes
    assert all(isinstance(c, str) and SNAKE.fullmatch(c) for c in codes)
    assert len(set(codes)) == len(codes)
    assert readme_codes() == list(codes)


def test_the_corpus_expects_only_catalogued_codes() -> None:
    assert CORPUS_CODES <= set(_hermetic.FINDING_CODES)


def test_scans_report_only_catalogued_codes() -> None:
    fixtures = ROOT / "tests" / "fixtures"
    seen = {f.code for r in hermetic.scan(fixtures) for f in r.all_findings()}
    assert seen, "the fixtures have findings"
    assert seen <= set(_hermetic.FINDING_CODES)


ERRORS = [getattr(hermetic.errors, name) for name in hermetic.errors.__all__]


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_every_error_has_a_code(cls: type) -> None:
    assert isinstance(cls.code, str) and SNAKE.fullmatch(cls.code), cls
    if cls is hermetic.errors.PickleWarning:
        assert issubclass(cls, UserWarning)
    else:
        assert issubclass(cls, hermetic.errors.HermeticError)


def test_error_codes_are_distinct() -> None:
    codes = [cls.code for cls in ERRORS]
    assert len(set(codes)) == len(codes), codes


def test_errors_are_the_same_classes_where_they_used_to_live() -> None:
    from hermetic import _typed
    from hermetic.firewall import _errors

    for name in hermetic.errors.__all__:
        cls = getattr(hermetic.errors, name)
        for old in (hermetic, hermetic.firewall, _errors, _typed, _hermetic):
            if hasattr(old, name):
                assert getattr(old, name) is cls, (old, name)
    assert hermetic.SchemaError is _typed.SchemaError is hermetic.errors.SchemaError
    assert hermetic.NoPickleError is _errors.NoPickleError


def test_dcp_format_error_is_reexported() -> None:
    pytest.importorskip("torch")
    from hermetic.dcp._safe import DcpFormatError

    assert DcpFormatError is hermetic.errors.DcpFormatError
    assert issubclass(DcpFormatError, hermetic.CheckpointError)


def test_a_policy_error_has_its_code_and_path(tmp_path: Path) -> None:
    bad = tmp_path / "policy.toml"
    bad.write_text("[allow\n")
    with pytest.raises(hermetic.PolicyError) as e:
        hermetic.scan_bytes(b"N.", policy=bad)
    assert e.value.code == "invalid_policy"
    assert e.value.path == str(bad)
    missing = tmp_path / "missing.toml"
    with pytest.raises(hermetic.PolicyError) as e:
        hermetic.scan_bytes(b"N.", policy=missing)
    assert (e.value.code, e.value.path) == ("io_error", str(missing))
    bad.write_text('[allow]\nglobals = ["nocolon"]\n')
    with pytest.raises(hermetic.PolicyError) as e:
        hermetic.scan_bytes(b"N.", policy=bad)
    assert (e.value.code, e.value.path) == ("bad_pattern", None)


def test_a_manifest_error_has_its_code_and_path(tmp_path: Path) -> None:
    with pytest.raises(hermetic.ManifestError) as e:
        _hermetic.Manifest.from_toml("unlisted = 3\n")
    assert SNAKE.fullmatch(e.value.code) and e.value.code != "hermetic_error"
    assert e.value.path is None


def test_a_format_error_from_rust_has_its_code() -> None:
    with pytest.raises(hermetic.FormatError) as e:
        hermetic.loads(b"\x02\x00\x00\x00\x00\x00\x00\x00{x")
    assert SNAKE.fullmatch(e.value.code), e.value.code
    assert e.value.code != "format_error"


def test_an_unsafe_pickle_error_has_code_offset_and_path(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    with pytest.raises(hermetic.UnsafePickleError) as e:
        hermetic.load_pickle(evil)
    assert e.value.code == "unsafe_pickle"
    assert e.value.path == str(evil)
    assert e.value.offset == 0
    assert e.value.findings[0][0] == "dangerous_import"


def test_python_raised_errors_have_their_class_code() -> None:
    err = hermetic.NoPickleError("refused", file="x.pt")
    assert (err.code, err.path) == ("pickle_refused", "x.pt")
    assert hermetic.SchemaError("x").code == "schema_mismatch"
