"""hermetic.joblib.load: joblib dumps (inline NumpyArrayWrapper arrays, every
compressor) read as joblib.load reads them, without unpickling. Reference values
come from joblib.load on files joblib.dump wrote here from plain data; the
malicious files are never opened with a real loader."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from evaluate_compare import assert_same

import hermetic


def arrays() -> dict[str, Any]:
    shared = np.arange(6, dtype=np.int16)
    return {
        "f4": np.linspace(0, 1, 7, dtype=np.float32),
        "i8_2d": np.arange(12, dtype=np.int64).reshape(3, 4),
        "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        "bool": np.array([True, False, True]),
        "complex": np.array([1 + 2j, 3 - 4j], dtype=np.complex128),
        "structured": np.array([(1, 2.5), (3, 4.5)], dtype=[("a", "<i4"), ("b", "<f8")]),
        "scalar_0d": np.array(3.5),
        "empty": np.zeros((0, 3), dtype=np.float64),
        "strings": np.array(["a", "bc"], dtype="<U2"),
        "objects": np.array(["x", 1, None, [1, 2]], dtype=object),
        "shared": [shared, shared],
        "plain": {"lr": 0.1, "steps": [1, 2, 3]},
    }


@pytest.mark.parametrize("compress", [0, ("zlib", 3), ("gzip", 3), ("lz4", 3), ("xz", 1)])
def test_joblib_dumps_load_as_joblib_loads_them(tmp_path: Path, compress: Any) -> None:
    if compress and compress[0] == "lz4":
        pytest.importorskip("lz4")
    path = tmp_path / "arrays.joblib"
    joblib.dump(arrays(), path, compress=compress)
    ref = joblib.load(path)
    got = hermetic.joblib.load(path)
    assert_same(got, ref)
    # A file object and the file's bytes read the same.
    with open(path, "rb") as f:
        assert_same(hermetic.joblib.load(f), ref)
    assert_same(hermetic.load_pickle(path.read_bytes()), ref)
    (report,) = hermetic.scan(path, include_clean=True)
    assert report.verdict == "safe"


def test_a_truncated_array_is_an_error_naming_the_place(tmp_path: Path) -> None:
    path = tmp_path / "a.joblib"
    joblib.dump({"a": np.arange(1000.0)}, path)
    blob = path.read_bytes()
    cut = tmp_path / "cut.joblib"
    cut.write_bytes(blob[: len(blob) // 2])
    with pytest.raises((hermetic.CheckpointError, hermetic.UnsafePickleError)):
        hermetic.joblib.load(cut)


def test_big_endian_arrays_are_refused_not_swapped_silently(tmp_path: Path) -> None:
    path = tmp_path / "be.joblib"
    joblib.dump(np.arange(4, dtype=">i4"), path)
    assert joblib.load(path).dtype.byteorder in ("=", "<")  # joblib swaps to native
    with pytest.raises(hermetic.CheckpointError, match="big-endian"):
        hermetic.joblib.load(path)


def test_joblib_options_that_hermetic_does_not_offer(tmp_path: Path) -> None:
    path = tmp_path / "a.joblib"
    joblib.dump(np.arange(3), path)
    with pytest.raises(ValueError, match="mmap_mode"):
        hermetic.joblib.load(path, mmap_mode="r")
    with pytest.raises(ValueError, match="native"):
        hermetic.joblib.load(path, ensure_native_byte_order=False)


class _Call:
    """Pickles as a REDUCE of ``fn(*args)``, without running it here."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> Any:
        return (self.fn, self.args)


def _evil(canary: Path) -> Any:
    return _Call(os.system, f"touch {canary}")


@pytest.mark.parametrize("compress", [0, ("gzip", 3)])
def test_payloads_in_joblib_dumps_are_refused(canary: Path, tmp_path: Path, compress: Any) -> None:
    for i, obj in enumerate(
        [
            # in an object array's nested pickle stream
            {"a": np.arange(3.0), "objs": np.array([_evil(canary), 1], dtype=object)},
            # after the arrays
            {"a": np.arange(3.0), "b": np.ones(4), "z": _evil(canary)},
            # before them
            [_evil(canary), np.arange(3.0)],
        ]
    ):
        path = tmp_path / f"evil{i}.joblib"
        joblib.dump(obj, path, compress=compress)
        with pytest.raises(hermetic.UnsafePickleError):
            hermetic.joblib.load(path)
        # No allow list trusts joblib's placeholders into plain objects.
        with pytest.raises(hermetic.UnsafePickleError):
            hermetic.joblib.load(path, allow=["joblib.numpy_pickle:NumpyArrayWrapper"])


def test_array_bytes_are_never_read_as_opcodes(canary: Path, tmp_path: Path) -> None:
    # An array whose bytes spell a pickle: as data for joblib, and data here.
    payload = f"cposix\nsystem\n(S'touch {canary}'\ntR.".encode()
    arr = np.frombuffer(payload + b"\0" * (-len(payload) % 8), dtype=np.uint8)
    path = tmp_path / "bytes.joblib"
    joblib.dump({"a": arr}, path)
    got = hermetic.joblib.load(path)
    assert got["a"].tobytes() == arr.tobytes()
    with io.BytesIO(path.read_bytes()) as f:
        assert hermetic.joblib.load(f)["a"].tobytes() == arr.tobytes()
