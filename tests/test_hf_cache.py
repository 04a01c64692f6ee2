"""`hermetic scan --hf-cache`: a Hugging Face hub cache reported by `org/name@revision`.

The cache is a faithful copy of huggingface_hub's layout (`file_download.py`): per repo
`blobs/HASH` (the content, named by its hash), `refs/main` (the revision a branch points
to) and `snapshots/REV/FILE -> ../../blobs/HASH`.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

EVIL = b"cos\nsystem\n(S'true'\ntR."  # would call os.system("true"); never loaded
SAFE = pickle.dumps({"w": [0.5, 1.5]}, protocol=4)


def put(repo: Path, rev: str, files: dict[str, bytes], ref: str | None = "main") -> None:
    """One snapshot of a repo, as huggingface_hub writes it."""
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        blob = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        link = repo / "snapshots" / rev / name
        link.parent.mkdir(parents=True, exist_ok=True)
        depth = len(Path(name).parts) + 1
        link.symlink_to(Path(*[".."] * depth) / "blobs" / blob)
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(rev)


@pytest.fixture()
def cache(tmp_path: Path) -> Path:
    hub = tmp_path / "hub"
    config = b'{"model_type": "bert"}'
    put(hub / "models--org--clean", "a" * 40, {"pytorch_model.bin": SAFE, "config.json": config})
    # Two revisions sharing the same weights blob: it is scanned once.
    put(hub / "models--org--clean", "b" * 40, {"pytorch_model.bin": SAFE}, ref=None)
    put(
        hub / "models--acme--tampered",
        "c" * 40,
        {"weights/model.ckpt": EVIL, "config.json": config},
    )
    put(hub / "models--meta--third", "d" * 40, {"embeddings.pkl": pickle.dumps([1, 2, 3])})
    put(hub / "datasets--org--data", "e" * 40, {"train.pkl": SAFE})
    (hub / ".locks").mkdir()
    (hub / "version.txt").write_text("1")
    return hub


def scan(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hermetic", "scan", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for r in doc["repos"]:
        out[f"{r['repo_type']}:{r['repo_id']}@{r['revision']}"] = r
    return out


def test_reports_each_repo_revision_and_the_tampered_one(cache: Path) -> None:
    p = scan("--hf-cache", cache, "--format", "json")
    assert p.returncode == 1, p.stderr
    doc = json.loads(p.stdout)
    repos = by_name(doc)
    tampered = repos["model:acme/tampered@" + "c" * 40]
    assert tampered["verdict"] == "dangerous" and tampered["refs"] == ["main"]
    (f,) = tampered["files"]
    assert f["file"] == "weights/model.ckpt" and f["verdict"] == "dangerous"
    assert f["blob"] == hashlib.sha256(EVIL).hexdigest()
    clean_a = repos["model:org/clean@" + "a" * 40]
    assert clean_a["verdict"] == "safe" and clean_a["refs"] == ["main"]
    assert [x["file"] for x in clean_a["files"]] == ["pytorch_model.bin"]
    clean_b = repos["model:org/clean@" + "b" * 40]
    assert clean_b["refs"] == [] and clean_b["files"][0]["verdict"] == "safe"
    assert repos["model:meta/third@" + "d" * 40]["verdict"] == "safe"
    assert repos["dataset:org/data@" + "e" * 40]["verdict"] == "safe"
    # 5 snapshot files with pickles, 4 distinct blobs (the shared weights read once).
    assert doc["blobs_scanned"] == 4
    assert doc["summary"]["dangerous"] == 1

    text = scan("--hf-cache", cache)
    assert text.returncode == 1
    assert f"model acme/tampered@{'c' * 40} (main): dangerous" in text.stdout
    assert "weights/model.ckpt" in text.stdout and "os.system (called)" in text.stdout
    assert f"dataset org/data@{'e' * 40} (main): safe" in text.stdout


@pytest.mark.parametrize("var", ["HF_HUB_CACHE", "HF_HOME"])
def test_default_cache_follows_huggingface_hub(cache: Path, tmp_path: Path, var: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env[var] = str(cache if var == "HF_HUB_CACHE" else cache.parent)
    p = scan("--hf-cache", "--format", "json", env=env)
    assert p.returncode == 1, p.stderr
    assert "model:acme/tampered@" + "c" * 40 in by_name(json.loads(p.stdout))
    # ~/.cache/huggingface/hub when nothing is set.
    home = tmp_path / "home"
    (home / ".cache" / "huggingface").mkdir(parents=True)
    (home / ".cache" / "huggingface" / "hub").symlink_to(cache)
    env = {k: v for k, v in env.items() if k not in (var, "XDG_CACHE_HOME")}
    env["HOME"] = str(home)
    p = scan("--hf-cache", "--format", "json", "--fail-on", "never", env=env)
    assert p.returncode == 0, p.stderr
    assert len(json.loads(p.stdout)["repos"]) == 5


def test_missing_cache_is_an_error(tmp_path: Path) -> None:
    p = scan("--hf-cache", tmp_path / "nope")
    assert p.returncode == 3
    assert "no such file" in p.stdout + p.stderr


def test_hf_cache_and_paths_conflict(cache: Path) -> None:
    assert scan("--hf-cache", cache, cache).returncode == 2


def test_the_layout_is_the_one_huggingface_hub_reads(cache: Path) -> None:
    """huggingface_hub's own cache reader sees the repos and revisions hermetic reports."""
    hub = pytest.importorskip("huggingface_hub")
    info = hub.scan_cache_dir(cache)
    theirs = {
        (r.repo_type, r.repo_id, rev.commit_hash, tuple(sorted(f.file_name for f in rev.files)))
        for r in info.repos
        for rev in r.revisions
    }
    doc = json.loads(scan("--hf-cache", cache, "--format", "json", "--all").stdout)
    ours = {
        (
            r["repo_type"],
            r["repo_id"],
            r["revision"],
            tuple(sorted(Path(f["file"]).name for f in r["files"])),
        )
        for r in doc["repos"]
    }
    assert ours == theirs
    refs = {(r.repo_id, tuple(sorted(rev.refs))) for r in info.repos for rev in r.revisions}
    assert {(r["repo_id"], tuple(r["refs"])) for r in doc["repos"]} == refs
