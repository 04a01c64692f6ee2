"""Schema evolution (docs/SPEC.md, 10.6): a file written by an older version
of a class loads into the new one by these rules, and only these."""

from __future__ import annotations

import dataclasses
import enum
from typing import Annotated, NamedTuple, TypedDict

import attrs
import pytest

import hermetic
from hermetic import ClassNotAllowedError, SchemaError

# Version 1 of each class, as an old file recorded it ...


@dataclasses.dataclass
class OptimV1:
    learning_rate: float
    steps: int


@dataclasses.dataclass
class ModelV1:
    width: int
    depth: int
    dropout: float
    optim: OptimV1
    obsolete: str = "x"


# ... and version 2, as the code reads it now.


@dataclasses.dataclass
class OptimV2:
    lr: float = hermetic.field(aliases=["learning_rate"], default=1e-3)
    steps: int = 0
    warmup: int = 100  # new, with a default


@dataclasses.dataclass
class ModelV2:
    width: float  # widened from int
    layers: Annotated[int, hermetic.field(aliases=("depth",))]
    dropout: float
    optim: OptimV2
    bias: bool = True  # new


def v1() -> ModelV1:
    return ModelV1(width=64, depth=4, dropout=0.1, optim=OptimV1(3e-4, 10), obsolete="y")


def test_every_rule_at_once() -> None:
    blob = hermetic.dumps({"model": v1()})
    with pytest.raises(SchemaError, match=r'tree\["model"\]: unknown field `obsolete`'):
        hermetic.loads(blob, type=dict[str, ModelV2])
    out = hermetic.loads(blob, type=dict[str, ModelV2], extra="ignore")["model"]
    assert out == ModelV2(
        width=64.0, layers=4, dropout=0.1, optim=OptimV2(lr=3e-4, steps=10, warmup=100)
    )
    assert type(out.width) is float


def test_new_fields_take_their_defaults() -> None:
    @dataclasses.dataclass
    class Old:
        a: int

    @attrs.define
    class NewAttrs:
        a: int
        b: list[int] = attrs.Factory(lambda: [1])

    class NewTuple(NamedTuple):
        a: int
        b: str = "b"

    @dataclasses.dataclass
    class NewDataclass:
        a: int
        b: int | None = None
        c: list[int] = dataclasses.field(default_factory=list)

    blob = hermetic.dumps(Old(1))
    assert hermetic.loads(blob, type=NewAttrs) == NewAttrs(1, [1])
    assert hermetic.loads(blob, type=NewTuple) == NewTuple(1, "b")
    assert hermetic.loads(blob, type=NewDataclass) == NewDataclass(1, None, [])

    class TD(TypedDict, total=False):
        a: int
        b: int

    assert hermetic.loads(hermetic.dumps({"a": 1}), type=TD) == {"a": 1}


def test_a_new_field_without_default_is_an_error_naming_it() -> None:
    @dataclasses.dataclass
    class Needs:
        width: int
        depth: int
        dropout: float
        optim: OptimV2
        obsolete: str
        heads: int

    with pytest.raises(
        SchemaError,
        match=r"tree.heads: missing from the file, and the field has no default \(expected int\)",
    ):
        hermetic.loads(hermetic.dumps(v1()), type=Needs)


def test_unknown_fields() -> None:
    @dataclasses.dataclass
    class Fewer:
        width: int

    blob = hermetic.dumps([v1()])
    with pytest.raises(SchemaError) as e:
        hermetic.loads(blob, type=list[Fewer])
    msg = str(e.value)
    assert "tree[0]: unknown fields `depth`, `dropout`, `obsolete`, `optim` in the file" in msg
    assert 'extra="ignore"' in msg
    assert hermetic.loads(blob, type=list[Fewer], extra="ignore") == [Fewer(64)]

    class TD(TypedDict):
        a: int

    with pytest.raises(SchemaError, match="unknown field `b`"):
        hermetic.loads(hermetic.dumps({"a": 1, "b": 2}), type=TD)
    assert hermetic.loads(hermetic.dumps({"a": 1, "b": 2}), type=TD, extra="ignore") == {"a": 1}

    class NT(NamedTuple):
        a: int

    @dataclasses.dataclass
    class Two:
        a: int
        b: int

    with pytest.raises(SchemaError, match="unknown field `b`"):
        hermetic.loads(hermetic.dumps(Two(1, 2)), type=NT)
    assert hermetic.loads(hermetic.dumps(Two(1, 2)), type=NT, extra="ignore") == NT(1)


def test_renamed_fields() -> None:
    @attrs.define
    class AttrsNew:
        lr: Annotated[float, hermetic.field(aliases=["learning_rate"])]
        steps: int

    class TupleNew(NamedTuple):
        lr: Annotated[float, hermetic.field(aliases=["learning_rate"])]
        steps: int

    class DictNew(TypedDict):
        lr: Annotated[float, hermetic.field(aliases=["learning_rate"])]
        steps: int

    blob = hermetic.dumps(OptimV1(0.5, 3))
    assert hermetic.loads(blob, type=OptimV2) == OptimV2(0.5, 3)
    assert hermetic.loads(blob, type=AttrsNew) == AttrsNew(0.5, 3)
    assert hermetic.loads(blob, type=TupleNew) == TupleNew(0.5, 3)
    d = hermetic.dumps({"learning_rate": 0.5, "steps": 3})
    assert hermetic.loads(d, type=DictNew) == {"lr": 0.5, "steps": 3}
    # Old and new name both in the file: ambiguous.
    both = hermetic.dumps({"learning_rate": 0.5, "lr": 0.1, "steps": 3})
    with pytest.raises(SchemaError, match="both the field `lr` and its old name `learning_rate`"):
        hermetic.loads(both, type=DictNew)


def test_int_widens_to_float_everywhere_and_nothing_else_converts() -> None:
    @dataclasses.dataclass
    class Floats:
        x: float
        xs: list[float]
        m: dict[str, float]
        o: float | None
        t: tuple[float, ...]

    @dataclasses.dataclass
    class Ints:
        x: int
        xs: list[int]
        m: dict[str, int]
        o: int | None
        t: tuple[int, ...]

    ints = Ints(1, [2, 3], {"a": 4}, 5, (6,))
    out = hermetic.loads(hermetic.dumps(ints), type=Floats)
    assert out == Floats(1.0, [2.0, 3.0], {"a": 4.0}, 5.0, (6.0,))
    assert all(type(v) is float for v in [out.x, *out.xs, *out.m.values(), out.o, *out.t])
    floats = hermetic.dumps(Floats(1.5, [2.5], {"a": 3.5}, 4.5, (5.5,)))
    with pytest.raises(SchemaError) as e:
        hermetic.loads(floats, type=Ints)
    msg = str(e.value)
    for place, value in [
        ("tree.x", "1.5"),
        ("tree.xs[0]", "2.5"),
        ('tree.m["a"]', "3.5"),
        ("tree.o", "4.5"),  # expected Optional[int]
        ("tree.t[0]", "5.5"),
    ]:
        assert f"{place}: expected " in msg and f"found float {value}" in msg, place


class ColorV1(enum.Enum):
    RED = "red"
    GREEN = "green"


class ColorV2(enum.Enum):
    RED = "red"


def test_everything_else_is_an_error_naming_path_expected_and_found() -> None:
    @dataclasses.dataclass
    class Old:
        layers: list[OptimV1]
        color: ColorV1
        shape: list[int]
        name: str

    @dataclasses.dataclass
    class New:
        layers: list[OptimV1]
        color: ColorV2
        shape: tuple[int, int]
        name: int

    old = Old([OptimV1(0.1, 1), OptimV1(0.2, "2")], ColorV1.GREEN, [1, 2], "n")  # type: ignore[arg-type]
    with pytest.raises(SchemaError) as e:
        hermetic.loads(hermetic.dumps(old), type=New)
    msg = str(e.value)
    assert "tree.layers[1].steps: expected int, found str '2'" in msg
    assert "tree.color: expected a member of ColorV2, found the value 'green'" in msg
    assert "tree.shape: expected tuple[int, int], found list" in msg
    assert "tree.name: expected int, found str 'n'" in msg


def test_allow_loads_follow_the_same_rules() -> None:
    blob = hermetic.dumps(OptimV1(0.5, 3))
    with pytest.raises(ClassNotAllowedError):
        hermetic.loads(blob, allow=[OptimV2])  # the file names OptimV1
    from hermetic import _typed

    saved = dict(_typed._REGISTRY)
    try:
        hermetic.register(OptimV2, names=[f"{__name__}:OptimV1"])
        assert hermetic.loads(blob) == OptimV2(0.5, 3, 100)
        hermetic.register(ModelV2, names=[f"{__name__}:ModelV1"])
        old = hermetic.dumps(v1())
        with pytest.raises(SchemaError, match="unknown field `obsolete`"):
            hermetic.loads(old)
        assert hermetic.loads(old, extra="ignore") == ModelV2(64.0, 4, 0.1, OptimV2(3e-4, 10))
    finally:
        _typed._REGISTRY.clear()
        _typed._REGISTRY.update(saved)
