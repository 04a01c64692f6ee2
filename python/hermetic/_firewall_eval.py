"""The firewall's one call into hermetic's safe evaluator.

``unlisted = "safe"`` manifests send blobs the scanner calls data-only
here instead of to the real unpickler. The evaluator rebuilds allowlisted
data in Rust and never imports or calls anything a blob names.
"""

from __future__ import annotations

from typing import Any


class EvaluatorUnavailable(Exception):
    """This build of hermetic has no safe evaluator."""


def evaluate(
    data: bytes, file: str | None, *, persistent_load: Any = None, allow: list[str] | None = None
) -> Any:
    """Rebuilds the object in ``data`` (one pickle stream) without running it.

    ``file`` names the source for messages. ``persistent_load`` is the
    unpickler's persistent-id resolver when the load came through one
    (``torch.load``'s storages). ``allow`` is the manifest's ``allow`` list.
    Never falls back to the real unpickler.
    """
    import hermetic

    load_pickle = getattr(hermetic, "load_pickle", None)
    if load_pickle is None:
        raise EvaluatorUnavailable(
            'unlisted = "safe" needs hermetic\'s safe evaluator (hermetic.load_pickle), '
            "which this build does not have, so the blob was refused instead"
        )
    if persistent_load is not None:
        raise EvaluatorUnavailable(
            'unlisted = "safe" cannot evaluate a stream whose unpickler resolves persistent '
            "ids (such as a torch checkpoint's data.pkl) from the stream alone; list the blob"
        )
    return load_pickle(data, allow=allow or None)
