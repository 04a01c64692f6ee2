"""The firewall's decision point, ``check``, and what records and explains it.

Two layers decide on every unpickle, and both must allow it:

* the process-wide mode (``deny``, ``enforce``, ``record``, ``warn``), set
  from the environment at start-up or by ``activate``, judged by the Rust
  manifest code;
* the token restrictions of ``no_pickles()``: process-wide while active,
  lifted only for the thread or asyncio task that holds a permission from
  ``allow_pickles(token)`` for *every* active restriction.

The state both layers read is ``_state``; whole code archives (TorchScript,
torch.package, PT2) are decided by ``_archive`` through the same two layers.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hermetic import _hermetic
from hermetic._hermetic import HermeticError
from hermetic.firewall._errors import NoPickleError, display, text_safe
from hermetic.firewall._inventory import Inventory
from hermetic.firewall._state import (
    CURRENT,
    LOCK,
    PERMS,
    STATE,
    PickleToken,
    _current_task,
    _warn_at,
    stack,
)
from hermetic.firewall._streams import file_name

if TYPE_CHECKING:
    from hermetic.firewall._archive import CodeArchive

MODES = ("deny", "enforce", "record", "warn")

# The id of the empty string: a stand-in blob when only the call site matters.
_EMPTY_ID = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


class _Run:
    """``check``'s answer: run the real unpickler."""


RUN = _Run()


class Evaluated:
    """``check``'s answer: the safe evaluator already produced the object."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value


# --------------------------------------------------------------------------
# The decision


def check(
    blob: bytes,
    blob_id: str | None,
    *,
    file: str | None,
    entry: str,
    persistent_load: Any = None,
) -> object:
    """Decides one load of ``blob`` (the exact bytes the unpickler would
    read). Returns ``RUN`` or an ``Evaluated``; raises ``NoPickleError``.

    One call into Rust decides (``Manifest.decide_blob``: the blob id, the
    frames when the decision needs them, the judgement and the action); the
    scanner runs at most once per load, only if the load is recorded,
    warned about, evaluated or refused."""
    st = STATE
    cur_file, cur_entry = CURRENT.get()
    file = text_safe(file or cur_file)
    if cur_entry:
        entry = f"{cur_entry} ({entry})"
    if st.tokens:
        if blob_id is None:
            blob_id = _hermetic.blob_id(blob)
        _check_tokens(st.tokens, blob, blob_id, len(blob), file, entry)
    mode = st.mode
    if mode is None:
        return RUN
    m = st.manifest
    d = m.decide_blob(mode, blob, blob_id, stack, st.inventory is not None)
    if d is None:
        return RUN
    blob_id, size, action = d.blob_id, d.size, d.action
    frames, location = d.frames, d.location
    if st.inventory is not None:
        _record_load(st.inventory, d, file, entry)
    if action == "allow":
        return RUN
    if frames is None:
        frames, location = stack()
    scanner = d.scan()
    if action == "warn":
        message = m.refusal(mode, blob_id, size, frames, file, location, entry, scanner[3])[0]
        _warn_at(message, location)
        return RUN
    note = None
    if action == "evaluate":
        # A manifest's allow list lets the evaluator rebuild the classes it
        # names, which the scanner calls suspicious (never dangerous ones).
        if scanner[0] == "safe" or (scanner[0] == "suspicious" and m.allow):
            from hermetic import _firewall_eval

            try:
                return Evaluated(
                    _firewall_eval.evaluate(
                        blob, file, persistent_load=persistent_load, allow=m.allow
                    )
                )
            except _firewall_eval.EvaluatorUnavailable as e:
                note = str(e)
            except HermeticError as e:
                # The evaluator's allowlist is the last word: never fall
                # back to the real unpickler.
                note = f"the safe evaluator refused it: {type(e).__name__}: {e}"
        else:
            note = (
                'unlisted = "safe" evaluates only blobs the scanner calls data-only (or, with '
                f"the manifest's allow list, suspicious); the scanner calls this one {scanner[0]}"
            )
    raise _refusal(mode, blob_id, size, frames, file, location, entry, scanner, note)


def evaluate_checkpoint(f: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``torch.load`` under ``unlisted = "safe"``: a checkpoint file none of
    whose pickle streams the manifest lists, and which the scanner calls
    data-only, is read by ``hermetic.torch.load`` (the Rust evaluator), so no
    unpickler runs. Its ``data.pkl`` resolves storages through torch's
    ``persistent_load``, which the per-blob path cannot evaluate on its own.

    A seekable binary file object (an open file, ``io.BytesIO``) is read
    once from its current position and the evaluator reads those bytes; if
    the evaluator does not take it, the file is put back where it was.

    Returns ``RUN`` when the real ``torch.load`` should go ahead (listed
    blobs, other modes, unseekable streams); every other case is decided there.
    """
    st = STATE
    if st.mode not in ("deny", "enforce") or st.tokens or st.inventory is not None:
        return RUN
    m = st.manifest
    if m.unlisted != "safe":
        return RUN
    from hermetic import _scan

    source: Any
    rewind: Any = None
    if isinstance(f, (str, os.PathLike)):
        source = os.fspath(f)
        try:
            result = _scan.scan(source, include_clean=True)[0]
        except (OSError, IndexError):
            return RUN
    else:
        taken = _read_rest(f)
        if taken is None:
            return RUN
        source, start = taken

        def rewind() -> None:
            f.seek(start)

        try:
            result = _scan.scan_bytes(source, name=file_name(f) or "<file object>")
        except HermeticError:
            rewind()
            return RUN
    verdict = _checkpoint_verdict(result, m, st.mode)
    if verdict:
        from hermetic import torch as hermetic_torch

        map_location = kwargs.get("map_location", args[0] if args else None)
        try:
            return Evaluated(
                hermetic_torch.load(
                    source,
                    map_location=map_location,
                    mmap=bool(kwargs.get("mmap")),
                    allow=m.allow or None,
                )
            )
        except HermeticError:
            # The per-blob path decides (and explains) what the evaluator
            # refused.
            pass
    if rewind is not None:
        rewind()
    return RUN


def _checkpoint_verdict(result: Any, m: Any, mode: str) -> bool:
    """Whether a scanned checkpoint goes to the evaluator: the scanner calls
    it data-only and the manifest has every one of its streams evaluated."""
    allowed = {"safe", "suspicious"} if m.allow else {"safe"}
    if result.error is not None or result.verdict not in allowed or not result.streams:
        return False
    frames, _ = stack()
    return all(m.decide(mode, s.sha256, s.length, frames)[1] == "evaluate" for s in result.streams)


def _read_rest(f: Any) -> tuple[bytes, int] | None:
    """The bytes from a seekable binary file object's position to its end,
    and that position; ``None`` for anything else (torch.load then runs
    and the per-blob path reads the stream itself)."""
    try:
        if not f.seekable():
            return None
        start = f.tell()
        data = f.read()
    except (AttributeError, OSError, ValueError, TypeError):
        return None
    if not isinstance(data, bytes):
        try:
            f.seek(start)
        except (OSError, ValueError):
            pass
        return None
    return data, start


# Callers whose pickles hermetic can read without unpickling: a refusal whose
# frames pass through one of these module prefixes ends with this hint.
_HINTS: tuple[tuple[str, str], ...] = (
    (
        "torch.distributed.checkpoint.",
        "torch.distributed.checkpoint's FileSystemReader unpickles its .metadata and "
        "non-tensor values; hermetic.dcp.SafeReader reads the same folder without unpickling: "
        "dcp.load(state, storage_reader=hermetic.dcp.SafeReader(path)) (hermetic.dcp.Writer / "
        "hermetic.dcp.Reader save and load DCP checkpoints with no pickle at all)",
    ),
)


def hint_for(frames: list[str] | None) -> str | None:
    """The hint for a refused load made through ``frames``, if one applies."""
    for frame in frames or ():
        for prefix, hint in _HINTS:
            if frame.startswith(prefix):
                return hint
    return None


def _refusal(
    mode: str,
    blob_id: str,
    size: int,
    frames: list[str],
    file: str | None,
    location: str | None,
    entry: str,
    scanner: tuple[str, list[str], list[str], str],
    note: str | None,
) -> NoPickleError:
    m = STATE.manifest
    message, line, site = m.refusal(mode, blob_id, size, frames, file, location, entry, scanner[3])
    if note:
        message += f"\nnote: {note}"
    hint = hint_for(frames)
    if hint:
        message += f"\nhint: {hint}"
    if STATE.startup_error:
        message += f"\nnote: {STATE.startup_error}"
    return NoPickleError(
        message,
        blob_id=blob_id,
        size=size,
        file=file,
        call_site=site,
        scanner=scanner[3],
        manifest_line=line,
        mode=mode,
    )


def _check_tokens(
    tokens: tuple[PickleToken, ...],
    blob: bytes,
    blob_id: str,
    size: int,
    file: str | None,
    entry: str,
    archive: tuple[CodeArchive, Callable[[], str]] | None = None,
) -> None:
    """Refuses the load unless this thread or task holds a permission for
    every active restriction. ``archive`` is ``(kind, the scanner's summary,
    on demand)`` for a whole code archive (then ``blob`` is the file, not a
    pickle)."""
    perms = PERMS.get()
    thread = threading.get_ident()
    task: object = False  # computed on first need
    for tok in tokens:
        held = None
        for p in reversed(perms):
            if p.token is tok and p.live:
                held = p
                break
        why = None
        if held is None:
            why = "no allow_pickles() for it is in force here"
        else:
            if task is False:
                task = _current_task()
            if held.thread != thread or held.task is not task:
                why = (
                    "the allow_pickles() in force was entered by another thread or asyncio "
                    "task; a permission covers only the thread or task that entered it"
                )
            elif held.only is not None and blob_id not in held.only:
                why = f"the allow_pickles() in force allows only {len(held.only)} other blob id(s)"
        if why is not None:
            frames, location = stack()
            site = STATE.manifest.call_site(frames) if frames else None
            if archive is None:
                scanner = _hermetic.scan_summary(blob)[3]
                lines = [f"hermetic refused to unpickle blob {blob_id} ({size} bytes)"]
            else:
                scanner = archive[1]()
                lines = [
                    f"hermetic refused to load {archive[0].article} {archive[0].title}, "
                    f"blob {blob_id} ({size} bytes, the whole file)",
                    f"  what:      {archive[0].article} {archive[0].runs}",
                ]
            lines += [
                f"  restricted by: hermetic.no_pickles() entered at {display(tok._where)}",
                f"  why:       {why}",
            ]
            if file:
                lines.append(f"  file:      {display(file)}")
            lines.append(f"  call site: {display(site or '?')} ({display(location or '?')})")
            lines.append(f"  through:   {display(entry)}")
            lines.append(f"  scanner:   {display(scanner)}")
            lines.append("To allow exactly this blob, in that thread or task, with the token:")
            lines.append(f'  with hermetic.allow_pickles(token, only_objects=["{blob_id}"]):')
            hint = hint_for(frames)
            if hint:
                lines.append(f"hint: {hint}")
            raise NoPickleError(
                "\n".join(lines),
                blob_id=blob_id,
                size=size,
                file=file,
                call_site=site,
                scanner=scanner,
                manifest_line=None,
                mode=None,
            )


def _record_load(inv: Inventory, d: Any, file: str | None, entry: str) -> None:
    """Writes the inventory line for one decided load (``d``, a
    ``Decision`` made with its frames)."""
    frames = d.frames or []
    site = STATE.manifest.call_site(frames) if frames else None
    # Loads a call-site rule allows (inter-process messages, a new blob per
    # message) make one line per rule and call site, not one per message.
    key: tuple[Any, ...] = (d.judgement, site) if d.rule is not None else (d.blob_id, site, file)
    if inv.seen("load", key):
        return
    verdict, imports, findings, _text = d.scan()
    inv.write(
        "load",
        key,
        blob=d.blob_id,
        size=d.size,
        file=file,
        entry_point=entry,
        call_site=site,
        location=d.location,
        judgement=d.judgement,
        verdict=verdict,
        imports=imports,
        findings=findings,
    )


def record_dump(entry: str) -> None:
    """Notes a call site that writes a pickle (record and warn modes)."""
    st = STATE
    inv = st.inventory
    if inv is None:
        return
    cur_entry = CURRENT.get()[1]
    if cur_entry:
        entry = cur_entry
    frames, location = stack()
    site = st.manifest.call_site(frames) if frames else None
    key = (entry, site, location)
    if inv.seen("dump", key):
        return
    d = st.manifest.decide_blob("deny", b"", _EMPTY_ID, lambda: (frames, location), True)
    inv.write(
        "dump",
        key,
        entry_point=entry,
        call_site=site,
        location=location,
        judgement=d.judgement if d.rule is not None else None,
    )


def on_unguarded_global(module: str, name: str) -> None:
    """The audit hook saw a global resolved outside any approved load."""
    st = STATE
    if st.tokens or st.mode in ("deny", "enforce"):
        frames, location = stack()
        site = st.manifest.call_site(frames) if frames else None
        raise NoPickleError(
            f"hermetic refused to resolve the global {display(f'{module}.{name}')}: an "
            "unpickler the "
            "firewall does not guard (a reference to pickle.loads or an Unpickler class taken "
            "before the firewall started, or a custom find_class) tried to load it outside an "
            f"approved load\n  call site: {display(site or '?')} ({display(location or '?')})\n"
            "Load through pickle.load/pickle.loads/pickle.Unpickler (looked up after the "
            "firewall started) so that the blob can be checked against the manifest.",
            call_site=site,
            mode=st.mode,
        )
    inv = st.inventory
    if inv is not None:
        frames, location = stack()
        site = st.manifest.call_site(frames) if frames else None
        key = (f"{module}.{name}", site)
        if not inv.seen("global", key):
            inv.write(
                "global", key, **{"global": f"{module}.{name}"}, call_site=site, location=location
            )
    if st.mode == "warn":
        _warn_at(
            "hermetic: an unguarded unpickler resolved "
            f"{display(f'{module}.{name}')} outside any checked load",
            None,
        )


# --------------------------------------------------------------------------
# Activation


def activate(
    mode: str,
    manifest: str | os.PathLike[str] | None = None,
    inventory: str | os.PathLike[str] | None = None,
    *,
    startup_error: str | None = None,
) -> None:
    """Switches the process-wide mode on. It stays on for the life of the
    process (the audit hook cannot be removed)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "enforce" and manifest is None:
        raise ValueError("enforce mode needs a manifest (HERMETIC_MANIFEST)")
    if manifest is not None:
        m = _hermetic.Manifest.load(os.path.abspath(os.fspath(manifest)))
    else:
        m = _hermetic.Manifest.default()
    inv_path: str | None = None
    if inventory is not None:
        inv_path = os.fspath(inventory)
    elif mode == "record":
        inv_path = "hermetic-inventory.jsonl"
    from hermetic.firewall import _hooks

    with LOCK:
        if STATE.mode is not None and (STATE.mode, STATE.manifest.path) != (mode, m.path):
            raise RuntimeError(
                f"the pickle firewall is already active in {STATE.mode} mode; "
                "a process has one mode for its whole life"
            )
        STATE.manifest = m
        STATE.loader_cache = {}
        STATE.inventory = Inventory(inv_path) if inv_path is not None else None
        STATE.startup_error = startup_error
        _hooks.install(writers=STATE.inventory is not None)
        STATE.mode = mode
        STATE.refresh()
