"""Typed trees: class records, enums, callables by reference and standard-library
values (docs/SPEC.md, section 10).

Saving, and standard-library values both ways, are ``_typed_codec``'s: the
Rust tree walk asks it once per class how its instances are stored. Loading:
the Rust builder hands every class record, enum member and callable reference
to one of the hook objects below, which turn them into plain tagged dicts
(``plain=True``), into markers that the cattrs converter of
:mod:`hermetic._structure` rebuilds from the caller's annotations (``type=``),
or into objects of the classes the caller allowed (``allow=``). The allowlist
checks names against the caller's entries and :func:`register`'s registry;
:func:`field` declares a field's old names.

Nothing here imports a module because a file names it: a name from a file is
only ever looked up in the caller's ``allow=`` entries and in
:func:`register`'s registry; a module is imported only when the caller named
it there (``"pkg.mod:Name"`` or ``"pkg.mod:*"``).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import enum
import functools
import importlib
import threading
import types
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, TypeVar

from hermetic._typed_codec import _class_name, _record_fields
from hermetic.errors import ClassNotAllowedError, SchemaError

__all__ = ["ClassNotAllowedError", "FieldInfo", "SchemaError", "field", "register"]

T = TypeVar("T")


# ------------------------------------------------------------------ field metadata


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    """hermetic's metadata on a field: the names it had in older files."""

    aliases: tuple[str, ...] = ()


def field(*, aliases: Iterable[str] = (), **kwargs: Any) -> Any:
    """A ``dataclasses.field`` that also declares the field's old names.

    Use it as a dataclass default (``lr: float = hermetic.field(aliases=["learning_rate"],
    default=1e-3)``) or as ``Annotated`` metadata (``lr: Annotated[float,
    hermetic.field(aliases=["learning_rate"])]``, which also works for attrs
    classes, NamedTuples and TypedDicts). When a file has an old name and not the
    new one, its value loads into this field.
    """
    names = (aliases,) if isinstance(aliases, str) else tuple(aliases)
    for a in names:
        if not isinstance(a, str) or not a:
            raise TypeError(f"aliases must be non-empty strings, not {a!r}")
    metadata = dict(kwargs.pop("metadata", None) or {})
    metadata["hermetic"] = FieldInfo(names)
    return dataclasses.field(metadata=metadata, **kwargs)


def field_info(meta: Any) -> FieldInfo | None:
    """hermetic's FieldInfo in one piece of field or Annotated metadata."""
    if isinstance(meta, FieldInfo):
        return meta
    if isinstance(meta, dataclasses.Field):
        info = meta.metadata.get("hermetic")
        return info if isinstance(info, FieldInfo) else None
    if isinstance(meta, dict) or isinstance(meta, types.MappingProxyType):
        info = meta.get("hermetic")
        return info if isinstance(info, FieldInfo) else None
    return None


# ------------------------------------------------------------------ registry and allowlist

_REGISTRY: dict[str, Any] = {}
_REGISTRY_LOCK = threading.Lock()


def _object_name(obj: Any) -> str:
    if not (isinstance(obj, type) or callable(obj)):
        raise TypeError(
            f"{obj!r} is not a class or function (allow= and register() take classes, "
            "functions, and 'module:qualname' or 'module:*' strings)"
        )
    return _class_name(obj)


def register(obj: T | None = None, /, *, names: Iterable[str] = ()) -> Any:
    """Allow a class, enum or function in every load of this process.

    ``hermetic.register(Config)``, or as a decorator (``@hermetic.register``).
    ``names`` adds the other ``module:qualname`` names files may record for it
    (a class that moved). Registered names resolve in untyped loads as if they
    were in every ``allow=``; nothing is imported.
    """
    extra = (names,) if isinstance(names, str) else tuple(names)
    for n in extra:
        if not isinstance(n, str) or n.count(":") != 1:
            raise ValueError(f"register(names=...): {n!r} is not 'module:qualname'")

    def do(o: T) -> T:
        name = _object_name(o)
        with _REGISTRY_LOCK:
            _REGISTRY[name] = o
            for n in extra:
                _REGISTRY[n] = o
        return o

    return do if obj is None else do(obj)


def _split(name: str) -> tuple[str, str]:
    module, _, qualname = name.partition(":")
    return module, qualname


def _valid_module(module: str) -> bool:
    return bool(module) and all(p.isidentifier() for p in module.split("."))


class Allow:
    """The caller's ``allow=`` entries plus the registry. ``permits`` answers
    without importing; ``resolve`` imports only modules an entry names."""

    def __init__(self, allow: Iterable[Any] | None) -> None:
        self.objects: dict[str, Any] = {}
        self.exact: set[str] = set()
        self.modules: set[str] = set()
        self.pending: list[str] = []
        if allow is None:
            return
        entries = [allow] if isinstance(allow, str) or not isinstance(allow, Iterable) else allow
        for a in entries:
            if isinstance(a, str):
                module, qualname = _split(a)
                if qualname == "*" and _valid_module(module):
                    self.modules.add(module)
                elif _valid_module(module) and all(p.isidentifier() for p in qualname.split(".")):
                    self.exact.add(a)
                    self.pending.append(a)
                else:
                    raise ValueError(f"allow entry {a!r} is not 'module:qualname' or 'module:*'")
            else:
                self.objects[_object_name(a)] = a

    def _lookup(self, name: str) -> Any:
        hit = self.objects.get(name, _MISSING)
        if hit is _MISSING:
            hit = _REGISTRY.get(name, _MISSING)
        return hit

    def _resolve_pending(self) -> None:
        """Turns exact string entries into objects, so that a file naming a
        function by its defining module (``torch._C._nn:gelu``) matches an entry
        naming it where it is re-exported (``torch.nn.functional:gelu``)."""
        while self.pending:
            entry = self.pending.pop()
            try:
                obj = _import(*_split(entry))
            except Exception as e:
                raise ValueError(f"allow entry {entry!r} cannot be resolved: {e}") from None
            self.objects.setdefault(_object_name(obj), obj)

    def permits(self, name: str) -> bool:
        if self._lookup(name) is not _MISSING or name in self.exact:
            return True
        module, qualname = _split(name)
        if module in self.modules and "<locals>" not in qualname:
            return True
        if self.pending:
            self._resolve_pending()
            return self._lookup(name) is not _MISSING
        return False

    def resolve(self, name: str, kind: str) -> Any:
        hit = self._lookup(name)
        if hit is not _MISSING:
            return hit
        module, qualname = _split(name)
        if name in self.exact or (module in self.modules and "<locals>" not in qualname):
            # Under "module:*" the qualname comes from the file: it is looked
            # up statically, so no module __getattr__ runs (torch's would
            # import torch._dynamo for "torch:_dynamo").
            obj = _import(module, qualname, static=name not in self.exact)
            if _object_name(obj) != name:
                raise ClassNotAllowedError(
                    f"{name} leads to {obj!r}, which is recorded under another name"
                )
            self.objects[name] = obj
            return obj
        if self.pending:
            self._resolve_pending()
            hit = self._lookup(name)
            if hit is not _MISSING:
                return hit
        raise ClassNotAllowedError(
            f"the file names the {kind} {name}, which is not allowed; pass "
            f"allow=[{qualname.rsplit('.', 1)[-1]}] (the object) or allow=[{name!r}] "
            f'or allow=["{module}:*"], or hermetic.register() it'
        )


_MISSING = object()


def _import(module: str, qualname: str, static: bool = False) -> Any:
    """The object ``module:qualname``. ``module`` is always one the caller
    named. With ``static``, each part of ``qualname`` is looked up in the
    ``__dict__`` of the object before it (no ``__getattr__``, no descriptors,
    no lazy imports), for names that come from a file."""
    parts = qualname.split(".")
    if any(p.startswith("__") and p.endswith("__") for p in parts):
        raise ClassNotAllowedError(f"{module}:{qualname}: dunder attributes are never followed")
    obj: Any = importlib.import_module(module)
    for p in parts:
        if not static:
            obj = getattr(obj, p)
            continue
        attrs = getattr(obj, "__dict__", None)
        if not isinstance(attrs, (dict, types.MappingProxyType)) or p not in attrs:
            where = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
            raise ClassNotAllowedError(
                f"{module}:{qualname}: `{p}` is not defined in {where or type(obj).__name__} "
                "(a name from a file is looked up only where it is defined, so nothing is "
                "imported for it)"
            )
        obj = attrs[p]
        if isinstance(obj, staticmethod):
            obj = obj.__func__
    return obj


# ------------------------------------------------------------------ markers and hooks


class Record(dict):  # type: ignore[type-arg]
    """A class record's fields, with the class name the file recorded."""

    __slots__ = ("cls", "shared")
    cls: str
    shared: bool

    def __repr__(self) -> str:
        return f"<record {self.cls} {dict.__repr__(self)}>"


class EnumRef(tuple):  # type: ignore[type-arg]
    """An enum member as the file recorded it: (class name, value)."""

    __slots__ = ()

    @property
    def cls(self) -> str:
        return self[0]  # type: ignore[no-any-return]

    @property
    def value(self) -> Any:
        return self[1]

    def __repr__(self) -> str:
        return f"<enum {self[0]}({self[1]!r})>"


class PlainHooks:
    """``plain=True``: objects become dicts tagged with their recorded class."""

    @staticmethod
    def object(cls: str, fields: dict[str, Any], shared: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"$class": cls}
        out.update(fields)
        return out

    @staticmethod
    def enum(cls: str, value: Any) -> dict[str, Any]:
        return {"$enum": cls, "value": value}

    @staticmethod
    def callable(name: str) -> dict[str, Any]:
        return {"$callable": name}

    @staticmethod
    def partial(name: str, args: tuple[Any, ...], keywords: dict[str, Any]) -> dict[str, Any]:
        return {"$partial": name, "args": list(args), "keywords": keywords}


class Context:
    """One typed or allow-list load: its allowlist, extra-field rule and the
    objects already rebuilt from shared ones. Hooks find it in CURRENT.

    ``shared`` holds ``id()`` of every object the Rust builder made from a node
    that the file references more than once (``$ref``); structuring rebuilds
    each of them once per type and hands the same result to every reference
    (``memo``, by identity), so sharing survives and a DAG of references costs
    time linear in the file, not in its unfolding."""

    def __init__(self, allow: Iterable[Any] | None, extra: str, has_records: bool) -> None:
        if extra not in ("forbid", "ignore"):
            raise ValueError(f"extra must be 'forbid' or 'ignore', not {extra!r}")
        self.allow = Allow(allow)
        self.forbid = extra == "forbid"
        self.has_records = has_records
        self.shared: set[int] = set()
        # (id of a shared object, the hook) -> (the object, its result); the
        # object is kept so that its id cannot be reused within the load.
        self.memo: dict[tuple[int, Any], tuple[Any, Any]] = {}
        # Nested structure() calls (records under Any) keep the memo.
        self.depth = 0
        self._seen: set[int] = set()
        self._any_memo: dict[int, tuple[Any, Any]] = {}

    @contextlib.contextmanager
    def active(self) -> Iterator[Context]:
        token = CURRENT.set(self)
        try:
            yield self
        finally:
            CURRENT.reset(token)

    def reset(self) -> None:
        """Forgets what the last structuring pass walked and rebuilt (before each pass)."""
        self._seen.clear()
        self._any_memo.clear()
        self.memo.clear()

    # -- hooks the Rust builder calls
    def callable(self, name: str) -> Any:
        return self.allow.resolve(name, "callable")

    def partial(
        self, name: str, args: tuple[Any, ...], keywords: dict[str, Any]
    ) -> functools.partial[Any]:
        func = self.allow.resolve(name, "callable")
        args = tuple(self.any(a) for a in args)
        keywords = {k: self.any(v) for k, v in keywords.items()}
        return functools.partial(func, *args, **keywords)

    # -- plain data under Any
    def any(self, o: Any) -> Any:
        """Rebuilds records under ``Any`` from the allowlist, in place where the
        container is mutable (so shared lists and dicts stay shared)."""
        if not self.has_records:
            return o
        c = o.__class__
        if c is Record or c is EnumRef:
            kind = "object" if c is Record else "enum"
            try:
                target = self.allow.resolve(o.cls, kind)
            except ClassNotAllowedError as e:
                raise SchemaError(
                    f"a class record ({o.cls}) where the type says Any, which holds plain "
                    f"data only: annotate the field with the class, or {e}"
                ) from None
            return self.structure(o, target)
        if c is list:
            if id(o) not in self._seen:
                self._seen.add(id(o))
                for i, x in enumerate(o):
                    y = self.any(x)
                    if y is not x:
                        o[i] = y
            return o
        if c is dict or c.__name__ == "OrderedDict":
            if id(o) not in self._seen:
                self._seen.add(id(o))
                for k, x in o.items():
                    y = self.any(x)
                    if y is not x:
                        o[k] = y
            return o
        if c is tuple or c is set or c is frozenset:
            shared = id(o) in self.shared
            if shared:
                hit = self._any_memo.get(id(o))
                if hit is not None and hit[0] is o:
                    return hit[1]
            items = [self.any(x) for x in o]
            out = c(items) if any(a is not b for a, b in zip(items, o, strict=False)) else o
            if shared:
                self._any_memo[id(o)] = (o, out)
            return out
        return o

    def structure(self, o: Any, tp: Any, root: str = "") -> Any:
        from hermetic import _structure

        return _structure.structure(self, o, tp, root)


class TypedHooks:
    """``type=``: records stay markers for the converter; callables resolve now.
    The Rust builder makes Records and EnumRefs itself from ``record_class``
    and ``enum_class``."""

    record_class: ClassVar[type[Record] | None] = Record
    enum_class: ClassVar[type[EnumRef] | None] = EnumRef

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.callable = ctx.callable
        self.partial = ctx.partial
        # The Rust builder adds the id() of every shared object here.
        self.shared_ids = ctx.shared

    @staticmethod
    def object(cls: str, fields: dict[str, Any], shared: bool) -> Record:
        r = Record(fields)
        r.cls = cls
        r.shared = shared
        return r

    @staticmethod
    def enum(cls: str, value: Any) -> EnumRef:
        return EnumRef((cls, value))


class AllowHooks(TypedHooks):
    """``allow=`` without ``type=``: each record becomes an object of the class
    its name resolves to in the allowlist, built from that class's annotations
    (from the leaves up, so nested records arrive already built)."""

    record_class = None
    enum_class = None

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self._targets: dict[str, tuple[Any, Any]] = {}

    def _target(self, cls: str, kind: str) -> tuple[Any, Any]:
        hit = self._targets.get(cls)
        if hit is None:
            from hermetic import _structure

            target = self.ctx.allow.resolve(cls, kind)
            if kind == "enum":
                if not (isinstance(target, type) and issubclass(target, enum.Enum)):
                    raise ClassNotAllowedError(
                        f"{cls} resolves to {target!r}, which is not an Enum"
                    )
            elif not isinstance(target, type) or _record_fields(target) is None:
                raise ClassNotAllowedError(
                    f"{cls} resolves to {target!r}, which is not a dataclass, attrs class or "
                    "NamedTuple"
                )
            hook = _structure.converter(self.ctx.forbid, False).get_structure_hook(target)
            hit = self._targets[cls] = (target, hook)
        return hit

    def object(self, cls: str, fields: dict[str, Any], shared: bool) -> Any:  # type: ignore[override]
        target, hook = self._target(cls, "class")
        r = TypedHooks.object(cls, fields, False)
        try:
            return hook(r, target)
        except Exception:
            return self.ctx.structure(r, target)  # again, to report every error's place

    def enum(self, cls: str, value: Any) -> Any:  # type: ignore[override]
        target, hook = self._target(cls, "enum")
        ref = EnumRef((cls, value))
        try:
            return hook(ref, target)
        except Exception:
            return self.ctx.structure(ref, target)


CURRENT: contextvars.ContextVar[Context] = contextvars.ContextVar("hermetic_load")

PLAIN_HOOKS = PlainHooks()


def not_allowed_message(
    source: str, refs: list[tuple[str, str, int, list[str]]], missing: list[str], allow_given: bool
) -> str:
    kinds = {"object": "class", "enum": "enum", "callable": "callable"}
    lines = [
        f"{source}: the file records classes or callables that hermetic rebuilds only "
        "when you say which:"
    ]
    for kind, name, count, fields in refs:
        if name not in missing:
            continue
        detail = f"{count}x" if count > 1 else ""
        if fields:
            shown = ", ".join(fields[:6]) + (", ..." if len(fields) > 6 else "")
            detail = f"{detail}{'; ' if detail else ''}fields {shown}"
        lines.append(f"  {kinds[kind]:<9} {name}" + (f"  ({detail})" if detail else ""))
    callables = [name for kind, name, *_ in refs if kind == "callable" and name in missing]
    lines.append("hermetic never imports a module because a file names it. Either:")
    lines.append(
        "  - pass the type you expect, and classes are rebuilt from its annotations: "
        "hermetic.load(path, type=Checkpoint)"
        + (
            f"  (callables still need allow=[{', '.join(repr(c) for c in callables)}])"
            if callables
            else ""
        )
    )
    # Every name at once, so one retry is enough (the objects themselves work too).
    every = ", ".join(repr(n) for n in missing)
    lines.append(
        f"  - or allow what the file names: hermetic.load(path, allow=[{every}])"
        + ("  (these are not in your allow=)" if allow_given else "")
    )
    lines.append('  - or hermetic.load(path, plain=True) for plain dicts tagged with "$class"')
    return "\n".join(lines)


def callables_not_allowed_message(source: str, missing: list[str]) -> str:
    return (
        f"{source}: the file stores callables by reference that are not allowed: "
        f"{', '.join(missing)}. hermetic never imports a module because a file names it; "
        f"pass allow=[{', '.join(repr(n) for n in missing)}] (or the functions themselves), "
        "or hermetic.register() them"
    )
