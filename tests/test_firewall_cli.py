"""``hermetic run`` and ``hermetic manifest freeze|add|check``, and the
record -> freeze -> enforce cycle end to end."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

from _firewall_util import SAFE, hermetic_cli, hook_python, write_manifest

import hermetic

EVIL = b"cos\nsystem\n(S'true'\ntR."


def test_run_sets_the_environment_and_passes_the_exit_status(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.toml", [])
    script = tmp_path / "child.py"
    script.write_text(
        "import os, subprocess, sys\n"
        "print(os.environ['HERMETIC_PICKLE'], os.environ['HERMETIC_MANIFEST'])\n"
        # A grandchild inherits the mode, and refuses in its first statement.
        "r = subprocess.run([sys.executable, '-c', 'import pickle; pickle.loads(b\"K\\\\x01.\")'],"
        " capture_output=True, text=True)\n"
        "print('grandchild', r.returncode, 'NoPickleError' in r.stderr)\n"
        "sys.exit(7)\n"
    )
    proc = hermetic_cli(
        "run",
        "--mode",
        "enforce",
        "--manifest",
        str(manifest),
        "--",
        hook_python(),
        str(script),
        cwd=tmp_path,
    )
    assert proc.returncode == 7, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"enforce {manifest}"
    assert lines[1] == "grandchild 1 True"


def test_run_refuses_bad_invocations(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("version = 1\nunlisted = 'sometimes'\n")
    for args in (
        ["run", "--mode", "enforce", "--", "true"],
        ["run", "--mode", "enforce", "--manifest", str(bad), "--", "true"],
        ["run", "--mode", "strict", "--", "true"],
        ["run", "--mode", "deny"],
    ):
        proc = hermetic_cli(*args)
        assert proc.returncode == 2, (args, proc)
    proc = hermetic_cli("run", "--mode", "deny", "--", str(tmp_path / "no-such-program"))
    assert proc.returncode == 3 and "cannot run" in proc.stderr


def test_manifest_add_check_and_force(tmp_path: Path) -> None:
    good = tmp_path / "good.pkl"
    good.write_bytes(SAFE)
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(EVIL)
    manifest = tmp_path / "hermetic.toml"
    manifest.write_text("# reviewed by the platform team\nversion = 1\n")

    proc = hermetic_cli("manifest", "add", str(good), "--to", str(manifest), "--caller", "app:load")
    assert proc.returncode == 0, proc.stderr
    text = manifest.read_text()
    assert "# reviewed by the platform team" in text
    assert f'"{hermetic.blob_id(SAFE)}" = {{ size = {len(SAFE)}, callers = ["app:load"]' in text

    before = manifest.read_text()
    proc = hermetic_cli("manifest", "add", str(evil), "--to", str(manifest))
    assert proc.returncode == 1 and "dangerous" in proc.stderr and "--force" in proc.stderr
    assert manifest.read_text() == before  # refused additions change nothing

    proc = hermetic_cli("manifest", "check", str(manifest), str(good), str(evil))
    assert proc.returncode == 1
    assert "listed for app:load" in proc.stdout and "NOT LISTED" in proc.stdout

    proc = hermetic_cli("manifest", "add", str(evil), "--to", str(manifest), "--force")
    assert proc.returncode == 0
    proc = hermetic_cli("manifest", "check", str(manifest), str(good), str(evil), "--json")
    assert proc.returncode == 0
    report = json.loads(proc.stdout)
    assert report["valid"] and report["blobs"] == 2 and report["rules"] == ["python-ipc"]
    assert {f["status"] for f in report["files"]} == {"listed", "listed-for-callers"}
    # Adding again is a no-op.
    proc = hermetic_cli("manifest", "add", str(good), "--to", str(manifest))
    assert "0 blob(s) added" in proc.stdout


def test_manifest_check_rejects_invalid_manifests(tmp_path: Path) -> None:
    m = tmp_path / "m.toml"
    m.write_text('version = 1\n[blobs]\n"sha256:abc" = {}\n')
    proc = hermetic_cli("manifest", "check", str(m))
    assert proc.returncode == 1 and "INVALID" in proc.stdout and "bad blob id" in proc.stdout
    proc = hermetic_cli("manifest", "check", str(tmp_path / "missing.toml"))
    assert proc.returncode == 3
    m.write_text("version = 1\n")
    assert hermetic_cli("manifest", "check", str(m)).returncode == 0


SCRIPT = """
import pickle, sys
from pathlib import Path

def load_config(path):
    with open(path, "rb") as f:
        return pickle.load(f)

def load_vocab(path):
    return pickle.loads(Path(path).read_bytes())

def main(files):
    config = load_config(files[0])
    vocab = load_vocab(files[1])
    weights = load_config(files[2])
    pickle.dumps(config)  # a writer: a place to migrate
    print("loaded", config["name"], len(vocab), weights["w"])

main(sys.argv[1:])
"""


def test_record_freeze_enforce_cycle(tmp_path: Path) -> None:
    files = []
    for name, obj in [
        ("config.pkl", {"name": "tiny"}),
        ("vocab.pkl", ["a", "b", "c"]),
        ("weights.pkl", {"w": [0.5]}),
    ]:
        (tmp_path / name).write_bytes(pickle.dumps(obj))
        files.append(str(tmp_path / name))
    script = tmp_path / "app.py"
    script.write_text(SCRIPT)
    inventory = tmp_path / "inventory.jsonl"
    manifest = tmp_path / "hermetic.toml"

    def run(mode: str, *args: str):
        extra = (
            ["--manifest", str(manifest)] if mode == "enforce" else ["--inventory", str(inventory)]
        )
        return hermetic_cli(
            "run", "--mode", mode, *extra, "--", hook_python(), str(script), *args, cwd=tmp_path
        )

    rec = run("record", *files)
    assert rec.returncode == 0 and "loaded tiny 3 [0.5]" in rec.stdout, rec.stderr
    loads = [json.loads(x) for x in inventory.read_text().splitlines()]
    assert len([r for r in loads if r["event"] == "load"]) == 3

    frozen = hermetic_cli("manifest", "freeze", str(inventory), "-o", str(manifest))
    assert frozen.returncode == 0, frozen.stderr
    assert "3 blob(s) added" in frozen.stdout
    assert "__main__:main" in frozen.stdout  # the writer call site is reported
    assert hermetic_cli("manifest", "check", str(manifest), *files).returncode == 0

    ok = run("enforce", *files)
    assert ok.returncode == 0 and "loaded tiny 3 [0.5]" in ok.stdout, ok.stderr

    # A fourth pickle, never recorded, in place of the weights.
    unseen = tmp_path / "swapped.pkl"
    unseen.write_bytes(pickle.dumps({"w": [0.5], "extra": True}))
    bad = run("enforce", files[0], files[1], str(unseen))
    assert bad.returncode == 1
    err = bad.stderr
    blob = hermetic.blob_id(unseen.read_bytes())
    assert "NoPickleError" in err and f"blob {blob} ({unseen.stat().st_size} bytes)" in err
    assert f"file:      {unseen}" in err
    assert "call site: __main__:load_config" in err and "app.py:7" in err
    assert "scanner:   safe; imports nothing" in err
    assert "the manifest does not list this blob" in err
    line = f'"{blob}" = {{ size = {unseen.stat().st_size}, callers = ["__main__:load_config"]'
    assert line in err, err
    assert f"hermetic manifest add {unseen} --to {manifest}" in err

    # The line it teaches really allows the load.
    with manifest.open("a") as f:
        f.write(err[err.index(line) :].splitlines()[0] + "\n")
    fixed = run("enforce", files[0], files[1], str(unseen))
    assert fixed.returncode == 0, fixed.stderr
