"""The Python functions the Rust extension calls by name, and nothing else.

Rust reaches Python through this module alone (``hermetic-py/src/bridge.rs``
imports it once and calls only the names in ``__all__``, the one list of
them); the evaluator's object maker is the other door, ``hermetic._evaluate.Maker``,
whose methods Rust calls are ``_hermetic.BRIDGE_MAKER``. ``tests/test_bridge.py``
checks both lists against the Rust sources, so a renamed helper fails a test
instead of a user's load.
"""

from __future__ import annotations

from hermetic._format_codec import (
    _np_info,
    _np_scalar,
    _np_scalar_info,
    _np_span,
    _torch_device,
    _torch_dtype,
    _torch_info,
    _torch_size,
    _torch_span,
)
from hermetic._typed_codec import (
    _callable_name,
    _check_partial,
    _class_info,
    _date,
    _datetime,
    _datetime_text,
    _decimal,
    _path,
    _pure_path,
    _time,
    _time_text,
    _timedelta,
    _timezone,
    _timezone_info,
    _uuid,
)

__all__ = [
    "_callable_name",
    "_check_partial",
    "_class_info",
    "_date",
    "_datetime",
    "_datetime_text",
    "_decimal",
    "_np_info",
    "_np_scalar",
    "_np_scalar_info",
    "_np_span",
    "_path",
    "_pure_path",
    "_time",
    "_time_text",
    "_timedelta",
    "_timezone",
    "_timezone_info",
    "_torch_device",
    "_torch_dtype",
    "_torch_info",
    "_torch_size",
    "_torch_span",
    "_uuid",
]
