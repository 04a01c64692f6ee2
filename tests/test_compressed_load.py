"""Compressed pickles (joblib's compressors, a gzipped pickle) read by every
command that reads what `scan` reads: hermetic.load_pickle, `hermetic inspect`
and `hermetic convert`, the way joblib.load reads them. No attack file is
opened with a real unpickler here."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import pickle
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import joblib
import pytest

import hermetic
import hermetic.torch as ht

PLAIN = {"a": [1, 2, {"b": "c"}], "f": 1.5, "s": "text", "t": (1, None)}
COMPRESSORS = ["zlib", "gzip", "bz2", "lzma", "xz", "lz4"]


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HERMETIC_PICKLE"}
    return subprocess.run(
        [sys.executable, "-m", "hermetic", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.mark.parametrize("compressor", COMPRESSORS)
def test_joblib_compressed_dumps_load_as_joblib_loads_them(tmp_path: Path, compressor: str) -> None:
    if compressor == "lz4":
        pytest.importorskip("lz4")
    path = tmp_path / f"plain.{compressor}"
    joblib.dump(PLAIN, path, compress=(compressor, 3))
    assert hermetic.load_pickle(path) == joblib.load(path) == PLAIN
    r = cli("inspect", "--json", path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out.safetensors"
    r = cli("convert", path, out)
    assert r.returncode == 0, r.stderr
    assert hermetic.load(out) == {"a": [1, 2, {"b": "c"}], "f": 1.5, "s": "text", "t": (1, None)}


@pytest.mark.parametrize(
    "compress",
    [gzip.compress, bz2.compress, lzma.compress, zlib.compress],
    ids=lambda f: f.__module__,
)
def test_a_compressed_pickle(compress: Any) -> None:
    blob = compress(pickle.dumps(PLAIN, protocol=4))
    assert hermetic.load_pickle(blob) == PLAIN


def test_every_concatenated_gzip_member_is_read() -> None:
    # GzipFile (joblib's reader) reads members back to back as one stream.
    raw = pickle.dumps(PLAIN, protocol=4)
    blob = gzip.compress(raw[:10]) + gzip.compress(raw[10:])
    assert pickle.loads(gzip.decompress(blob)) == PLAIN  # gzip's own multi-member reading
    assert hermetic.load_pickle(blob) == PLAIN


def test_torch_load_still_refuses_what_torch_load_cannot_read() -> None:
    blob = gzip.compress(pickle.dumps(PLAIN))
    with pytest.raises(hermetic.CheckpointError, match="gzip"):
        ht.load(blob)


EVIL = b"\x80\x02cposix\nsystem\nX\x0b\x00\x00\x00touch /nopeq\x00\x85R."


@pytest.mark.parametrize(
    "blob",
    [
        gzip.compress(EVIL),
        bz2.compress(EVIL),
        lzma.compress(EVIL),
        zlib.compress(EVIL),
        # a benign first member, then the payload in a second one
        gzip.compress(pickle.dumps(PLAIN, protocol=2)[:-1]) + gzip.compress(EVIL[2:]),
        # a compressed layer inside a compressed layer
        gzip.compress(bz2.compress(EVIL)),
    ],
)
def test_compressed_attacks_are_refused_everywhere(
    canary: Path, tmp_path: Path, blob: bytes
) -> None:
    with pytest.raises((hermetic.UnsafePickleError, hermetic.CheckpointError)):
        hermetic.load_pickle(blob)
    path = tmp_path / "evil.pkl"
    path.write_bytes(blob)
    r = cli("convert", path, tmp_path / "out.safetensors")
    assert r.returncode != 0
    assert not (tmp_path / "out.safetensors").exists()
    r = cli("inspect", "--json", path)
    if r.returncode == 0:
        # inspect shows imports as opaque records; it never runs them.
        assert "posix" in json.dumps(json.loads(r.stdout))


def test_a_decompression_bomb_is_refused_not_expanded(tmp_path: Path) -> None:
    # 64 MB in 271 bytes (gzip in gzip): far beyond 1024x the input, the bound.
    blob = gzip.compress(gzip.compress(b"\x80\x04N" + b"\0" * (64 << 20) + b"."), 9)
    with pytest.raises((hermetic.CheckpointError, hermetic.UnsafePickleError), match="limit"):
        hermetic.load_pickle(blob)
