"""hermetic.load_pickle against pickle.load and np.load: plain data of every
protocol, numpy arrays and scalars (big-endian, Fortran order, object
arrays), .npy and .npz files, shared objects and cycles."""

from __future__ import annotations

import collections
import io
import pickle
import pickletools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from evaluate_compare import assert_same
from hypothesis import given, settings
from hypothesis import strategies as st

import hermetic
from corpus import benign_files

PICKLES = [p for p, _, _ in benign_files() if p.suffix == ".pkl"]
NUMPY = [p for p, _, _ in benign_files() if p.suffix in (".npy", ".npz")]
PROTOCOLS = list(range(pickle.HIGHEST_PROTOCOL + 1))


@pytest.mark.parametrize("path", PICKLES, ids=[p.name for p in PICKLES])
def test_corpus_pickles_equal_pickle_load(path: Path) -> None:
    data = path.read_bytes()
    reference = pickle.loads(data)  # the benign corpus: our own data pickles
    assert_same(hermetic.load_pickle(path), reference)
    assert_same(hermetic.load_pickle(data), reference)


@pytest.mark.parametrize("path", NUMPY, ids=[p.name for p in NUMPY])
def test_corpus_numpy_equals_np_load(path: Path) -> None:
    got = hermetic.load_pickle(path)
    if path.suffix == ".npz":
        with np.load(path) as z:
            reference: Any = {k: z[k] for k in z.files}
    else:
        reference = np.load(path)
    assert_same(got, reference)


def _shared() -> Any:
    inner = [1, 2]
    return {"a": inner, "b": inner, "t": (inner, inner)}


def _cycle() -> Any:
    x: list[Any] = []
    x.append(x)
    d: dict[str, Any] = {}
    d["self"] = d
    d["list"] = x
    return [x, d, (x,)]


class _Meta(collections.OrderedDict):  # type: ignore[type-arg]
    pass


def _ordered_with_metadata() -> Any:
    od: collections.OrderedDict[str, int] = collections.OrderedDict(b=2, a=1)
    od._metadata = {"version": 1}  # type: ignore[attr-defined]
    return od


OBJECTS = {
    "scalars": [None, True, False, 0, -1, 255, 256, 65535, 2**31, -(2**31) - 1, 2**63, -(2**64)],
    "big_ints": [2**1000, -(3**500), 10**4000],
    "floats": [0.0, -0.0, 1.5, float("inf"), float("-inf"), 1e-320, float("nan")],
    "strings": ["", "ascii", "héllo", "✓ 𝄞", "a\nb\\c'\"", "\x00\x7f\x80"],
    "surrogates": ["\ud800", "x\udfffy"],
    "bytes": [b"", b"\x00\xff" * 100, bytearray(b"mutable"), bytearray()],
    "containers": [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), [], {}, {1: "a", "b": (2,)}],
    "sets": [set(), {1, 2, 3}, frozenset({4, 5}), frozenset()],
    "misc": [complex(1, -2), slice(1, None, 3), range(2, 30, 7), collections.Counter(a=2)],
    "ordered": _ordered_with_metadata(),
    "shared": _shared(),
    "cycle": _cycle(),
    "numpy": [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.asfortranarray(np.arange(6, dtype=">i4").reshape(2, 3)),
        np.array([1.5, 2.5], dtype=">f8"),
        np.array([], dtype=np.int64),
        np.zeros((2, 0, 3)),
        np.array(["ab", "c"]),
        np.array([b"x", b"yz"]),
        np.array([(1, 2.0)], dtype=[("a", "<i4"), ("b", ">f8")]),
        np.array([1, 2], dtype="M8[ns]"),
        np.array([3], dtype="m8[2s]"),
        np.array([1 + 2j], dtype=np.complex128),
        np.arange(4, dtype=np.float16)[::2],
        np.array(3.5),
    ],
    "numpy_objects": [np.array([1, "a", None, (2, 3)], dtype=object), np.empty((2, 2), object)],
    "numpy_scalars": [np.float64(2.5), np.int8(-3), np.bool_(True), np.complex64(1j)],
    "dtypes": [np.dtype("<u2"), np.dtype(">f4"), np.dtype([("x", "<i2"), ("y", "S3")])],
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_objects_equal_pickle_load(name: str, protocol: int) -> None:
    data = pickle.dumps(OBJECTS[name], protocol=protocol)
    assert_same(hermetic.load_pickle(data), pickle.loads(data))


def test_object_array_in_npy(tmp_path: Path) -> None:
    arr = np.array([{"k": 1}, [1, 2], "s"], dtype=object)
    p = tmp_path / "o.npy"
    np.save(p, arr, allow_pickle=True)
    got = hermetic.load_pickle(p)
    assert_same(got, np.load(p, allow_pickle=True))
    buf = io.BytesIO()
    np.savez(buf, a=arr, b=np.arange(3))
    z = tmp_path / "o.npz"
    z.write_bytes(buf.getvalue())
    with np.load(z, allow_pickle=True) as ref:
        assert_same(hermetic.load_pickle(z), {k: ref[k] for k in ref.files})


def test_numpy_arrays_are_writable_copies() -> None:
    a = np.arange(4.0)
    out = hermetic.load_pickle(pickle.dumps(a, protocol=2))
    out[0] = 42.0
    assert out.flags.writeable and a[0] == 0.0


def test_errors_name_the_offset() -> None:
    # A broken stream is refused before anything is evaluated (the real
    # unpickler would run everything before the break): with its offset.
    with pytest.raises(hermetic.UnsafePickleError) as u:
        hermetic.load_pickle(b"\x80\x02]q\x00h\x07.")
    assert ("malformed_stream", "", 5) in [f[:3] for f in u.value.findings]
    assert "at byte 5" in str(u.value)
    # A stream that scans clean but does not hold together: CheckpointError.
    bad = pickle.dumps(np.arange(3.0), protocol=2).replace(b"\x03\x85", b"\x04\x85")
    with pytest.raises(hermetic.CheckpointError) as e:
        hermetic.load_pickle(bad)
    assert e.value.code == "malformed" and e.value.offset > 0
    assert f"at byte {e.value.offset}" in str(e.value)
    with pytest.raises(hermetic.UnsafePickleError) as u:
        hermetic.load_pickle(b"\x80\x02cmymod\nThing\n)\x81.")
    assert u.value.imports == ["mymod.Thing"]


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
data = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=5) | st.integers(), children, max_size=5)
        | st.frozensets(st.integers(), max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(obj=data, protocol=st.sampled_from(PROTOCOLS))
def test_random_data_equals_pickle_load(obj: Any, protocol: int) -> None:
    blob = pickle.dumps(obj, protocol=protocol)
    assert_same(hermetic.load_pickle(blob), pickle.loads(blob))


def _pickle_can_read(blob: bytes) -> bool:
    """Whether ``pickle.loads`` may be run on bytes hermetic read without
    refusing: CPython sizes its memo to the largest index a PUT names (2**31
    allocates 16 GiB and fails with MemoryError or worse); hermetic's is sparse."""
    puts = ("PUT", "BINPUT", "LONG_BINPUT")
    return all(arg < 1 << 20 for op, arg, _ in pickletools.genops(blob) if op.name in puts)


@settings(max_examples=300, deadline=None)
@given(blob=st.binary(max_size=200))
def test_random_bytes_are_refused_or_read_as_pickle_reads_them(blob: bytes) -> None:
    """Any bytes: a refusal that says why, or exactly what ``pickle.loads``
    makes of them. Another error is allowed only where pickle raises the same:
    the data is data-only, but building it fails (a BUILD that sets an
    attribute on a deque, which has no instance dict)."""
    try:
        got = hermetic.load_pickle(blob)
    except hermetic.UnsafePickleError as e:
        assert e.imports or e.findings, e
        return
    except hermetic.CheckpointError as e:
        # The evaluator's errors carry a code; those the Python maker raises
        # (a function as a value) keep the class defaults, "" and 0.
        assert str(e) and isinstance(e.code, str), e
        assert isinstance(e.offset, int) and e.offset >= 0, e
        return
    except Exception as e:
        # Any other error must be pickle's own: hermetic refused nothing, so
        # pickle may read the bytes too.
        if _pickle_can_read(blob):
            with pytest.raises(type(e)) as p:
                pickle.loads(blob)
            assert str(p.value) == str(e)
        return
    if _pickle_can_read(blob):
        assert_same(got, pickle.loads(blob))


@pytest.mark.parametrize(
    ("state", "error"),
    [
        (b"K\x01", "the state must be None or a dict, not int"),
        (b"]", "the state must be None or a dict, not list"),
        (b"(K\x01K\x02K\x03t", "the state must be None or a dict, not tuple"),
        (b"(NK\x01t", "the slot state must be None or a dict, not int"),
        (b"(N]t", "the slot state must be None or a dict, not list"),
    ],
)
def test_a_build_state_that_is_not_a_dict_is_refused(state: bytes, error: str) -> None:
    """CPython's BUILD takes None or a dict (and a dict of slots): anything else
    is its UnpicklingError, and a CheckpointError here (it was an
    AttributeError from ``.items()`` or ``__dict__``)."""
    blob = b"ccollections\ndeque\n(]K\x03tR" + state + b"b."
    with pytest.raises(pickle.UnpicklingError, match="state is not a dictionary"):
        pickle.loads(blob)
    with pytest.raises(hermetic.CheckpointError, match=f"BUILD on deque: {error}"):
        hermetic.load_pickle(blob)
    empty = b"ccollections\ndeque\n(]K\x03tRNb."
    assert hermetic.load_pickle(empty) == pickle.loads(empty)


def test_codecs_encode_refuses_what_python_refuses() -> None:
    good = pickle.dumps(b"x\xe9y", protocol=2)
    assert b"X\x06\x00\x00\x00latin1q" in good
    nul = good.replace(b"X\x06\x00\x00\x00latin1", b"X\x07\x00\x00\x00latin1\x00")
    # (str, "latin1") -> (str, "latin1", 2): `errors` is an int.
    errors = good.replace(b"latin1q\x02\x86", b"latin1q\x02K\x02\x87")
    for blob, error in [(nul, ValueError), (errors, TypeError)]:
        with pytest.raises(error):
            pickle.loads(blob)
        with pytest.raises((error, hermetic.HermeticError)):
            hermetic.load_pickle(blob)


def test_a_bytes_path_is_a_path(tmp_path: Path) -> None:
    """``os.PathLike[bytes]`` names a file; it is not the file's contents."""
    import os

    p = tmp_path / "data.pkl"
    p.write_bytes(pickle.dumps({"a": [1, 2]}, protocol=4))

    class BytesPath:
        def __fspath__(self) -> bytes:
            return os.fsencode(p)

    assert hermetic.load_pickle(BytesPath()) == {"a": [1, 2]}  # type: ignore[arg-type]
