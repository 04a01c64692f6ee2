"""How classes and standard-library values of a typed tree meet the format
(docs/SPEC.md, section 10): the functions the Rust tree walk and builder call
back, through ``hermetic._bridge``.

Saving: :func:`_class_info` says once per class how its instances are stored
(a class record's constructor fields, an enum, a reference, a standard-library
value), :func:`_callable_name` gives the import path of a function or class
stored by reference, and the ``*_text`` functions write datetime values as
text. Loading: the ``_datetime`` ... ``_decimal`` functions rebuild those values
from their text; nothing a file names is imported for them (a time zone comes
only from the system's database, never from the ``tzdata`` package).
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import functools
import os
import pathlib
import sys
import types
import uuid
from typing import TYPE_CHECKING, Any, cast

from hermetic.errors import FormatError

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo


_FUNCTIONS = (types.FunctionType, types.BuiltinFunctionType, types.MethodType)
_STDLIB: dict[type, tuple[str]] = {
    datetime.datetime: ("datetime",),
    datetime.date: ("date",),
    datetime.timedelta: ("timedelta",),
    pathlib.PosixPath: ("path",),
    pathlib.WindowsPath: ("path",),
    uuid.UUID: ("uuid",),
    decimal.Decimal: ("decimal",),
    datetime.time: ("time",),
    datetime.timezone: ("timezone",),
    pathlib.PurePosixPath: ("pure_posix_path",),
    pathlib.PureWindowsPath: ("pure_windows_path",),
}


def _record_fields(tp: type) -> tuple[str, ...] | None:
    """The constructor fields of a dataclass, attrs class or NamedTuple, else None.

    Only fields the constructor takes are recorded (``init=False`` fields are
    the class's to compute; ``InitVar`` and ``ClassVar`` are not fields)."""
    if dataclasses.is_dataclass(tp):
        return tuple(f.name for f in dataclasses.fields(tp) if f.init)
    attr = sys.modules.get("attr")
    if attr is not None and attr.has(tp):
        return tuple(a.name for a in attr.fields(tp) if a.init)
    fields = getattr(tp, "_fields", None) if issubclass(tp, tuple) else None
    if isinstance(fields, tuple):
        return tuple(fields)
    return None


def _class_name(tp: Any) -> str:
    module = getattr(tp, "__module__", None)
    qualname = getattr(tp, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise TypeError(f"{tp!r} has no __module__ and __qualname__ to record")
    return f"{module}:{qualname}"


def _class_info(tp: type) -> tuple[Any, ...] | None:
    """How instances of ``tp`` are stored; None if they cannot be."""
    hit = _STDLIB.get(tp)
    if hit is not None:
        return hit
    if issubclass(tp, type) or tp in _FUNCTIONS:
        return ("ref",)
    if tp is functools.partial:
        return ("partial",)
    np = sys.modules.get("numpy")
    if np is not None and tp is np.ufunc:
        return ("ref",)
    if issubclass(tp, enum.Enum):
        return ("enum", _class_name(tp))
    fields = _record_fields(tp)
    if fields is not None:
        return ("object", _class_name(tp), fields)
    return None


def _callable_name(obj: Any) -> str:
    """The import path of a function or class stored by reference; raises
    TypeError saying why when there is none."""
    if isinstance(obj, types.MethodType) or (
        isinstance(obj, types.BuiltinFunctionType)
        and obj.__self__ is not None
        and not isinstance(obj.__self__, types.ModuleType)
    ):
        raise TypeError(
            f"{obj!r} is a bound method, which has no import path; store the function "
            "(or a functools.partial of it) instead"
        )
    np = sys.modules.get("numpy")
    if not (
        isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType))
        or (np is not None and isinstance(obj, np.ufunc))
    ):
        raise TypeError(f"{obj!r} is not a function or class")
    name = getattr(obj, "__name__", None)
    qualname = getattr(obj, "__qualname__", None) or name
    module = getattr(obj, "__module__", None)
    if np is not None and isinstance(obj, np.ufunc) and module is None:
        module = "numpy"
    if name == "<lambda>":
        raise TypeError(
            "a lambda function has no import path, so it cannot be stored by reference; "
            "define it with `def` at module level"
        )
    if isinstance(qualname, str) and "<locals>" in qualname:
        kind = "class" if isinstance(obj, type) else "function"
        raise TypeError(
            f"{qualname} is a local {kind} (defined inside a function, a closure if it "
            f"uses the function's variables), so it has no import path; define it at "
            f"module level"
        )
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise TypeError(f"{obj!r} has no __module__ and __qualname__ to record")
    target: Any = sys.modules.get(module)
    for part in qualname.split("."):
        target = getattr(target, part, None)
    if target is not obj:
        raise TypeError(
            f"{module}:{qualname} does not lead back to {obj!r} (was it replaced, renamed "
            "or created dynamically?), so it cannot be stored by reference"
        )
    return f"{module}:{qualname}"


def _check_partial(p: functools.partial[Any]) -> None:
    if getattr(p, "__dict__", None):
        raise TypeError("a functools.partial with attributes set cannot be stored")


def _datetime_text(dt: datetime.datetime) -> str:
    tz = dt.tzinfo
    if tz is None or type(tz) is datetime.timezone:
        return dt.isoformat()
    zoneinfo = sys.modules.get("zoneinfo")
    if zoneinfo is not None and type(tz) is zoneinfo.ZoneInfo:
        # zoneinfo is looked up in sys.modules (never imported here), so mypy cannot narrow.
        zone = cast("ZoneInfo", tz)
        if zone.key is None:
            raise TypeError("a zoneinfo.ZoneInfo made from a file has no key to record")
        return f"{dt.isoformat()}[{zone.key}]"
    raise TypeError(
        f"a datetime with tzinfo {type(tz).__module__}.{type(tz).__qualname__} cannot be "
        "stored: only datetime.timezone offsets and zoneinfo.ZoneInfo zones can"
    )


def _time_text(t: datetime.time) -> str:
    if t.tzinfo is not None and type(t.tzinfo) is not datetime.timezone:
        raise TypeError(
            f"a time with tzinfo {type(t.tzinfo).__module__}.{type(t.tzinfo).__qualname__} "
            "cannot be stored: only datetime.timezone offsets can"
        )
    if t.fold:
        raise TypeError("a time with fold=1 cannot be stored (its text does not say fold)")
    return t.isoformat()


def _offset_text(d: datetime.timedelta) -> str:
    sign = "-" if d < datetime.timedelta(0) else "+"
    d = abs(d)
    hours, rest = divmod(d, datetime.timedelta(hours=1))
    minutes, rest = divmod(rest, datetime.timedelta(minutes=1))
    text = f"{sign}{hours:02d}:{minutes:02d}"
    if rest:
        text += f":{rest.seconds:02d}"
        if rest.microseconds:
            text += f".{rest.microseconds:06d}"
    return text


def _timezone_info(tz: datetime.timezone) -> tuple[str, str | None]:
    offset = tz.utcoffset(None)
    name = tz.tzname(None)
    default = datetime.timezone(offset).tzname(None)
    return _offset_text(offset), (None if name == default else name)


# ------------------------------------------------------------------ loading values


def _datetime(text: str) -> datetime.datetime:
    zone = None
    if text.endswith("]"):
        text, _, zone = text[:-1].partition("[")
    dt = datetime.datetime.fromisoformat(text)
    if zone is None:
        return dt
    import zoneinfo

    # Only the system's time zone database: ZoneInfo would otherwise fall back
    # to importing the `tzdata` package's modules named after the zone.
    if not any(os.path.isfile(os.path.join(p, zone)) for p in zoneinfo.TZPATH):
        raise FormatError(f"time zone {zone!r} is not in the system time zone database")
    tz = zoneinfo.ZoneInfo(zone)
    offset = dt.utcoffset()
    local = dt.replace(tzinfo=tz)
    if local.utcoffset() != offset:
        local = local.replace(fold=1)
        if local.utcoffset() != offset:
            raise FormatError(f"{text}: time zone {zone} has no UTC offset {offset} then")
    return local


def _date(text: str) -> datetime.date:
    return datetime.date.fromisoformat(text)


def _timedelta(days: int, seconds: int, microseconds: int) -> datetime.timedelta:
    return datetime.timedelta(days=days, seconds=seconds, microseconds=microseconds)


def _time(text: str) -> datetime.time:
    return datetime.time.fromisoformat(text)


def _timezone(offset: str, name: str | None) -> datetime.timezone:
    sign = -1 if offset[0] == "-" else 1
    parts = offset[1:].split(":")
    seconds = float(parts[2]) if len(parts) > 2 else 0.0
    whole = int(seconds)
    delta = datetime.timedelta(
        hours=int(parts[0]),
        minutes=int(parts[1]),
        seconds=whole,
        microseconds=round((seconds - whole) * 1_000_000),
    )
    if name is None:
        return datetime.timezone(sign * delta)
    return datetime.timezone(sign * delta, name)


def _pure_path(windows: bool, text: str) -> pathlib.PurePath:
    return pathlib.PureWindowsPath(text) if windows else pathlib.PurePosixPath(text)


def _path(text: str) -> pathlib.Path:
    return pathlib.Path(text)


def _uuid(text: str) -> uuid.UUID:
    return uuid.UUID(text)


def _decimal(text: str) -> decimal.Decimal:
    return decimal.Decimal(text)
