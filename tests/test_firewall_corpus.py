"""Acceptance: the attack corpus against the firewall.

* Every attack file, loaded through every guarded entry point under ``deny``
  and under ``enforce`` with a manifest that does not list it, is refused
  and creates no canary.
* The same file, listed in the manifest by ``hermetic manifest add``, loads
  through its own loader, and its payload fires (in a child process).
* The same file with one byte of its pickle changed is refused.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import struct
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any

import pytest
from _firewall_util import (
    SAFE,
    available_entry_points,
    blob_line,
    have,
    hermetic_cli,
    run_jobs,
    write_manifest,
)

from corpus import ATTACKS_DIR

if not (ATTACKS_DIR / "EXPECTED.json").exists():
    pytest.skip("the attack corpus has not been generated", allow_module_level=True)

from corpus import attack_files  # noqa: E402

ATTACKS = [(p, m) for p, m in attack_files() if all(have(r) for r in m["requires"])]
IDS = [p.name for p, _ in ATTACKS]
WAIT_FOR_LATE_PAYLOADS_S = 3.0
CANARY_WAIT_S = 15.0


def _entry_points() -> list[str]:
    return [*available_entry_points(), "pickle.load_all"]


@pytest.mark.parametrize("mode", ["deny", "enforce"])
def test_every_attack_is_refused_through_every_entry_point(mode: str, tmp_path: Path) -> None:
    manifest = None
    if mode == "enforce":
        # A manifest that lists something, just not any attack.
        manifest = write_manifest(tmp_path / "m.toml", [blob_line(SAFE)])
    jobs = [(ep, path) for path, _ in ATTACKS for ep in _entry_points()]
    results = run_jobs(jobs, tmp_path / "canaries", mode=mode, manifest=manifest, timeout=900)
    time.sleep(WAIT_FOR_LATE_PAYLOADS_S)
    fired = [(r["loader"], Path(r["path"]).name) for r in results if os.path.exists(r["canary"])]
    assert not fired, f"payloads ran: {fired}"
    by_job = {(r["loader"], Path(r["path"]).name): r for r in results}
    for path, meta in ATTACKS:
        r = by_job[(meta["loader"], path.name)]
        assert r["outcome"] == "refused", r
    # Nothing else reached the real unpickler either: every outcome is a
    # refusal, or a loader error before any unpickling, or a load of
    # something that is not a pickle (np.load returns a zip member's bytes).
    refused = sum(r["outcome"] == "refused" for r in results)
    assert refused >= 0.8 * len(results), refused


@pytest.fixture(scope="module")
def listing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A manifest listing every attack file's blobs, as a reviewer would
    (``--force``: they are dangerous)."""
    manifest = tmp_path_factory.mktemp("listing") / "hermetic.toml"
    proc = hermetic_cli(
        "manifest", "add", "--force", *[str(p) for p, _ in ATTACKS], "--to", str(manifest)
    )
    assert proc.returncode == 0, proc.stderr
    return manifest


def _run_one(loader: str, path: Path, tmp: Path, manifest: Path) -> tuple[dict[str, Any], Path]:
    (r,) = run_jobs([(loader, path)], tmp, mode="enforce", manifest=manifest)
    canary = Path(r["canary"])
    deadline = time.monotonic() + CANARY_WAIT_S
    while r["outcome"] != "refused" and not canary.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return r, canary


@pytest.mark.parametrize(("path", "meta"), ATTACKS, ids=IDS)
def test_listed_attack_loads_and_fires(
    path: Path, meta: dict[str, Any], listing: Path, tmp_path: Path
) -> None:
    r, canary = _run_one(meta["loader"], path, tmp_path / "c", listing)
    assert r["outcome"] != "refused", r["message"]
    assert canary.exists(), r


def _flip(data: bytes, at: int) -> bytes:
    b = bytearray(data)
    b[at] ^= 0x01
    return bytes(b)


# (decompressor factory, compress function) for raw compressed files.
def _lz4() -> Any:
    import lz4.frame

    return lz4.frame


_CODECS = [
    (b"\x1f\x8b", lambda: zlib.decompressobj(31), gzip.compress),
    (b"BZh", bz2.BZ2Decompressor, bz2.compress),
    (
        b"\xfd7zXZ\x00",
        lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ),
        lambda d: lzma.compress(d, lzma.FORMAT_XZ),
    ),
    (
        b"\x5d\x00\x00",
        lambda: lzma.LZMADecompressor(lzma.FORMAT_ALONE),
        lambda d: lzma.compress(d, lzma.FORMAT_ALONE),
    ),
    (
        b"\x04\x22\x4d\x18",  # an LZ4 frame (joblib compress="lz4")
        lambda: _lz4().LZ4FrameDecompressor(),
        lambda d: _lz4().compress(d),
    ),
    (b"\x78", zlib.decompressobj, zlib.compress),
]


def _zip_members(data: bytes) -> list[tuple[zipfile.ZipInfo, int, int]]:
    """(info, start, end) of each member's stored data, from the central
    directory, for well-formed zips."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        return []
    out = []
    for info in zf.infolist():
        h = info.header_offset
        if data[h : h + 4] != b"PK\x03\x04":
            continue
        n, m = struct.unpack("<HH", data[h + 26 : h + 30])
        start = h + 30 + n + m
        out.append((info, start, start + info.compress_size))
    return out


def _fix_crc(data: bytes, info: zipfile.ZipInfo, start: int, end: int) -> bytes:
    """Rewrites a stored member's CRC-32 in its local header and central
    directory entry, so the zip reader accepts the changed byte."""
    crc = struct.pack("<I", zlib.crc32(data[start:end]))
    b = bytearray(data)
    h = info.header_offset
    b[h + 14 : h + 18] = crc
    pos = data.rfind(b"PK\x05\x06")
    cd = struct.unpack("<I", data[pos + 16 : pos + 20])[0]
    while data[cd : cd + 4] == b"PK\x01\x02":
        n, m, k = struct.unpack("<HHH", data[cd + 28 : cd + 34])
        if struct.unpack("<I", data[cd + 42 : cd + 46])[0] == h:
            b[cd + 16 : cd + 20] = crc
        cd += 46 + n + m + k
    return bytes(b)


def _changed(path: Path, blobs: list[tuple[str, int, int, str]]) -> tuple[bytes, str] | None:
    """The file with one byte of a pickle its loader reads changed, and how.
    ``blobs`` are ``(stream, offset, size, blob id)`` from ``hermetic hash``."""
    data = path.read_bytes()
    members = _zip_members(data)
    for _stream, offset, size, blob in blobs:
        chunk = data[offset : offset + size]
        if len(chunk) != size or "sha256:" + hashlib.sha256(chunk).hexdigest() != blob:
            continue
        at = offset + size // 2
        changed = _flip(data, at)
        for info, start, end in members:
            if start <= at < end and info.compress_type == zipfile.ZIP_STORED:
                return _fix_crc(changed, info, start, end), "in a zip member (CRC fixed)"
        return changed, "in the file"
    # A joblib dump: its first stream spans opcodes and inline arrays.
    for stream, offset, size, _blob in blobs:
        if stream == "pickle" and offset + size <= len(data) and not members:
            return _flip(data, offset + size // 2), "in the joblib span"
    # A deflated zip member: rewrite the zip with the member's pickle changed.
    for info, _start, _end in members:
        if info.compress_type != zipfile.ZIP_STORED and info.filename.endswith(".pkl"):
            src = zipfile.ZipFile(io.BytesIO(data))
            out = io.BytesIO()
            with zipfile.ZipFile(out, "w") as dst:
                for i in src.infolist():
                    content = src.read(i)
                    if i.filename == info.filename:
                        content = _flip(content, len(content) // 2)
                    dst.writestr(i, content, compress_type=i.compress_type)
            return out.getvalue(), "in a deflated zip member"
    # A compressed file: change one byte of the first stream's pickle.
    prefix = b""
    body = data
    if data.startswith(b"ZF"):  # joblib's old z-file: a hex length, then zlib
        prefix, body = data[:21], data[21:]
    for magic, decompressor, compress in _CODECS:
        if body.startswith(magic):
            d = decompressor()
            plain = d.decompress(body)
            tail = d.unused_data or b""  # lz4 says None for none
            return prefix + compress(_flip(plain, len(plain) // 2)) + tail, "in the payload"
    return None


@pytest.mark.parametrize(("path", "meta"), ATTACKS, ids=IDS)
def test_one_changed_byte_is_refused(
    path: Path, meta: dict[str, Any], listing: Path, tmp_path: Path
) -> None:
    import json

    proc = hermetic_cli("hash", "--json", str(path))
    blobs = [(b["stream"], b["offset"], b["size"], b["id"]) for b in json.loads(proc.stdout)]
    changed = _changed(path, blobs)
    if changed is None:
        pytest.skip(f"{path.name}: no pickle byte to change without re-encoding its container")
    content, where = changed
    bad = tmp_path / path.name
    bad.write_bytes(content)
    r, canary = _run_one(meta["loader"], bad, tmp_path / "c", listing)
    assert not canary.exists(), r
    assert r["outcome"] == "refused", (where, r)
