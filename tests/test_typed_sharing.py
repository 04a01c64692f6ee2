"""Typed loads keep shared subtrees shared (docs/SPEC.md 6.3 and 10.9): an
object the file references more than once (`$ref`) is rebuilt once per type
and every reference gets that one result, so identity survives
``hermetic.load(path, type=T)`` and a DAG of references costs time linear in
the file rather than in its unfolding (which doubles with every level)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple, TypedDict

import pytest

import hermetic
from hermetic import SchemaError


@dataclasses.dataclass
class Leaf:
    v: int


@dataclasses.dataclass
class Shared:
    xs: list[int]
    ys: list[int]
    opt: list[int] | None
    seq: Sequence[int]
    d1: dict[str, Leaf]
    d2: dict[str, Leaf]
    t1: tuple[Leaf, ...]
    t2: tuple[Leaf, ...]
    r1: Leaf
    r2: Leaf


class Point(NamedTuple):
    x: int
    y: int


class TD(TypedDict):
    kids: list[TD]


@dataclasses.dataclass
class N:  # a record holding the previous level twice
    a: N | None
    b: N | None


@dataclasses.dataclass
class L:  # a record holding a list that two records one level up share
    kids: list[L]


@dataclasses.dataclass
class Root:
    x: Any


def test_identity_survives_a_typed_load() -> None:
    xs = [1, 2, 3]
    d = {"a": Leaf(1)}
    t = (Leaf(2), Leaf(3))
    leaf = Leaf(4)
    out = hermetic.loads(
        hermetic.dumps(Shared(xs, xs, xs, xs, d, d, t, t, leaf, leaf)), type=Shared
    )
    assert out == Shared(xs, xs, xs, xs, d, d, t, t, leaf, leaf)
    assert out.xs is out.ys
    assert out.opt is out.xs  # through a union member of the same type
    assert out.seq is not out.xs  # another type: rebuilt for it
    assert out.d1 is out.d2
    assert out.t1 is out.t2
    assert out.r1 is out.r2


def test_identity_in_containers_and_typeddicts() -> None:
    p = Point(1, 2)
    kid: TD = {"kids": []}
    out = hermetic.loads(
        hermetic.dumps({"p": [p, p], "t": [kid, kid]}), type=dict[str, list[Point] | list[TD]]
    )
    assert out["p"] == [p, p] and out["p"][0] is out["p"][1]
    assert out["t"] == [kid, kid] and out["t"][0] is out["t"][1]


def test_a_cycle_through_a_list_still_loads_untyped_parts() -> None:
    a: list[Any] = [1]
    a.append(a)
    out = hermetic.loads(hermetic.dumps({"a": a, "b": a}), type=dict[str, list[Any]])
    assert out["a"] is out["b"]


def test_a_mismatch_in_a_shared_subtree_is_reported() -> None:
    xs = [1, "two"]
    with pytest.raises(SchemaError, match=r'tree\["a"\]\[1\]: expected int'):
        hermetic.loads(hermetic.dumps({"a": xs, "b": xs}), type=dict[str, list[int]])


def _records(depth: int) -> N | None:
    n = None
    for _ in range(depth):
        n = N(n, n)
    return n


def _lists(depth: int) -> L:
    lst: list[L] = []
    for _ in range(depth):
        lst = [L(lst), L(lst)]
    return L(lst)


def _typeddicts(depth: int) -> TD:
    d: TD = {"kids": []}
    for _ in range(depth):
        d = {"kids": [d, d]}
    return d


def _tuples(depth: int) -> Any:
    t: Any = Leaf(0)
    for _ in range(depth):
        t = (t, t)
    return t


@pytest.mark.parametrize(
    ("make", "tp", "allow", "same"),
    [
        # 2^30 paths through 30 records; each level references the last twice.
        (lambda: _records(30), N, None, lambda o: o.a is o.b and o.a.a is o.b.b),
        # Records under Any (rebuilt by allowlist): 2^30 paths.
        (lambda: Root(_records(30)), Root, [N], lambda o: o.x.a is o.x.b),
        # Tuples under Any around a record: 2^40 paths.
        (lambda: Root(_tuples(40)), Root, [Leaf], lambda o: o.x[0] is o.x[1]),
        # Distinct records sharing a list one level down (two containers a
        # level, so 24 levels fill the nesting limit of 50): 2^24 paths.
        (lambda: _lists(24), L, None, lambda o: o.kids[0].kids is o.kids[1].kids),
        # TypedDicts (dict + list a level): 2^24 paths.
        (lambda: _typeddicts(24), TD, None, lambda o: o["kids"][0] is o["kids"][1]),
    ],
    ids=["records", "records-under-any", "tuples-under-any", "shared-lists", "typeddicts"],
)
def test_an_adversarial_dag_loads_in_linear_time(make: Any, tp: Any, allow: Any, same: Any) -> None:
    data = hermetic.dumps(make())
    assert len(data) < 4096  # the file is small; only its unfolding is huge
    out = hermetic.loads(data, type=tp, allow=allow)
    assert same(out)
