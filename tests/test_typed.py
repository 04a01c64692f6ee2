"""Typed trees: class records, enums and standard-library values in hermetic
files, rebuilt by `hermetic.load(type=...)`, `allow=[...]` and `plain=True`
(docs/SPEC.md, section 10)."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import enum
import pathlib
import sys
import uuid
import zoneinfo
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Generic, Literal, NamedTuple, Optional, TypedDict, TypeVar, Union

import attrs
import numpy as np
import pytest
import torch
from _typed_util import crafted, document, tree_json

import hermetic
from hermetic import ClassNotAllowedError, FormatError, SchemaError

# ------------------------------------------------------------------ classes


class Norm(enum.Enum):
    LAYER = "layer"
    RMS = "rms"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Perm(enum.Flag):
    R = 4
    W = 2
    X = 1


class Color(enum.IntFlag):
    RED = 1
    BLUE = 2


@dataclasses.dataclass(frozen=True)
class Frozen:
    a: int
    b: float = 2.0


@dataclasses.dataclass(slots=True)
class Slotted:
    name: str
    tags: tuple[str, ...] = ()


@dataclasses.dataclass(kw_only=True)
class KwOnly:
    x: int
    y: int | None = None


@dataclasses.dataclass
class WithInitVar:
    a: int
    scale: dataclasses.InitVar[int] = 1
    derived: int = dataclasses.field(init=False, default=0)

    def __post_init__(self, scale: int) -> None:
        self.derived = self.a * scale


@dataclasses.dataclass
class Base:
    a: int


@dataclasses.dataclass
class Child(Base):
    b: str = "b"


@attrs.define
class AttrsCfg:
    lr: float
    _secret: int = 3
    names: list[str] = attrs.Factory(list)


@attrs.frozen
class AttrsFrozen:
    x: int


class Point(NamedTuple):
    x: int
    y: float = 0.0


class Entry(TypedDict):
    name: str
    weight: torch.Tensor
    step: int


class Partial(TypedDict, total=False):
    a: int
    b: str


T = TypeVar("T")


@dataclasses.dataclass
class Box(Generic[T]):
    item: T
    items: list[T]


@dataclasses.dataclass
class Tree:
    value: int
    children: list[Tree] = dataclasses.field(default_factory=list)
    parent_hint: Tree | None = None


@dataclasses.dataclass
class A:
    x: int


@dataclasses.dataclass
class B:
    x: int


@dataclasses.dataclass
class Values:
    when: datetime.datetime
    day: datetime.date
    span: datetime.timedelta
    path: pathlib.Path
    uid: uuid.UUID
    amount: decimal.Decimal


@dataclasses.dataclass
class Everything:
    frozen: Frozen
    slotted: Slotted
    kw: KwOnly
    child: Child
    attrs_cfg: AttrsCfg
    point: Point
    norm: Norm
    level: Level
    perm: Perm
    color: Color
    values: Values
    weights: dict[str, torch.Tensor]
    array: np.ndarray
    maybe: Frozen | None = None


def everything() -> Everything:
    return Everything(
        frozen=Frozen(1),
        slotted=Slotted("s", ("a", "b")),
        kw=KwOnly(x=1, y=2),
        child=Child(3, "c"),
        attrs_cfg=AttrsCfg(1e-3, 7, ["x"]),
        point=Point(1, 2.5),
        norm=Norm.RMS,
        level=Level.HIGH,
        perm=Perm.R | Perm.W,
        color=Color.RED | Color.BLUE,
        values=Values(
            when=datetime.datetime(2024, 3, 31, 1, 30, tzinfo=datetime.timezone.utc),
            day=datetime.date(1999, 12, 31),
            span=datetime.timedelta(days=-2, seconds=5, microseconds=7),
            path=pathlib.Path("/data/run 1/ckpt"),
            uid=uuid.UUID("12345678-9abc-def0-1234-56789abcdef0"),
            amount=decimal.Decimal("-1.50E+3"),
        ),
        weights={"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(3)},
        array=np.arange(4, dtype=np.int16),
        maybe=Frozen(2, 3.5),
    )


def same(a: Any, b: Any) -> None:
    """Equal, with the same types all the way down (tensors by value)."""
    assert type(a) is type(b), f"{type(a)} != {type(b)}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    elif dataclasses.is_dataclass(a) and not isinstance(a, type):
        for f in dataclasses.fields(a):
            same(getattr(a, f.name), getattr(b, f.name))
    elif attrs.has(type(a)):
        for f in attrs.fields(type(a)):
            same(getattr(a, f.name), getattr(b, f.name))
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=False):
            same(x, y)
    else:
        assert a == b


# ------------------------------------------------------------------ round trips


def test_everything_round_trips_by_type_allow_and_plain() -> None:
    obj = everything()
    blob = hermetic.dumps(obj)
    same(obj, hermetic.loads(blob, type=Everything))
    allowed = [Everything, Frozen, Slotted, KwOnly, Child, AttrsCfg, Point, Values]
    allowed += [Norm, Level, Perm, Color]
    same(obj, hermetic.loads(blob, allow=allowed))
    same(obj, hermetic.loads(blob, allow=[f"{__name__}:*"]))
    plain = hermetic.loads(blob, plain=True)
    assert plain["$class"] == f"{__name__}:Everything"
    assert plain["frozen"] == {"$class": f"{__name__}:Frozen", "a": 1, "b": 2.0}
    assert plain["norm"] == {"$enum": f"{__name__}:Norm", "value": "rms"}
    assert plain["perm"] == {"$enum": f"{__name__}:Perm", "value": 6}
    assert plain["point"] == {"$class": f"{__name__}:Point", "x": 1, "y": 2.5}
    assert plain["values"]["amount"] == decimal.Decimal("-1.50E+3")
    assert torch.equal(plain["weights"]["w"], obj.weights["w"])


def test_file_records_class_names_and_fields() -> None:
    tree = tree_json([Frozen(1), Frozen(2), Point(3), Norm.LAYER, Norm.RMS])
    assert tree == [
        {"$object": [f"{__name__}:Frozen", "a", 1, "b", 2.0]},
        {"$object": [0, 2, 2.0]},
        {"$object": [f"{__name__}:Point", "x", 3, "y", 0.0]},
        {"$enum": [f"{__name__}:Norm", "layer"]},
        {"$enum": [2, "rms"]},
    ]
    assert document(hermetic.dumps([Frozen(1)]))["version"] == 2
    assert document(hermetic.dumps([1, (2,)]))["version"] == 1


def test_dataclass_kinds() -> None:
    same(Frozen(1, 2.5), hermetic.loads(hermetic.dumps(Frozen(1, 2.5)), type=Frozen))
    s = hermetic.loads(hermetic.dumps(Slotted("a", ("b",))), type=Slotted)
    assert s == Slotted("a", ("b",)) and not hasattr(s, "__dict__")
    assert hermetic.loads(hermetic.dumps(KwOnly(x=1)), type=KwOnly) == KwOnly(x=1)
    # Inheritance: the subclass's record holds the base's fields too.
    assert tree_json(Child(1, "x")) == {"$object": [f"{__name__}:Child", "a", 1, "b", "x"]}
    assert hermetic.loads(hermetic.dumps(Child(1, "x")), type=Child) == Child(1, "x")
    # InitVar is no field; init=False fields are the class's to compute again.
    w = WithInitVar(3, scale=2)
    assert w.derived == 6
    assert tree_json(w) == {"$object": [f"{__name__}:WithInitVar", "a", 3]}
    assert hermetic.loads(hermetic.dumps(w), type=WithInitVar).derived == 3


def test_attrs_namedtuple_typeddict() -> None:
    c = AttrsCfg(0.5, 9, ["n"])
    assert tree_json(c)["$object"][:7] == [
        f"{__name__}:AttrsCfg",
        "lr",
        0.5,
        "_secret",
        9,
        "names",
        ["n"],
    ]
    assert hermetic.loads(hermetic.dumps(c), type=AttrsCfg) == c
    assert hermetic.loads(hermetic.dumps(AttrsFrozen(1)), type=AttrsFrozen) == AttrsFrozen(1)
    p = hermetic.loads(hermetic.dumps(Point(1, 2.0)), type=Point)
    assert p == Point(1, 2.0) and type(p) is Point
    entry = {"name": "e", "weight": torch.ones(2), "step": 3}
    # A TypedDict instance is a dict: stored as one, typed on load.
    assert tree_json(entry)["$dict"][0] == "name"
    out = hermetic.loads(hermetic.dumps(entry), type=Entry)
    assert out["name"] == "e" and out["step"] == 3 and torch.equal(out["weight"], torch.ones(2))
    assert hermetic.loads(hermetic.dumps({"a": 1}), type=Partial) == {"a": 1}
    with pytest.raises(SchemaError, match=r'tree\["step"\]: missing'):
        hermetic.loads(hermetic.dumps({"name": "e", "weight": torch.ones(1)}), type=Entry)


def test_enums() -> None:
    for member in [Norm.LAYER, Level.LOW, Perm.R | Perm.X, Perm(0), Color.BLUE]:
        blob = hermetic.dumps({"m": member})
        out = hermetic.loads(blob, type=dict[str, type(member)])  # type: ignore[misc]
        assert out["m"] is member or out["m"] == member
        assert type(out["m"]) is type(member)
        assert hermetic.loads(blob, allow=[type(member)])["m"] == member
    with pytest.raises(SchemaError, match="expected a member of Norm, found the value 'batch'"):
        hermetic.loads(crafted('{"$enum":["m:Norm","batch"]}'), type=Norm)
    with pytest.raises(SchemaError, match="expected Norm .an enum member., found str 'layer'"):
        hermetic.loads(hermetic.dumps("layer"), type=Norm)


def test_standard_library_values() -> None:
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    values = [
        datetime.datetime(2024, 1, 2, 3, 4, 5, 6),
        datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone(datetime.timedelta(hours=-5))),
        datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone(datetime.timedelta(seconds=61))),
        datetime.datetime(2024, 7, 1, 12, tzinfo=paris),
        # The repeated hour when clocks go back: fold tells the two apart.
        datetime.datetime(2024, 10, 27, 2, 30, tzinfo=paris, fold=0),
        datetime.datetime(2024, 10, 27, 2, 30, tzinfo=paris, fold=1),
        datetime.date(1, 1, 1),
        datetime.timedelta(days=-999999999),
        datetime.timedelta(microseconds=1),
        pathlib.Path("relative/p"),
        uuid.uuid4(),
        decimal.Decimal("NaN"),
        decimal.Decimal("-0"),
        decimal.Decimal("1E-30"),
        decimal.Decimal("-Infinity"),
    ]
    out = hermetic.loads(hermetic.dumps(values))  # plain data: no type= needed
    for a, b in zip(values, out, strict=False):
        assert type(a) is type(b)
        if isinstance(a, decimal.Decimal):
            assert str(a) == str(b)
        else:
            assert a == b
        if isinstance(a, datetime.datetime):
            assert a.utcoffset() == b.utcoffset() and a.fold == b.fold
            assert type(a.tzinfo) is type(b.tzinfo)
    assert out[3].tzinfo is paris
    assert tree_json(values[3]) == {"$datetime": "2024-07-01T12:00:00+02:00[Europe/Paris]"}


def test_unstorable_values_say_why() -> None:
    class Tz(datetime.tzinfo):
        def utcoffset(self, dt: Any) -> datetime.timedelta:
            return datetime.timedelta(0)

    with pytest.raises(FormatError, match=r'tree\["t"\].*only datetime.timezone'):
        hermetic.dumps({"t": datetime.datetime(2024, 1, 1, tzinfo=Tz())})
    with pytest.raises(FormatError, match=r'tree\["t"\].*only datetime.timezone'):
        hermetic.dumps({"t": datetime.time(1, tzinfo=Tz())})

    class MyPath(type(pathlib.PurePosixPath())):  # type: ignore[misc]
        pass

    with pytest.raises(FormatError, match=r"MyPath cannot be stored"):
        hermetic.dumps({"p": MyPath("a")})


def test_tensors_inside_objects_get_path_names() -> None:
    blob = hermetic.dumps({"cfg": Box(item=torch.ones(2), items=[torch.zeros(1)])})
    with hermetic.open(_tmp_file(blob)) as h:
        assert h.keys() == ["cfg.item", "cfg.items.0"]
        assert h.tree["cfg"]["$class"] == f"{__name__}:Box"
        assert h["cfg", "item"].shape == (2,)


def _tmp_file(blob: bytes) -> pathlib.Path:
    import tempfile

    f = tempfile.NamedTemporaryFile(suffix=".safetensors", delete=False)
    f.write(blob)
    f.close()
    return pathlib.Path(f.name)


def test_shared_objects_stay_shared() -> None:
    shared = Frozen(1)
    obj = [shared, shared, {"again": shared}]
    out = hermetic.loads(hermetic.dumps(obj), type=list[Any | Frozen | dict[str, Frozen]])
    assert out[0] is out[1] is out[2]["again"]
    out = hermetic.loads(hermetic.dumps(obj), allow=[Frozen])
    assert out[0] is out[1] is out[2]["again"]


def test_a_cycle_through_an_object_is_refused() -> None:
    t = Tree(1)
    t.children.append(t)
    with pytest.raises(FormatError, match="contains itself"):
        hermetic.dumps(t)
    with pytest.raises(FormatError, match="cycle"):
        hermetic.loads(crafted('{"$object":["m:Tree","value",1,"children",[{"$ref":0}]]}'))


# ------------------------------------------------------------------ annotations


def test_generics_optional_literal_annotated_and_recursion() -> None:
    box = Box(item=Frozen(1), items=[Frozen(2), Frozen(3)])
    assert hermetic.loads(hermetic.dumps(box), type=Box[Frozen]) == box
    ints = Box(item=1, items=[2])
    assert hermetic.loads(hermetic.dumps(ints), type=Box[int]) == ints
    assert hermetic.loads(hermetic.dumps(ints), type=Box) == ints  # bare generic: Any
    with pytest.raises(SchemaError, match=r"tree.items\[0\]: expected str, found int 2"):
        hermetic.loads(hermetic.dumps(ints), type=Box[str])
    t = Tree(1, [Tree(2), Tree(3, [Tree(4)])], parent_hint=Tree(0))
    assert hermetic.loads(hermetic.dumps(t), type=Tree) == t
    states = {1: Frozen(1), 2: Frozen(2)}
    assert hermetic.loads(hermetic.dumps(states), type=dict[int, Frozen]) == states
    assert hermetic.loads(hermetic.dumps(["a", "b"]), type=list[Literal["a", "b"]]) == ["a", "b"]
    with pytest.raises(SchemaError, match="expected Literal"):
        hermetic.loads(hermetic.dumps("c"), type=Literal["a", "b"])
    with pytest.raises(SchemaError, match="expected Literal"):
        hermetic.loads(hermetic.dumps(True), type=Literal[1])
    assert hermetic.loads(hermetic.dumps(Norm.RMS), type=Literal[Norm.RMS]) is Norm.RMS
    assert hermetic.loads(hermetic.dumps(3), type=Annotated[int, "meta"]) == 3
    # typing.Optional and typing.Union, as well as X | Y.
    assert hermetic.loads(hermetic.dumps(None), type=Optional[Frozen]) is None  # noqa: UP045
    out = hermetic.loads(hermetic.dumps([B(1)]), type=list[Union[A, B]])  # noqa: UP007
    assert type(out[0]) is B
    assert hermetic.loads(hermetic.dumps((1, "a")), type=tuple[int, str]) == (1, "a")
    with pytest.raises(SchemaError, match=r"expected tuple\[int, str\], found a tuple of 3 items"):
        hermetic.loads(hermetic.dumps((1, "a", 2)), type=tuple[int, str])
    assert hermetic.loads(hermetic.dumps([1, 2]), type=Sequence[int]) == [1, 2]
    od = collections.OrderedDict(a=1)
    out = hermetic.loads(hermetic.dumps(od), type=Mapping[str, int])
    assert out == od and type(out) is collections.OrderedDict
    assert hermetic.loads(hermetic.dumps({1, 2}), type=set[int]) == {1, 2}
    assert hermetic.loads(hermetic.dumps(frozenset({1})), type=frozenset[int]) == frozenset({1})


def test_unions_are_tagged_by_the_recorded_class() -> None:
    # A and B have the same fields: only the recorded name tells them apart.
    for obj in [A(1), B(1)]:
        out = hermetic.loads(hermetic.dumps([obj]), type=list[A | B])
        assert type(out[0]) is type(obj)
        out = hermetic.loads(hermetic.dumps([obj]), type=list[B | A | None])
        assert type(out[0]) is type(obj)
    with pytest.raises(SchemaError, match=r"a class record of .*:B \(the union's classes: .*:A\)"):
        hermetic.loads(hermetic.dumps(B(1)), type=Optional[A])  # noqa: UP045
    # Only among the union's members: a record whose module moved matches by qualname.
    assert hermetic.loads(crafted('{"$object":["elsewhere:A","x",1]}'), type=A | B) == A(1)
    assert hermetic.loads(crafted('{"$object":["elsewhere:A","x",1]}'), type=Frozen | A) == A(1)
    # Plain values pick the member of their own type first, then convert.
    assert hermetic.loads(hermetic.dumps(3), type=float | int) == 3
    assert type(hermetic.loads(hermetic.dumps(3), type=float | str)) is float
    assert hermetic.loads(hermetic.dumps(["x"]), type=list[int] | list[str]) == ["x"]
    with pytest.raises(SchemaError, match=r"expected int \| str, found float 1.5"):
        hermetic.loads(hermetic.dumps(1.5), type=int | str)


def test_any_holds_plain_data_only() -> None:
    data = {"a": [1, {"b": (2, "c")}], "t": torch.ones(1)}
    out = hermetic.loads(hermetic.dumps(data), type=dict[str, Any])
    assert out["a"] == data["a"]
    with pytest.raises(SchemaError, match=r"Any, which holds plain data only"):
        hermetic.loads(hermetic.dumps({"x": [Frozen(1)]}), type=dict[str, Any])
    out = hermetic.loads(hermetic.dumps({"x": [Frozen(1)]}), type=dict[str, Any], allow=[Frozen])
    assert out == {"x": [Frozen(1)]}


def test_strict_types_name_place_expected_and_found() -> None:
    obj = {"cfg": Frozen(1, 2.0), "steps": [1, 2, "3"], "name": 5}

    class Want(TypedDict):
        cfg: Slotted
        steps: list[int]
        name: str

    with pytest.raises(SchemaError) as e:
        hermetic.loads(hermetic.dumps(obj), type=Want)
    msg = str(e.value)
    assert "<bytes>: the data does not fit Want" in msg
    assert 'tree["cfg"].name: missing from the file' in msg
    assert "unknown fields `a`, `b` in the file" in msg
    assert "tree[\"steps\"][2]: expected int, found str '3'" in msg
    assert 'tree["name"]: expected str, found int 5' in msg
    for bad, tp, found in [
        (True, int, "bool True"),
        (1, bool, "int 1"),
        (1.0, int, "float 1.0"),
        ("abc", list[str], "str 'abc'"),
        ([1], tuple[int, ...], "list"),
        ((1,), list[int], "tuple"),
        ({"a": 1}, Frozen, "dict (a saved dict loads into a TypedDict"),
        (torch.ones(1), np.ndarray, "torch.Tensor"),
        (torch.ones(1), torch.nn.Parameter, "torch.Tensor"),
        (datetime.datetime(2024, 1, 1), datetime.date, "datetime.datetime"),
        (2**2000, float, "int 1148130695274254524232833201177681984..."),
    ]:
        with pytest.raises(SchemaError, match="found " + _re(found)):
            hermetic.loads(hermetic.dumps(bad), type=tp)
    # int widens to float, exactly as float(int) rounds.
    assert hermetic.loads(hermetic.dumps(2**70 + 1), type=float) == float(2**70 + 1)


def _re(s: str) -> str:
    import re

    return re.escape(s)


def test_unknown_annotation_types_are_a_clear_error() -> None:
    class Opaque:
        pass

    with pytest.raises(SchemaError, match="cannot rebuild the type Opaque"):
        hermetic.loads(hermetic.dumps(1), type=Opaque)


# ------------------------------------------------------------------ untyped loads


def test_untyped_load_of_classes_lists_them_and_both_remedies(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "c.safetensors"
    hermetic.save({"cfg": Frozen(1), "norm": Norm.RMS, "more": [Frozen(2)]}, p)
    with pytest.raises(ClassNotAllowedError) as e:
        hermetic.load(p)
    msg = str(e.value)
    assert str(p) in msg
    assert f"class     {__name__}:Frozen  (2x; fields a, b)" in msg
    assert f"enum      {__name__}:Norm" in msg
    assert "type=" in msg and "plain=True" in msg
    # The exact list, every name at once: one retry loads it.
    assert f"allow=['{__name__}:Frozen', '{__name__}:Norm']" in msg
    assert hermetic.load(p, allow=[f"{__name__}:Frozen", f"{__name__}:Norm"])["norm"] is Norm.RMS
    with pytest.raises(ClassNotAllowedError, match=f"{__name__}:Norm"):
        hermetic.load(p, allow=[Frozen])
    out = hermetic.load(p, allow=[Frozen, f"{__name__}:Norm"])
    assert out == {"cfg": Frozen(1), "norm": Norm.RMS, "more": [Frozen(2)]}
    # Plain stdlib values and files without classes need nothing.
    hermetic.save({"d": datetime.date(2020, 1, 1)}, p)
    assert hermetic.load(p) == {"d": datetime.date(2020, 1, 1)}


def test_allow_entries_must_be_classes_functions_or_names() -> None:
    blob = hermetic.dumps(Frozen(1))
    for bad in [3, "no-colon", "a b:C", "m:*x"]:
        with pytest.raises((TypeError, ValueError)):
            hermetic.loads(blob, allow=[bad])
    with pytest.raises(ClassNotAllowedError, match="not a dataclass, attrs class or NamedTuple"):
        hermetic.loads(crafted(f'{{"$object":["{__name__}:Norm","a",1]}}'), allow=[Norm])
    with pytest.raises(ValueError, match="cannot be combined"):
        hermetic.loads(blob, type=Frozen, plain=True)
    with pytest.raises(ValueError, match="extra must be"):
        hermetic.loads(blob, type=Frozen, extra="drop")  # type: ignore[arg-type]


def test_registered_classes_load_untyped() -> None:
    @dataclasses.dataclass
    class Local:
        v: int

    blob = hermetic.dumps([Local(1)])
    assert document(blob)["tree"][0]["$object"][0].endswith(
        "test_registered_classes_load_untyped.<locals>.Local"
    )
    with pytest.raises(ClassNotAllowedError):
        hermetic.loads(blob)
    assert hermetic.loads(blob, allow=[Local]) == [Local(1)]
    hermetic.register(Local)
    assert hermetic.loads(blob) == [Local(1)]


def test_lazy_handle_with_types() -> None:
    p = _tmp_file(hermetic.dumps({"cfg": Frozen(1), "w": torch.ones(2)}))
    with hermetic.open(p) as h:
        assert h.tree["cfg"] == {"$class": f"{__name__}:Frozen", "a": 1, "b": 2.0}
        assert h.get("cfg", type=Frozen) == Frozen(1)
        assert h.get("cfg", "a") == 1
        assert torch.equal(h["w"], torch.ones(2))
        with pytest.raises(ClassNotAllowedError):
            h["cfg"]
        assert h.load(type=dict[str, Frozen | torch.Tensor])["cfg"] == Frozen(1)


# ------------------------------------------------------------------ the format


def test_version_1_documents_cannot_hold_version_2_nodes() -> None:
    assert hermetic.loads(crafted('{"$date":"2020-01-02"}')) == datetime.date(2020, 1, 2)
    with pytest.raises(FormatError, match="version-2 nodes .* in a version-1 document"):
        hermetic.loads(crafted('{"$date":"2020-01-02"}', version=1))
    with pytest.raises(FormatError, match="version 5 is not supported"):
        hermetic.loads(crafted("1", version=5))


def test_attrs_nodes_follow_their_grammar() -> None:
    """`$attrs` (version 4): an OrderedDict with instance attributes."""
    good = '{"$attrs":[{"$odict":["k",1]},"_metadata",{"$dict":["",{"$dict":["version",1]}]}]}'
    got = hermetic.loads(crafted(good, version=4))
    assert got == {"k": 1} and got._metadata == {"": {"version": 1}}
    with pytest.raises(FormatError, match="version-4 nodes .* in a version-3 document"):
        hermetic.loads(crafted(good, version=3))
    for tree, message in [
        ('{"$attrs":[[1,2],"a",1]}', "must start with an \\$odict"),
        ('{"$attrs":[{"$dict":[]},"a",1]}', "must start with an \\$odict"),
        ('{"$attrs":[{"$odict":[]}]}', "without attributes"),
        ('{"$attrs":[{"$odict":[]},"__class__",1]}', "starting with `__`"),
        ('{"$attrs":[{"$odict":[]},"a-b",1]}', "not an identifier"),
        ('{"$attrs":[{"$odict":[]},"a",1,"a",2]}', "appears twice"),
        ('{"$attrs":[{"$odict":[]},"a"]}', "no value"),
        ('[{"$odict":[]},{"$attrs":[{"$ref":0},"a",1]}]', "must start with an \\$odict"),
    ]:
        with pytest.raises(FormatError, match=message):
            hermetic.loads(crafted(tree, version=4))


@pytest.mark.parametrize(
    "tree, message",
    [
        ('{"$object":["not a name"]}', "not a `module:qualname`"),
        ('{"$object":["m:C","a",1,"a",2]}', "appears twice"),
        ('{"$object":["m:C","a-b",1]}', "not an identifier"),
        ('{"$object":[0]}', "not an earlier"),
        ('{"$enum":["m:E"]}', r"\[class, value\]"),
        ('{"$callable":"m:f.<locals>.g"}', "not a `module:qualname`"),
        ('{"$partial":["m:f",[]]}', "function"),
        ('{"$datetime":"2024-01-02 03:04"}', "ISO 8601"),
        ('{"$datetime":"2024-02-30T00:00:00"}', "day is out of range"),
        ('{"$datetime":"2024-01-02T00:00:00+01:00[No/Such_Zone]"}', "not in the system"),
        ('{"$date":"2024-13-01"}', "YYYY-MM-DD"),
        ('{"$timedelta":[1,86400,0]}', "ranges"),
        ('{"$uuid":"ABCDEF00-0000-0000-0000-000000000000"}', "lowercase"),
        ('{"$decimal":"1,5"}', "decimal number"),
    ],
)
def test_hostile_typed_trees(tree: str, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        hermetic.loads(crafted(tree), plain=True)


if sys.version_info >= (3, 11):

    class Mode(enum.StrEnum):
        A = "a"

    def test_str_enum() -> None:
        assert hermetic.loads(hermetic.dumps(Mode.A), type=Mode) is Mode.A


@pytest.mark.parametrize(
    ("data", "t", "places"),
    [
        ([1, "x", 2, "y"], list[int], ["tree[1]", "tree[3]"]),
        ((1, "x", 2, "y"), tuple[int, ...], ["tree[1]", "tree[3]"]),
        (("x", 2), tuple[int, str], ["tree[0]", "tree[1]"]),
    ],
)
def test_every_bad_item_is_named(data: Any, t: Any, places: list[str]) -> None:
    """Sequences report every item that does not fit, each at its index."""
    with pytest.raises(hermetic.SchemaError) as info:
        hermetic.loads(hermetic.dumps(data), type=t)
    lines = [ln.strip().split(":")[0] for ln in str(info.value).splitlines()[1:]]
    assert lines == places, str(info.value)
