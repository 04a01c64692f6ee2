"""Fail closed: files that make a real loader run code never scan `safe`.

Each technique below builds a file at test time with the real libraries and a
harmless payload (it creates the file named by $HERMETIC_CANARY), proves in a
subprocess that the named real loader runs it, and requires `hermetic.scan`
to report the file as at least suspicious (most as dangerous, naming the
import). The classes follow the fail-closed issue: readings that a format
sniff used to end, probe limits, compressor framing, header fields parsed the
loader's way, dtypes that unpickle, concatenated archives.

Never load one of these files outside `fires()`, which checks the canary.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import hermetic
from corpus import HARNESS

PYSRC = b"open(__import__('os').environ['HERMETIC_CANARY'], 'w').write('x')"
# Protocol 0: builtins.exec(PYSRC). Text opcodes only, so it can sit in
# headers and array bytes.
PAYLOAD = b"cbuiltins\nexec\n(V" + PYSRC + b"\ntR."


def fires(loader: str, path: Path, tmp: Path, *extra: str) -> bool:
    """Whether `loader` runs the payload in `path` (in a subprocess, with a canary)."""
    canary = tmp / f"canary-{loader}"
    if canary.exists():
        canary.unlink()
    env = {**os.environ, "HERMETIC_CANARY": str(canary)}
    env.pop("HERMETIC_PICKLE", None)
    env.pop("HERMETIC_MANIFEST", None)
    subprocess.run(
        [sys.executable, "-c", HARNESS, loader, str(path), *extra],
        env=env,
        cwd=tmp,
        capture_output=True,
        timeout=120,
    )
    return canary.exists()


class Evil:
    """Pickles as builtins.exec(PYSRC)."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (PYSRC.decode(),))


# ---------------------------------------------------------------- builders


def _tar_bytes(members: list[tuple[str | bytes, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name if isinstance(name, str) else name.decode("latin-1"))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _legacy_tar(first: bytes | str = "sys_info") -> bytes:
    """A torch legacy tar checkpoint whose `storages` member is the payload."""
    return _tar_bytes(
        [(first, b"N."), ("storages", PAYLOAD), ("tensors", b"N."), ("pickle", b"N.")]
    )


def _retar_header(data: bytes, field: slice, value: bytes) -> bytes:
    """Rewrites one field of the first tar header and fixes its checksum."""
    block = bytearray(data[:512])
    block[field] = value.ljust(field.stop - field.start, b"\0")
    block[148:156] = b" " * 8
    chksum = sum(block)
    block[148:156] = b"%06o\0 " % chksum
    return bytes(block) + data[512:]


def tar_named_like_safetensors(tmp: Path) -> Path:
    # The first member's name is an 8-byte header length and a JSON object:
    # the file starts exactly like a safetensors file.
    header = b'{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}'
    name = struct.pack("<Q", len(header)) + header
    data = _legacy_tar("x")
    data = _retar_header(data, slice(0, 100), name)
    p = tmp / "tar_safetensors.pt"
    p.write_bytes(data)
    return p


def tar_named_like_npy(tmp: Path) -> Path:
    data = _retar_header(_legacy_tar("x"), slice(0, 100), b"\x93NUMPY\x01\x00")
    p = tmp / "tar_npy.pt"
    p.write_bytes(data)
    return p


def tar_checksum_with_separator(tmp: Path) -> Path:
    # tarfile strips str.isspace() characters around numbers: \x1c is one.
    data = bytearray(_legacy_tar())
    block = data[:512]
    block[148:156] = b" " * 8
    block[148:156] = b"\x1c%06o\0" % sum(block)
    data[:512] = block
    p = tmp / "tar_sep.pt"
    p.write_bytes(bytes(data))
    return p


def joblib_array_bytes_are_a_pickle(tmp: Path) -> Path:
    # joblib reads the array's bytes raw; pickle.load reads them as opcodes.
    import joblib
    import joblib.numpy_pickle as jnp
    import numpy as np

    original = jnp.NumpyPickler._create_array_wrapper

    def unaligned(self: object, array: object) -> object:
        w = original(self, array)  # type: ignore[arg-type]
        w.numpy_array_alignment_bytes = None
        return w

    jnp.NumpyPickler._create_array_wrapper = unaligned  # type: ignore[method-assign]
    try:
        p = tmp / "array.joblib"
        joblib.dump(np.frombuffer(PAYLOAD, dtype=np.uint8), p)
    finally:
        jnp.NumpyPickler._create_array_wrapper = original  # type: ignore[method-assign]
    return p


def padded_protocol0(tmp: Path) -> Path:
    p = tmp / "padded.pkl"
    p.write_bytes(b"N0" * 40_000 + PAYLOAD)
    return p


def padded_marks(tmp: Path) -> Path:
    p = tmp / "marks.pkl"
    p.write_bytes(b"(1" * 40_000 + PAYLOAD)
    return p


def padded_second_stream(tmp: Path) -> Path:
    p = tmp / "seq.pkl"
    p.write_bytes(pickle.dumps([1, 2]) + b"N0" * 40_000 + PAYLOAD)
    return p


def lzma_dictionary_byte(tmp: Path) -> Path:
    # joblib's lzma prefix is `5d 00`; a 6 KiB dictionary makes the third
    # byte non-zero.
    filters = [{"id": lzma.FILTER_LZMA1, "dict_size": 6144}]
    data = lzma.compress(PAYLOAD, format=lzma.FORMAT_ALONE, filters=filters)
    assert data[:3] == b"\x5d\x00\x18", data[:5]
    p = tmp / "dict.lzma"
    p.write_bytes(data)
    return p


def xz_concatenated(tmp: Path) -> Path:
    a, b = PAYLOAD[:20], PAYLOAD[20:]
    p = tmp / "two.xz"
    p.write_bytes(lzma.compress(b"N0" * 10 + a) + lzma.compress(b))
    return p


def lzma_then_xz(tmp: Path) -> Path:
    a, b = PAYLOAD[:20], PAYLOAD[20:]
    p = tmp / "mixed.lzma"
    p.write_bytes(lzma.compress(a, format=lzma.FORMAT_ALONE) + lzma.compress(b))
    return p


def bz2_concatenated(tmp: Path) -> Path:
    p = tmp / "two.bz2"
    p.write_bytes(bz2.compress(PAYLOAD[:20]) + bz2.compress(PAYLOAD[20:]))
    return p


def gzip_payload_then_garbage(tmp: Path) -> Path:
    # joblib runs the call, then fails on the bytes after it.
    p = tmp / "garbage.gz"
    p.write_bytes(gzip.compress(PAYLOAD[:-1] + b"\x00" + os.urandom(70_000)))
    return p


def _zfile(length_field: bytes) -> bytes:
    field = length_field.ljust(19, b" ")
    assert len(field) == 19
    return b"ZF" + field + b" " + zlib.compress(PAYLOAD)


def zfile_vertical_tab(tmp: Path) -> Path:
    p = tmp / "old.pkl"
    p.write_bytes(_zfile(b"\x0b0x%x" % len(PAYLOAD)))
    return p


def zfile_sign_and_underscore(tmp: Path) -> Path:
    p = tmp / "old2.pkl"
    p.write_bytes(_zfile(b"+0x_%x" % len(PAYLOAD)))
    return p


def _evil_torch_zip(tmp: Path, name: str = "evil.pt") -> Path:
    import torch

    p = tmp / name
    torch.save({"w": torch.zeros(2), "x": Evil()}, p)
    return p


def zip_end_signature_in_tail(tmp: Path) -> Path:
    # zipfile takes the last signature and finds no room for a record after
    # it; miniz (torch) skips it and reads the real archive.
    p = _evil_torch_zip(tmp, "tail.pt")
    p.write_bytes(p.read_bytes() + b"PK\x05\x06" + b"\0" * 10)
    return p


def torch_record_in_upper_case(tmp: Path) -> Path:
    src = _evil_torch_zip(tmp, "src.pt")
    p = tmp / "upper.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(p, "w") as zout:
        for info in zin.infolist():
            name = info.filename
            if name.endswith("data.pkl"):
                name = name.replace("data.pkl", "DATA.PKL")
            zout.writestr(name, zin.read(info.filename))
    return p


def _npy(descr: str, payload: bytes) -> bytes:
    header = "{'descr': " + descr + ", 'fortran_order': False, 'shape': (1,), }"
    header += " " * ((64 - (12 + len(header) + 1) % 64) % 64) + "\n"
    if len(header) < 0xFFFF:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + payload
    return b"\x93NUMPY\x02\x00" + struct.pack("<I", len(header)) + header.encode() + payload


def npy_string_dtype(tmp: Path) -> Path:
    # numpy 2's StringDType has hasobject set: read_array unpickles it.
    p = tmp / "strings.npy"
    p.write_bytes(_npy("'T'", PAYLOAD))
    return p


def npy_structured_string_field(tmp: Path) -> Path:
    p = tmp / "fields.npy"
    p.write_bytes(_npy("[('a', '<f8'), ('b', 'T')]", PAYLOAD))
    return p


def npy_object_subarray(tmp: Path) -> Path:
    p = tmp / "sub.npy"
    p.write_bytes(_npy("'(2,)O'", PAYLOAD))
    return p


def concatenated_torch_zips(tmp: Path) -> Path:
    import torch

    good, bad = io.BytesIO(), io.BytesIO()
    torch.save({"a": torch.ones(3)}, good)
    torch.save({"x": Evil()}, bad)
    p = tmp / "items.distcp"
    p.write_bytes(good.getvalue() + bad.getvalue())
    return p


def _dcp_offsets(path: Path) -> str:
    data = path.read_bytes()
    return ",".join(str(i) for i in _find_all(data, b"PK\x03\x04") if _starts_archive(data, i))


def _find_all(data: bytes, sig: bytes) -> list[int]:
    out, i = [], data.find(sig)
    while i >= 0:
        out.append(i)
        i = data.find(sig, i + 1)
    return out


def _starts_archive(data: bytes, i: int) -> bool:
    try:
        # torch's archives name their records `<root>/...`; an archive starts
        # at a local header whose name is a root's first record.
        (n,) = struct.unpack_from("<H", data, i + 26)
        return data[i + 30 : i + 30 + n].endswith(b"data.pkl")
    except struct.error:
        return False


def npz_named_like_torchscript(tmp: Path) -> Path:
    # A `constants.pkl` member makes it look like a TorchScript archive;
    # numpy.load still reads it as an npz and unpickles the object member.
    p = tmp / "arrays.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("constants.pkl", pickle.dumps(1))
        z.writestr("a.npy", _npy("'|O'", PAYLOAD))
    return p


def lz4_payload_in_a_later_frame(tmp: Path) -> Path:
    import lz4.frame

    skippable = struct.pack("<II", 0x184D2A5A, 3) + b"xyz"
    data = lz4.frame.compress(b"") + lz4.frame.compress(PAYLOAD[:20]) + skippable
    p = tmp / "frames.lz4"
    p.write_bytes(data + lz4.frame.compress(PAYLOAD[20:]))
    return p


@dataclass(frozen=True)
class Technique:
    name: str
    cls: str
    build: Callable[[Path], Path]
    loader: str
    # The import the scan must name (module.name), when it can see it.
    names: str | None = "builtins.exec"
    minimum: str = "dangerous"


TECHNIQUES = [
    Technique("tar_named_like_safetensors", "sniffing", tar_named_like_safetensors, "torch.load"),
    Technique("tar_named_like_npy", "sniffing", tar_named_like_npy, "torch.load"),
    Technique(
        "joblib_array_bytes_are_a_pickle",
        "sniffing",
        joblib_array_bytes_are_a_pickle,
        "pickle.load",
    ),
    Technique("padded_protocol0", "probe", padded_protocol0, "pickle.load"),
    Technique("padded_marks", "probe", padded_marks, "pickle.load"),
    Technique("padded_second_stream", "probe", padded_second_stream, "pickle.load_all"),
    Technique("lzma_dictionary_byte", "compressor", lzma_dictionary_byte, "joblib.load"),
    Technique("xz_concatenated", "compressor", xz_concatenated, "joblib.load"),
    Technique("lzma_then_xz", "compressor", lzma_then_xz, "joblib.load"),
    Technique("bz2_concatenated", "compressor", bz2_concatenated, "joblib.load"),
    Technique("gzip_payload_then_garbage", "compressor", gzip_payload_then_garbage, "joblib.load"),
    Technique("zfile_vertical_tab", "header", zfile_vertical_tab, "joblib.load"),
    Technique("zfile_sign_and_underscore", "header", zfile_sign_and_underscore, "joblib.load"),
    Technique("tar_checksum_with_separator", "header", tar_checksum_with_separator, "torch.load"),
    Technique("zip_end_signature_in_tail", "header", zip_end_signature_in_tail, "torch.load"),
    Technique("torch_record_in_upper_case", "header", torch_record_in_upper_case, "torch.load"),
    Technique("npy_string_dtype", "dtype", npy_string_dtype, "np.load"),
    Technique("npy_structured_string_field", "dtype", npy_structured_string_field, "np.load"),
    Technique("npy_object_subarray", "dtype", npy_object_subarray, "np.load"),
    Technique(
        "concatenated_torch_zips", "concatenated", concatenated_torch_zips, "torch.load@archives"
    ),
]


@pytest.mark.parametrize("t", TECHNIQUES, ids=lambda t: t.name)
def test_technique_fires_under_its_real_loader(t: Technique, tmp_path: Path) -> None:
    path = t.build(tmp_path)
    extra = [_dcp_offsets(path)] if t.loader == "torch.load@archives" else []
    assert fires(t.loader, path, tmp_path, *extra), f"{t.name}: {t.loader} did not run the payload"


@pytest.mark.parametrize("t", TECHNIQUES, ids=lambda t: t.name)
def test_technique_is_never_safe(t: Technique, tmp_path: Path) -> None:
    path = t.build(tmp_path)
    [r] = hermetic.scan(path)
    order = ["safe", "suspicious", "dangerous", "error"]
    assert order.index(r.verdict) >= order.index(t.minimum), (t.name, r)
    if t.names:
        named = {f.qualname for f in r.all_findings()}
        assert t.names in named, (t.name, sorted(named), r.format)


def test_benign_concatenated_archives_are_safe(tmp_path: Path) -> None:
    import torch

    parts = []
    for i in range(3):
        b = io.BytesIO()
        torch.save({"step": i, "w": torch.arange(4.0) + i}, b)
        parts.append(b.getvalue())
    p = tmp_path / "ok.distcp"
    p.write_bytes(b"".join(parts))
    [r] = hermetic.scan(p)
    assert r.verdict == "safe", r
    starts = sorted({s.name.split(":")[0] for s in r.streams})
    assert starts == ["@0", f"@{len(parts[0])}", f"@{len(parts[0]) + len(parts[1])}"], starts


def test_dcp_checkpoint_with_a_payload_in_a_bytes_item(tmp_path: Path) -> None:
    import torch
    import torch.distributed.checkpoint as dcp

    ckpt = tmp_path / "ckpt"
    dcp.save({"x": Evil(), "w": torch.ones(2)}, checkpoint_id=str(ckpt))
    assert fires("dcp.load", ckpt, tmp_path)
    results = {Path(r.path).name: r for r in hermetic.scan(ckpt)}
    distcp = [r for name, r in results.items() if name.endswith(".distcp")]
    assert distcp and all(r.verdict == "dangerous" for r in distcp), results
    assert any("builtins.exec" in {f.qualname for f in r.all_findings()} for r in distcp)


# ------------------------------------------------------------------ paths


def _scan_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hermetic", "scan", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_symlinks_are_followed_and_hub_snapshots_reported_once(tmp_path: Path) -> None:
    repo = tmp_path / "hub" / "models--org--name"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "0123abc"
    snap.mkdir(parents=True)
    (repo / "blobs" / "deadbeef").write_bytes(PAYLOAD)
    (snap / "pytorch_model.bin").symlink_to("../../blobs/deadbeef")
    out = _scan_cli("--format", "json", tmp_path / "hub")
    assert out.returncode == 1, out.stderr
    files = json.loads(out.stdout)["files"]
    assert [f["path"] for f in files] == [str(snap / "pytorch_model.bin")]
    assert files[0]["verdict"] == "dangerous"
    # Named on the command line, the symlink is scanned too.
    out = _scan_cli("--format", "json", snap / "pytorch_model.bin")
    assert json.loads(out.stdout)["files"][0]["verdict"] == "dangerous"


def test_fifos_loops_and_dangling_links_are_errors_never_clean(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    os.mkfifo(d / "model.pt")
    (d / "loop").symlink_to(".")
    (d / "gone.pt").symlink_to("missing.pt")
    out = _scan_cli("--format", "json", d)
    assert out.returncode == 3, (out.returncode, out.stdout, out.stderr)
    files = {Path(f["path"]).name: f for f in json.loads(out.stdout)["files"]}
    assert files["model.pt"]["verdict"] == "error"
    assert "FIFO" in files["model.pt"]["error"]
    assert files["gone.pt"]["verdict"] == "error"
    assert any("loop" in (f["error"] or "") for f in files.values()), files
    sarif = json.loads(_scan_cli("--format", "sarif", d).stdout)
    rules = {r["ruleId"] for r in sarif["runs"][0]["results"]}
    assert "scan_error" in rules
    assert sarif["runs"][0]["invocations"][0]["executionSuccessful"] is False
    assert {r.verdict for r in hermetic.scan(d)} == {"error"}
    # --fail-on never is the one way to pass errors.
    assert _scan_cli("--fail-on", "never", d).returncode == 0


def test_truncated_safetensors_is_not_clean(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    p = tmp_path / "w.safetensors"
    save_file({"w": torch.arange(64.0)}, str(p))
    [ok] = hermetic.scan(p, include_clean=True)
    assert ok.verdict == "safe"
    p.write_bytes(p.read_bytes()[:-10])
    [r] = hermetic.scan(p)
    assert r.verdict != "safe", r


# ----------------------------------------------------------------- bounds

BOUNDED = r"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
import hermetic
data = open(sys.argv[1], "rb").read()
r = hermetic.scan_bytes(data)
print(r.verdict)
"""


# The hostile shapes bench/bench_adversarial.py times; here only their bounds are checked.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from bench_adversarial import (  # noqa: E402
    long_npy_header,
    memo_doubling,
    nested_tuples_gzip,
)


@pytest.mark.parametrize(
    "make", [memo_doubling, nested_tuples_gzip, long_npy_header], ids=lambda f: f.__name__
)
def test_adversarial_shapes_stay_within_bounds(make: Callable[[], bytes], tmp_path: Path) -> None:
    p = tmp_path / "input"
    p.write_bytes(make())
    out = subprocess.run(
        [sys.executable, "-c", BOUNDED, str(p)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr[-2000:]


def test_no_command_blocks_on_a_fifo_or_reads_a_directory(tmp_path: Path) -> None:
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    for args in (["inspect", fifo], ["verify", fifo], ["convert", fifo, tmp_path / "out.st"]):
        out = subprocess.run(
            [sys.executable, "-m", "hermetic", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode != 0, args
        assert "not a regular file" in out.stderr + out.stdout, (args, out.stderr)
    code = (
        "import hermetic, sys\n"
        "for f in (hermetic.load, hermetic.torch.load, hermetic.load_pickle):\n"
        "    for p in sys.argv[1:]:\n"
        "        try:\n"
        "            f(p)\n"
        "        except Exception as e:\n"
        "            m = str(e)\n"
        "            ok = 'not a regular file' in m or (p == sys.argv[2] and 'index' in m)\n"
        "            assert ok and 'No such device' not in m, (f, p, e)\n"
        "        else:\n"
        "            raise SystemExit(f'{f} loaded {p}')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(fifo), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
