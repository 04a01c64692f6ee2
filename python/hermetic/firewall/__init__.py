"""The pickle firewall: decide which pickles a process may load.

Two controls, usable together:

* **Tokens**, in code. ``with hermetic.no_pickles() as token:`` refuses every
  unpickle in the whole process (every thread) while the block lasts;
  ``with hermetic.allow_pickles(token):`` lifts it for the thread or asyncio
  task that enters it, and ``allow_pickles(token, only_objects=[...])`` only
  for those blob ids. Without the token, nothing lifts the restriction.
* **Process-wide modes**, set by the operator, not the code:
  ``HERMETIC_PICKLE=deny|enforce|record|warn`` with ``HERMETIC_MANIFEST`` (and
  ``HERMETIC_INVENTORY``), active from interpreter start-up through a hook
  installed with the package; ``hermetic run --mode ... -- CMD`` sets them.

Every refusal raises :class:`NoPickleError` with a message that names the
blob id, its size, the file, the call site, what the scanner found, and the
exact manifest line that would allow it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from hermetic.firewall import _core, _state
from hermetic.firewall._errors import BadTokenError, NoPickleError, PickleWarning
from hermetic.firewall._state import PickleToken

__all__ = [
    "BadTokenError",
    "NoPickleError",
    "PickleToken",
    "PickleWarning",
    "activate",
    "allow_pickles",
    "no_pickles",
    "status",
]


@contextmanager
def no_pickles() -> Iterator[PickleToken]:
    """Refuses every unpickle, in every thread, until the block ends.

    Yields the token that ``allow_pickles`` needs to make exceptions. Blocks
    nest; a load must be allowed under every active block's token.
    """
    from hermetic.firewall import _hooks

    _hooks.install()
    token = _state.enter_restriction(_state.location_of_caller(2))
    try:
        yield token
    finally:
        _state.exit_restriction(token)


class allow_pickles:  # noqa: N801 - a context manager named like a function
    """Lifts the restriction of the ``no_pickles()`` block that issued
    ``token``, for this thread or asyncio task only, until the block ends.

    With ``only_objects``, only blobs with those ids (``sha256:...``, as
    ``hermetic hash`` prints) are allowed. Any other ``token`` raises
    :class:`BadTokenError` at once.
    """

    __slots__ = ("_perm", "_reset")

    def __init__(self, token: PickleToken, only_objects: Iterable[str] | None = None) -> None:
        self._perm = _state.grant(token, only_objects)
        self._reset: Any = None

    def __enter__(self) -> None:
        if self._reset is not None:
            raise RuntimeError("allow_pickles() contexts cannot be re-entered")
        self._reset = _state.PERMS.set((*_state.PERMS.get(), self._perm))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Contexts copied inside the block keep the permission in PERMS;
        # ended, it lifts nothing there.
        self._perm.live = False
        _state.PERMS.reset(self._reset)


def activate(
    mode: str,
    manifest: str | os.PathLike[str] | None = None,
    inventory: str | os.PathLike[str] | None = None,
) -> None:
    """Switches a process-wide mode on from code, for the rest of the
    process's life. Operators normally use ``HERMETIC_PICKLE`` instead."""
    _core.activate(mode, manifest, inventory)


def status() -> dict[str, Any]:
    """What is in force: the mode, manifest and inventory paths, and how many
    ``no_pickles()`` blocks are active."""
    from hermetic.firewall import _hooks

    st = _state.STATE
    return {
        "mode": st.mode,
        "manifest": st.manifest.path if st.mode is not None else None,
        "inventory": st.inventory.path if st.inventory is not None else None,
        "restrictions": len(st.tokens),
        "installed": _hooks.installed(),
        "startup_error": st.startup_error,
    }
