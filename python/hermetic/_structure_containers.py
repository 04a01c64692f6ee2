"""The structuring hooks of containers under ``hermetic.load(type=T)``.

Lists, sets, deques, tuples and mappings, each checked against its exact
annotated class (docs/SPEC.md section 10.6) with every item through its
element's hook: a fast pass for clean data, and a detailed one that collects
each failing item with its index for the error message.
"""

from __future__ import annotations

import collections
import collections.abc as cabc
import itertools
from typing import Any, get_args, get_origin

import cattrs
from cattrs.errors import IterableValidationError, IterableValidationNote

from hermetic._structure_base import _SCALARS, Hook, Mismatch, _shared, describe, type_name


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
