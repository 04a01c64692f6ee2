"""Every entry point the firewall guards, with real files written by the
libraries themselves: refused under ``deny``, loaded under ``enforce`` when
``hermetic manifest add`` listed them, refused (with a teaching message)
when not listed.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from _firewall_util import (
    SAFE,
    available_entry_points,
    have,
    hermetic_cli,
    run_jobs,
    write_manifest,
)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("fw-coverage")
    out: dict[str, Path] = {}
    out["pickle"] = d / "data.pkl"
    out["pickle"].write_bytes(SAFE)
    if have("torch"):
        import torch

        state = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "step": 7}
        out["torch-zip"] = d / "zip.pt"
        torch.save(state, out["torch-zip"])
        out["torch-legacy"] = d / "legacy.pt"
        torch.save(state, out["torch-legacy"], _use_new_zipfile_serialization=False)
    if have("numpy"):
        import numpy as np

        out["npy"] = d / "objects.npy"
        np.save(out["npy"], np.array([{"a": 1}, [2, 3], None], dtype=object), allow_pickle=True)
    if have("joblib") and have("numpy"):
        import joblib
        import numpy as np

        out["joblib"] = d / "model.joblib"
        joblib.dump(
            {
                "coef": np.arange(12, dtype=np.float64),
                "labels": np.array(["a", {"b": 1}], dtype=object),
                "params": {"alpha": 0.5},
            },
            out["joblib"],
        )
    if have("pandas"):
        import pandas

        out["pandas"] = d / "frame.pkl"
        pandas.DataFrame({"x": [1, 2]}).to_pickle(out["pandas"])
    return out


FILES_FOR = {
    "pickle.load": ["pickle"],
    "pickle.loads": ["pickle"],
    "pickle.Unpickler": ["pickle"],
    "pickle._Unpickler": ["pickle"],
    "torch.load": ["torch-zip", "torch-legacy"],
    "torch.load(weights_only=True)": ["torch-zip", "torch-legacy"],
    "np.load": ["npy"],
    "joblib.load": ["joblib"],
    "pandas.read_pickle": ["pandas"],
}


def jobs_for(files: dict[str, Path]) -> list[tuple[str, Path]]:
    return [
        (ep, files[kind])
        for ep in available_entry_points()
        for kind in FILES_FOR[ep]
        if kind in files
    ]


def test_every_entry_point_is_covered() -> None:
    eps = available_entry_points()
    for ep in ("pickle.load", "pickle.loads", "pickle.Unpickler", "pickle._Unpickler"):
        assert ep in eps
    if not have("pandas"):
        pytest.skip("pandas is not installed: pandas.read_pickle is not exercised")


def test_deny_refuses_every_entry_point(files: dict[str, Path], tmp_path: Path) -> None:
    results = run_jobs(jobs_for(files), tmp_path / "c", mode="deny")
    for r in results:
        assert r["outcome"] == "refused", r


def test_enforce_loads_listed_blobs_and_refuses_the_rest(
    files: dict[str, Path], tmp_path: Path
) -> None:
    manifest = tmp_path / "hermetic.toml"
    proc = hermetic_cli("manifest", "add", *map(str, files.values()), "--to", str(manifest))
    assert proc.returncode == 0, proc.stderr
    results = run_jobs(jobs_for(files), tmp_path / "c1", mode="enforce", manifest=manifest)
    for r in results:
        assert r["outcome"] == "ok", r
    assert any("tensor" in r["value"] for r in results if r["loader"] == "torch.load")

    empty = write_manifest(tmp_path / "empty.toml", [])
    results = run_jobs(jobs_for(files), tmp_path / "c2", mode="enforce", manifest=empty)
    for r in results:
        assert r["outcome"] == "refused", r
        msg = r["message"]
        assert "sha256:" in msg and "bytes)" in msg and "call site:" in msg, msg
        assert "scanner:" in msg and "under [blobs]" in msg, msg
        if r["loader"] != "pickle.loads":
            assert str(Path(r["path"]).resolve()) in msg, msg


def test_one_changed_byte_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    manifest = tmp_path / "hermetic.toml"
    assert (
        hermetic_cli("manifest", "add", str(files["pickle"]), "--to", str(manifest)).returncode == 0
    )
    changed = bytearray(SAFE)
    i = SAFE.index(b"weights")
    changed[i] ^= 0x20  # "Weights"
    bad = tmp_path / "changed.pkl"
    bad.write_bytes(bytes(changed))
    assert pickle.loads(bytes(changed)) != pickle.loads(SAFE)  # still a valid pickle
    results = run_jobs(
        [
            (ep, bad)
            for ep in ("pickle.load", "pickle.loads", "pickle.Unpickler", "pickle._Unpickler")
        ],
        tmp_path / "c",
        mode="enforce",
        manifest=manifest,
    )
    for r in results:
        assert r["outcome"] == "refused", r
