"""`hermetic.scan`: what loading a file would import and call, without loading it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from hermetic import _hermetic

# "error": the file could not be read or analysed, so nothing is known about
# what loading it runs; it ranks above "dangerous" and is never clean.
Verdict = Literal["safe", "suspicious", "dangerous", "error"]
_ORDER: dict[str, int] = {"safe": 0, "suspicious": 1, "dangerous": 2, "error": 3}


@dataclass(frozen=True)
class Finding:
    """An import outside the allowlist, or a structural problem.

    ``code`` is stable (``dangerous_import``, ``ambiguous_zip``, ...); ``module``
    and ``name`` are empty for container-level findings.
    """

    code: str
    severity: Verdict
    module: str
    name: str
    offset: int
    called: bool
    reason: str

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}" if self.module else ""


@dataclass(frozen=True)
class GlobalRef:
    """A global the stream resolves, allowed or not."""

    module: str
    name: str
    offset: int
    opcode: str
    called: bool


@dataclass(frozen=True)
class Stream:
    """One pickle stream inside a file; ``sha256`` is its blob id."""

    name: str
    offset: int
    length: int
    sha256: str
    protocol: int | None
    verdict: Verdict
    findings: tuple[Finding, ...]
    globals: tuple[GlobalRef, ...]
    persistent_ids: int
    opcodes: int


@dataclass(frozen=True)
class ScanResult:
    """Everything the scanner knows about one file."""

    path: str
    format: str
    verdict: Verdict
    streams: tuple[Stream, ...]
    findings: tuple[Finding, ...]
    error: str | None

    @property
    def has_pickle(self) -> bool:
        return bool(self.streams or self.findings)

    def all_findings(self) -> list[Finding]:
        """Container findings, then every stream's."""
        return [*self.findings, *(f for s in self.streams for f in s.findings)]

    def imports(self) -> list[str]:
        """Every ``module.name`` the file's pickles import, in order of appearance."""
        seen: dict[str, None] = {}
        for s in self.streams:
            for g in s.globals:
                seen.setdefault(f"{g.module}.{g.name}", None)
        return list(seen)

    def at_least(self, verdict: Verdict) -> bool:
        return _ORDER[self.verdict] >= _ORDER[verdict]


def _finding(d: dict) -> Finding:
    return Finding(
        code=d["code"],
        severity=d["severity"],
        module=d["module"],
        name=d["name"],
        offset=d["offset"],
        called=d["called"],
        reason=d["reason"],
    )


def _result(d: dict) -> ScanResult:
    streams = tuple(
        Stream(
            name=s["name"],
            offset=s["offset"],
            length=s["length"],
            sha256=s["sha256"],
            protocol=s["protocol"],
            verdict=s["verdict"],
            findings=tuple(_finding(f) for f in s["findings"]),
            globals=tuple(GlobalRef(**g) for g in s["globals"]),
            persistent_ids=s["persistent_ids"],
            opcodes=s["opcodes"],
        )
        for s in d["streams"]
    )
    return ScanResult(
        path=d["path"],
        format=d["format"],
        verdict=d["verdict"],
        streams=streams,
        findings=tuple(_finding(f) for f in d["findings"]),
        error=d["error"],
    )


def scan(
    path: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    policy: str | os.PathLike[str] | None = None,
    include_clean: bool = False,
) -> list[ScanResult]:
    """Scan files or folders (recursively) for pickles, without loading them.

    Returns one :class:`ScanResult` per file that holds a pickle (or any
    container hermetic recognises), sorted by path; ``include_clean=True``
    also returns files with nothing to report. ``policy`` is a TOML policy
    file that allows or denies more globals. Unreadable paths come back with
    ``error`` set rather than raising, so one bad file never hides the rest.
    """
    if isinstance(path, (str, os.PathLike)):
        paths = [os.fspath(path)]
    else:
        paths = [os.fspath(p) for p in path]
    raw = json.loads(_hermetic.scan_paths(paths, os.fspath(policy) if policy is not None else None))
    return [
        _result(f)
        for f in raw["files"]
        if include_clean or f["format"] != "none" or f["error"] is not None
    ]


def scan_bytes(
    data: bytes, *, name: str = "<bytes>", policy: str | os.PathLike[str] | None = None
) -> ScanResult:
    """Scan an in-memory file (a pickle, a checkpoint, an archive)."""
    return _result(
        json.loads(
            _hermetic.scan_data(data, name, os.fspath(policy) if policy is not None else None)
        )
    )


def blob_id(data: bytes) -> str:
    """The blob id manifests use: ``sha256:`` and the hex digest of ``data``."""
    return _hermetic.blob_id(data)
