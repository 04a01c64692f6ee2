"""Prove the corpora are what they claim to be.

Every attack file is opened by its real loader in a subprocess whose
HERMETIC_CANARY points into a fresh temporary folder; the test passes only if
the canary file appears. Every benign file loads with the libraries' safe
settings. The EXPECTED.json files must describe exactly the files present,
and the committed files must match what their generators write today.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from corpus import (
    ATTACKS_DIR,
    BENIGN_DIR,
    FINDING_CODES,
    FIXTURES,
    HARNESS,
    LOADERS,
    VERDICTS,
    attack_expected,
    attack_files,
    benign_expected,
    benign_files,
    corpus_members,
)

CANARY_WAIT_S = 15.0  # a few payloads start a child process that touches the canary later


def _require(modules: list[str]) -> None:
    for module in modules:
        pytest.importorskip(module)


ATTACKS = attack_files()


@pytest.mark.parametrize(("path", "meta"), ATTACKS, ids=[p.name for p, _ in ATTACKS])
def test_attack_fires(path: Path, meta: dict[str, Any], tmp_path: Path) -> None:
    _require(meta["requires"])
    canary = tmp_path / "canary"
    work = tmp_path / "cwd"
    work.mkdir()
    assert not canary.exists()
    env = dict(os.environ, HERMETIC_CANARY=str(canary))
    proc = subprocess.run(
        [sys.executable, "-c", HARNESS, meta["loader"], str(path)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    deadline = time.monotonic() + CANARY_WAIT_S
    while not canary.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert canary.exists(), (
        f"{path.name} ({meta['technique']}) did not fire under {meta['loader']}\n"
        f"stdout: {proc.stdout[-1000:]}\nstderr: {proc.stderr[-2000:]}"
    )


def test_no_canary_without_loading(tmp_path: Path) -> None:
    """The harness itself creates nothing: a benign pickle leaves no canary."""
    canary = tmp_path / "canary"
    benign = tmp_path / "benign.pkl"
    benign.write_bytes(pickle.dumps({"a": [1, 2, 3]}))
    subprocess.run(
        [sys.executable, "-c", HARNESS, "pickle.load", str(benign)],
        cwd=tmp_path,
        env=dict(os.environ, HERMETIC_CANARY=str(canary)),
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert not canary.exists()


def test_attack_expectations_cover_every_file() -> None:
    expected = attack_expected()
    assert set(expected) == corpus_members(ATTACKS_DIR)
    techniques = {meta["technique"] for meta in expected.values()}
    assert len(techniques) == len(expected), "each attack file is its own technique"
    assert len(techniques) >= 30
    for name, meta in expected.items():
        assert meta["loader"] in LOADERS, name
        assert meta["min_verdict"] in ("suspicious", "dangerous"), name
        assert meta["finding_codes"], name
        assert set(meta["finding_codes"]) <= FINDING_CODES, name
        assert isinstance(meta["requires"], list), name


def test_benign_expectations_cover_every_file() -> None:
    expected = benign_expected()
    assert set(expected) == corpus_members(BENIGN_DIR)
    for name, meta in expected.items():
        assert meta["verdict"] in VERDICTS[:2], name
        assert (meta["verdict"] == "suspicious") == bool(meta["classes"]), name
    whole = expected["model_whole.pt"]
    assert whole["verdict"] == "suspicious"
    assert "fixture_models.TinyNet" in whole["classes"]
    total = sum(p.stat().st_size for p in BENIGN_DIR.iterdir())
    assert total < 3 * 1024 * 1024


BENIGN = benign_files()


@pytest.mark.parametrize(("path", "verdict", "classes"), BENIGN, ids=[p.name for p, _, _ in BENIGN])
def test_benign_loads(
    path: Path, verdict: str, classes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each benign file loads with its library; data-only ones with the safe settings."""
    if path.suffix == ".pt":
        torch = pytest.importorskip("torch")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if verdict == "safe":
                torch.load(path, weights_only=True)
            else:
                # Our own whole-module checkpoint: needs its class importable.
                monkeypatch.syspath_prepend(str(FIXTURES))
                model = torch.load(path, weights_only=False)
                names = {f"{type(m).__module__}.{type(m).__qualname__}" for m in model.modules()}
                assert names == set(classes)
    elif path.suffix in (".npy", ".npz"):
        np = pytest.importorskip("numpy")
        loaded = np.load(path, allow_pickle=False)
        if hasattr(loaded, "files"):
            for key in loaded.files:
                loaded[key]
    else:
        pytest.importorskip("numpy")  # the data pickles hold numpy arrays
        with path.open("rb") as f:
            pickle.load(f)  # our own data-only pickle


def _generated_by(folder: Path) -> dict[str, str]:
    data: dict[str, str] = json.loads((folder / "GENERATED_BY.json").read_text())
    return data


def _versions_match(recorded: dict[str, str]) -> str | None:
    """None if this environment has the versions the fixtures were made with, else why not."""
    import joblib
    import numpy
    import torch

    current = {
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "joblib": joblib.__version__,
    }
    for key, value in recorded.items():
        if key in current and current[key] != value:
            return f"fixtures made with {key} {value}, this is {current[key]}"
    return None


@pytest.mark.parametrize(
    ("script", "folder"),
    [("make_benign.py", BENIGN_DIR), ("make_attacks.py", ATTACKS_DIR)],
    ids=["benign", "attacks"],
)
def test_generators_reproduce_committed_files(script: str, folder: Path, tmp_path: Path) -> None:
    for module in ("torch", "numpy", "joblib"):
        pytest.importorskip(module)
    reason = _versions_match(_generated_by(folder))
    if reason:
        pytest.skip(reason)
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, str(FIXTURES / script), "--out", str(out)],
        capture_output=True,
        timeout=600,
        check=True,
    )
    fresh = {p.name: p.read_bytes() for p in out.iterdir()}
    committed = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    assert sorted(fresh) == sorted(committed)
    stale = [name for name in sorted(fresh) if fresh[name] != committed[name]]
    assert not stale, f"regenerate with tests/fixtures/{script}: {stale}"


def test_attack_payloads_stay_harmless() -> None:
    """Static check: every attack mentions the canary and nothing worse.

    Compressed files are checked through their decompressed head; this guards
    against a generator edit that changes what the payload does.
    """
    import bz2
    import gzip
    import lzma
    import zipfile
    import zlib

    def plain(data: bytes) -> bytes:
        if data[:3] == b"BZh":
            return bz2.BZ2Decompressor().decompress(data, 1 << 20)
        if data[:2] == b"\x1f\x8b":
            return gzip.decompress(data)
        if data[:1] == b"\x78":
            return zlib.decompress(data)
        if data[:6] == b"\xfd7zXZ\x00" or data[:2] == b"\x5d\x00":
            return lzma.LZMADecompressor().decompress(data, 1 << 20)
        if data[:2] == b"ZF":
            return zlib.decompress(data[21:])
        if data[:4] == b"PK\x03\x04":
            # Also look inside (possibly deflated) members that zipfile will read.
            out = data
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                for info in z.infolist():
                    try:
                        out += z.read(info)
                    except zipfile.BadZipFile:
                        pass
            return out
        return data

    for path, _meta in attack_files():
        data = plain(path.read_bytes())
        text = data.decode("latin-1")
        flat = text.replace("\n", "")
        rotated = _rot13(flat)
        assert "HERMETIC_CANARY" in flat or "HERMETIC_CANARY" in rotated, path.name
        for forbidden in ("rm -", "curl", "wget", "unlink", "rmtree", "socket", "remove("):
            assert forbidden not in flat and forbidden not in rotated, (path.name, forbidden)


def _rot13(text: str) -> str:
    return text.translate(
        str.maketrans(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
            "nopqrstuvwxyzabcdefghijklmNOPQRSTUVWXYZABCDEFGHIJKLM",
        )
    )


def test_corpus_module_shapes() -> None:
    for path, verdict, classes in benign_files():
        assert path.is_file() and verdict in VERDICTS and isinstance(classes, list)
    for path, meta in attack_files():
        assert path.is_file() and {"technique", "loader", "min_verdict"} <= set(meta)
