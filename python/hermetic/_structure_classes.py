"""The structuring hooks of classes and their kin under ``hermetic.load(type=T)``.

Class records (dataclasses, attrs classes, NamedTuples) through cattrs'
generated functions, with field aliases and the extra-field rule; TypedDicts;
enums by value; callables and classes stored by reference; literals; and
unions, whose members are told apart by the recorded class name.
"""

from __future__ import annotations

import collections
import collections.abc as cabc
import dataclasses
import enum
import sys
import typing
from typing import Annotated, Any, Literal, get_args, get_origin

import cattrs
from cattrs.cols import namedtuple_dict_structure_factory
from cattrs.errors import ForbiddenExtraKeysError
from cattrs.gen import make_dict_structure_fn
from cattrs.gen.typeddicts import make_dict_structure_fn as make_typeddict_structure_fn

from hermetic._structure_base import (
    _SCALARS,
    Hook,
    Mismatch,
    NoneType,
    _enum_class,
    _is_any,
    _memo_key,
    _record_class,
    _shared,
    _short,
    _strip,
    describe,
    type_name,
)
from hermetic._structure_containers import _Lazy
from hermetic._typed import _REGISTRY, CURRENT, EnumRef, Record, SchemaError, field_info
from hermetic._typed_codec import _class_name, _record_fields


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
