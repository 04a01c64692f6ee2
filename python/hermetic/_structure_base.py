"""What every structuring hook of ``hermetic._structure`` shares.

The :class:`Mismatch` error and :func:`describe` (the Rust scalar hooks raise
it too, through ``hermetic._structure``), the predicates that sort annotated
types, the hooks of scalars and of the value classes (datetime, pathlib, uuid,
decimal, tensors and arrays) and the memo that rebuilds an object the file
references more than once only once.
"""

from __future__ import annotations

import argparse
import datetime
import decimal
import enum
import pathlib
import types
import uuid
from collections.abc import Callable
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from hermetic._typed import CURRENT, EnumRef, Record
from hermetic._typed_codec import _record_fields

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


# Element types whose values are checked inline (exact class, no conversion).
_SCALARS = frozenset({str, int, bool, bytes, complex})
