"""The cattrs converter behind ``hermetic.load(path, type=T)``.

cattrs generates one structuring function per class from its annotations
(dataclasses, attrs classes, NamedTuples, TypedDicts, generics, forward
references, recursive types) and reports each failing field with its path.
hermetic registers strict hooks on top: the file's data must already have the
annotated type, with exactly the conversions docs/SPEC.md section 10.6 lists
(int widens to float; unions are tagged by the recorded class name; missing
fields take their defaults; old field names map through aliases). Anything else
is a :class:`SchemaError` naming the place, the expected and the found type.

This module is imported on the first typed or allow-list load only.
"""

from __future__ import annotations

import argparse
import collections
import collections.abc as cabc
import dataclasses
import datetime
import decimal
import enum
import itertools
import json
import pathlib
import sys
import threading
import types
import typing
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import cattrs
from cattrs.cols import namedtuple_dict_structure_factory
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
    StructureHandlerNotFoundError,
)
from cattrs.gen import make_dict_structure_fn
from cattrs.gen.typeddicts import make_dict_structure_fn as make_typeddict_structure_fn

from hermetic import _hermetic
from hermetic._typed import (
    _REGISTRY,
    CURRENT,
    ClassNotAllowedError,
    Context,
    EnumRef,
    Record,
    SchemaError,
    _class_name,
    _record_fields,
    field_info,
)

Hook = Callable[[Any, Any], Any]
NoneType = type(None)


class Mismatch(Exception):
    """The value at one place has the wrong type."""

    def __init__(self, expected: str, found: str, detail: str = "") -> None:
        super().__init__(expected, found, detail)
        self.expected = expected
        self.found = found
        self.detail = detail

    def __str__(self) -> str:
        return f"expected {self.expected}, found {self.found}{self.detail}"


def describe(o: Any) -> str:
    """What the file holds at a place, for error messages (never long)."""
    c = o.__class__
    if c is Record:
        return f"a class record of {o.cls}"
    if c is EnumRef:
        return f"a member of the enum {o.cls} (value {_short(o.value)})"
    if o is None:
        return "None"
    if c in (bool, int, float, str, bytes, complex):
        return f"{c.__name__} {_short(o)}"
    if isinstance(o, (types.FunctionType, types.BuiltinFunctionType)):
        return f"the function {o.__module__}:{o.__qualname__}"
    if isinstance(o, type):
        return f"the class {o.__module__}:{o.__qualname__}"
    module = c.__module__
    return c.__qualname__ if module == "builtins" else f"{module}.{c.__qualname__}"


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def type_name(t: Any) -> str:
    if isinstance(t, type) and get_origin(t) is None:
        return t.__qualname__.rpartition("<locals>.")[2]
    return repr(t).replace("typing.", "")


def _strip(t: Any) -> Any:
    while get_origin(t) is Annotated:
        t = get_args(t)[0]
    return t


def _is_any(t: Any) -> bool:
    return t is Any or t is object or isinstance(t, TypeVar)


def _is_union(t: Any) -> bool:
    return get_origin(t) in (Union, types.UnionType)


def _record_class(t: Any) -> type | None:
    origin = get_origin(t) or t
    if isinstance(origin, type) and not issubclass(origin, enum.Enum):
        if _record_fields(origin) is not None:
            return origin
    return None


def _enum_class(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, enum.Enum)


# ------------------------------------------------------------------ scalars


def _exact(t: type) -> Hook:
    name = t.__name__

    def hook(o: Any, _: Any) -> Any:
        if o.__class__ is t:
            return o
        raise Mismatch(name, describe(o))

    return hook


def _float(o: Any, _: Any) -> float:
    c = o.__class__
    if c is float:
        return o  # type: ignore[no-any-return]
    if c is int:
        try:
            return float(o)
        except OverflowError:
            raise Mismatch("float", "an int too large for a float") from None
    raise Mismatch("float", describe(o))


def _none(o: Any, _: Any) -> None:
    if o is not None:
        raise Mismatch("None", describe(o))


def _any(o: Any, _: Any) -> Any:
    return CURRENT.get().any(o)


_EXACT_VALUES = (
    datetime.datetime,
    datetime.date,
    datetime.timedelta,
    uuid.UUID,
    decimal.Decimal,
    datetime.time,
    datetime.timezone,
    argparse.Namespace,
    slice,
    range,
)


def _is_value_class(t: Any) -> bool:
    origin = get_origin(t) or t
    if not isinstance(origin, type):
        return False
    if origin in _EXACT_VALUES or issubclass(origin, pathlib.PurePath):
        return True
    return origin.__module__.partition(".")[0] in ("torch", "numpy")


def _value_factory(t: Any) -> Hook:
    origin = get_origin(t) or t
    name = type_name(origin)
    if origin in _EXACT_VALUES:

        def exact(o: Any, _: Any) -> Any:
            if o.__class__ is not origin:
                raise Mismatch(name, describe(o))
            if origin is argparse.Namespace:
                # Its attributes are plain data, as under Any.
                for k, v in vars(o).items():
                    setattr(o, k, CURRENT.get().any(v))
            return o

        return exact

    def hook(o: Any, _: Any) -> Any:
        if isinstance(o, origin):
            return o
        raise Mismatch(name, describe(o))

    return hook


# ------------------------------------------------------------------ sharing


def _shared(hook: Hook) -> Hook:
    """``hook`` for containers, rebuilding each shared object (one the file
    references more than once, see ``Context.shared``) once: every reference
    gets the same result, so ``a.x is a.y`` survives a typed load and a DAG of
    references is structured in time linear in the file."""

    def memo_hook(o: Any, t: Any) -> Any:
        ctx = CURRENT.get()
        if id(o) not in ctx.shared:
            return hook(o, t)
        key = _memo_key(o, t, memo_hook)
        hit = ctx.memo.get(key)
        if hit is not None and hit[0] is o:
            return hit[1]
        out = hook(o, t)
        ctx.memo[key] = (o, out)
        return out

    return memo_hook


def _memo_key(o: Any, t: Any, hook: Hook) -> tuple[int, Any]:
    """The memo key of a shared object structured as ``t``: by the type (cattrs
    makes a hook per field, so two fields annotated ``list[int]`` have two
    hooks), or by the hook for the rare type that cannot be hashed."""
    try:
        hash(t)
    except TypeError:
        return (id(o), hook)
    return (id(o), t)


# ------------------------------------------------------------------ containers


# Element types whose values are checked inline (exact class, no conversion).
_SCALARS = frozenset({str, int, bool, bytes, complex})


def _note(e: Exception, index: Any, t: Any) -> Exception:
    e.__notes__ = [*getattr(e, "__notes__", []), IterableValidationNote(f"@ {index!r}", index, t)]
    return e


def _each(hooks: Any, items: Any, name: str, t: Any) -> list[Any]:
    """Each item through its hook (``hooks`` pairs with ``items``), every
    failure collected with its index, as cattrs' detailed validation does."""
    out = []
    errors = []
    for i, (h, x) in enumerate(zip(hooks, items, strict=False)):
        try:
            out.append(h(x))
        except Exception as e:
            errors.append(_note(e, i, h.t))
    if errors:
        raise IterableValidationError(f"While structuring {name}", errors, t)
    return out


class _Lazy:
    """The hook of a type, looked up on first use (so recursive types resolve)."""

    __slots__ = ("conv", "t", "hook")

    def __init__(self, conv: cattrs.Converter, t: Any) -> None:
        self.conv = conv
        self.t = t
        self.hook: Hook | None = None

    def __call__(self, o: Any) -> Any:
        h = self.hook
        if h is None:
            h = self.hook = self.conv.get_structure_hook(self.t)
        return h(o, self.t)

    def resolve(self) -> Hook:
        h = self.hook
        if h is None:
            h = self.hook = self.conv.get_structure_hook(self.t)
        return h


def _sequence_factory(t: Any, conv: cattrs.Converter) -> Hook:
    origin = get_origin(t) or t
    args = get_args(t)
    elem = _Lazy(conv, args[0] if args else Any)
    name = type_name(t)
    if origin is collections.deque:

        def deque_hook(o: Any, _: Any) -> Any:
            if o.__class__ is not collections.deque:
                raise Mismatch(name, describe(o))
            items = _each(itertools.repeat(elem), o, name, t)
            return collections.deque(items, o.maxlen)

        return _shared(deque_hook)
    if origin in (list, cabc.MutableSequence):
        accepted: tuple[type, ...] = (list,)
    elif origin in (set, cabc.MutableSet):
        accepted = (set,)
    elif origin is frozenset:
        accepted = (frozenset,)
    elif origin is cabc.Set:
        accepted = (set, frozenset)
    else:  # Sequence, Collection, Iterable
        accepted = (list, tuple)

    def hook(o: Any, _: Any) -> Any:
        c = o.__class__
        if c not in accepted:
            raise Mismatch(name, describe(o))
        out = _each(itertools.repeat(elem), o, name, t)
        return out if c is list else c(out)

    if conv.detailed_validation:
        return _shared(hook)

    def each(o: Any, _: Any) -> Any:
        h = elem.resolve()
        et = elem.t
        out = [h(x, et) for x in o]
        return out if o.__class__ is list else o.__class__(out)

    copy = _shared(lambda o, _: list(o))
    build = _shared(each)

    def fast(o: Any, _: Any) -> Any:
        c = o.__class__
        if c not in accepted:
            raise Mismatch(name, describe(o))
        et = elem.t
        if et in _SCALARS:
            for x in o:
                if x.__class__ is not et:
                    break
            else:
                # The object itself needs no memo to stay shared; a list is copied.
                return o if c is not list else copy(o, t)
        return build(o, t)

    return fast


def _is_sequence(t: Any) -> bool:
    origin = get_origin(t) or t
    return origin in (
        list,
        set,
        frozenset,
        cabc.MutableSequence,
        cabc.Sequence,
        cabc.MutableSet,
        cabc.Set,
        cabc.Collection,
        cabc.Iterable,
        collections.deque,
    )


def _is_tuple(t: Any) -> bool:
    return (get_origin(t) or t) is tuple


def _tuple_factory(t: Any, conv: cattrs.Converter) -> Hook:
    args = get_args(t)
    name = type_name(t)
    if not args or (len(args) == 2 and args[1] is Ellipsis):
        elem = _Lazy(conv, args[0] if args else Any)

        def homogeneous(o: Any, _: Any) -> Any:
            if o.__class__ is not tuple:
                raise Mismatch(name, describe(o))
            return tuple(_each(itertools.repeat(elem), o, name, t))

        if conv.detailed_validation:
            return _shared(homogeneous)

        def each(o: Any, _: Any) -> Any:
            h = elem.resolve()
            et = elem.t
            return tuple([h(x, et) for x in o])

        build = _shared(each)

        def homogeneous_fast(o: Any, _: Any) -> Any:
            if o.__class__ is not tuple:
                raise Mismatch(name, describe(o))
            et = elem.t
            if et in _SCALARS:
                for x in o:
                    if x.__class__ is not et:
                        break
                else:
                    return o  # the object itself: a shared tuple stays shared
            return build(o, t)

        return homogeneous_fast
    elems = [_Lazy(conv, a) for a in args]

    def heterogeneous(o: Any, _: Any) -> Any:
        if o.__class__ is not tuple:
            raise Mismatch(name, describe(o))
        if len(o) != len(elems):
            raise Mismatch(name, f"a tuple of {len(o)} items")
        return tuple(_each(elems, o, name, t))

    return _shared(heterogeneous)


def _is_mapping(t: Any) -> bool:
    origin = get_origin(t) or t
    return origin in (
        dict,
        collections.OrderedDict,
        collections.Counter,
        collections.defaultdict,
        cabc.Mapping,
        cabc.MutableMapping,
    )


def _empty_like(o: Any) -> Any:
    """A new, empty mapping of the class of ``o`` (a defaultdict keeps its factory)."""
    if o.__class__ is collections.defaultdict:
        return collections.defaultdict(o.default_factory)
    return o.__class__()


def _mapping_factory(t: Any, conv: cattrs.Converter) -> Hook:
    origin = get_origin(t) or t
    args = get_args(t)
    key = _Lazy(conv, args[0] if args else Any)
    value = _Lazy(conv, args[1] if len(args) == 2 else Any)
    name = type_name(t)
    make = collections.OrderedDict if origin is collections.OrderedDict else None
    accepted: tuple[type, ...] = (dict, collections.OrderedDict)
    if origin in (collections.Counter, collections.defaultdict):
        accepted = (origin,)

    def fast(o: Any, _: Any) -> Any:
        c = o.__class__
        if c not in accepted:
            raise Mismatch(name, describe(o))
        hk = key.resolve()
        hv = value.resolve()
        kt = key.t
        vt = value.t
        if make is None and c is dict:
            return {hk(k, kt): hv(v, vt) for k, v in o.items()}
        out = make() if make is not None else _empty_like(o)
        for k, v in o.items():
            out[hk(k, kt)] = hv(v, vt)
        return out

    def hook(o: Any, _: Any) -> Any:
        c = o.__class__
        if c not in accepted:
            raise Mismatch(name, describe(o))
        out = make() if make is not None else _empty_like(o)
        errors = []
        for k, v in o.items():
            try:
                k2 = key(k)
            except Exception as e:
                if isinstance(e, Mismatch):
                    e.detail += " (a dict key)"
                errors.append(_note(e, k, key.t))
                continue
            try:
                out[k2] = value(v)
            except Exception as e:
                errors.append(_note(e, k, value.t))
        if errors:
            raise IterableValidationError(f"While structuring {name}", errors, t)
        return out

    return _shared(hook if conv.detailed_validation else fast)


# ------------------------------------------------------------------ classes


def _aliases(cl: Any) -> dict[str, str]:
    """Old field name -> field name, from Annotated metadata and field metadata."""
    out: dict[str, str] = {}

    def add(name: str, meta: Any) -> None:
        info = field_info(meta)
        if info is not None:
            for a in info.aliases:
                out[a] = name

    try:
        hints = typing.get_type_hints(cl, include_extras=True)
    except Exception:
        hints = {}
    for name, hint in hints.items():
        if get_origin(hint) is Annotated:
            for m in hint.__metadata__:
                add(name, m)
    if dataclasses.is_dataclass(cl):
        for f in dataclasses.fields(cl):
            add(f.name, f.metadata)
    attr = sys.modules.get("attr")
    if attr is not None and isinstance(cl, type) and attr.has(cl):
        for a in attr.fields(cl):
            add(a.name, a.metadata)
    return out


def _rename(o: Any, aliases: dict[str, str]) -> Any:
    hits = [a for a in aliases if a in o]
    if not hits:
        return o
    r = o.__class__(o)
    if o.__class__ is Record:
        r.cls = o.cls
        r.shared = o.shared
    for old in hits:
        new = aliases[old]
        if new in r:
            raise SchemaError(f"the file has both the field `{new}` and its old name `{old}`")
        r[new] = r.pop(old)
    return r


def _record_factory(t: Any, conv: cattrs.Converter) -> Hook:
    origin = get_origin(t) or t
    target = t
    params = getattr(origin, "__parameters__", ())
    if params and get_origin(t) is None:
        target = origin[tuple(Any for _ in params)]  # a bare generic: its type variables are Any
    forbid = conv.forbid_extra_keys
    detailed = conv.detailed_validation
    aliases = _aliases(origin)
    name = type_name(t)
    fn: Any = None
    # The fast converter checks unknown fields itself, without a set per object.
    allowed: frozenset[str] | None = None

    def hook(o: Any, _: Any) -> Any:
        nonlocal fn, allowed
        if o.__class__ is Record:
            if fn is None:
                if issubclass(origin, tuple):
                    fn = namedtuple_dict_structure_factory(target, conv, detailed, forbid)
                else:
                    fn = make_dict_structure_fn(
                        target, conv, _cattrs_forbid_extra_keys=forbid and detailed
                    )
                    if forbid and not detailed:
                        allowed = frozenset(_record_fields(origin) or ())
            if allowed is not None and not o.keys() <= allowed:
                extra = set(o) - allowed
                if aliases:
                    extra -= set(aliases)
                if extra:
                    raise ForbiddenExtraKeysError("", origin, extra)
            if o.shared:  # see _shared
                memo = CURRENT.get().memo
                k = _memo_key(o, t, hook)
                hit = memo.get(k)
                if hit is not None and hit[0] is o:
                    return hit[1]
                out = fn(_rename(o, aliases) if aliases else o, target)
                memo[k] = (o, out)
                return out
            return fn(_rename(o, aliases) if aliases else o, target)
        if isinstance(o, origin):
            return o  # already rebuilt (an allow= load builds from the leaves up)
        hint = ""
        if o.__class__ is dict:
            hint = " (a saved dict loads into a TypedDict; a class needs a saved instance)"
        raise Mismatch(name, describe(o), hint)

    return hook


def _typeddict_factory(t: Any, conv: cattrs.Converter) -> Hook:
    aliases = _aliases(t)
    name = type_name(t)
    fn: Any = None
    origin = get_origin(t) or t
    known = frozenset(getattr(origin, "__required_keys__", ())) | frozenset(
        getattr(origin, "__optional_keys__", ())
    )

    def hook(o: Any, _: Any) -> Any:
        nonlocal fn
        if o.__class__ is not dict and o.__class__ is not collections.OrderedDict:
            raise Mismatch(f"{name} (a dict)", describe(o))
        if fn is None:
            fn = make_typeddict_structure_fn(
                t, conv, _cattrs_forbid_extra_keys=conv.forbid_extra_keys
            )
        if aliases:
            o = _rename(o, aliases)
        if not conv.forbid_extra_keys and not o.keys() <= known:
            o = {k: v for k, v in o.items() if k in known}  # extra="ignore"
        return fn(o, t)

    return _shared(hook)


def _is_typeddict(t: Any) -> bool:
    t = get_origin(t) or t
    if typing.is_typeddict(t):
        return True
    te = sys.modules.get("typing_extensions")
    return te is not None and te.is_typeddict(t)


def _enum_factory(t: Any) -> Hook:
    name = type_name(t)
    members = t._value2member_map_

    def hook(o: Any, _: Any) -> Any:
        if o.__class__ is EnumRef:
            try:
                hit = members.get(o.value)
            except TypeError:  # an unhashable value
                hit = None
            if hit is not None:
                return hit
            try:
                return t(o.value)
            except (ValueError, TypeError):
                raise Mismatch(
                    f"a member of {name}", f"the value {_short(o.value)} (recorded as {o.cls})"
                ) from None
        if isinstance(o, t):
            return o
        raise Mismatch(f"{name} (an enum member)", describe(o))

    return hook


_SUBCLASS_HOOKS: dict[type, Hook] = {}


def structure_subclass(o: Any, t: type) -> Any:
    """The hook for a subclass of int, str, float, bytes or complex (called by
    the Rust scalar hooks): enums by member, any other subclass exactly."""
    hook = _SUBCLASS_HOOKS.get(t)
    if hook is None:
        hook = _enum_factory(t) if issubclass(t, enum.Enum) else _value_factory(t)
        _SUBCLASS_HOOKS[t] = hook
    return hook(o, t)


def _is_callable_type(t: Any) -> bool:
    origin = get_origin(t)
    return t in (typing.Callable, cabc.Callable, type) or origin in (cabc.Callable, type)


def _callable_factory(t: Any) -> Hook:
    name = type_name(t)
    if t is type or get_origin(t) is type:
        args = get_args(t)
        bound = _strip(args[0]) if args else object
        if not isinstance(bound, type):
            bound = object

        def is_class(o: Any, _: Any) -> Any:
            if isinstance(o, type) and issubclass(o, bound):
                return o
            raise Mismatch(name, describe(o))

        return is_class

    def hook(o: Any, _: Any) -> Any:
        # Callables in the tree were resolved from the allowlist while building.
        if callable(o) and o.__class__ is not Record:
            return o
        raise Mismatch(f"{name} (a function or class stored by reference)", describe(o))

    return hook


def _literal_factory(t: Any) -> Hook:
    values = get_args(t)
    name = type_name(t)

    def hook(o: Any, _: Any) -> Any:
        for v in values:
            if isinstance(v, enum.Enum):
                if o.__class__ is EnumRef or isinstance(o, enum.Enum):
                    try:
                        member = type(v)(o.value)
                    except (ValueError, TypeError):
                        continue
                    if member is v:
                        return v
            elif o.__class__ is v.__class__ and o == v:
                return v
        raise Mismatch(name, describe(o))

    return hook


def _classes(t: Any) -> tuple[type, ...]:
    """The runtime classes a union member takes without any conversion."""
    t = _strip(t)
    if get_origin(t) is Literal:
        return tuple({type(v) for v in get_args(t)})
    origin = get_origin(t) or t
    if origin is cabc.Sequence:
        return (list, tuple)
    if origin in (cabc.Mapping, cabc.MutableMapping):
        return (dict, collections.OrderedDict)
    return (origin,) if isinstance(origin, type) else ()


def _union_factory(t: Any, conv: cattrs.Converter) -> Hook:
    members = get_args(t)
    none_ok = NoneType in members
    tagged: dict[str, Any] = {}
    by_qualname: dict[str, list[Any]] = {}
    instances: list[type] = []
    others: list[Any] = []
    for m in members:
        base = _strip(m)
        origin = get_origin(base) or base
        if _record_class(base) is not None or _enum_class(origin):
            instances.append(origin)
            tagged[_class_name(origin)] = m
            by_qualname.setdefault(origin.__qualname__, []).append(m)
            for n, obj in list(_REGISTRY.items()):
                if obj is origin:
                    tagged.setdefault(n, m)
        elif m is not NoneType:
            others.append(m)
    any_member = next((m for m in others if _is_any(_strip(m))), None)
    name = type_name(t)
    hooks: dict[int, _Lazy] = {}
    # Members that are exact scalar classes take their values as they are.
    scalars = frozenset(m for m in others if m in _SCALARS)
    member_classes = [(m, _classes(m)) for m in others]

    def member(m: Any) -> _Lazy:
        h = hooks.get(id(m))
        if h is None:
            h = hooks[id(m)] = _Lazy(conv, m)
        return h

    def hook(o: Any, _: Any) -> Any:
        if o is None:
            if none_ok:
                return None
            raise Mismatch(name, "None")
        c = o.__class__
        if c is Record or c is EnumRef:
            m = tagged.get(o.cls)
            if m is None:
                same = by_qualname.get(o.cls.partition(":")[2], [])
                if len(same) == 1:
                    m = same[0]
            if m is None:
                if any_member is not None:
                    return member(any_member)(o)
                classes = ", ".join(tagged) or "none"
                raise Mismatch(name, describe(o), f" (the union's classes: {classes})")
            return member(m)(o)
        if c in scalars:
            return o
        for cls in instances:
            if isinstance(o, cls):
                return o
        first = [m for m, cs in member_classes if c in cs]
        for m in first + [m for m in others if m not in first]:
            try:
                return member(m)(o)
            except Exception:
                continue
        raise Mismatch(name, describe(o))

    return hook


# ------------------------------------------------------------------ the converter


def _fallback(t: Any) -> Hook:
    def hook(o: Any, _: Any) -> Any:
        raise StructureHandlerNotFoundError(
            f"hermetic cannot rebuild the type {type_name(t)}: annotate with dataclasses, "
            "attrs classes, NamedTuples, TypedDicts, Enums, builtin scalars and containers, "
            "tensors and arrays, the datetime/pathlib/uuid/decimal types, or "
            "argparse.Namespace, slice and range",
            t,
        )

    return hook


def _build(forbid: bool, detailed: bool) -> cattrs.Converter:
    c = cattrs.Converter(
        forbid_extra_keys=forbid,
        detailed_validation=detailed,
        structure_fallback_factory=_fallback,
    )
    # cattrs dispatches these by class, so subclasses (IntEnum, StrEnum,
    # `class E(str, Enum)`) reach them too and are passed on to
    # structure_subclass.
    for t in _SCALARS:
        c.register_structure_hook(t, _hermetic.structure_exact)
    c.register_structure_hook(float, _hermetic.structure_float)
    c.register_structure_hook_func(lambda t: t is NoneType, _none)
    c.register_structure_hook_func(_is_any, _any)
    c.register_structure_hook_factory(_is_sequence, _sequence_factory)
    c.register_structure_hook_factory(_is_tuple, _tuple_factory)
    c.register_structure_hook_factory(_is_mapping, _mapping_factory)
    c.register_structure_hook_factory(_is_value_class, _value_factory)
    c.register_structure_hook_factory(lambda t: get_origin(t) is Literal, _literal_factory)
    c.register_structure_hook_factory(_is_callable_type, _callable_factory)
    c.register_structure_hook_factory(_enum_class, _enum_factory)
    c.register_structure_hook_factory(_is_typeddict, _typeddict_factory)
    c.register_structure_hook_factory(lambda t: _record_class(t) is not None, _record_factory)
    c.register_structure_hook_factory(_is_union, _union_factory)
    return c


_CONVERTERS: dict[tuple[bool, bool], cattrs.Converter] = {}
_LOCK = threading.Lock()


def converter(forbid: bool, detailed: bool) -> cattrs.Converter:
    """The converter for an extra-field rule: the fast one, or the detailed one
    that collects every error with its path (used once the fast one failed)."""
    conv = _CONVERTERS.get((forbid, detailed))
    if conv is None:
        with _LOCK:
            conv = _CONVERTERS.get((forbid, detailed))
            if conv is None:
                conv = _CONVERTERS[forbid, detailed] = _build(forbid, detailed)
    return conv


# ------------------------------------------------------------------ errors


def _index(i: Any) -> str:
    if isinstance(i, str):
        return f"[{json.dumps(i, ensure_ascii=False)}]"
    return f"[{i!r}]"


def _messages(exc: BaseException, path: str, out: list[tuple[str, str]]) -> None:
    if isinstance(exc, IterableValidationError):
        with_notes, without = exc.group_exceptions()
        for e, inote in with_notes:
            _messages(e, path + _index(inote.index), out)
        for e in without:
            _messages(e, path, out)
    elif isinstance(exc, ClassValidationError):
        with_notes_c, without = exc.group_exceptions()
        keyed = _is_typeddict(exc.cl)
        for e, anote in with_notes_c:
            p = path + _index(anote.name) if keyed else f"{path}.{anote.name}"
            if type(e) is KeyError:
                out.append(
                    (
                        p,
                        f"missing from the file, and the field has no default "
                        f"(expected {type_name(anote.type)})",
                    )
                )
            else:
                _messages(e, p, out)
        for e in without:
            _messages(e, path, out)
    elif isinstance(exc, ForbiddenExtraKeysError):
        names = ", ".join(f"`{n}`" for n in sorted(exc.extra_fields))
        plural = "s" if len(exc.extra_fields) > 1 else ""
        out.append(
            (
                path,
                f"unknown field{plural} {names} in the file: {type_name(exc.cl)} has no such "
                'field (pass extra="ignore" to drop unknown fields, or declare old names '
                "with hermetic.field(aliases=...))",
            )
        )
    elif isinstance(exc, (Mismatch, SchemaError, ClassNotAllowedError)):
        out.append((path, str(exc)))
    elif isinstance(exc, StructureHandlerNotFoundError):
        out.append((path, str(exc)))
    elif isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            _messages(sub, path, out)
    else:
        out.append((path, f"{type(exc).__name__}: {exc}"))


def structure(ctx: Context, o: Any, tp: Any, root: str = "tree") -> Any:
    """Rebuilds ``o`` (built by the Rust builder with TypedHooks) as ``tp``.

    A call made while structuring (a record under ``Any``) keeps what the
    outer pass has rebuilt, so shared objects stay shared through it."""
    token = CURRENT.set(ctx)
    nested = ctx.depth > 0
    ctx.depth += 1
    try:
        try:
            if not nested:
                ctx.reset()
            return converter(ctx.forbid, False).structure(o, tp)
        except Exception:
            pass
        # Again with the converter that reports every failure with its path.
        try:
            if not nested:
                ctx.reset()
            return converter(ctx.forbid, True).structure(o, tp)
        except Exception as e:
            error = e
        found: list[tuple[str, str]] = []
        _messages(error, root, found)
        lines = [f"  {p or '(here)'}: {m}" for p, m in found[:20]]
        if len(found) > 20:
            lines.append(f"  ... and {len(found) - 20} more")
        raise SchemaError(f"the data does not fit {type_name(tp)}:\n" + "\n".join(lines)) from error
    finally:
        ctx.depth -= 1
        CURRENT.reset(token)


if sys.version_info < (3, 11):  # pragma: no cover - Python 3.10
    from exceptiongroup import BaseExceptionGroup
