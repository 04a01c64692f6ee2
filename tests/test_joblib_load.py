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


@pytest.mark.parametrize("dtype", [">i4", ">f8", ">c16", ">U3", ">M8[s]"])
def test_big_endian_arrays_come_back_native_as_joblib_makes_them(
    tmp_path: Path, dtype: str
) -> None:
    path = tmp_path / "be.joblib"
    arr = np.arange(4).astype(dtype) if "U" not in dtype else np.array(["a", "bc"], dtype)
    joblib.dump({"a": arr, "f": np.asfortranarray(np.ones((2, 3), dtype=dtype[:2] + "8"))}, path)
    ref = joblib.load(path)
    assert ref["a"].dtype.byteorder in ("=", "<", "|")  # joblib swaps to native
    assert_same(hermetic.joblib.load(path), ref)


def test_structured_big_endian_arrays_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "be.joblib"
    joblib.dump(np.zeros(2, dtype=[("x", ">i4"), ("y", "<f4")]), path)
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


# ---------------------------------------------------------- joblib < 0.10

OLD = Path(__file__).parent / "fixtures" / "old_joblib"
OLD_DUMPS = ["companions.pkl", "zcompanions.pkl", "zfile.pkl"]


def _joblib_load(path: Path) -> Any:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "generated with a joblib version less than 0.10"
        return joblib.load(path)


@pytest.mark.parametrize("name", OLD_DUMPS)
def test_old_dumps_load_as_joblib_loads_them(name: str) -> None:
    """joblib 0.9's companion `.npy` files, z-file companions and z-file
    dumps (written by joblib 0.9.4: tests/fixtures/make_old_joblib.py)."""
    assert_same(hermetic.joblib.load(OLD / name), _joblib_load(OLD / name))


def test_old_dumps_through_load_pickle_say_where_to_go() -> None:
    # pickle.load would give NDArrayWrapper objects, joblib.load arrays:
    # only hermetic.joblib.load reads the companions.
    with pytest.raises(hermetic.UnsafePickleError, match="hermetic.joblib.load"):
        hermetic.load_pickle(OLD / "companions.pkl")
    with pytest.raises(hermetic.UnsafePickleError):
        hermetic.joblib.load((OLD / "companions.pkl").read_bytes())


def _copy_old(tmp_path: Path, name: str) -> Path:
    import shutil

    for f in OLD.iterdir():
        if f.name.startswith(name):
            shutil.copy(f, tmp_path / f.name)
    return tmp_path / name


def _rename_companion(dump: Path, old: str, new: str) -> None:
    """Rewrites the companion name in the pickle (same length, so no opcode
    argument changes but the name's bytes)."""
    assert len(old) == len(new)
    blob = dump.read_bytes()
    assert blob.count(old.encode()) == 1
    dump.write_bytes(blob.replace(old.encode(), new.encode()))


def test_an_object_array_companion_is_refused_though_joblib_runs_it(
    canary: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    dump = _copy_old(tmp_path, "companions.pkl")
    np.save(tmp_path / "companions.pkl_01.npy", np.array([_evil(canary)], dtype=object))
    # The real loader runs it (in a child, with the canary)...
    code = "import joblib, sys; joblib.load(sys.argv[1])"
    env = {**os.environ, "HERMETIC_CANARY": str(canary)}
    env.pop("HERMETIC_PICKLE", None)
    subprocess.run([sys.executable, "-c", code, str(dump)], env=env, capture_output=True)
    assert canary.exists(), "joblib.load did not run the companion's payload"
    canary.unlink()
    # ...hermetic refuses it, and so does the scanner, for the companion itself.
    with pytest.raises(hermetic.CheckpointError, match="object array"):
        hermetic.joblib.load(dump)
    (report,) = hermetic.scan(tmp_path / "companions.pkl_01.npy")
    assert report.verdict == "dangerous"


@pytest.mark.parametrize("prefix", ["../", "/tmp/", "sub/"])
def test_companion_names_outside_the_dump_folder_are_refused(tmp_path: Path, prefix: str) -> None:
    dump = _copy_old(tmp_path, "companions.pkl")
    original = "companions.pkl_01.npy"
    name = prefix + "c" * (len(original) - len(prefix) - 4) + ".npy"
    target = (tmp_path / name) if not name.startswith("/") else Path(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    np.save(target, np.arange(3.0))  # a numeric array joblib.load would read there
    try:
        _rename_companion(dump, original, name)
        assert _joblib_load(dump)["weights"].tolist() == [0.0, 1.0, 2.0]
        with pytest.raises(hermetic.CheckpointError, match="not a plain file name"):
            hermetic.joblib.load(dump)
    finally:
        if name.startswith("/"):
            target.unlink()


def test_missing_and_broken_companions_are_errors(tmp_path: Path) -> None:
    dump = _copy_old(tmp_path, "companions.pkl")
    (tmp_path / "companions.pkl_02.npy").unlink()
    with pytest.raises((hermetic.CheckpointError, OSError), match="companions.pkl_02.npy"):
        hermetic.joblib.load(dump)
    zdump = _copy_old(tmp_path, "zcompanions.pkl")
    z = tmp_path / "zcompanions.pkl_01.npy.z"
    blob = bytearray(z.read_bytes())
    blob[2:4] = b"ff"  # the header's length no longer matches the data
    z.write_bytes(bytes(blob))
    with pytest.raises(hermetic.CheckpointError, match="z-file"):
        hermetic.joblib.load(zdump)


def test_a_symlinked_companion_is_read_as_joblib_reads_it(tmp_path: Path) -> None:
    dump = _copy_old(tmp_path, "companions.pkl")
    real = tmp_path / "elsewhere.npy"
    (tmp_path / "companions.pkl_01.npy").rename(real)
    (tmp_path / "companions.pkl_01.npy").symlink_to(real)
    assert_same(hermetic.joblib.load(dump), _joblib_load(dump))
