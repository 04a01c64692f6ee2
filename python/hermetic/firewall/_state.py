"""The firewall's state, which every hook and decision reads.

The process-wide mode, manifest and inventory (``STATE``, changed only under
``LOCK``); the context variables that mark an approved load and the file an
outer loader is reading; the tokens of ``no_pickles()`` and the permissions of
``allow_pickles()``; and the call stack as the manifest sees it (``stack``),
with warnings placed at the call site. Nothing here decides on a load
(``_core`` and ``_archive`` do).
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from hermetic import _hermetic
from hermetic.firewall._errors import BadTokenError, PickleWarning, text_safe
from hermetic.firewall._inventory import Inventory

if TYPE_CHECKING:
    from types import FrameType

_MAX_FRAMES = 64


class _State:
    __slots__ = (
        "active",
        "mode",
        "manifest",
        "inventory",
        "tokens",
        "startup_error",
        "loader_cache",
    )

    def __init__(self) -> None:
        self.active = False
        self.mode: str | None = None
        self.manifest: Any = _hermetic.Manifest.default()
        self.inventory: Inventory | None = None
        # Active restrictions, innermost last. Replaced, never mutated, so
        # readers in other threads need no lock.
        self.tokens: tuple[PickleToken, ...] = ()
        self.startup_error: str | None = None
        self.loader_cache: dict[str, bool] = {}

    def refresh(self) -> None:
        self.active = self.mode is not None or bool(self.tokens)


STATE = _State()
LOCK = threading.RLock()

#: Set while the real unpickler runs a load the firewall approved, in the
#: thread or task that runs it. The audit hook lets globals resolve only then.
APPROVED: ContextVar[bool] = ContextVar("hermetic_firewall_approved", default=False)
#: The permissions from ``allow_pickles`` this thread or task holds.
PERMS: ContextVar[tuple[_Permission, ...]] = ContextVar("hermetic_firewall_perms", default=())
#: ``(file, entry point)`` set by outer loaders (``torch.load``) for messages.
CURRENT: ContextVar[tuple[str | None, str | None]] = ContextVar(
    "hermetic_firewall_current", default=(None, None)
)
#: The blob id of the code archive an outer loader (``torch.load``,
#: ``torch.export.load``) already decided on, while it runs: an inner entry
#: point handed exactly those bytes does not decide (or record, or warn) twice.
ARCHIVE_APPROVED: ContextVar[str | None] = ContextVar(
    "hermetic_firewall_archive_approved", default=None
)


# --------------------------------------------------------------------------
# Tokens


class PickleToken:
    """The capability ``hermetic.no_pickles()`` yields. Only the token of an
    active ``no_pickles()`` block lifts that block's restriction; tokens
    cannot be constructed, copied or pickled, and compare by identity."""

    __slots__ = ("_where", "__weakref__")
    _where: str  # set once by _issue (the token is otherwise immutable)

    def __new__(cls, *args: object, **kwargs: object) -> PickleToken:
        raise TypeError("pickle tokens come only from hermetic.no_pickles()")

    @classmethod
    def _issue(cls, where: str) -> PickleToken:
        tok = object.__new__(cls)
        object.__setattr__(tok, "_where", where)
        return tok

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("pickle tokens are immutable")

    def __reduce__(self) -> Any:
        raise TypeError("a pickle token cannot be pickled")

    def __copy__(self) -> Any:
        raise TypeError("a pickle token cannot be copied")

    def __deepcopy__(self, memo: object) -> Any:
        raise TypeError("a pickle token cannot be copied")

    def __repr__(self) -> str:
        return f"<hermetic.PickleToken from no_pickles() at {self._where}>"


class _Permission:
    """One ``allow_pickles()`` block. ``live`` is cleared when the block
    ends: a context copied inside it (``contextvars.copy_context()``, a
    callback scheduled then) still holds the permission in ``PERMS``, but
    must not carry it past the block."""

    __slots__ = ("token", "only", "thread", "task", "live")

    def __init__(
        self, token: PickleToken, only: frozenset[str] | None, thread: int, task: object
    ) -> None:
        self.token = token
        self.only = only
        self.thread = thread
        self.task = task
        self.live = True


def _current_task() -> object:
    aio = sys.modules.get("asyncio")
    if aio is None:
        return None
    try:
        loop = aio._get_running_loop()
        return None if loop is None else aio.current_task(loop)
    except Exception:
        return None


def is_active_token(token: object) -> bool:
    # Identity only: `in` would call a forged object's __eq__.
    return any(t is token for t in STATE.tokens)


def enter_restriction(where: str) -> PickleToken:
    tok = PickleToken._issue(where)
    with LOCK:
        STATE.tokens = (*STATE.tokens, tok)
        STATE.refresh()
    return tok


def exit_restriction(tok: PickleToken) -> None:
    with LOCK:
        STATE.tokens = tuple(t for t in STATE.tokens if t is not tok)
        STATE.refresh()


def grant(token: object, only_objects: Any) -> _Permission:
    if not isinstance(token, PickleToken) or not is_active_token(token):
        raise BadTokenError(
            "allow_pickles() needs the token of an active hermetic.no_pickles() block; "
            f"got {type(token).__name__}"
            + (
                " (a token whose no_pickles() block has ended)"
                if isinstance(token, PickleToken)
                else ""
            )
        )
    only: frozenset[str] | None = None
    if only_objects is not None:
        if isinstance(only_objects, (str, bytes)):
            raise TypeError("only_objects must be a list of blob ids, not a single string")
        only = frozenset(_hermetic.check_blob_id(str(x)) for x in only_objects)
    return _Permission(token, only, threading.get_ident(), _current_task())


# --------------------------------------------------------------------------
# Frames


def stack(skip: int = 1) -> tuple[list[str], str | None]:
    """The frames from here out to the call site (the first frame outside
    the loader modules), as ``module:qualname``, and the call site's
    ``file:line``."""
    manifest = STATE.manifest
    cache = STATE.loader_cache
    frames: list[str] = []
    try:
        f: FrameType | None = sys._getframe(skip + 1)
    except ValueError:
        return frames, None
    while f is not None and len(frames) < _MAX_FRAMES:
        mod = f.f_globals.get("__name__")
        if not isinstance(mod, str) or not mod:
            mod = "?"
        code = f.f_code
        frames.append(f"{mod}:{getattr(code, 'co_qualname', code.co_name)}")
        loader = cache.get(mod)
        if loader is None:
            loader = cache[mod] = bool(manifest.is_loader(mod))
        if not loader:
            return frames, text_safe(f"{code.co_filename}:{f.f_lineno}")
        f = f.f_back
    return frames, None


def _location_of_caller(skip: int) -> str:
    try:
        f = sys._getframe(skip + 1)
    except ValueError:
        return "?"
    return f"{f.f_code.co_filename}:{f.f_lineno}"


def _warn_at(message: str, location: str | None) -> None:
    if location and ":" in location:
        filename, _, line = location.rpartition(":")
        try:
            lineno = int(line)
        except ValueError:
            lineno = 0
        # An explicit module: with module=None, CPython 3.11 shows nothing.
        module = os.path.splitext(os.path.basename(filename))[0] or "hermetic"
        warnings.warn_explicit(message, PickleWarning, filename, lineno, module=module)
    else:
        warnings.warn(message, PickleWarning, stacklevel=3)


def location_of_caller(skip: int = 1) -> str:
    return _location_of_caller(skip + 1)
