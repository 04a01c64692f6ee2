"""Start-up: switch the firewall on from ``HERMETIC_PICKLE``.

Imported by the ``hermetic_firewall.pth`` hook in site-packages when (and
only when) ``HERMETIC_PICKLE`` is set, before the program's first line.
It fails closed: if ``deny`` or ``enforce`` cannot start as asked (an
unknown mode, a missing or invalid manifest), the process runs in ``deny``
mode with the built-in rules only and says why on stderr.
"""

from __future__ import annotations

import os
import sys


def _start() -> None:
    from hermetic.firewall import _core

    raw = os.environ.get("HERMETIC_PICKLE", "")
    mode = raw.strip().lower()
    manifest = os.environ.get("HERMETIC_MANIFEST") or None
    inventory = os.environ.get("HERMETIC_INVENTORY") or None
    if not mode:
        return
    try:
        _core.activate(mode, manifest, inventory)
        return
    except Exception as e:  # noqa: BLE001 - any failure must fail closed
        problem = f"{type(e).__name__}: {e}"
    if mode in ("record", "warn"):
        error = (
            f"HERMETIC_PICKLE={raw!r}: {problem}; recording without the manifest "
            "(loads are judged against the built-in rules only)"
        )
        sys.stderr.write(f"hermetic: {error}\n")
        _core.activate(mode, None, inventory, startup_error=error)
        return
    error = (
        f"HERMETIC_PICKLE={raw!r} could not start as asked ({problem}); "
        "failing closed: deny mode with the built-in rules only"
    )
    sys.stderr.write(f"hermetic: {error}\n")
    _core.activate("deny", None, None, startup_error=error)


_start()
