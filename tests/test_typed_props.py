"""Property tests: generated class definitions (dataclasses, attrs classes,
NamedTuples, enums, tagged unions) nested in generic containers, with values
of those types, round-trip through hermetic.dumps and hermetic.loads by
`type=`, by `allow=` and as `plain=True` data."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import itertools
import typing
import uuid
from typing import Any, NamedTuple, Optional, Union

import attrs
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hermetic

_names = itertools.count()
# Every class a generated type uses, so allow= can name them all.
CLASSES: dict[str, type] = {}


def _name(kind: str) -> str:
    n = f"{kind}{next(_names)}"
    return n


def _register(cls: type) -> type:
    CLASSES[f"{cls.__module__}:{cls.__qualname__}"] = cls
    return cls


@st.composite
def enums(draw: st.DrawFn) -> type:
    values = draw(
        st.lists(st.integers(-5, 5) | st.text(max_size=3), min_size=1, max_size=3, unique=True)
    )
    cls = enum.Enum(_name("E"), {f"M{i}": v for i, v in enumerate(values)}, module=__name__)  # type: ignore[misc]
    return _register(cls)


@st.composite
def fields(draw: st.DrawFn, inner: st.SearchStrategy[Any]) -> list[tuple[str, Any]]:
    n = draw(st.integers(0, 4))
    return [(f"f{i}", draw(inner)) for i in range(n)]


@st.composite
def dataclass_types(draw: st.DrawFn, inner: st.SearchStrategy[Any]) -> type:
    fs = draw(fields(inner))
    cls = dataclasses.make_dataclass(
        _name("D"),
        fs,
        frozen=draw(st.booleans()),
        slots=draw(st.booleans()),
        namespace={"__module__": __name__},
    )
    return _register(cls)


@st.composite
def attrs_types(draw: st.DrawFn, inner: st.SearchStrategy[Any]) -> type:
    fs = draw(fields(inner))
    cls = attrs.make_class(
        _name("At"), {n: attrs.field(type=t) for n, t in fs}, frozen=draw(st.booleans())
    )
    cls.__module__ = __name__
    return _register(cls)


@st.composite
def namedtuple_types(draw: st.DrawFn, inner: st.SearchStrategy[Any]) -> type:
    fs = draw(fields(inner))
    cls = NamedTuple(_name("N"), fs)  # type: ignore[misc]
    cls.__module__ = __name__
    return _register(cls)


@st.composite
def tagged_unions(draw: st.DrawFn, inner: st.SearchStrategy[Any]) -> Any:
    # Two classes with the same fields: only the recorded name tells them apart.
    fs = draw(fields(inner))
    a = _register(dataclasses.make_dataclass(_name("U"), fs, namespace={"__module__": __name__}))
    b = _register(dataclasses.make_dataclass(_name("U"), fs, namespace={"__module__": __name__}))
    return Union[a, b]  # noqa: UP007 (typing.Union, as users write it)


SCALARS = st.sampled_from([int, float, str, bool, bytes, datetime.date, uuid.UUID, torch.Tensor])


def types() -> st.SearchStrategy[Any]:
    def extend(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(
            inner.map(lambda t: list[t]),  # type: ignore[valid-type]
            inner.map(lambda t: tuple[t, ...]),  # type: ignore[valid-type]
            inner.map(lambda t: dict[str, t]),  # type: ignore[valid-type]
            inner.map(lambda t: Optional[t]),  # noqa: UP045
            dataclass_types(inner),
            attrs_types(inner),
            namedtuple_types(inner),
            tagged_unions(inner),
        )

    return st.recursive(SCALARS | enums(), extend, max_leaves=6)


def values(tp: Any) -> st.SearchStrategy[Any]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is int:
        return st.integers(-(2**70), 2**70)
    if tp is float:
        return st.floats(allow_nan=False)
    if tp is str:
        return st.text(max_size=5)
    if tp is bool:
        return st.booleans()
    if tp is bytes:
        return st.binary(max_size=5)
    if tp is datetime.date:
        return st.dates()
    if tp is uuid.UUID:
        return st.uuids()
    if tp is torch.Tensor:
        return st.lists(st.floats(-4, 4, width=32), max_size=4).map(
            lambda xs: torch.tensor(xs, dtype=torch.float32)
        )
    if origin is list:
        return st.lists(values(args[0]), max_size=3)
    if origin is tuple:
        return st.lists(values(args[0]), max_size=3).map(tuple)
    if origin is dict:
        return st.dictionaries(st.text(max_size=3), values(args[1]), max_size=3)
    if origin is Union:
        return st.one_of(*[values(a) if a is not type(None) else st.none() for a in args])
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(list(tp))
    if dataclasses.is_dataclass(tp):
        return st.builds(tp, **{f.name: values(f.type) for f in dataclasses.fields(tp)})
    if attrs.has(tp):
        return st.builds(tp, **{a.name: values(a.type) for a in attrs.fields(tp)})
    hints = typing.get_type_hints(tp)
    return st.builds(tp, **{n: values(hints[n]) for n in tp._fields})


def same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and torch.equal(a, b)
    if dataclasses.is_dataclass(a):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if attrs.has(type(a)):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in attrs.fields(type(a)))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=False))
    return a == b  # type: ignore[no-any-return]


def plain(v: Any) -> Any:
    """What `plain=True` makes of a value."""
    if isinstance(v, enum.Enum):
        return {"$enum": f"{__name__}:{type(v).__qualname__}", "value": v.value}
    fields: list[str] | None = None
    if dataclasses.is_dataclass(v):
        fields = [f.name for f in dataclasses.fields(v)]
    elif attrs.has(type(v)):
        fields = [f.name for f in attrs.fields(type(v))]
    elif isinstance(v, tuple) and hasattr(v, "_fields"):
        fields = list(v._fields)
    if fields is not None:
        out = {"$class": f"{__name__}:{type(v).__qualname__}"}
        out.update({f: plain(getattr(v, f)) for f in fields})
        return out
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    if isinstance(v, tuple):
        return tuple(plain(x) for x in v)
    return v


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_generated_class_trees_round_trip(data: st.DataObject) -> None:
    tp = data.draw(types(), label="type")
    value = data.draw(values(tp), label="value")
    tree = {"value": value, "twice": [value, value]}
    blob = hermetic.dumps(tree)
    want = dict[str, tp | list[tp]]  # type: ignore[valid-type]
    typed = hermetic.loads(blob, type=want)
    assert same(typed["value"], value), (tp, value, typed)
    assert same(typed["twice"], [value, value])
    allowed = hermetic.loads(blob, allow=list(CLASSES.values()))
    assert same(allowed["value"], value)
    memoized = (list, dict, tuple, bytes, torch.Tensor, enum.Enum)
    if isinstance(value, memoized) or dataclasses.is_dataclass(value) or attrs.has(type(value)):
        # The same object twice in the file is one object again.
        assert allowed["twice"][0] is allowed["twice"][1]
    assert same(hermetic.loads(blob, plain=True)["value"], plain(value))
