"""Code archives: files whose loader runs code they carry outside the pickle
machinery (TorchScript, torch.package, PT2).

The firewall decides on such a file as one blob, all of its bytes
(``check_archive``), against the same mode, manifest and ``no_pickles()``
tokens as a pickle, and explains a refusal as a whole-file one. There is no
safe evaluation of code, so ``unlisted = "safe"`` refuses an unlisted archive.
"""

from __future__ import annotations

from typing import Any

from hermetic import _hermetic
from hermetic._hermetic import HermeticError
from hermetic.firewall._core import _check_tokens
from hermetic.firewall._errors import NoPickleError, text_safe
from hermetic.firewall._state import ARCHIVE_APPROVED, CURRENT, STATE, _warn_at, stack

#: Scanner findings after which it cannot rule out that torch's zip reader
#: (miniz) sees records it does not (a ``constants.pkl``): ``torch.load`` of
#: such a zip is decided as a TorchScript archive. The same list as
#: ``hermetic_manifest::UNCERTAIN_ZIP_FINDINGS``, which ``manifest add`` uses.
UNCERTAIN_ZIP_FINDINGS = frozenset({"ambiguous_zip", "polyglot_pickle_zip", "limit_exceeded"})


class CodeArchive:
    """A kind of file whose loader runs code it carries (TorchScript,
    torch.package, PT2) outside Python's pickle machinery. The firewall
    decides on such a file as one blob: all of its bytes."""

    __slots__ = ("kind", "title", "article", "runs", "listed_by_add")

    def __init__(self, kind: str, title: str, runs: str, *, listed_by_add: bool) -> None:
        self.kind = kind
        self.title = title
        self.article = "an" if title[:1].lower() in "aeiou" else "a"
        self.runs = runs
        #: Whether ``hermetic manifest add`` lists the whole file's id (for
        #: files the scanner calls TorchScript, or zips it cannot vouch for).
        self.listed_by_add = listed_by_add


def archive_summary(
    data: bytes, name: str | None, scan: Any = None
) -> tuple[str, list[str], list[str], str]:
    """The scanner's ``(verdict, imports, findings, text)`` for a whole
    archive, as ``scan_summary`` gives them for a pickle."""
    from hermetic import _scan

    result = scan
    if result is None:
        try:
            result = _scan.scan_bytes(data, name=name or "<archive>")
        except HermeticError as e:
            return "dangerous", [], [], f"dangerous; the scanner cannot read it: {e}"
    imports: list[str] = []
    for st in result.streams:
        for g in st.globals:
            q = f"{g.module}.{g.name}"
            if q not in imports:
                imports.append(q)
    findings: list[str] = []
    for f in result.all_findings():
        if f.code not in findings:
            findings.append(f.code)
    text = f"{result.verdict} ({result.format})"
    text += f"; imports {', '.join(imports[:8])}" if imports else "; imports nothing"
    if len(imports) > 8:
        text += f" and {len(imports) - 8} more"
    if findings:
        text += f"; findings: {', '.join(findings)}"
    if result.error:
        text += f"; error: {result.error}"
    return result.verdict, imports, findings, text


def check_archive(
    data: bytes,
    archive: CodeArchive,
    *,
    file: str | None,
    entry: str,
    scan: Any = None,
    note: str | None = None,
) -> str | None:
    """Decides one load of a code archive whose bytes (from where its loader
    starts reading to the end) are ``data``, before its loader touches them.

    Returns the blob id once the load is allowed (for ``ARCHIVE_APPROVED``),
    or ``None`` when no mode or restriction is active. Raises
    ``NoPickleError``. There is no safe evaluation of code: under
    ``unlisted = "safe"`` an unlisted archive is refused.
    """
    st = STATE
    if not st.active:
        return None
    blob_id = _hermetic.blob_id(data)
    if ARCHIVE_APPROVED.get() == blob_id:
        return blob_id
    size = len(data)
    cur_file, cur_entry = CURRENT.get()
    file = text_safe(file or cur_file)
    if cur_entry and cur_entry != entry:
        entry = f"{cur_entry} ({entry})"
    summary: tuple[str, list[str], list[str], str] | None = None

    def scanner() -> tuple[str, list[str], list[str], str]:
        nonlocal summary
        if summary is None:
            summary = archive_summary(data, file, scan)
        return summary

    if st.tokens:
        _check_tokens(st.tokens, data, blob_id, size, file, entry, (archive, lambda: scanner()[3]))
    mode = st.mode
    if mode is None:
        return blob_id
    m = st.manifest
    d = m.decide_blob(mode, data, blob_id, stack, True)
    frames, location = d.frames or [], d.location
    judgement, action = d.judgement, d.action
    inv = st.inventory
    if inv is not None:
        site = m.call_site(frames) if frames else None
        key = (judgement, site) if d.rule is not None else (blob_id, site, file)
        if not inv.seen("load", key):
            verdict, imports, findings, _text = scanner()
            inv.write(
                "load",
                key,
                blob=blob_id,
                size=size,
                file=file,
                entry_point=entry,
                call_site=site,
                location=location,
                judgement=judgement,
                verdict=verdict,
                imports=imports,
                findings=findings,
                kind=archive.kind,
            )
    if action == "allow":
        return blob_id
    # manifest add lists the whole file for what the scanner calls
    # TorchScript, and for zips it cannot vouch for (files.rs).
    listable = archive.listed_by_add and bool(
        {"torchscript_code", *UNCERTAIN_ZIP_FINDINGS} & set(scanner()[2])
    )
    message, line, site = _archive_message(
        mode, archive, listable, blob_id, size, frames, file, location, entry, scanner()[3]
    )
    if action == "warn":
        _warn_at(message, location)
        return blob_id
    if note:
        message += f"\nnote: {note}"
    if action == "evaluate":
        message += (
            '\nnote: unlisted = "safe" evaluates data-only pickles; '
            f"{archive.article} {archive.title} runs code, so only its [blobs] line allows it"
        )
    if st.startup_error:
        message += f"\nnote: {st.startup_error}"
    raise NoPickleError(
        message,
        blob_id=blob_id,
        size=size,
        file=file,
        call_site=site,
        scanner=scanner()[3],
        manifest_line=line,
        mode=mode,
    )


def _archive_message(
    mode: str,
    archive: CodeArchive,
    listable: bool,
    blob_id: str,
    size: int,
    frames: list[str],
    file: str | None,
    location: str | None,
    entry: str,
    scanner: str,
) -> tuple[str, str, str | None]:
    """The manifest's refusal (or warning) text, told about a whole archive:
    what the file is, and that its id is the SHA-256 of all of its bytes."""
    m = STATE.manifest
    message, line, site = m.refusal(mode, blob_id, size, frames, file, location, entry, scanner)
    lines = message.split("\n")
    verb = "loaded an unlisted" if mode == "warn" else f"refused to load {archive.article}"
    head = [
        f"hermetic {verb} {archive.title}, blob {blob_id} "
        f"({size} bytes: the SHA-256 of the whole file)",
        f"  what:      {archive.article} {archive.runs}",
    ]
    if file is None:
        head.append(
            "  file:      not known (read from a file object with no name); "
            "its blob id is the SHA-256 of the bytes from its position to its end"
        )
    body = lines[1:]
    if not listable:
        # `hermetic manifest add` lists this file's streams, not the whole
        # file: only the printed line (or record and freeze) allows it.
        body = [x for x in body if not x.startswith("or run: hermetic manifest add")]
        body.append(
            "(hermetic manifest add lists this file's pickle streams, not the whole file: "
            "add the line above, or record a run and freeze it)"
        )
    return "\n".join(head + body), line, site
