"""`allow=` for hermetic.load_pickle and hermetic.torch.load: trusted classes
are rebuilt as CPython's unpickler would, nothing else is ever imported or
called, and torch.load's interface (encoding=, pickle_module, weights_only,
CUDA locations) behaves as torch's.

The reference values come from the real unpicklers on files made here from
harmless classes (tests/allow_classes.py); no attack file is opened with a
real unpickler."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import allow_classes as ac
import numpy as np
import pytest
import torch

import hermetic
import hermetic.torch as ht
from corpus import attack_files

ALL = [
    ac.AttributeDict,
    ac.TrainConfig,
    ac.Slotted,
    ac.WithState,
    ac.Reduced,
    ac.MyList,
    ac.Node,
    ac.Key,
]


def checkpoint() -> dict[str, Any]:
    root = ac.Node("root")
    child = ac.Node("child")
    child.parent = root
    root.children.append(child)
    return {
        "hyper_parameters": ac.AttributeDict(lr=0.1, nested=ac.AttributeDict(depth=3)),
        "config": ac.TrainConfig(0.5, [64, 64]),
        "slots": ac.Slotted(1, [2, 3]),
        "state": ac.WithState(21),
        "reduced": ac.Reduced([1, 2, 3], 2.0),
        "mylist": ac.MyList([1, 2]),
        "tree": root,
        "shared": [ac.TrainConfig(1.0, [1])] * 2,
        "keyed": {ac.Key(1, "x"): "one", (ac.Key(2, "y"), 3): "two"},
        "members": {ac.Key(3, "z")},
    }


def assert_same(got: Any, ref: Any, seen: dict[int, int] | None = None) -> None:
    """Equal by type and attributes (tensors and arrays bitwise), with the
    same sharing."""
    seen = {} if seen is None else seen
    if id(ref) in seen:
        assert seen[id(ref)] == id(got), "sharing differs"
        return
    seen[id(ref)] = id(got)
    assert type(got) is type(ref), (type(got), type(ref))
    if isinstance(ref, torch.Tensor):
        assert got.dtype == ref.dtype and got.shape == ref.shape
        assert torch.equal(
            got.view(torch.uint8) if got.dim() else got, ref.view(torch.uint8) if ref.dim() else ref
        )
        return
    if isinstance(ref, np.ndarray):
        assert got.dtype == ref.dtype and got.tobytes() == ref.tobytes()
        return
    if isinstance(ref, dict):
        assert list(got) == list(ref)
        for k in ref:
            assert_same(got[k], ref[k], seen)
    elif isinstance(ref, (list, tuple)):
        assert len(got) == len(ref)
        for a, b in zip(got, ref, strict=True):
            assert_same(a, b, seen)
    else:
        assert got == ref or _attrs(got) is not None
    attrs = _attrs(ref)
    if attrs is not None:
        assert sorted(_attrs(got) or {}) == sorted(attrs)
        for k, v in attrs.items():
            assert_same((_attrs(got) or {})[k], v, seen)


def _attrs(obj: Any) -> dict[str, Any] | None:
    if isinstance(obj, (int, float, str, bytes, type(None), bool)):
        return None
    out: dict[str, Any] = dict(getattr(obj, "__dict__", {}))
    for slot in getattr(type(obj), "__slots__", ()):
        if hasattr(obj, slot):
            out[slot] = getattr(obj, slot)
    return out or None


@pytest.mark.parametrize("protocol", range(6))
def test_pickle_protocols_rebuild_as_the_unpickler_does(protocol: int) -> None:
    obj = checkpoint()
    if protocol < 2:
        del obj["slots"]  # copyreg refuses __slots__ without __getstate__ below protocol 2
    blob = pickle.dumps(obj, protocol=protocol)
    got = hermetic.load_pickle(blob, allow=["allow_classes:*"])
    assert_same(got, pickle.loads(blob))
    assert got["tree"].children[0].parent is got["tree"]
    assert got["hyper_parameters"].nested.depth == 3
    assert got["reduced"].items == [1, 2, 3]  # the list reached __init__ full
    assert got["shared"][0] is got["shared"][1]
    assert got["keyed"][ac.Key(1, "x")] == "one" and got["keyed"][(ac.Key(2, "y"), 3)] == "two"
    assert ac.Key(3, "z") in got["members"]


def test_torch_checkpoint_with_classes_equals_torch_load(tmp_path: Path) -> None:
    obj = checkpoint()
    obj["state_dict"] = {"w": torch.randn(3, 4), "b": torch.nn.Parameter(torch.zeros(4))}
    obj["view"] = obj["state_dict"]["w"][1:]
    path = tmp_path / "ckpt.pt"
    torch.save(obj, path)
    got = ht.load(path, allow=ALL)
    ref = torch.load(path, weights_only=False)
    assert_same(got, ref)
    assert (
        got["view"].untyped_storage().data_ptr()
        == got["state_dict"]["w"].untyped_storage().data_ptr()
    )


def test_refusal_lists_every_class_with_the_allow_to_pass(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save(checkpoint(), path)
    with pytest.raises(hermetic.UnsafePickleError) as e:
        ht.load(path)
    msg = str(e.value)
    names = [f"allow_classes:{c.__qualname__}" for c in ALL]
    for n in names:
        assert n in msg
    suggested = msg.rsplit("pass allow=", 1)[1].rstrip(".")
    allow = eval(suggested)  # the message's list, exactly as printed
    assert sorted(allow) == sorted(names)
    assert_same(ht.load(path, allow=allow), torch.load(path, weights_only=False))
    # A partial list: the rest is named, and only the rest.
    with pytest.raises(hermetic.UnsafePickleError) as e:
        ht.load(path, allow=[ac.AttributeDict])
    last = str(e.value).splitlines()[-1]
    assert "allow_classes:TrainConfig" in last and "AttributeDict" not in last


def _reduce(callable_mod: str, callable_name: str, arg: bytes = b")") -> bytes:
    """Protocol 2: callable(*()) with a GLOBAL the test names."""
    return b"\x80\x02c" + f"{callable_mod}\n{callable_name}\n".encode() + arg + b"R."


def test_an_allowed_class_never_lets_another_callable_run(canary: Path) -> None:
    # The function that would run is in the same module as the allowed classes.
    blob = pickle.dumps({"ok": ac.TrainConfig(1.0, [1]), "bad": _Call(ac.touch_canary)}, protocol=2)
    for allow in ([ac.TrainConfig], ["allow_classes:TrainConfig"], [ac.TrainConfig, ac.scaled]):
        with pytest.raises(hermetic.UnsafePickleError) as e:
            hermetic.load_pickle(blob, allow=allow)
        assert "allow_classes.touch_canary" in str(e.value)
    # copyreg.__newobj__ forwards to its first argument: that must be allowed too.
    fwd = b"\x80\x02ccopyreg\n__newobj__\ncallow_classes\ntouch_canary\n\x85R."
    with pytest.raises(hermetic.UnsafePickleError):
        hermetic.load_pickle(fwd, allow=[ac.TrainConfig])
    # copyreg._reconstructor's base runs too: only object or a builtin container.
    recon = (
        b"ccopyreg\n_reconstructor\n(callow_classes\nTrainConfig\ncallow_classes\nWithState\nNtR."
    )
    with pytest.raises(hermetic.CheckpointError, match="base"):
        hermetic.load_pickle(recon, allow=[ac.TrainConfig, ac.WithState])
    # A computed callable (the result of an allowed call) is never called.
    computed = b"\x80\x02callow_classes\nMyList\n)R)R."
    with pytest.raises((hermetic.UnsafePickleError, hermetic.CheckpointError)):
        hermetic.load_pickle(computed, allow=[ac.MyList])


class _Call:
    """Pickles as a REDUCE of `fn()`, without running it here."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __reduce__(self) -> Any:
        return (self.fn, ())


@pytest.mark.parametrize(
    ("name", "allow"),
    [
        # An alias: defined in posixpath, merely bound in allow_classes.
        ("allow_classes\njoined", ["allow_classes:*"]),
        # A dotted walk from a trusted module into what it imported.
        ("allow_classes\nos.system", ["allow_classes:*"]),
        ("allow_classes\ndataclasses.field", ["allow_classes:*"]),
        # Dangerous whatever the allow list says.
        ("os\nsystem", ["os:*"]),
        ("posix\nsystem", ["posix:system"]),
        ("builtins\neval", ["builtins:*"]),
        ("builtins\ngetattr", ["builtins:getattr"]),
        ("torch\nload", ["torch:*"]),
        ("torch.storage\n_load_from_bytes", ["torch.storage:_load_from_bytes"]),
    ],
)
def test_what_allow_can_never_trust(canary: Path, name: str, allow: list[str]) -> None:
    blob = b"\x80\x02c" + name.encode() + b"\n(S'touch x'\ntR."
    with pytest.raises((hermetic.UnsafePickleError, hermetic.CheckpointError)):
        hermetic.load_pickle(blob, allow=allow)


def test_a_wildcard_imports_only_the_module_it_names() -> None:
    assert "xml.dom.minidom" not in sys.modules
    blob = _reduce("xml.dom.minidom", "getDOMImplementation")
    with pytest.raises(hermetic.UnsafePickleError):
        hermetic.load_pickle(blob, allow=["allow_classes:*"])
    assert "xml.dom.minidom" not in sys.modules


BENIGN_ALLOW: list[Any] = [*ALL, "allow_classes:*", "collections:*", "argparse:Namespace"]


@pytest.mark.parametrize(("path", "meta"), attack_files(), ids=lambda v: getattr(v, "name", ""))
def test_no_attack_gets_through_an_allow_list(
    canary: Path, path: Path, meta: dict[str, Any]
) -> None:
    for load in (hermetic.load_pickle, ht.load, hermetic.joblib.load):
        for kwargs in (
            {"allow": BENIGN_ALLOW},
            {"plain": True},
            {"allow": BENIGN_ALLOW, "plain": True},
        ):
            try:
                load(path, **kwargs)
            except (hermetic.UnsafePickleError, hermetic.CheckpointError):
                continue
            pytest.fail(f"{path.name} loaded through {load.__module__}.{load.__qualname__}{kwargs}")


# ------------------------------------------------------------ torch.load's interface


NUMPY_DATA = Path(np.__file__).parent / "lib" / "tests" / "data"


@pytest.mark.parametrize("name", ["py2-objarr.npy", "py2-np0-objarr.npy", "py2-objarr.npz"])
@pytest.mark.parametrize("encoding", ["latin1", "bytes"])
def test_python2_pickles_numpy_ships_load_with_encoding(name: str, encoding: str) -> None:
    path = NUMPY_DATA / name
    if not path.exists():
        pytest.skip(f"this numpy does not ship {name}")
    ref: Any = np.load(path, allow_pickle=True, encoding=encoding)
    if name.endswith(".npz"):
        ref = dict(ref)
    got = hermetic.load_pickle(path, encoding=encoding)
    assert repr(got) == repr(ref)
    # The default (ASCII, as pickle.load) fails as numpy does, and says what to pass.
    with pytest.raises(hermetic.CheckpointError, match="encoding"):
        hermetic.load_pickle(path)


def test_encoding_names_and_python2_strs() -> None:
    blob = b"\x80\x02U\x04caf\xe9q\x00."
    assert hermetic.load_pickle(blob, encoding="latin-1") == pickle.loads(blob, encoding="latin-1")
    assert hermetic.load_pickle(blob, encoding="bytes") == pickle.loads(blob, encoding="bytes")
    with pytest.raises(ValueError, match="encoding"):
        hermetic.load_pickle(blob, encoding="koi8-r")


def test_numpy_before_1_0_reconstruct(tmp_path: Path) -> None:
    # numpy's own test of a version-0 array pickle (numpy/_core/tests/test_multiarray.py).
    blob = (
        b"\x80\x02cnumpy.core._internal\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02K\x00\x85U\x01b"
        b"\x87Rq\x03(K\x04\x85cnumpy\ndtype\nq\x04U\x02i1K\x00K\x01\x87Rq\x05(U\x01|NNJ\xff\xff\xff"
        b"\xffJ\xff\xff\xff\xfftb\x89U\x04\x01\x02\x03\x04tb."
    )
    got = hermetic.load_pickle(blob, encoding="latin1")
    ref = pickle.loads(blob, encoding="latin1")
    assert got.dtype == ref.dtype and got.tolist() == ref.tolist() == [1, 2, 3, 4]
    (tmp_path / "v0.pkl").write_bytes(blob)
    (report,) = hermetic.scan(tmp_path / "v0.pkl", include_clean=True)
    assert report.verdict == "safe"


def test_torch_load_signature(tmp_path: Path) -> None:
    path = tmp_path / "sd.pt"
    torch.save({"w": torch.ones(2)}, path)
    assert torch.equal(ht.load(path, "cpu", pickle, weights_only=True)["w"], torch.ones(2))
    assert torch.equal(
        ht.load(path, weights_only=False, mmap=False, encoding="utf-8")["w"], torch.ones(2)
    )
    with pytest.raises(TypeError, match="pickle_module"):
        ht.load(path, pickle_module=io)
    with pytest.raises(TypeError, match="unexpected"):
        ht.load(path, errors="strict", fix_imports=False)


_CUDA_CKPT = textwrap.dedent(
    """
    import sys, torch
    from torch import serialization
    # Tag CPU storages as cuda:0, as a checkpoint saved on a GPU is tagged.
    serialization.register_package(0, lambda obj: "cuda:0", lambda obj, loc: None)
    torch.save({"w": torch.arange(3.0)}, sys.argv[1])
    """
)


def test_a_cuda_checkpoint_on_a_cpu_machine_says_what_torch_says(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    path = tmp_path / "cuda.pt"
    subprocess.run([sys.executable, "-c", _CUDA_CKPT, str(path)], check=True)
    with pytest.raises(RuntimeError) as theirs:
        torch.load(path, weights_only=True)
    with pytest.raises(RuntimeError) as ours:
        ht.load(path)
    assert "torch.cuda.is_available() is False" in str(theirs.value)
    assert "torch.cuda.is_available() is False" in str(ours.value)
    assert "map_location=torch.device('cpu')" in str(ours.value)
    for ml in ("cpu", torch.device("cpu"), {"cuda:0": "cpu"}, lambda s, loc: s):
        assert torch.equal(ht.load(path, map_location=ml)["w"], torch.arange(3.0))


# ------------------------------------------------------------ standard-library values


def stdlib_values() -> dict[str, Any]:
    import argparse
    import collections
    import datetime
    import decimal
    import fractions
    import pathlib
    import uuid

    tz = datetime.timezone(datetime.timedelta(hours=2), "X")
    return {
        "args": argparse.Namespace(lr=0.1, layers=[64, 64], name="run"),
        "counts": collections.defaultdict(list, {"a": [1]}),
        "window": collections.deque([1, 2, 3], maxlen=5),
        "paths": [
            pathlib.PurePosixPath("data/train"),
            pathlib.PosixPath("/tmp/x"),
            pathlib.PureWindowsPath("c:/data"),
        ],
        "when": [
            datetime.datetime(2020, 1, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc),
            datetime.datetime(2021, 5, 6, tzinfo=tz),
            datetime.date(2020, 1, 1),
            datetime.time(1, 2, 3),
            datetime.timedelta(days=1, seconds=3),
        ],
        "id": uuid.UUID(int=12345),
        "exact": [decimal.Decimal("1.50"), fractions.Fraction(1, 3)],
    }


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_stdlib_values_load_without_allow(tmp_path: Path, protocol: int) -> None:
    blob = pickle.dumps(stdlib_values(), protocol=protocol)
    got = hermetic.load_pickle(blob)
    ref = pickle.loads(blob)
    assert got == ref
    for k in ref:
        assert type(got[k]) is type(ref[k])
    assert got["counts"].default_factory is list and got["window"].maxlen == 5
    path = tmp_path / "values.pkl"
    path.write_bytes(blob)
    (report,) = hermetic.scan(path, include_clean=True)
    assert report.verdict == "safe", report


def test_stdlib_values_in_a_torch_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({"args": stdlib_values(), "w": torch.ones(2)}, path)
    got = ht.load(path)
    assert got["args"] == stdlib_values()
    # torch's own weights_only loader refuses argparse.Namespace and the rest.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_protocol_0_stdlib_objects_need_a_non_empty_allow() -> None:
    import argparse

    blob = pickle.dumps(argparse.Namespace(a=1), protocol=0)
    with pytest.raises(hermetic.UnsafePickleError, match=r"pass allow=\[\]"):
        hermetic.load_pickle(blob)
    assert hermetic.load_pickle(blob, allow=[]) == argparse.Namespace(a=1)
    assert hermetic.load_pickle(blob, allow=["argparse:Namespace"]) == argparse.Namespace(a=1)
    # The wrappers never wrap anything else: an unknown class still needs its entry.
    blob = pickle.dumps(ac.TrainConfig(1.0, [1]), protocol=0)
    with pytest.raises(hermetic.UnsafePickleError, match="allow_classes:TrainConfig"):
        hermetic.load_pickle(blob, allow=[])


@pytest.mark.parametrize(
    "blob",
    [
        # Fraction("1e999999999") would build 10**999999999.
        b"\x80\x02cfractions\nFraction\nX\x0b\x00\x00\x001e999999999\x85R.",
        b"\x80\x02cfractions\nFraction\n)X\x0b\x00\x00\x001e999999999\x85\x81.",
        b"\x80\x02ccopyreg\n__newobj__\ncfractions\nFraction\nX\x0b\x00\x00\x001e999999999\x86R.",
        # ints over 4096 bits (a quadratic gcd)
        b"\x80\x02cfractions\nFraction\n\x8b\x00\x04\x00\x00" + b"\x7f" * 1024 + b"\x85R.",
    ],
)
def test_fraction_arguments_are_bounded(blob: bytes) -> None:
    with pytest.raises((hermetic.CheckpointError, hermetic.UnsafePickleError)):
        hermetic.load_pickle(blob, allow=["copyreg:__newobj__"])


def test_a_stdlib_value_never_carries_a_dangerous_callable(canary: Path) -> None:
    # defaultdict's factory is a global of its own: os.system is refused.
    blob = b"\x80\x02ccollections\ndefaultdict\ncos\nsystem\n\x85R."
    with pytest.raises(hermetic.UnsafePickleError):
        hermetic.load_pickle(blob)
    # Only deque's APPENDS and defaultdict's SETITEMS are the container's own.
    appends_on_path = b"\x80\x02cpathlib\nPurePosixPath\nX\x01\x00\x00\x00a\x85R(K\x01e."
    with pytest.raises(hermetic.UnsafePickleError, match="method_call"):
        hermetic.load_pickle(appends_on_path)


def test_a_python_2_npy_header_is_read_once_the_way_numpy_reads_it(tmp_path: Path) -> None:
    # `L` suffixes after digits are dropped (numpy's _filter_header); an `L,` inside a
    # field name is not. The scanner and the evaluator share that one reading.
    header = b"{'descr': [('xL,y', '<f8')], 'fortran_order': False, 'shape': (2L,), }"
    header += b" " * ((-(10 + len(header) + 1)) % 64) + b"\n"
    blob = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header
    blob += np.array([(1.5,), (2.5,)], dtype=[("xL,y", "<f8")]).tobytes()
    path = tmp_path / "py2.npy"
    path.write_bytes(blob)
    with pytest.warns(UserWarning):
        ref = np.load(path)
    got = hermetic.load_pickle(path)
    assert got.dtype == ref.dtype and got.dtype.names == ("xL,y",)
    assert got.tobytes() == ref.tobytes()


def test_plain_reads_classes_nobody_has(tmp_path: Path) -> None:
    # A class from a package that does not exist: pickle.load cannot load it at all.
    blob = (
        b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x0bnowhere_pkg\x8c\x05Model\x93)\x81"
        b"}(\x8c\x02lr\x94G?\xb9\x99\x99\x99\x99\x99\x9a\x8c\x04kind\x8c\x0bnowhere_pkg\x8c\x04Kind"
        b"\x93K\x02\x85Rub."
    )
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(blob)
    got = hermetic.load_pickle(blob, plain=True)
    assert got == {
        "$class": "nowhere_pkg:Model",
        "lr": 0.1,
        "kind": {"$class": "nowhere_pkg:Kind", "$args": (2,)},
    }
    assert "nowhere_pkg" not in sys.modules
    # allow= still rebuilds what it names; the rest stays plain.
    ckpt = {"cfg": ac.TrainConfig(1.0, [1]), "hp": ac.AttributeDict(a=1), "l": ac.MyList([3])}
    got = hermetic.load_pickle(pickle.dumps(ckpt, protocol=2), allow=[ac.TrainConfig], plain=True)
    assert got["cfg"] == ac.TrainConfig(1.0, [1])
    assert got["hp"] == {"$class": "allow_classes:AttributeDict", "a": 1}
    assert got["l"] == {"$class": "allow_classes:MyList", "$items": [3]}


def test_plain_never_runs_a_dangerous_import(canary: Path) -> None:
    blob = pickle.dumps({"x": _Call(ac.touch_canary)}, protocol=2)
    got = hermetic.load_pickle(blob, plain=True)
    assert got == {"x": {"$class": "allow_classes:touch_canary"}}
    with pytest.raises(hermetic.UnsafePickleError):
        hermetic.load_pickle(b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00true\x85R.", plain=True)


def test_torch_generators_load_without_allow(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(3)
    torch.rand(3, generator=g)
    path = tmp_path / "gen.pt"
    torch.save({"g": g}, path)
    got = ht.load(path)["g"]
    ref = torch.load(path, weights_only=False)["g"]
    assert torch.equal(got.get_state(), ref.get_state())
    assert got.initial_seed() == ref.initial_seed() == 3


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_random_states_load_without_allow(protocol: int) -> None:
    from evaluate_compare import assert_same

    states = [
        np.random.RandomState(5),
        np.random.default_rng(7),
        np.random.Generator(np.random.Philox(3)),
        np.random.SFC64(2),
        np.random.PCG64DXSM(1),
        np.random.SeedSequence(9),
    ]
    blob = pickle.dumps(states, protocol=protocol)
    got = hermetic.load_pickle(blob)
    assert_same(got, pickle.loads(blob))
    assert got[1].random() == pickle.loads(blob)[1].random()


@pytest.mark.parametrize(
    "blob",
    [
        # the bit generator constructor instantiates what it is given
        b"\x80\x02cnumpy.random._pickle\n__bit_generator_ctor\ncargparse\nNamespace\n\x85R.",
        # the random-state constructors call their second argument
        b"\x80\x02cnumpy.random._pickle\n__randomstate_ctor\nX\x07\x00\x00\x00MT19937"
        b"cpathlib\nPurePath\n\x86R.",
        b"\x80\x02cnumpy.random._pickle\n__generator_ctor\nX\x07\x00\x00\x00MT19937"
        b"cnumpy.random._sfc64\nSFC64\n\x86R.",
        # Cython's unpickle helper makes the class it is given
        b"\x80\x02cnumpy.random.bit_generator\n__pyx_unpickle_SeedSequence\n"
        b"cpathlib\nPurePath\nK\x00N\x87R.",
    ],
)
def test_numpy_random_constructors_take_only_their_own_arguments(blob: bytes) -> None:
    with pytest.raises(hermetic.CheckpointError, match="not supported"):
        hermetic.load_pickle(blob)
