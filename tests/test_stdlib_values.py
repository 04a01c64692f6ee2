"""Standard-library values hermetic stores as themselves (SPEC 10.6):
argparse.Namespace, collections.defaultdict (builtin factories), Counter,
deque, slice and range. Rebuilding them calls nothing the file chooses."""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import pathlib
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from _typed_util import crafted

import hermetic


def _values() -> dict[str, Any]:
    ns = argparse.Namespace(lr=0.1, layers=[2, 3], name="run", device=torch.device("cpu"))
    return {
        "args": ns,
        "again": ns,
        "dd": collections.defaultdict(list, {"a": [1], 2: [3]}),
        "dd_none": collections.defaultdict(None, {"x": 1}),
        "counts": collections.Counter("mississippi"),
        "window": collections.deque([1.0, 2.0], maxlen=4),
        "queue": collections.deque(["a"]),
        "s": slice(1, None, 2),
        "r": range(-3, 100, 7),
        "w": torch.arange(4.0),
        "time": datetime.time(3, 4, 5, 6),
        "time_tz": datetime.time(1, 2, tzinfo=datetime.timezone(datetime.timedelta(hours=-3))),
        "utc": datetime.timezone.utc,
        "named": datetime.timezone(datetime.timedelta(hours=5, seconds=1, microseconds=7), "X"),
        "posix": pathlib.PurePosixPath("runs/a"),
        "windows": pathlib.PureWindowsPath(r"C:\\runs\\a"),
    }


def _same(a: Any, b: Any) -> None:
    assert type(a) is type(b), (a, b)
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert a == b
    if isinstance(a, collections.defaultdict):
        assert a.default_factory is b.default_factory
    if isinstance(a, collections.deque):
        assert a.maxlen == b.maxlen
    if isinstance(a, datetime.timezone):
        assert a.tzname(None) == b.tzname(None)


def test_values_round_trip_with_their_types_and_sharing(tmp_path: Path) -> None:
    tree = _values()
    path = tmp_path / "std.safetensors"
    hermetic.save(tree, path)
    for got in (hermetic.load(path), hermetic.loads(hermetic.dumps(tree))):
        for k, v in tree.items():
            _same(v, got[k])
        assert got["again"] is got["args"]
    assert hermetic.load(path, plain=True)["counts"] == tree["counts"]


def test_cycles_through_mutable_values(tmp_path: Path) -> None:
    ns = argparse.Namespace()
    ns.me = ns
    dq: collections.deque[Any] = collections.deque()
    dq.append(dq)
    got = hermetic.loads(hermetic.dumps({"ns": ns, "dq": dq}))
    assert got["ns"].me is got["ns"] and got["dq"][0] is got["dq"]


@dataclasses.dataclass
class Run:
    args: argparse.Namespace
    counts: collections.Counter[str]
    dd: collections.defaultdict[str, list[int]]
    window: collections.deque[float]
    s: slice
    r: range


def test_typed_loading_checks_the_classes() -> None:
    run = Run(
        argparse.Namespace(lr=0.1),
        collections.Counter("aab"),
        collections.defaultdict(list, {"a": [1]}),
        collections.deque([1.0], maxlen=3),
        slice(2),
        range(4),
    )
    blob = hermetic.dumps({"run": run})
    for got in (
        hermetic.loads(blob, type=dict[str, Run]),
        hermetic.loads(blob, allow=[Run]),
    ):
        assert got["run"] == run
        assert got["run"].window.maxlen == 3 and got["run"].dd.default_factory is list
    with pytest.raises(hermetic.SchemaError, match="expected list"):
        hermetic.loads(hermetic.dumps({"q": collections.deque([1])}), type=dict[str, list[int]])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (collections.defaultdict(lambda: 0), "only builtin types"),
        (collections.defaultdict(Run), "only builtin types"),
        (argparse.Namespace(**{"not-an-identifier": 1}), "not an identifier"),
        (range(2**70), "64 bits"),
        (datetime.time(1, fold=1), "fold=1"),
    ],
)
def test_values_that_cannot_be_stored_say_why(value: Any, message: str) -> None:
    with pytest.raises(hermetic.FormatError, match=message):
        hermetic.dumps({"x": value})


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        ('{"$defaultdict":["os:system"]}', "must start with null or one of the factories"),
        ('{"$defaultdict":[null,"k"]}', "odd length"),
        ('{"$deque":[1,1,2]}', "more items than its maxlen"),
        ('{"$deque":[-1]}', "maxlen"),
        ('{"$namespace":["a-b",1]}', "not an identifier"),
        ('{"$namespace":["__class__",{"$callable":"builtins:dict"}]}', "starting with `__`"),
        ('{"$slice":[1,2]}', r"\[start, stop, step\]"),
        ('{"$range":[0,10,0]}', "must not be zero"),
        ('{"$range":[0,1.5,1]}', "integers"),
        ('{"$time":"25:00:00"}', "HH:MM:SS"),
        ('{"$time":"01:00:00[Europe/Paris]"}', "HH:MM:SS"),
        ('{"$timezone":["+24:00",null]}', "under 24 hours"),
        ('{"$timezone":["+01:00"]}', r"\[OFFSET, NAME\]"),
        ('{"$pure_path":["nt","a"]}', "posix"),
    ],
)
def test_malformed_nodes_are_rejected(tree: str, message: str) -> None:
    with pytest.raises(hermetic.FormatError, match=message):
        hermetic.loads(crafted(tree))


def test_convert_stores_them_from_pickles(tmp_path: Path) -> None:
    skip = ("again", "w", "time", "time_tz", "utc", "named", "posix", "windows")
    obj = {k: v for k, v in _values().items() if k not in skip}
    obj["args"] = argparse.Namespace(lr=0.1, layers=[2, 3])
    for proto in (2, 4, 5):
        src, out = tmp_path / f"p{proto}.pkl", tmp_path / f"p{proto}.safetensors"
        src.write_bytes(pickle.dumps(obj, protocol=proto))
        r = subprocess.run(
            [sys.executable, "-m", "hermetic", "convert", str(src), str(out)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
        got = hermetic.load(out)
        for k, v in obj.items():
            _same(v, got[k])
