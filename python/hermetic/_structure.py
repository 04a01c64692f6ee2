"""The cattrs converter behind ``hermetic.load(path, type=T)``.

cattrs generates one structuring function per class from its annotations
(dataclasses, attrs classes, NamedTuples, TypedDicts, generics, forward
references, recursive types) and reports each failing field with its path.
hermetic registers strict hooks on top: the file's data must already have the
annotated type, with exactly the conversions docs/SPEC.md section 10.6 lists
(int widens to float; unions are tagged by the recorded class name; missing
fields take their defaults; old field names map through aliases). Anything else
is a :class:`SchemaError` naming the place, the expected and the found type.

The hooks live beside it: ``_structure_base`` (the :class:`Mismatch` error,
:func:`describe`, scalars, value classes and the sharing memo),
``_structure_containers`` and ``_structure_classes``; this module registers
them and turns a failure into its message. The Rust scalar hooks import
``Mismatch``, ``describe`` and ``structure_subclass`` from here (``__all__``).

This module is imported on the first typed or allow-list load only.
"""

from __future__ import annotations

import enum
import json
import sys
import threading
from typing import Any, Literal, get_origin

import cattrs
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    StructureHandlerNotFoundError,
)

from hermetic import _hermetic
from hermetic._structure_base import (
    _SCALARS,
    Hook,
    Mismatch,
    NoneType,
    _any,
    _enum_class,
    _is_any,
    _is_union,
    _is_value_class,
    _none,
    _record_class,
    _value_factory,
    describe,
    type_name,
)
from hermetic._structure_classes import (
    _callable_factory,
    _enum_factory,
    _is_callable_type,
    _is_typeddict,
    _literal_factory,
    _record_factory,
    _typeddict_factory,
    _union_factory,
)
from hermetic._structure_containers import (
    _is_mapping,
    _is_sequence,
    _is_tuple,
    _mapping_factory,
    _sequence_factory,
    _tuple_factory,
)
from hermetic._typed import CURRENT, ClassNotAllowedError, Context, SchemaError

__all__ = ["Mismatch", "converter", "describe", "structure", "structure_subclass"]

_SUBCLASS_HOOKS: dict[type, Hook] = {}


def structure_subclass(o: Any, t: type) -> Any:
    """The hook for a subclass of int, str, float, bytes or complex (called by
    the Rust scalar hooks): enums by member, any other subclass exactly."""
    hook = _SUBCLASS_HOOKS.get(t)
    if hook is None:
        hook = _enum_factory(t) if issubclass(t, enum.Enum) else _value_factory(t)
        _SUBCLASS_HOOKS[t] = hook
    return hook(o, t)


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
