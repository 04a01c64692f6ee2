"""A differential fuzzer: `hermetic scan` against the real loaders.

The real loader is the specification (docs: /work/shared/CONVENTIONS.md, "Security
checks"). This fuzzer makes benign files with the real libraries, mutates them at the
container layer (zip records, .npy headers, compressor framing, tar headers, torch's
legacy stream sequence, safetensors headers, pickle opcode streams) while splicing in
the attack corpus' canary payloads, and then asks two questions of every mutant:

1. Does a real loader run code from it? Each of `pickle.load`, `pickle.load` until EOF,
   `torch.load(weights_only=False)`, `torch.load()` (weights_only by default),
   `joblib.load` and `numpy.load(allow_pickle=True)` opens the file in a forked child of
   a sandboxed loader server (own session, rlimits on memory, CPU and file size, a fresh
   temporary cwd, HOME and TMPDIR in the sandbox, no network where `unshare -rn` is
   available) with HERMETIC_CANARY naming a fresh path; the loader *fired* iff the
   canary file exists afterwards. This is the mechanism of tests/test_corpus_fires.py.
2. What does `hermetic scan --format json --fail-on never FILE` say about it?

A *failure* is a mutant some loader fired on while hermetic's verdict for the file is
`safe`, or the file is missing from the report. Failures are saved under `--out` (the
mutant, which loaders fired, hermetic's JSON, and a byte-minimized copy when that is
cheap). Weaker disagreements (a fired mutant scanned `suspicious` or `error`, a crash
or timeout of hermetic) are saved under `--out/soft`.

Run:  python tests/difffuzz.py --minutes 30 --seed 1 --hermetic target/release/hermetic \
          --out /tmp/difffuzz-out

The payloads are harmless: they create the canary file and do nothing else (they are
the builders of tests/fixtures/make_attacks.py, and its `pickle.load` attack files).
Random byte edits (havoc) run first, on the seed, before any payload is spliced in;
later layers only cut, prefix, wrap, compress or re-frame bytes. Havoc on an attack
corpus file can hit its payload (`touch "$HERMETIC_CANARY"`, or Python that opens the
canary path), which at worst breaks the command; the loaders run as child processes
with a temporary cwd and HOME, and without network where `unshare -rn` works.

`--replay DIR` re-runs the reproducers saved under DIR against a (fixed) scanner.
Mutants go to hermetic 16 at a time as FILE arguments of one process; a mutant that
fired and did not scan `dangerous` is scanned again alone, and that report is kept.

Not covered: a payload that fires later from a process it left running (the loader's
session is killed when the loader returns), and polyglots that cannot exist (a pickle
cannot start with the .npy magic: 0x93 is STACK_GLOBAL on an empty stack).
"""

from __future__ import annotations

import argparse
import ast
import bz2
import dataclasses
import importlib.util
import io
import json
import lzma
import os
import pickle
import pickletools
import random
import select
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
ATTACKS_DIR = FIXTURES / "attacks"
CANARY_ENV = "HERMETIC_CANARY"

# Every loader the oracle runs, in the order it runs them.
LOADERS = (
    "pickle.load",
    "pickle.load_all",
    "torch.load(weights_only=False)",
    "torch.load",
    "joblib.load",
    "numpy.load(allow_pickle=True)",
)

# Each loader runs in a server that imported only its own libraries: forking a
# process that holds torch costs ~50 ms, one that holds nothing ~2 ms.
SERVER_IMPORTS = {
    "pickle": (),
    "numpy": ("numpy",),
    "joblib": ("numpy", "joblib", "lz4.frame"),
    "torch": ("torch",),
}
LOADER_SERVER = {
    "pickle.load": "pickle",
    "pickle.load_all": "pickle",
    "torch.load(weights_only=False)": "torch",
    "torch.load": "torch",
    "joblib.load": "joblib",
    "numpy.load(allow_pickle=True)": "numpy",
}

LOADER_TIMEOUT_S = 5.0
LOADER_MEMORY = 2 << 30  # address space a loader child may add to the server's
LOADER_FILE_SIZE = 256 << 20
HERMETIC_TIMEOUT_S = 60.0
MAX_MUTANT_BYTES = 8 << 20
BATCH = 16  # mutants per `hermetic scan` process
DECOMPRESS_LIMIT = 16 << 20

# --------------------------------------------------------------------------
# The loader server. It runs as `python difffuzz.py --serve` with a sandbox
# environment, imports the libraries once, and forks a child per load.


def _load_with(loader: str, path: str) -> None:
    """Open `path` with one real loader. Runs only in a forked child of the server."""
    if loader == "pickle.load":
        with open(path, "rb") as f:
            pickle.load(f)
    elif loader == "pickle.load_all":
        with open(path, "rb") as f:
            for _ in range(100_000):
                try:
                    pickle.load(f)
                except EOFError:
                    break
    elif loader == "torch.load(weights_only=False)":
        import torch

        torch.load(path, weights_only=False)
    elif loader == "torch.load":
        import torch

        torch.load(path)
    elif loader == "joblib.load":
        import joblib

        joblib.load(path)
    elif loader == "numpy.load(allow_pickle=True)":
        import numpy as np

        loaded = np.load(path, allow_pickle=True)
        if hasattr(loaded, "files"):
            for key in loaded.files:
                loaded[key]
    else:
        raise ValueError(f"unknown loader {loader}")


def _vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def _child(req: dict[str, Any], address_space: int) -> None:
    """The forked child: isolate, limit, load, report, exit. Never returns."""
    import resource

    try:
        os.setsid()
        work = req["cwd"]
        os.chdir(work)
        log = os.open(os.path.join(work, "loader.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        cpu = int(req["timeout"]) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
        resource.setrlimit(resource.RLIMIT_FSIZE, (LOADER_FILE_SIZE, LOADER_FILE_SIZE))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.environ[CANARY_ENV] = req["canary"]
        os.environ["TMPDIR"] = work
        tempfile.tempdir = work
        outcome = "returned"
        try:
            import warnings

            warnings.simplefilter("ignore")
            _load_with(req["loader"], req["path"])
        except BaseException as exc:  # noqa: B036 - the loader may raise anything
            outcome = f"raised {type(exc).__name__}: {str(exc)[:300]}"
        with open(os.path.join(work, "outcome.txt"), "w") as f:
            f.write(outcome)
    finally:
        os._exit(0)


def _wait_child(pid: int, timeout: float) -> str:
    """Wait for a child with a timeout; kill its whole session afterwards."""
    status = "exited"
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = -1
    if fd >= 0:
        ready, _, _ = select.select([fd], [], [], timeout)
        os.close(fd)
        if not ready:
            status = "timeout"
    else:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.005)
        else:
            status = "timeout"
    # The child leads its own session: this ends it and anything it started.
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        _, code = os.waitpid(pid, 0)
        if status == "exited" and os.WIFSIGNALED(code):
            status = f"killed by signal {os.WTERMSIG(code)}"
    except ChildProcessError:
        pass
    return status


def serve(group: str) -> None:
    """The loader server's main loop: one JSON request per line, one reply per line."""
    available: dict[str, bool] = {}
    for module in SERVER_IMPORTS[group]:
        try:
            importlib.import_module(module)
            available[module] = True
        except ImportError:
            available[module] = False
    address_space = _vm_size() + LOADER_MEMORY
    out = sys.stdout
    out.write(json.dumps({"ready": True, "available": available}) + "\n")
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        out.flush()
        pid = os.fork()
        if pid == 0:
            _child(req, address_space)
        status = _wait_child(pid, float(req["timeout"]))
        outcome_file = Path(req["cwd"]) / "outcome.txt"
        outcome = outcome_file.read_text() if outcome_file.exists() else status
        reply = {"status": status, "outcome": outcome, "fired": os.path.exists(req["canary"])}
        out.write(json.dumps(reply) + "\n")
        out.flush()


def _unshare_prefix() -> list[str]:
    """`unshare -rn` (a user and network namespace: no network) where it works."""
    exe = shutil.which("unshare")
    if not exe:
        return []
    try:
        ok = subprocess.run([exe, "-rn", "true"], capture_output=True, timeout=10).returncode
    except (OSError, subprocess.SubprocessError):
        return []
    return [exe, "-rn"] if ok == 0 else []


class LoaderServer:
    """The fuzzer's handle on the sandboxed loader server."""

    def __init__(self, sandbox: Path, group: str, python: str = sys.executable) -> None:
        self.sandbox = sandbox
        self.group = group
        self.python = python
        self.home = sandbox / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.isolation = _unshare_prefix()
        self.proc: subprocess.Popen[str] | None = None
        self.available: dict[str, bool] = {}
        self.start()

    def _env(self) -> dict[str, str]:
        keep = ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV")
        env = {k: os.environ[k] for k in keep if k in os.environ}
        env.update(
            HOME=str(self.home),
            TMPDIR=str(self.sandbox),
            PYTHONDONTWRITEBYTECODE="1",
            PYTHONHASHSEED="0",
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            TORCH_HOME=str(self.home / "torch"),
            no_proxy="*",
            http_proxy="http://127.0.0.1:9",
            https_proxy="http://127.0.0.1:9",
        )
        return env

    def start(self) -> None:
        here = str(Path(__file__).resolve())
        cmd = [*self.isolation, self.python, here, "--serve", self.group]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=self.sandbox,
            env=self._env(),
            text=True,
            bufsize=1,
        )
        hello = self._read(300.0)
        if hello is None or not hello.get("ready"):
            raise RuntimeError("the loader server did not start")
        self.available = hello["available"]

    def _read(self, timeout: float) -> dict[str, Any] | None:
        assert self.proc and self.proc.stdout
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        return json.loads(line) if line else None

    def load(self, loader: str, path: Path, canary: Path, cwd: Path) -> dict[str, Any]:
        assert self.proc and self.proc.stdin
        req = {
            "loader": loader,
            "path": str(path),
            "canary": str(canary),
            "cwd": str(cwd),
            "timeout": LOADER_TIMEOUT_S,
        }
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            reply = self._read(LOADER_TIMEOUT_S + 30.0)
        except (BrokenPipeError, OSError, ValueError):
            reply = None
        if reply is None:  # the server died or hung: start a new one
            self.close()
            self.start()
            return {"status": "server lost", "outcome": "", "fired": canary.exists()}
        return reply

    def close(self) -> None:
        if self.proc is None:
            return
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.SubprocessError):
            self.proc.kill()
            self.proc.wait()
        self.proc = None


# --------------------------------------------------------------------------
# hermetic


@dataclass
class ScanResult:
    verdict: str | None  # the file's verdict; None when the file is not in the report
    format: str | None
    report: dict[str, Any] | None  # None when hermetic gave no parseable report
    rc: int
    problem: str | None  # crash, timeout or unreadable output
    stderr: str = ""


def hermetic_command(spec: str | None) -> list[str]:
    """The hermetic command: `spec` split like a shell line, else `hermetic` on PATH,
    else this Python's `-m hermetic` (the way the test suite calls it)."""
    if spec:
        return shlex.split(spec)
    found = shutil.which("hermetic")
    return [found] if found else [sys.executable, "-m", "hermetic"]


def scan(cmd: list[str], path: Path, cwd: Path) -> ScanResult:
    args = [*cmd, "scan", "--format", "json", "--fail-on", "never", str(path)]
    try:
        proc = subprocess.run(
            args, capture_output=True, timeout=HERMETIC_TIMEOUT_S, cwd=cwd, check=False
        )
    except subprocess.TimeoutExpired:
        return ScanResult(None, None, None, -1, f"timeout after {HERMETIC_TIMEOUT_S} s")
    stderr = proc.stderr.decode(errors="replace")[-2000:]
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        why = f"exit {proc.returncode}, no JSON report"
        return ScanResult(None, None, None, proc.returncode, why, stderr)
    problem = None if proc.returncode in (0, 3) else f"exit {proc.returncode}"
    want = os.path.realpath(path)
    for entry in doc.get("files", []):
        if os.path.realpath(str(entry.get("path", ""))) == want:
            return ScanResult(
                entry.get("verdict"), entry.get("format"), doc, proc.returncode, problem, stderr
            )
    return ScanResult(None, None, doc, proc.returncode, problem, stderr)


def scan_many(cmd: list[str], paths: list[Path], cwd: Path) -> dict[Path, ScanResult] | None:
    """One `hermetic scan` over several files; None when it gave no usable report."""
    args = [*cmd, "scan", "--format", "json", "--fail-on", "never", *map(str, paths)]
    try:
        proc = subprocess.run(
            args, capture_output=True, timeout=HERMETIC_TIMEOUT_S * 4, cwd=cwd, check=False
        )
        doc = json.loads(proc.stdout)
    except (subprocess.TimeoutExpired, ValueError):
        return None
    if proc.returncode not in (0, 3):
        return None
    entries = {os.path.realpath(str(e.get("path", ""))): e for e in doc.get("files", [])}
    out = {}
    for path in paths:
        entry = entries.get(os.path.realpath(path))
        report = {"files": [entry] if entry else [], "summary": doc.get("summary")}
        verdict = entry.get("verdict") if entry else None
        fmt = entry.get("format") if entry else None
        out[path] = ScanResult(verdict, fmt, report, proc.returncode, None)
    return out


# --------------------------------------------------------------------------
# Payloads: the attack corpus' builders and its pickle.load attack files.


@dataclass(frozen=True)
class Payload:
    name: str
    data: bytes


def make_attacks() -> ModuleType:
    """tests/fixtures/make_attacks.py as a module (its builders, not its output)."""
    name = "make_attacks"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, FIXTURES / "make_attacks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def full_payloads() -> list[Payload]:
    """Complete malicious pickles (PROTO .. STOP) that fire under plain pickle.load."""
    ma = make_attacks()
    out = [
        Payload("os_system_p0", ma.os_system_p0()),
        Payload("posix_system_p2", ma.posix_system_p2()),
        Payload(
            "builtins_exec_p4",
            ma.p(4, ma.sg("builtins", "exec"), ma.su(ma.PYSRC), pickle.TUPLE1, pickle.REDUCE),
        ),
    ]
    expected = json.loads((ATTACKS_DIR / "EXPECTED.json").read_text())
    for name, meta in sorted(expected.items()):
        if meta["loader"] == "pickle.load" and name.endswith(".pkl"):
            out.append(Payload(name.removesuffix(".pkl"), (ATTACKS_DIR / name).read_bytes()))
    return out


def fragments() -> list[Payload]:
    """Stack-neutral payload opcodes (no PROTO, no STOP) to splice into a stream."""
    ma = make_attacks()
    pop = pickle.POP
    import_os = ma.call(ma.g("builtins", "__import__"), ma.u("os"))
    return [
        Payload("posix_system", ma.splice_payload()),
        Payload("os_system_p0", ma.call(ma.g("os", "system"), ma.s0(ma.SHELL)) + pop),
        Payload("exec_stack_global", ma.call(ma.sg("builtins", "exec"), ma.su(ma.PYSRC)) + pop),
        Payload("eval_global", ma.call(ma.g("builtins", "eval"), ma.u(ma.PYSRC)) + pop),
        Payload(
            "getattr_import_os",
            ma.call(ma.call(ma.g("builtins", "getattr"), import_os, ma.u("system")), ma.u(ma.SHELL))
            + pop,
        ),
    ]


# --------------------------------------------------------------------------
# Seeds: real files from the real libraries, plus the attack corpus.


@dataclass(frozen=True)
class Seed:
    name: str  # a file name; its extension is the mutant's default extension
    data: bytes


def _suffix(name: str) -> str:
    """Everything from the first dot, e.g. '.joblib.gz'."""
    return name[name.index(".") :] if "." in name else ""


def fixed_serialization_id(data: bytes) -> bytes:
    """torch writes a random `.data/serialization_id`; overwrite it in place (same
    length, CRC-32 fixed in both headers) so that seeds are the same every run."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        infos = [i for i in z.infolist() if i.filename.endswith(".data/serialization_id")]
        if not infos:
            return data
        info = infos[0]
        old = z.read(info)
    if info.compress_type != zipfile.ZIP_STORED:
        return data
    new = b"0" * len(old)
    out = bytearray(data)
    local = info.header_offset
    name_len, extra_len = struct.unpack_from("<HH", out, local + 26)
    start = local + 30 + name_len + extra_len
    assert out[start : start + len(old)] == old
    out[start : start + len(old)] = new
    old_crc, new_crc = struct.pack("<I", info.CRC), struct.pack("<I", zlib.crc32(new))
    if out[local + 14 : local + 18] == old_crc:
        out[local + 14 : local + 18] = new_crc
    end = start + len(old)
    if info.flag_bits & 8:  # a data descriptor after the data, signature optional
        at = end + 4 if out[end : end + 4] == b"PK\x07\x08" else end
        if out[at : at + 4] == old_crc:
            out[at : at + 4] = new_crc
    central = out.find(b"PK\x01\x02" + bytes(out[local + 4 : local + 6]))
    while central >= 0:
        (offset,) = struct.unpack_from("<I", out, central + 42)
        if offset == local:
            out[central + 16 : central + 20] = new_crc
            break
        central = out.find(b"PK\x01\x02", central + 4)
    return bytes(out)


def make_seeds(include_attacks: bool = True) -> list[Seed]:
    """Benign files written by torch, numpy, joblib, pickle and safetensors now."""
    import joblib
    import numpy as np
    import torch
    from safetensors.numpy import save as st_save

    torch.manual_seed(0)
    state = {"fc.weight": torch.randn(3, 2), "fc.bias": torch.zeros(3)}
    seeds: list[Seed] = []

    def torch_bytes(obj: object, **kw: Any) -> bytes:
        buf = io.BytesIO()
        torch.save(obj, buf, **kw)
        return buf.getvalue()

    seeds.append(Seed("torch_zip.pt", fixed_serialization_id(torch_bytes(state))))
    # make_attacks' legacy host: torch.save(..., _use_new_zipfile_serialization=False)
    # with its storage key (a memory address) renamed, so the bytes are reproducible.
    seeds.append(Seed("torch_legacy.pt", make_attacks().torch_legacy_host()))

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.fc(x)
            return out

    jit = io.BytesIO()
    torch.jit.save(torch.jit.script(Tiny()), jit)
    seeds.append(Seed("torch_jit.pt", fixed_serialization_id(jit.getvalue())))

    def npy(arr: Any) -> bytes:
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=True)
        return buf.getvalue()

    obj = np.empty(3, dtype=object)
    obj[:] = ["label", {"classes": [0, 1]}, (1.5, None)]
    structured = np.zeros(2, dtype=[("a", "<f4"), ("b", "<i8", (2,))])
    seeds.append(Seed("np_numeric.npy", npy(np.arange(6, dtype=np.float32).reshape(2, 3))))
    seeds.append(Seed("np_object.npy", npy(obj)))
    seeds.append(Seed("np_structured.npy", npy(structured)))
    for name, saver in (("np_bundle.npz", np.savez), ("np_compressed.npz", np.savez_compressed)):
        buf = io.BytesIO()
        saver(buf, weights=np.arange(4, dtype=np.float64), labels=obj)
        seeds.append(Seed(name, buf.getvalue()))

    labels = np.empty(2, dtype=object)
    labels[:] = ["a", {"b": 1}]
    victim = {"coef": np.arange(6, dtype=np.float64).reshape(2, 3), "labels": labels}
    compressors: list[tuple[str, Any]] = [("joblib", 0)]
    compressors += [(f"joblib.{c}", (c, 3)) for c in ("zlib", "gzip", "bz2", "xz", "lzma")]
    try:
        import lz4  # noqa: F401 - joblib's lz4 compressor needs it

        compressors.append(("joblib.lz4", ("lz4", 3)))
    except ImportError:
        pass
    for ext, compress in compressors:
        buf = io.BytesIO()
        joblib.dump(victim, buf, compress=compress)
        seeds.append(Seed(f"dump.{ext}", buf.getvalue()))

    value = {"a": [1, 2.5, "x"], "b": b"bytes", "c": (None, True), "d": {"e": -7}}
    for protocol in range(6):
        seeds.append(Seed(f"data_p{protocol}.pkl", pickle.dumps(value, protocol=protocol)))
    seeds.append(Seed("arrays_p4.pkl", pickle.dumps({"w": np.ones(3)}, protocol=4)))

    tensors: dict[str, Any] = {
        "w": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": np.zeros(2, np.int64),
    }
    seeds.append(Seed("model.safetensors", st_save(tensors, metadata={"format": "np"})))

    if include_attacks:
        for path in sorted(ATTACKS_DIR.iterdir()):
            if path.name.endswith(".json") or not path.is_file():
                continue
            if path.stat().st_size > (1 << 20):  # the bz2 bomb: its point is its size
                continue
            seeds.append(Seed("attack_" + path.name, path.read_bytes()))
    return seeds


# --------------------------------------------------------------------------
# Format helpers. Nothing here unpickles anything: pickles are walked with
# pickletools.genops, which only decodes opcodes.


def op_positions(data: bytes, start: int = 0) -> tuple[list[int], int | None]:
    """Opcode offsets of the pickle stream at `start`, and the offset after its STOP
    (None when the stream does not parse to a STOP)."""
    f = io.BytesIO(data)
    f.seek(start)
    positions: list[int] = []
    try:
        for op, _arg, pos in pickletools.genops(f):
            positions.append(int(pos or 0))
            if op.name == "STOP":
                return positions, f.tell()
    except Exception:
        pass
    return positions, None


def stream_spans(data: bytes, limit: int = 8) -> list[tuple[int, int]]:
    """Consecutive pickle streams from offset 0 (torch's legacy layout, load_all)."""
    spans: list[tuple[int, int]] = []
    at = 0
    while len(spans) < limit and at < len(data):
        _, end = op_positions(data, at)
        if end is None:
            break
        spans.append((at, end))
        at = end
    return spans


def splice_into_stream(data: bytes, start: int, frag: bytes, rng: random.Random) -> bytes | None:
    """Insert `frag` at an opcode boundary of the stream at `start` (never after STOP)."""
    positions, end = op_positions(data, start)
    if not positions:
        return None
    if end is not None:
        positions = positions[:-1] + [positions[-1]]  # before STOP is the last choice
    choices = positions[1:] if data[start : start + 1] == pickle.PROTO else positions
    if not choices:
        choices = positions
    if rng.random() < 0.5:
        at = choices[0]  # right after PROTO: the host still loads afterwards
    else:
        at = rng.choice(choices)
    return data[:at] + frag + data[at:]


def looks_like_pickle(data: bytes) -> bool:
    return (
        data[:1] == pickle.PROTO
        and len(data) > 1
        and data[1] <= 5
        or data[:1]
        in (
            b"(",
            b"c",
            b"}",
            b"]",
            b"N",
            b"I",
            b"S",
            b"V",
        )
    )


# zip


@dataclass
class ZEntry:
    name: str
    data: bytes  # uncompressed
    method: int = 0  # 0 stored, 8 deflated; anything else is written as the method code
    flags: int = 0
    crc: int | None = None
    local_name: str | None = None
    extra: bytes = b""
    prefix: bytes = b""  # raw bytes before the local header
    in_central: bool = True
    local_sizes: tuple[int, int] | None = None  # sizes in the local header, if not the real


def _deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


@dataclass
class ZRecord:
    """A written local entry, as a central directory record will describe it."""

    entry: ZEntry
    offset: int
    crc: int
    csize: int
    usize: int


def write_locals(entries: list[ZEntry], out: bytearray) -> list[ZRecord]:
    records = []
    for e in entries:
        out += e.prefix
        body = _deflate(e.data) if e.method == 8 else e.data
        crc = zlib.crc32(e.data) if e.crc is None else e.crc
        local = (e.local_name if e.local_name is not None else e.name).encode()
        csize, usize = e.local_sizes if e.local_sizes else (len(body), len(e.data))
        offset = len(out)
        out += struct.pack(
            "<IHHHHHIIIHH",
            0x04034B50,
            20,
            e.flags,
            e.method,
            0,
            0x21,
            crc,
            csize,
            usize,
            len(local),
            len(e.extra),
        )
        out += local + e.extra + body
        records.append(ZRecord(e, offset, crc, len(body), len(e.data)))
    return records


def central_directory(records: list[ZRecord]) -> tuple[bytes, int]:
    central = bytearray()
    count = 0
    for r in records:
        e = r.entry
        if not e.in_central:
            continue
        name = e.name.encode()
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            20,
            20,
            e.flags,
            e.method,
            0,
            0x21,
            r.crc,
            r.csize,
            r.usize,
            len(name),
            0,
            0,
            0,
            0,
            0,
            r.offset,
        )
        central += name
        count += 1
    return bytes(central), count


def eocd(count: int, cd_size: int, cd_offset: int, comment: bytes = b"") -> bytes:
    head = struct.pack(
        "<IHHHHIIH", 0x06054B50, 0, 0, count, count, cd_size, cd_offset, len(comment)
    )
    return head + comment


def build_zip(entries: list[ZEntry], comment: bytes = b"", eocd_tweak: int = 0) -> bytes:
    """A zip written field by field (the same layout as make_attacks.build_zip, with
    flags, methods, sizes, extra fields and the archive comment under control)."""
    out = bytearray()
    records = write_locals(entries, out)
    central, count = central_directory(records)
    cd_offset = len(out) + eocd_tweak
    return bytes(out + central + eocd(count, len(central), cd_offset, comment))


def build_zip_two_directories(
    shared: list[ZEntry], benign: ZEntry, evil: ZEntry, how: str
) -> bytes:
    """One zip, two central directories: one lists the benign pickle member, the other
    the malicious one, both the shared members. `how` says how the second directory
    is reached: 'comment' (an EOCD inside the first EOCD's comment; readers that
    search backwards for the signature find it first) or 'zip64' (a zip64 end record
    and locator before the classic EOCD)."""
    out = bytearray()
    recs = write_locals([*shared, benign, evil], out)
    shared_recs, benign_rec, evil_rec = recs[:-2], recs[-2], recs[-1]
    cd_a, n_a = central_directory([*shared_recs, evil_rec])
    cd_b, n_b = central_directory([*shared_recs, benign_rec])
    if how.startswith("comment"):
        # zipfile takes the last EOCD signature in the tail and expects the central
        # directory right before it, so the second directory goes in the comment too.
        if how == "comment_swapped":
            cd_a, n_a, cd_b, n_b = cd_b, n_b, cd_a, n_a
        at_b = len(out)
        out += cd_b
        at_a = len(out) + 22
        inner = cd_a + eocd(n_a, len(cd_a), at_a)
        return bytes(out + eocd(n_b, len(cd_b), at_b, inner))
    at_b = len(out)
    out += cd_b
    at_a = len(out)
    out += cd_a
    z64_at = len(out)
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n_a, n_a, len(cd_a), at_a)
    out += struct.pack("<IIQI", 0x07064B50, 0, z64_at, 1)
    if how == "zip64_proper":  # the classic record defers to the zip64 one
        return bytes(
            out
            + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
        )
    return bytes(out + eocd(n_b, len(cd_b), at_b))


def zip_members(data: bytes) -> list[tuple[str, bytes]] | None:
    """The members Python's zipfile reads from `data` (None if it is not a zip)."""
    if data[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return [(info.filename, z.read(info)) for info in z.infolist()]
    except Exception:
        return None


def pickle_member(members: list[tuple[str, bytes]], rng: random.Random) -> int | None:
    """Index of the member a loader unpickles: data.pkl first, then other .pkl, .npy."""
    ranked = [i for i, (n, _) in enumerate(members) if n.endswith("data.pkl")]
    ranked += [i for i, (n, d) in enumerate(members) if n.endswith(".pkl") and i not in ranked]
    ranked += [i for i, (_, d) in enumerate(members) if d[:6] == b"\x93NUMPY"]
    if not ranked:
        return None
    return ranked[0] if rng.random() < 0.7 else rng.choice(ranked)


# npy

NPY_MAGIC = b"\x93NUMPY"


def npy_split(data: bytes) -> tuple[tuple[int, int], str, int] | None:
    """(version, header text, offset of the array data) of an .npy file."""
    if not data.startswith(NPY_MAGIC) or len(data) < 10:
        return None
    version = (data[6], data[7])
    if version == (1, 0):
        (n,) = struct.unpack_from("<H", data, 8)
        start = 10
    else:
        if len(data) < 12:
            return None
        (n,) = struct.unpack_from("<I", data, 8)
        start = 12
    enc = "utf8" if version >= (3, 0) else "latin1"
    try:
        header = data[start : start + n].decode(enc)
    except UnicodeDecodeError:
        return None
    return version, header, start + n


def npy_build(
    header: str, body: bytes, version: tuple[int, int] = (1, 0), pad: bool = True
) -> bytes:
    raw = header.encode("utf8" if version >= (3, 0) else "latin1")
    pre = 10 if version == (1, 0) else 12
    if pad:
        total = pre + len(raw) + 1
        raw += b" " * ((64 - total % 64) % 64) + b"\n"
    length = struct.pack("<H", len(raw)) if version == (1, 0) else struct.pack("<I", len(raw))
    if version == (1, 0) and len(raw) > 0xFFFF:
        return b""
    return NPY_MAGIC + bytes(version) + length + raw + body


# Python-literal descr strings with an object field somewhere; filtered at run
# time by numpy's own descr_to_dtype (whatever does not give hasobject is dropped).
OBJECT_DESCRS = (
    "'|O'",
    "'O'",
    "'<O'",
    "'>O'",
    "'=O'",
    "'O8'",
    "'|O8'",
    "'object'",
    "'object_'",
    "'T'",
    "'O,i4'",
    "'<i4,O'",
    "'(2,)O'",
    "'2O'",
    "'|' 'O'",
    "'\\x4f'",
    "'\\u004f'",
    "'\\N{LATIN CAPITAL LETTER O}'",
    "u'O'",
    "('O')",
    '"|O"',
    "('|O', (2,))",
    "('|O', ())",
    "('<f4', [('x', '|O')])",
    "[('a', '<f4'), ('b', '|O')]",
    "[('b', '|O', (2,))]",
    "[('a', [('b', '|O')])]",
    "[(('title', 'a'), '|O')]",
    "[('', '|O')]",
    "[('a', '<i4'), ('', '|V4'), ('b', '|O')]",
    "[('a', '<U1'), ('b', 'O')]",
    "[['a', '|O']]",
    "(('|O', (1,)))",
    "'V8,O'",
)
BENIGN_DESCRS = ("'<f4'", "'|u1'", "[('a', '<f4')]", "'<U3'", "'|V8'")


def object_descrs() -> list[str]:
    import numpy as np

    read = getattr(np.lib.format, "descr_to_dtype")  # noqa: B009 - public in numpy's docs
    good: list[str] = []
    import warnings

    for src in OBJECT_DESCRS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if read(ast.literal_eval(src)).hasobject:
                    good.append(src)
        except Exception:
            pass
    return good


def npy_header(descr: str, shape: str, rng: random.Random) -> str:
    """A header dict literal in one of the spellings numpy's literal_eval accepts."""
    fortran = rng.choice(["False", "False", "True"])
    items = [("'descr'", descr), ("'fortran_order'", fortran), ("'shape'", shape)]
    style = rng.randrange(10)
    if style == 1:
        items = [(k.replace("'", '"'), v) for k, v in items]
    elif style == 2:
        rng.shuffle(items)
    elif style == 3:  # duplicate key: the last one wins in a dict display
        first = rng.choice(BENIGN_DESCRS)
        items = [("'descr'", first), *items]
    elif style == 4:
        items = [("'de' 'scr'", descr), *items[1:]]
    elif style == 5:
        items = [("'\\x64escr'", descr), *items[1:]]
    body = ", ".join(f"{k}: {v}" for k, v in items)
    if style == 6:
        return "{" + body.replace(", ", ",  # note\n ", 1) + "}"
    if style == 7:
        return "{" + body + ", }"
    if style == 8:
        return "(\n{" + body + "}\n)"
    if style == 9:
        return "{" + body + "} # trailing comment"
    return "{" + body + ", }"


SHAPES = ("(2,)", "()", "(0,)", "(1,)", "(2, 3)", "(3,)", "(1 ,)", "(2L,)", "(True,)")


# compression


def detect_compression(data: bytes) -> str | None:
    """joblib's sniffing order (joblib/numpy_pickle_utils.py _detect_compressor)."""
    if data.startswith(b"ZF"):
        return "compat"
    for name, prefix in (
        ("zlib", b"\x78"),
        ("gzip", b"\x1f\x8b"),
        ("bz2", b"BZ"),
        ("xz", b"\xfd\x37\x7a\x58\x5a"),
        ("lzma", b"\x5d\x00"),
        ("lz4", b"\x04\x22\x4d\x18"),
    ):
        if data.startswith(prefix):
            return name
    return None


def decompress(kind: str, data: bytes) -> bytes | None:
    try:
        if kind == "zlib":
            return zlib.decompressobj().decompress(data, DECOMPRESS_LIMIT)
        if kind == "gzip":
            return zlib.decompressobj(31).decompress(data, DECOMPRESS_LIMIT)
        if kind == "bz2":
            return bz2.BZ2Decompressor().decompress(data, DECOMPRESS_LIMIT)
        if kind in ("xz", "lzma"):
            return lzma.LZMADecompressor().decompress(data, DECOMPRESS_LIMIT)
        if kind == "lz4":
            import lz4.frame

            return bytes(lz4.frame.LZ4FrameDecompressor().decompress(data, DECOMPRESS_LIMIT))
        if kind == "compat":
            return zlib.decompressobj().decompress(data[21:], DECOMPRESS_LIMIT)
    except Exception:
        return None
    return None


def compress(kind: str, data: bytes, rng: random.Random) -> bytes:
    """One stream of `kind` with randomized but valid settings."""
    if kind == "zlib":
        return zlib.compress(data, rng.choice([0, 1, 3, 6, 9]))
    if kind == "gzip":
        return gzip_member(data, rng)
    if kind == "bz2":
        return bz2.compress(data, rng.randint(1, 9))
    if kind == "xz":
        filters: list[dict[str, Any]] = [{"id": lzma.FILTER_LZMA2, "preset": rng.randint(0, 9)}]
        pick = rng.random()
        if pick < 0.2:
            filters.insert(0, {"id": lzma.FILTER_DELTA, "dist": rng.randint(1, 8)})
        elif pick < 0.35:
            filters.insert(0, {"id": rng.choice([lzma.FILTER_X86, lzma.FILTER_ARM])})
        check = rng.choice([lzma.CHECK_NONE, lzma.CHECK_CRC32, lzma.CHECK_CRC64, lzma.CHECK_SHA256])
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=check, filters=filters)
    if kind == "lzma":
        out = lzma.compress(data, format=lzma.FORMAT_ALONE, preset=rng.randint(0, 9))
        if rng.random() < 0.5:  # the alone header's uncompressed size: known or -1
            size = len(data) if rng.random() < 0.7 else rng.randint(0, len(data))
            out = out[:5] + struct.pack("<q", size) + out[13:]
        return out
    if kind == "lz4":
        import lz4.frame

        return bytes(
            lz4.frame.compress(
                data,
                compression_level=rng.choice([0, 3, 9, 16]),
                block_size=rng.choice([lz4.frame.BLOCKSIZE_MAX64KB, lz4.frame.BLOCKSIZE_MAX4MB]),
                block_linked=rng.random() < 0.5,
                content_checksum=rng.random() < 0.5,
                store_size=rng.random() < 0.5,
            )
        )
    if kind == "compat":
        body = zlib.compress(data)
        return b"ZF" + f"0x{len(data):x}".ljust(19).encode() + body
    raise ValueError(kind)


def gzip_member(data: bytes, rng: random.Random) -> bytes:
    """A gzip member with random optional header fields (RFC 1952)."""
    flags = 0
    extra = b""
    if rng.random() < 0.3:
        flags |= 4
        field_data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 12)))
        extra += struct.pack("<H", len(field_data)) + field_data
    if rng.random() < 0.3:
        flags |= 8
        extra += b"model.pkl\x00"
    if rng.random() < 0.3:
        flags |= 16
        extra += b"a comment\x00"
    header = struct.pack("<BBBBIBB", 0x1F, 0x8B, 8, flags, rng.randrange(1 << 32), 0, 255) + extra
    if rng.random() < 0.2:
        flags |= 2
        header = header[:3] + bytes([flags]) + header[4:]
        header += struct.pack("<H", zlib.crc32(header) & 0xFFFF)
    body = zlib.compressobj(rng.choice([0, 1, 6, 9]), zlib.DEFLATED, -15)
    raw = body.compress(data) + body.flush()
    return header + raw + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


# tar


def build_tar(members: list[tuple[str, bytes]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tar_members(data: bytes) -> list[tuple[str, bytes]] | None:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            out = []
            for info in tar.getmembers():
                f = tar.extractfile(info)
                out.append((info.name, f.read() if f else b""))
            return out
    except Exception:
        return None


# --------------------------------------------------------------------------
# Mutators. Each takes the host bytes and a context and returns a mutant, or
# None where it does not apply. Payload bytes are never mutated.


@dataclass
class Ctx:
    rng: random.Random
    full: list[Payload]
    frags: list[Payload]
    descrs: list[str]
    notes: list[str] = field(default_factory=list)

    def payload(self) -> bytes:
        p = self.rng.choice(self.full)
        self.notes.append(f"payload={p.name}")
        return p.data

    def frag(self) -> bytes:
        p = self.rng.choice(self.frags)
        self.notes.append(f"fragment={p.name}")
        return p.data

    def small_payload(self) -> bytes:
        """A protocol-0 payload with no NUL byte (for text fields of headers)."""
        ma = make_attacks()
        self.notes.append("payload=os_system_p0")
        data: bytes = ma.os_system_p0()
        return data


Mutator = Callable[[bytes, Ctx], "bytes | None"]
MUTATORS: dict[str, Mutator] = {}


def mutator(fn: Mutator) -> Mutator:
    MUTATORS[fn.__name__.removeprefix("m_")] = fn
    return fn


# Balanced pairs, then units that leave marks, values or memo entries behind.
PADS = (
    b"N0",
    b"(0",
    b"(1",
    b"}0",
    b"]0",
    b")0",
    b"\x88\x30",
    b"K\x000",
    b"\x80\x02",
    b"(",
    b"N",
    b"]",
    b"N\x94",
)


def padding(ctx: Ctx) -> bytes:
    unit = ctx.rng.choice(PADS)
    count = ctx.rng.choice([1, 16, 1000, 100_000, 300_000, 2_000_000])
    ctx.notes.append(f"pad={unit!r}x{count}")
    return unit * count


@mutator
def m_prepend(data: bytes, ctx: Ctx) -> bytes:
    return ctx.payload() + data


@mutator
def m_append(data: bytes, ctx: Ctx) -> bytes:
    return data + ctx.payload()


@mutator
def m_pad_then_payload(data: bytes, ctx: Ctx) -> bytes:
    """Harmless opcodes (many of them) before a payload, in front of the host."""
    head = b""
    if ctx.rng.random() < 0.5:
        head = pickle.PROTO + bytes([ctx.rng.randint(0, 5)])
    payload = ctx.payload()
    if payload[:1] == pickle.PROTO:
        payload = payload[2:]
    body = head + padding(ctx) + payload
    return body + (data if ctx.rng.random() < 0.5 else b"")


# Harmless opcode groups (each leaves the stack as it found it), for prologues in
# front of a payload: a scanner that decides "is this a pickle?" from the first
# bytes must accept every opcode the unpickler accepts.
HARMLESS = (
    b"N0",
    b"\x880",
    b"\x890",
    b"I1\n0",
    b"I01\n0",
    b"F1.5\n0",
    b"L7L\n0",
    b"S'a'\n0",
    b"Vabc\n0",
    b"X\x01\x00\x00\x00a0",
    b"\x8c\x01a0",
    b"U\x01a0",
    b"T\x01\x00\x00\x00a0",
    b"B\x01\x00\x00\x00a0",
    b"C\x01a0",
    b"K\x010",
    b"M\x01\x000",
    b"J\x01\x00\x00\x000",
    b"G?\xf0\x00\x00\x00\x00\x00\x000",
    b"\x8a\x01\x010",
    b"\x8b\x01\x00\x00\x00\x010",
    b")0",
    b"]0",
    b"}0",
    b"\x8f0",
    b"(t0",
    b"(l0",
    b"(d0",
    b"(\x910",
    b"(0",
    b"(1",
    b"N\x85\x850",
    b"NN\x860",
    b"NNN\x870",
    b"N\x940",
    b"Np0\n0",
    b"Nq\x000",
    b"Nr\x00\x00\x00\x000",
    b"\x80\x02",
    b"\x80\x05",
    b"\x95\x00\x00\x00\x00\x00\x00\x00\x00",
)


def prologue(ctx: Ctx) -> bytes:
    items = [ctx.rng.choice(HARMLESS) for _ in range(ctx.rng.choice([1, 2, 5, 30]))]
    ctx.notes.append(f"prologue={b''.join(items[:4])!r}...x{len(items)}")
    return b"".join(items)


def bare(payload: bytes) -> bytes:
    """A payload without its leading PROTO."""
    return payload[2:] if payload[:1] == pickle.PROTO else payload


@mutator
def m_prologue(data: bytes, ctx: Ctx) -> bytes:
    """Unusual but harmless opcodes first, then a payload, then (maybe) the host."""
    body = prologue(ctx) + bare(ctx.payload())
    r = ctx.rng.random()
    if r < 0.4:
        return body + data
    if r < 0.7:
        return data + body  # a second stream that starts oddly (pickle.load_all)
    return body


@mutator
def m_before_final_stop(data: bytes, ctx: Ctx) -> bytes | None:
    """A fragment just before the file's last byte when that is STOP: the end of a
    joblib dump (after its raw array bytes), of a pickle, of a legacy checkpoint's
    last stream."""
    kind = detect_compression(data)
    if kind:
        inner = decompress(kind, data)
        if inner is None or not inner.endswith(pickle.STOP):
            return None
        ctx.notes.append(f"inside {kind}")
        return compress(kind, inner[:-1] + ctx.frag() + pickle.STOP, ctx.rng)
    if not data.endswith(pickle.STOP):
        return None
    return data[:-1] + ctx.frag() + pickle.STOP


@mutator
def m_splice_stream(data: bytes, ctx: Ctx) -> bytes | None:
    """The payload spliced into the first pickle stream, at an opcode boundary."""
    if not looks_like_pickle(data):
        return None
    pad = padding(ctx) if ctx.rng.random() < 0.3 else b""
    return splice_into_stream(data, 0, pad + ctx.frag(), ctx.rng)


@mutator
def m_splice_any_stream(data: bytes, ctx: Ctx) -> bytes | None:
    """The payload spliced into the n-th of consecutive pickle streams (legacy torch)."""
    spans = stream_spans(data)
    if not spans:
        return None
    i = ctx.rng.randrange(len(spans))
    ctx.notes.append(f"stream={i}/{len(spans)}")
    return splice_into_stream(data, spans[i][0], ctx.frag(), ctx.rng)


@mutator
def m_legacy_magic(data: bytes, ctx: Ctx) -> bytes | None:
    """torch's legacy magic-number pickle re-encoded (LONG, INT, LONG4, memo), with
    the payload in it or in front of it."""
    spans = stream_spans(data, 1)
    if not spans:
        return None
    magic = 0x1950A86A20F9469CFC6C
    raw = magic.to_bytes(10, "little")
    forms = [
        b"\x80\x02\x8a\x0a" + raw + b".",
        b"L" + str(magic).encode() + b"L\n.",
        b"I" + str(magic).encode() + b"\n.",
        b"\x80\x02\x8b" + struct.pack("<i", 10) + raw + b".",
        b"\x80\x04\x95\x0c\x00\x00\x00\x00\x00\x00\x00\x8a\x0a" + raw + b"\x94.",
        b"\x80\x02\x8a\x0a" + raw + b"q\x00.",
    ]
    form = ctx.rng.choice(forms)
    where = ctx.rng.random()
    if where < 0.4:
        stream = form[:-1] + ctx.frag() + b"."
    elif where < 0.7:
        stream = ctx.payload() + form
    else:
        stream = form
        rest = data[spans[0][1] :]
        spliced = splice_into_stream(rest, 0, ctx.frag(), ctx.rng) if rest else None
        return form + (spliced or rest)
    return stream + data[spans[0][1] :]


@mutator
def m_havoc(data: bytes, ctx: Ctx) -> bytes:
    """Random byte edits of the host (for attack seeds: do they still fire?)."""
    out = bytearray(data)
    for _ in range(ctx.rng.randint(1, 8)):
        if not out:
            break
        op = ctx.rng.randrange(5)
        i = ctx.rng.randrange(len(out))
        if op == 0:
            out[i] ^= 1 << ctx.rng.randrange(8)
        elif op == 1:
            out[i] = ctx.rng.choice([0, 0xFF, 0x7F, 0x80, ord("."), ord("N"), ord("(")])
        elif op == 2:
            del out[i : i + ctx.rng.randint(1, 16)]
        elif op == 3:
            out[i:i] = bytes(ctx.rng.randrange(256) for _ in range(ctx.rng.randint(1, 8)))
        else:
            j = ctx.rng.randrange(len(out))
            out[i:i] = out[j : j + ctx.rng.randint(1, 64)]
    ctx.notes.append("havoc")
    return bytes(out)


@mutator
def m_truncate(data: bytes, ctx: Ctx) -> bytes | None:
    if len(data) < 2:
        return None
    cut = ctx.rng.randint(1, len(data) - 1)
    ctx.notes.append(f"cut={cut}")
    return data[:cut]


MAGICS = (
    b"PK\x03\x04",
    b"PK\x05\x06",
    b"PK\x01\x02",
    b"PK\x07\x08",
    b"\x93NUMPY",
    b"\x1f\x8b",
    b"BZh9",
    b"BZ",
    b"\xfd7zXZ\x00",
    b"\x5d\x00\x00",
    b"\x04\x22\x4d\x18",
    b"ZF",
    b"x\x9c",
    b"x",
    b"\x80\x02",
    b"\x80\x05",
)


@mutator
def m_magic(data: bytes, ctx: Ctx) -> bytes:
    """Replace, insert or flip the leading magic bytes."""
    magic = ctx.rng.choice(MAGICS)
    mode = ctx.rng.randrange(3)
    ctx.notes.append(f"magic={magic!r}/{mode}")
    if mode == 0:
        return magic + data[len(magic) :]
    if mode == 1:
        return magic + data
    out = bytearray(data)
    if out:
        out[ctx.rng.randrange(min(8, len(out)))] ^= 1 << ctx.rng.randrange(8)
    return bytes(out)


@mutator
def m_rename(data: bytes, ctx: Ctx) -> bytes:
    """The same bytes under another file name: torch.load dispatches on '.safetensors',
    and a scanner must not skip a file for its name (hidden, odd characters)."""
    if ctx.rng.random() < 0.6:
        ctx.notes.append("ext=" + ctx.rng.choice(EXTENSIONS))
    else:
        ctx.notes.append("stem=" + ctx.rng.choice(STEMS))
    return data


EXTENSIONS = (".safetensors", ".pt", ".bin", ".npy", ".npz", ".joblib", ".pkl", ".tar", "")
STEMS = (".mutant", "MUTANT", "m u t", "m\u00fct", "-mutant", "mutant~", "#mutant#", "x" * 200)


# --- zip (torch checkpoints, TorchScript archives, .npz) -------------------------


def _zip_rebuild(members: list[tuple[str, bytes]], ctx: Ctx, hit: int, new: bytes) -> bytes:
    """Rebuild a zip with member `hit` replaced by `new`, with one record-level twist."""
    rng = ctx.rng
    entries = [ZEntry(n, d) for n, d in members]
    entries[hit].data = new
    twist = rng.choice(
        [
            "none",
            "deflate",
            "deflate_all",
            "bad_crc",
            "local_name",
            "encrypted_flag",
            "descriptor_flag",
            "utf8_flag",
            "method",
            "extra",
            "dup_first",
            "dup_last",
            "orphan_decoy",
            "comment",
            "prefix_junk",
            "eocd_offset",
            "extra_decoy",
            "local_sizes",
        ]
    )
    ctx.notes.append(f"zip={twist}")
    comment = b""
    eocd_tweak = 0
    e = entries[hit]
    if twist == "deflate":
        e.method = 8
    elif twist == "deflate_all":
        for x in entries:
            x.method = 8
    elif twist == "bad_crc":
        e.crc = rng.randrange(1 << 32)
    elif twist == "local_name":
        e.local_name = rng.choice(["archive/README.txt", e.name.upper(), "", e.name + "x"])
    elif twist == "encrypted_flag":
        e.flags |= 1
    elif twist == "descriptor_flag":
        e.flags |= 8
    elif twist == "utf8_flag":
        e.flags |= 0x800
    elif twist == "method":
        e.method = rng.choice([1, 9, 12, 14, 93, 99])
    elif twist == "extra":
        e.extra = struct.pack("<HH", rng.choice([0x0001, 0x5455, 0xCAFE]), 4) + b"\0\0\0\0"
    elif twist in ("dup_first", "dup_last"):
        decoy = ZEntry(e.name, members[hit][1])
        entries.insert(hit + 1 if twist == "dup_first" else hit, decoy)
    elif twist == "orphan_decoy":
        entries.insert(0, ZEntry(e.name, members[hit][1], in_central=False))
    elif twist == "comment":
        comment = ctx.small_payload()
    elif twist == "prefix_junk":
        e.prefix = bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
    elif twist == "eocd_offset":
        eocd_tweak = rng.choice([-1, 1, 4])
    elif twist == "extra_decoy":
        # A benign pickle in the local extra field: data starts after it (the local
        # header's lengths say so), a reader using the central lengths lands on it.
        benign = pickle.dumps({"decoy": 1}, protocol=2)
        e.extra = struct.pack("<HH", 0xCAFE, len(benign)) + benign
    elif twist == "local_sizes":
        size = rng.choice([0, 1, len(members[hit][1]), 0xFFFFFFFF])
        e.local_sizes = (size, size)
    return build_zip(entries, comment=comment, eocd_tweak=eocd_tweak)


def _inner_mutant(data: bytes, ctx: Ctx) -> bytes:
    """A malicious version of a zip member's content."""
    if data.startswith(NPY_MAGIC):
        return npy_with_payload(data, ctx)
    if looks_like_pickle(data) and ctx.rng.random() < 0.8:
        return splice_into_stream(data, 0, ctx.frag(), ctx.rng) or ctx.payload()
    return ctx.payload()


@mutator
def m_zip_member(data: bytes, ctx: Ctx) -> bytes | None:
    """A zip member a loader unpickles made malicious, the zip rebuilt with a twist."""
    members = zip_members(data)
    if not members:
        return None
    hit = pickle_member(members, ctx.rng)
    if hit is None:
        return None
    ctx.notes.append(f"member={members[hit][0]}")
    return _zip_rebuild(members, ctx, hit, _inner_mutant(members[hit][1], ctx))


@mutator
def m_zip_names(data: bytes, ctx: Ctx) -> bytes | None:
    """Member names changed (case, prefix directory, suffix, path tricks), with the
    unpickled member made malicious."""
    members = zip_members(data)
    if not members:
        return None
    hit = pickle_member(members, ctx.rng)
    if hit is None:
        return None
    rng = ctx.rng
    how = rng.choice(["upper_leaf", "prefix", "strip_prefix", "dot_slash", "backslash", "no_ext"])
    ctx.notes.append(f"names={how}")
    new_prefix = rng.choice(["x", "ARCHIVE", "a/b", "archive.pt", "model", "."])

    def rename(name: str, i: int) -> str:
        head, _, leaf = name.rpartition("/")
        if how == "upper_leaf" and i == hit:
            return (head + "/" if head else "") + leaf.upper()
        if how == "prefix":
            parts = name.split("/", 1)
            return new_prefix + "/" + parts[1] if len(parts) == 2 else name
        if how == "strip_prefix":
            return name.split("/", 1)[1] if "/" in name else name
        if how == "dot_slash":
            return "./" + name
        if how == "backslash":
            return name.replace("/", "\\")
        if how == "no_ext" and i == hit:
            return name.rsplit(".", 1)[0]
        return name

    renamed = [(rename(n, i), d) for i, (n, d) in enumerate(members)]
    return _zip_rebuild(renamed, ctx, hit, _inner_mutant(members[hit][1], ctx))


@mutator
def m_zip_torchscript_toggle(data: bytes, ctx: Ctx) -> bytes | None:
    """Add or drop constants.pkl: torch.load then dispatches to or away from jit.load."""
    members = zip_members(data)
    if not members:
        return None
    hit = pickle_member(members, ctx.rng)
    if hit is None:
        return None
    prefix = members[0][0].split("/", 1)[0]
    has = [i for i, (n, _) in enumerate(members) if n.endswith("constants.pkl")]
    new = [(n, d) for i, (n, d) in enumerate(members) if i not in has]
    if not has:
        new.append((prefix + "/constants.pkl", pickle.dumps((), protocol=2)))
    ctx.notes.append("constants.pkl " + ("dropped" if has else "added"))
    hit = pickle_member(new, ctx.rng)
    if hit is None:  # the only pickle member was constants.pkl itself
        return None
    return _zip_rebuild(new, ctx, hit, _inner_mutant(new[hit][1], ctx))


@mutator
def m_zip_overlap(data: bytes, ctx: Ctx) -> bytes | None:
    """The pickle member's central record points inside another member's data."""
    members = zip_members(data)
    if not members:
        return None
    hit = pickle_member(members, ctx.rng)
    if hit is None:
        return None
    ma = make_attacks()
    name, content = members[hit]
    evil = _inner_mutant(content, ctx)
    blob = ma._local_header(name.encode(), 0, zlib.crc32(evil), len(evil), len(evil)) + evil
    others = [ma.LocalEntry(n, d) for i, (n, d) in enumerate(members) if i != hit]
    plan = ma.ZipPlan([ma.LocalEntry(name + ".blob", blob), *others], inner=[(name, 0, 0)])
    out: bytes = ma.build_zip(plan)
    return out


@mutator
def m_zip_two_archives(data: bytes, ctx: Ctx) -> bytes | None:
    """Two copies of a torch archive under different top folders in one zip, one of
    them malicious, in either order: torch reads the folder of the first record."""
    members = zip_members(data)
    if not members or "/" not in members[0][0]:
        return None
    rng = ctx.rng
    other = rng.choice(["archive2", "x", "Archive", "archive/archive", "a"])
    copy = [(other + "/" + n.split("/", 1)[1], d) for n, d in members]
    evil_first = rng.random() < 0.5
    joined = members + copy if rng.random() < 0.5 else copy + members
    target = 0 if evil_first else len(members) // 2
    hits = [i for i, (n, _) in enumerate(joined) if n.endswith("data.pkl")]
    if not hits:
        return None
    hit = hits[0] if evil_first else hits[-1]
    del target
    ctx.notes.append(f"second archive {other}, evil {'first' if evil_first else 'last'}")
    return _zip_rebuild(joined, ctx, hit, _inner_mutant(joined[hit][1], ctx))


@mutator
def m_zip_two_directories(data: bytes, ctx: Ctx) -> bytes | None:
    """Two central directories in one zip, each reaching a different pickle member of
    the same name: through an EOCD in the archive comment, or a zip64 end record."""
    members = zip_members(data)
    if not members:
        return None
    hit = pickle_member(members, ctx.rng)
    if hit is None:
        return None
    name, content = members[hit]
    how = ctx.rng.choice(["comment", "comment_swapped", "zip64", "zip64_proper"])
    ctx.notes.append(f"directories={how} member={name}")
    shared = [ZEntry(n, d) for i, (n, d) in enumerate(members) if i != hit]
    evil = ZEntry(name, _inner_mutant(content, ctx))
    return build_zip_two_directories(shared, ZEntry(name, content), evil, how)


@mutator
def m_zip_wrap(data: bytes, ctx: Ctx) -> bytes:
    """The host (or a payload) as a member of a new zip: an .npz, a torch archive."""
    rng = ctx.rng
    evil = data if rng.random() < 0.5 else ctx.payload()
    name = rng.choice(["arr.npy", "archive/data.pkl", "x/data.pkl", "data.pkl", "a.pkl", "a"])
    members = [(name, evil)]
    if name.endswith("data.pkl"):
        top = name.split("/")[0] + "/" if "/" in name else ""
        members += [(top + "version", b"3\n"), (top + "byteorder", b"little")]
    ctx.notes.append(f"wrapped as {name}")
    return _zip_rebuild(members, ctx, 0, evil)


@mutator
def m_zip_prepend(data: bytes, ctx: Ctx) -> bytes | None:
    """Bytes in front of a zip: zipfile finds the archive from its end, torch needs a
    local header at 0, numpy needs PK at 0."""
    if zip_members(data) is None:
        return None
    head = ctx.rng.choice(
        [
            ctx.payload(),
            b"PK\x05\x06" + bytes(18),
            b"PK\x03\x04" + bytes(26),
            b"PK\x03\x04" + ctx.payload(),
        ]
    )
    return head + data


# --- npy ---------------------------------------------------------------------------


def npy_with_payload(data: bytes, ctx: Ctx) -> bytes:
    """An object-dtype .npy whose pickled data is malicious, header respelled."""
    rng = ctx.rng
    parts = npy_split(data)
    body = ctx.payload()
    if parts and rng.random() < 0.5:
        _, header, start = parts
        pickled = data[start:]
        if looks_like_pickle(pickled):
            body = splice_into_stream(pickled, 0, ctx.frag(), rng) or body
            if "O" in header and rng.random() < 0.5:  # keep its own header
                return data[:start] + body
    descr = rng.choice(ctx.descrs) if ctx.descrs else "'|O'"
    shape = rng.choice(SHAPES)
    version = rng.choice([(1, 0), (2, 0), (3, 0)])
    ctx.notes.append(f"npy descr={descr} shape={shape} v={version}")
    header = npy_header(descr, shape, rng)
    return npy_build(header, body, version, pad=rng.random() < 0.9)


@mutator
def m_npy_object(data: bytes, ctx: Ctx) -> bytes:
    """An .npy header with an object field in any spelling, then a malicious pickle."""
    return npy_with_payload(data, ctx)


@mutator
def m_npy_header_bytes(data: bytes, ctx: Ctx) -> bytes | None:
    """Raw edits of an object .npy's header: version byte, length field, padding."""
    parts = npy_split(data)
    if not parts:
        data = npy_with_payload(data, ctx)
        parts = npy_split(data)
        if not parts:
            return None
    version, header, start = parts
    rng = ctx.rng
    how = rng.randrange(5)
    ctx.notes.append(f"npy raw={how}")
    if how == 0:
        return data[:6] + bytes([rng.choice([0, 1, 2, 3, 4, 255]), rng.choice([0, 1])]) + data[8:]
    if how == 1:
        pre = 10 if version == (1, 0) else 12
        size = struct.unpack_from("<H" if pre == 10 else "<I", data, 8)[0]
        size = max(0, size + rng.choice([-2, -1, 1, 2, 64]))
        packed = struct.pack("<H", size & 0xFFFF) if pre == 10 else struct.pack("<I", size)
        return data[:8] + packed + data[pre:]
    if how == 2:
        return npy_build(header.rstrip() + "\x00", data[start:], version, pad=False)
    if how == 3:
        return npy_build(header.replace(" ", "\t"), data[start:], version, pad=False)
    return npy_build(header.rstrip() + "\r\n", data[start:], version, pad=False)


# --- compressed streams (joblib) ---------------------------------------------------


def _inner_pickle_mutant(inner: bytes, ctx: Ctx) -> bytes:
    r = ctx.rng.random()
    if r < 0.5 and looks_like_pickle(inner):
        return splice_into_stream(inner, 0, ctx.frag(), ctx.rng) or ctx.payload()
    if r < 0.75:
        return ctx.payload() + inner
    return ctx.payload()


@mutator
def m_compressed_inner(data: bytes, ctx: Ctx) -> bytes | None:
    """Decompress, make the pickle inside malicious, recompress (same kind, new settings)."""
    kind = detect_compression(data)
    if kind is None:
        return None
    inner = decompress(kind, data)
    if inner is None:
        return None
    ctx.notes.append(f"compression={kind}")
    return compress(kind, _inner_pickle_mutant(inner, ctx), ctx.rng)


@mutator
def m_compressed_streams(data: bytes, ctx: Ctx) -> bytes | None:
    """Two or more concatenated compressed streams, the payload in a later one."""
    kind = detect_compression(data) or ctx.rng.choice(["zlib", "gzip", "bz2", "xz", "lz4"])
    if kind == "compat":
        kind = "zlib"
    if kind == "lzma":  # LZMA-alone has no multi-stream form; still try it
        pass
    inner = decompress(kind, data) if detect_compression(data) else None
    inner = inner if inner is not None else data
    rng = ctx.rng
    evil = _inner_pickle_mutant(inner, ctx)
    how = rng.randrange(6)
    ctx.notes.append(f"streams={kind}/{how}")
    try:
        if how == 4:  # something between the streams: zero padding, an lz4 skippable frame
            k = rng.randint(0, len(evil))
            gap = bytes(4 * rng.randint(1, 4))
            if kind == "lz4" and rng.random() < 0.7:
                junk = pickle.dumps({"decoy": 1}, protocol=2)
                gap = struct.pack("<II", 0x184D2A50 + rng.randrange(16), len(junk)) + junk
            return compress(kind, evil[:k], rng) + gap + compress(kind, evil[k:], rng)
        if how == 5:  # a benign complete pickle, then a second stream holding a payload
            return compress(kind, pickle.dumps({"a": 1}, protocol=2), rng) + compress(
                kind, ctx.payload(), rng
            )
        if how == 0:  # split anywhere
            k = rng.randint(0, len(evil))
            return compress(kind, evil[:k], rng) + compress(kind, evil[k:], rng)
        if how == 1:  # an empty first stream
            return compress(kind, b"", rng) + compress(kind, evil, rng)
        if how == 2:  # a stream cut before STOP, then the payload
            head = inner[: max(2, len(inner) // 3)]
            positions, _ = op_positions(inner)
            if len(positions) > 2:
                head = inner[: rng.choice(positions[1:])]
            payload = ctx.payload()
            return compress(kind, head, rng) + compress(kind, payload[2:], rng)
        chunks = [evil[i : i + 7] for i in range(0, len(evil), 7)][:400]
        return b"".join(compress(kind, c, rng) for c in chunks)
    except Exception:
        return None


@mutator
def m_compressed_framing(data: bytes, ctx: Ctx) -> bytes | None:
    """Header and trailer fields of a compressed stream holding a malicious pickle:
    lzma's dict size, zlib's level bits, bz2's block size, a bad checksum, a cut,
    trailing garbage."""
    kind = detect_compression(data)
    inner = decompress(kind, data) if kind else None
    if kind is None or inner is None:
        kind = ctx.rng.choice(["zlib", "gzip", "bz2", "xz", "lzma", "lz4", "compat"])
        inner = data
    rng = ctx.rng
    out = bytearray(compress(kind, _inner_pickle_mutant(inner, ctx), rng))
    how = rng.randrange(6)
    ctx.notes.append(f"framing={kind}/{how}")
    if how == 0:
        if kind == "lzma":
            struct.pack_into("<I", out, 1, rng.choice([1 << 12, 1 << 16, 1 << 26, 0xFFFFFFFF, 0]))
        elif kind == "zlib":
            flg = rng.choice([0x01, 0x5E, 0x9C, 0xDA])
            out[1] = flg
        elif kind == "bz2":
            out[3] = ord(rng.choice("0123456789"))
        elif kind == "gzip":
            out[9] = rng.randrange(256)  # OS byte
        elif kind == "xz":
            out[7] = rng.randrange(16)  # stream flags: check type
        elif kind == "lz4":
            out[4] ^= 1 << rng.randrange(8)  # FLG byte
        elif kind == "compat":
            out[2:21] = f"0x{rng.randrange(1 << 20):x}".ljust(19).encode()
    elif how == 1:  # wrong checksum at the end
        for i in range(1, 5):
            if len(out) > i:
                out[-i] ^= 0xFF
    elif how == 2:  # cut the end off
        del out[-rng.randint(1, min(32, max(1, len(out) - 4))) :]
    elif how == 3:
        out += bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
    elif how == 4:
        out += ctx.payload()
    else:
        out += compress(kind, ctx.payload(), rng)
    return bytes(out)


@mutator
def m_compress_whole(data: bytes, ctx: Ctx) -> bytes:
    """The whole host (a pickle, an .npy, a zip, a payload) put through a compressor."""
    kind = ctx.rng.choice(["zlib", "gzip", "bz2", "xz", "lzma", "lz4", "compat"])
    ctx.notes.append(f"compress={kind}")
    body = data if ctx.rng.random() < 0.5 else ctx.payload() + data
    return compress(kind, body, ctx.rng)


@dataclass
class JoblibLayout:
    """Where things are in an uncompressed joblib dump of one float64 array."""

    data: bytes
    pad_at: int  # the padding-length byte joblib reads before the array bytes
    start: int  # first array byte
    end: int  # one past the last array byte
    count: int  # array length


def joblib_layout(count: int) -> JoblibLayout | None:
    import joblib
    import numpy as np

    marker = bytes(range(0x41, 0x49)) * count  # distinctive array bytes
    arr = np.frombuffer(marker, dtype="<f8").copy()
    buf = io.BytesIO()
    joblib.dump({"coef": arr, "n": count}, buf)
    data = buf.getvalue()
    start = data.find(marker)
    if start < 0:
        return None
    pad_at = start - 1
    while pad_at > 0 and data[pad_at] == 0xFF:
        pad_at -= 1
    if start - pad_at - 1 != data[pad_at]:  # the byte must count the 0xff padding
        return None
    return JoblibLayout(data, pad_at, start, start + len(marker), count)


def _stack_neutral_fill(frag: bytes, size: int) -> bytes | None:
    """`frag` then harmless opcodes, exactly `size` bytes long."""
    rest = size - len(frag)
    if rest < 0:
        return None
    fill = b""
    if rest % 2:
        if rest < 3:
            return None
        fill, rest = b"K\x010", rest - 3
    return frag + fill + b"N0" * (rest // 2)


@mutator
def m_joblib_array(data: bytes, ctx: Ctx) -> bytes | None:
    """joblib writes a NumpyArrayWrapper, then the raw array bytes, then the rest of
    the pickle; its unpickler skips exactly shape x itemsize bytes (after a padding
    byte and padding). Change what it skips: a smaller shape (the array's tail is
    then read as opcodes), an object dtype (a nested pickle is read from the padding
    byte on), a different padding byte."""
    rng = ctx.rng
    count = rng.choice([8, 16, 32])
    lay = joblib_layout(count)
    if lay is None:
        return None
    d = lay.data
    how = rng.randrange(3)
    ctx.notes.append(f"joblib array how={how} count={count}")
    shape = b"K" + bytes([count]) + pickle.TUPLE1
    if how == 0 and d.count(shape) == 1:
        frag = ctx.frag()
        skip = (len(frag) + 2 + 7) // 8 + rng.randint(0, 2)
        if skip >= count:
            return None
        tail = _stack_neutral_fill(frag, 8 * skip)
        if tail is None:
            return None
        d = d.replace(shape, b"K" + bytes([count - skip]) + pickle.TUPLE1)
        shift = 0  # the shape edit keeps every length
        out = d[: lay.end - 8 * skip + shift] + tail + d[lay.end + shift :]
    elif how == 1:
        f8 = d.find(b"\x8c\x02f8")
        if f8 < 0 or f8 > lay.pad_at:
            return None
        d = d[:f8] + b"\x8c\x02O8" + d[f8 + 4 :]
        # The dtype's BUILD state carries its flags: 63 (NPY_OBJECT_DTYPE_FLAGS) makes
        # hasobject true, 0 keeps it false whatever the type code says.
        flags = d.find(b"J\xff\xff\xff\xffK\x00t", f8)
        if flags < 0:
            return None
        d = d[:flags] + b"J\xff\xff\xff\xffK\x3ft" + d[flags + 8 :]
        d = d.replace(b"\x8c\x01<", b"\x8c\x01|", 1)
        out = d[: lay.pad_at] + ctx.payload() + d[lay.end :]
    else:
        # A padding length other than the one alignment implies: joblib skips what the
        # byte says, reads the array, and unpickles on from there.
        old = d[lay.pad_at]
        new = rng.choice([0, 1, max(0, old - 1), old + 8, 255])
        filler = rng.choice([b"\xff", b"N", b"."]) * new
        out = d[: lay.pad_at] + bytes([new]) + filler + d[lay.start : lay.end]
        out += ctx.frag() + d[lay.end :]
    if rng.random() < 0.4:
        kind = rng.choice(["zlib", "gzip", "bz2", "xz", "lzma", "lz4"])
        ctx.notes.append(f"compress={kind}")
        return compress(kind, out, rng)
    return out


# --- tar (torch's oldest format) ----------------------------------------------------


@mutator
def m_tar_legacy(data: bytes, ctx: Ctx) -> bytes:
    """A torch legacy tar (storages, tensors, pickle) with one member malicious."""
    rng = ctx.rng
    members = tar_members(data) if data[257:262] == b"ustar" else None
    if not members:
        # torch reads: a storage count and the views list from 'storages', a tensor
        # count from 'tensors', then unpickles 'pickle' (torch/serialization.py).
        members = [
            ("storages", pickle.dumps(0, protocol=2) + pickle.dumps([], protocol=2)),
            ("tensors", pickle.dumps(0, protocol=2)),
            ("pickle", data if looks_like_pickle(data) else pickle.dumps({}, protocol=2)),
        ]
    i = rng.randrange(len(members))
    name, content = members[i]
    members[i] = (name, _inner_pickle_mutant(content, ctx))
    how = rng.randrange(4)
    if how == 1:
        members = [(rng.choice(["./", "/", ""]) + n, d) for n, d in members]
    elif how == 2:
        members = [(n.upper() if j == i else n, d) for j, (n, d) in enumerate(members)]
    elif how == 3:
        rng.shuffle(members)
    fmt = rng.choice([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
    ctx.notes.append(f"tar member={name} how={how} fmt={fmt}")
    return build_tar(members, fmt)


@mutator
def m_tar_polyglot(data: bytes, ctx: Ctx) -> bytes:
    """A tar whose first member's name field is a protocol-0 payload: a valid tar and,
    from byte 0, a valid pickle."""
    name = ctx.small_payload().decode("latin-1")
    members = [(name, data), ("storages", pickle.dumps(0, protocol=2))]
    if ctx.rng.random() < 0.5:
        members += [("tensors", pickle.dumps(0, protocol=2)), ("pickle", pickle.dumps({}))]
    return build_tar(members, ctx.rng.choice([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT]))


# --- safetensors ----------------------------------------------------------------


@mutator
def m_safetensors_polyglot(data: bytes, ctx: Ctx) -> bytes:
    """A file that passes a safetensors sniff (u64 length, '{' ... '}') whose first
    byte is also a pickle opcode that skips to a payload inside the 'header':
    BINBYTES/BINSTRING/BINUNICODE take the length's next four bytes as their own."""
    rng = ctx.rng
    op = rng.choice([b"B", b"T", b"X"])
    skip = rng.choice([4, 8, 16, 40, 100, 255])  # bytes the opcode swallows
    payload = ctx.payload()
    n = op[0] + 256 * skip  # the u64 header length, little-endian, starts with `op`
    head = struct.pack("<Q", n)
    assert head[:1] == op
    # The pickle resumes at offset 5 + skip, which lies inside the header (8 .. 8+n).
    at = 5 + skip
    region = bytearray(b" " * n)
    region[0:1] = b"{"
    meta = b'"__metadata__":{"p":"x"},'
    region[1 : 1 + len(meta)] = meta if at - 8 > len(meta) + 1 else region[1 : 1 + len(meta)]
    rel = at - 8
    if rel < 1 or rel + len(payload) > n - 2:
        return head + b"{" + b" " * (n - 2) + b"}"
    region[rel : rel + len(payload)] = payload
    region[n - 1 : n] = b"}"
    tail = data[8 + struct.unpack_from("<Q", data)[0] :] if data[8:9] == b"{" else b""
    ctx.notes.append(f"st op={op!r} skip={skip}")
    return head + bytes(region) + tail


@mutator
def m_safetensors_header(data: bytes, ctx: Ctx) -> bytes | None:
    """A real safetensors file with a payload after the header or after the data."""
    if data[8:9] != b"{":
        return None
    (n,) = struct.unpack_from("<Q", data)
    how = ctx.rng.randrange(3)
    ctx.notes.append(f"st how={how}")
    if how == 0:
        return data + ctx.payload()
    if how == 1:
        return data[: 8 + n] + ctx.payload() + data[8 + n :]
    return ctx.payload() + data


# --------------------------------------------------------------------------
# The campaign.


@dataclass
class Mutant:
    data: bytes
    seed: str
    chain: list[str]
    notes: list[str]
    ext: str
    stem: str = "mutant"


@dataclass
class Verdict:
    fired: list[str]
    loader_status: dict[str, str]
    scan: ScanResult

    @property
    def failure(self) -> bool:
        return (
            bool(self.fired)
            and self.scan.report is not None
            and self.scan.verdict
            in (
                None,
                "safe",
            )
        )

    @property
    def soft(self) -> str | None:
        if self.scan.problem and (self.fired or self.scan.report is None):
            return "hermetic_" + self.scan.problem.split()[0]
        if self.fired and self.scan.report is None:
            return "no_report"
        if self.fired and self.scan.verdict in ("suspicious", "error"):
            return f"fired_{self.scan.verdict}"
        return None


@dataclass
class Config:
    hermetic: list[str]
    out: Path
    seed: int = 0
    minutes: float | None = None
    max_mutants: int | None = None
    round_robin: bool = False  # deterministic: every mutator in turn
    minimize: bool = True
    include_attacks: bool = True
    keep_per_class: int = 3
    verbose: bool = False
    mutators: list[str] | None = None


@dataclass
class Stats:
    mutants: int = 0
    fired: int = 0
    failures: int = 0
    soft: int = 0
    seconds: float = 0.0
    by_loader: Counter[str] = field(default_factory=Counter)
    by_mutator: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    verdicts_when_fired: Counter[str] = field(default_factory=Counter)
    failure_classes: Counter[str] = field(default_factory=Counter)
    soft_classes: Counter[str] = field(default_factory=Counter)
    seconds_by_step: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    controls: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            d[f.name] = dict(value) if isinstance(value, dict) else value
        d["by_mutator"] = {k: dict(v) for k, v in sorted(self.by_mutator.items())}
        d["mutants_per_s"] = round(self.mutants / self.seconds, 2) if self.seconds else 0
        return d


@dataclass
class Record:
    klass: str
    path: Path
    fired: list[str]
    verdict: str | None
    seed: str
    chain: list[str]

    def describe(self) -> str:
        return (
            f"{self.klass}: {', '.join(self.fired)} fired, hermetic said "
            f"{self.verdict or 'nothing (missing from the report)'}; seed {self.seed}, "
            f"{' + '.join(self.chain)} -> {self.path}"
        )


@dataclass
class Result:
    stats: Stats
    failures: list[Record]
    soft: list[Record]


class MutantSource:
    """Mutants, reproducibly: the same seed number gives the same mutants."""

    def __init__(
        self,
        seeds: list[Seed],
        seed: int,
        round_robin: bool = False,
        mutators: list[str] | None = None,
    ) -> None:
        self.seeds = seeds
        self.rng = random.Random(seed)
        self.round_robin = round_robin
        self.full = full_payloads()
        self.frags = fragments()
        self.descrs = object_descrs()
        self.mutators = [(n, MUTATORS[n]) for n in (mutators or list(MUTATORS))]

    def pick_seed(self) -> Seed:
        """Benign seeds (the real libraries' files) more often than attack files."""
        benign = [s for s in self.seeds if not s.name.startswith("attack_")]
        attacks = [s for s in self.seeds if s.name.startswith("attack_")]
        if attacks and (not benign or self.rng.random() < 0.3):
            return self.rng.choice(attacks)
        return self.rng.choice(benign)

    def mutate(self, index: int) -> Mutant | None:
        """One mutant: a mutator, then a seed it applies to (a few tries), sometimes
        havoc on the host first and a second mutator on top."""
        rng = self.rng
        if self.round_robin:
            name, fn = self.mutators[index % len(self.mutators)]
        else:
            name, fn = rng.choice(self.mutators)
        for _ in range(40):
            seed = self.pick_seed()
            ctx = Ctx(rng, self.full, self.frags, self.descrs)
            data = seed.data
            chain = [name]
            if rng.random() < 0.1 and name != "havoc":
                data = MUTATORS["havoc"](data, ctx) or data
                chain.insert(0, "havoc")
            out = fn(data, ctx)
            if out is not None:
                break
        else:
            return None
        if rng.random() < 0.2:  # a second layer, e.g. a spliced zip then compressed
            name2, fn2 = rng.choice(self.mutators)
            # Never havoc over a payload: its bytes stay the corpus' harmless ones.
            out2 = fn2(out, ctx) if name2 != "havoc" else None
            if out2 is not None:
                out, chain = out2, [*chain, name2]
        if len(out) > MAX_MUTANT_BYTES:
            return None
        ext = _suffix(seed.name)
        stem = "mutant"
        for note in ctx.notes:
            if note.startswith("ext="):
                ext = note[4:]
            if note.startswith("stem="):
                stem = note[5:]
        return Mutant(out, seed.name, chain, ctx.notes, ext, stem)


class Campaign:
    def __init__(self, cfg: Config, make_seeds_too: bool = True) -> None:
        self.cfg = cfg
        self.root = Path(tempfile.mkdtemp(prefix="difffuzz-"))
        self.cfg.out.mkdir(parents=True, exist_ok=True)
        self.stats = Stats()
        self.failures: list[Record] = []
        self.soft: list[Record] = []
        self.kept: Counter[str] = Counter()
        self.counter = 0
        self.servers = {g: LoaderServer(self.root, g) for g in SERVER_IMPORTS}
        self.seeds = make_seeds(cfg.include_attacks) if make_seeds_too else []
        self.source = MutantSource(self.seeds, cfg.seed, cfg.round_robin, cfg.mutators)
        self.log_file = (cfg.out / "log.txt").open("a")

    # -- sandbox bookkeeping

    def _run_dir(self) -> Path:
        self.counter += 1
        d = self.root / "runs" / str(self.counter)
        d.mkdir(parents=True)
        return d

    def _remove(self, d: Path) -> None:
        # Only ever inside this campaign's own temporary folder.
        if self.root in d.resolve().parents:
            shutil.rmtree(d, ignore_errors=True)

    def close(self) -> None:
        for server in self.servers.values():
            server.close()
        self.log_file.close()
        if self.root.name.startswith("difffuzz-") and self.root.parent == Path(
            tempfile.gettempdir()
        ):
            shutil.rmtree(self.root, ignore_errors=True)

    def log(self, msg: str) -> None:
        self.log_file.write(msg + "\n")
        self.log_file.flush()
        if self.cfg.verbose:
            print(msg, flush=True)

    # -- the oracle

    def _run_loaders(
        self, d: Path, path: Path, loaders: tuple[str, ...]
    ) -> tuple[list[str], dict[str, str]]:
        groups: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for i, loader in enumerate(loaders):
            groups[LOADER_SERVER[loader]].append((i, loader))
        replies: dict[str, tuple[dict[str, Any], float, bool]] = {}

        def run_group(group: str) -> None:
            # One thread per server; the servers are separate processes.
            for i, loader in groups[group]:
                cwd = d / f"cwd{i}"
                cwd.mkdir()
                canary = d / f"canary{i}"
                t0 = time.monotonic()
                reply = self.servers[group].load(loader, path, canary, cwd)
                took = time.monotonic() - t0
                replies[loader] = (reply, took, bool(reply["fired"]) or canary.exists())

        with ThreadPoolExecutor(max_workers=len(groups)) as pool:
            list(pool.map(run_group, list(groups)))
        fired: list[str] = []
        status: dict[str, str] = {}
        for loader in loaders:
            reply, took, did_fire = replies[loader]
            status[loader] = f"{reply['status']}: {reply['outcome']}"[:300]
            self.stats.seconds_by_step[loader] += took
            if took > 2.0:
                self.log(f"slow: {loader} {took:.1f} s on {path.name}: {status[loader]}")
            if did_fire:
                fired.append(loader)
        return fired, status

    def evaluate(self, data: bytes, name: str, loaders: tuple[str, ...] = LOADERS) -> Verdict:
        return self.evaluate_many([(data, name)], loaders)[0]

    def evaluate_many(
        self, items: list[tuple[bytes, str]], loaders: tuple[str, ...] = LOADERS
    ) -> list[Verdict]:
        """Each file through every loader, then all of them through one `hermetic scan`
        (several FILE arguments, one process); any file that fired and did not scan
        `dangerous` is scanned again on its own, and that report is the one kept."""
        dirs = [self._run_dir() for _ in items]
        try:
            paths = []
            outcomes = []
            for (data, name), d in zip(items, dirs, strict=True):
                path = d / name
                path.write_bytes(data)
                path.chmod(0o444)
                paths.append(path)
                outcomes.append(self._run_loaders(d, path, loaders))
            t0 = time.monotonic()
            scans = scan_many(self.cfg.hermetic, paths, self.root)
            self.stats.seconds_by_step["hermetic"] += time.monotonic() - t0
            verdicts = []
            for path, (fired, status) in zip(paths, outcomes, strict=True):
                result = scans.get(path) if scans is not None else None
                if result is None or (fired and result.verdict != "dangerous"):
                    result = scan(self.cfg.hermetic, path, path.parent)
                verdicts.append(Verdict(fired, status, result))
            return verdicts
        finally:
            for d in dirs:
                self._remove(d)

    # -- mutation

    # -- records

    def _save(self, kind: str, klass: str, m: Mutant, v: Verdict) -> Record | None:
        self.kept[klass] += 1
        if self.kept[klass] > self.cfg.keep_per_class:
            return None
        folder = self.cfg.out / kind / klass.replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{self.kept[klass]}{m.ext}"
        path = folder / stem
        path.write_bytes(m.data)
        meta = {
            "class": klass,
            "seed": m.seed,
            "chain": m.chain,
            "notes": m.notes,
            "fired": v.fired,
            "loader_status": v.loader_status,
            "hermetic_verdict": v.scan.verdict,
            "hermetic_format": v.scan.format,
            "hermetic_rc": v.scan.rc,
            "hermetic_problem": v.scan.problem,
            "hermetic_stderr": v.scan.stderr,
            "hermetic_report": v.scan.report,
            "file": path.name,
            "scanned_as": m.stem + m.ext,
        }
        if kind == "failures" and self.cfg.minimize and self.kept[klass] == 1:
            small = self.minimize(m, v)
            if small is not None and len(small) < len(m.data):
                (folder / f"{self.kept[klass]}.min{m.ext}").write_bytes(small)
                meta["minimized"] = f"{self.kept[klass]}.min{m.ext}"
        (folder / f"{self.kept[klass]}.json").write_text(json.dumps(meta, indent=2) + "\n")
        return Record(klass, path, v.fired, v.scan.verdict, m.seed, m.chain)

    def minimize(self, m: Mutant, v: Verdict, budget: int = 120) -> bytes | None:
        """Delete chunks while the same loader still fires and hermetic still says safe
        (or leaves the file out). ddmin-style; stops after `budget` evaluations."""
        if len(m.data) > (256 << 10):
            return None
        loader = v.fired[0]
        name = m.stem + m.ext

        def bad(data: bytes) -> bool:
            w = self.evaluate(data, name, (loader,))
            return w.failure

        data = m.data
        n = 2
        tries = 0
        while len(data) >= 2 and tries < budget:
            chunk = max(1, len(data) // n)
            shrunk = False
            for start in range(0, len(data), chunk):
                tries += 1
                cand = data[:start] + data[start + chunk :]
                if cand and bad(cand):
                    data = cand
                    n = max(n - 1, 2)
                    shrunk = True
                    break
                if tries >= budget:
                    break
            if not shrunk:
                if chunk == 1:
                    break
                n = min(len(data), n * 2)
        return data

    # -- controls: the oracle must see a known attack fire and a benign file not

    def controls(self) -> None:
        ma = make_attacks()
        evil = self.evaluate(ma.os_system_p0(), "control_evil.pkl", ("pickle.load",))
        benign = self.evaluate(pickle.dumps([1, 2]), "control_benign.pkl", ("pickle.load",))
        self.stats.controls = {
            "attack_fires": bool(evil.fired),
            "benign_quiet": not benign.fired,
            "attack_verdict": evil.scan.verdict,
            "hermetic": self.cfg.hermetic,
            "isolation": self.servers["pickle"].isolation,
            "loader_libraries": {g: s.available for g, s in self.servers.items()},
        }
        if not evil.fired or benign.fired:
            raise RuntimeError(f"the oracle is broken: {self.stats.controls}")
        if evil.scan.report is None:
            raise RuntimeError(f"hermetic gave no report: {evil.scan.problem} {evil.scan.stderr}")

    def run(self) -> Result:
        start = time.monotonic()
        self.controls()
        deadline = start + self.cfg.minutes * 60 if self.cfg.minutes else None
        index = 0
        try:
            # Every seed as it is, first: benign ones must not fire, attacks must be caught.
            identity = [
                Mutant(seed.data, seed.name, ["identity"], [], _suffix(seed.name))
                for seed in self.seeds
            ]
            for i in range(0, len(identity), BATCH):
                self.process(identity[i : i + BATCH])
            baseline = self.stats.mutants
            batch: list[Mutant] = []
            while True:
                done = self.stats.mutants - baseline + len(batch)
                out_of_mutants = self.cfg.max_mutants is not None and done >= self.cfg.max_mutants
                out_of_time = deadline is not None and time.monotonic() >= deadline
                if batch and (len(batch) >= BATCH or out_of_mutants or out_of_time):
                    self.process(batch)
                    batch = []
                    self.stats.seconds = time.monotonic() - start
                    self.write_summary()
                    self.log(self.progress())
                    continue
                if out_of_mutants or out_of_time:
                    break
                index += 1
                m = self.source.mutate(index)
                if m is not None:
                    batch.append(m)
        finally:
            self.stats.seconds = time.monotonic() - start
            self.write_summary()
        return Result(self.stats, self.failures, self.soft)

    def process(self, batch: list[Mutant]) -> None:
        verdicts = self.evaluate_many([(m.data, m.stem + m.ext) for m in batch])
        for m, v in zip(batch, verdicts, strict=True):
            self.one(m, v)

    def one(self, m: Mutant, v: Verdict) -> None:
        s = self.stats
        s.mutants += 1
        top = m.chain[-1] if len(m.chain) == 1 else "+".join(m.chain)
        s.by_mutator[top]["n"] += 1
        if v.fired:
            s.fired += 1
            s.by_mutator[top]["fired"] += 1
            s.by_loader.update(v.fired)
            s.verdicts_when_fired[str(v.scan.verdict)] += 1
        if v.failure:
            klass = f"{'+'.join(m.chain)}__{v.scan.format or 'unlisted'}__{v.scan.verdict}"
            s.failures += 1
            s.failure_classes[klass] += 1
            s.by_mutator[top]["failures"] += 1
            rec = self._save("failures", klass, m, v)
            if rec:
                self.failures.append(rec)
                self.log("FAILURE " + rec.describe())
        elif v.soft:
            klass = f"{v.soft}__{'+'.join(m.chain)}"
            s.soft += 1
            s.soft_classes[klass] += 1
            rec = self._save("soft", klass, m, v)
            if rec:
                self.soft.append(rec)

    def progress(self) -> str:
        s = self.stats
        rate = s.mutants / s.seconds if s.seconds else 0.0
        return (
            f"{s.mutants} mutants ({rate:.1f}/s), {s.fired} fired a loader, "
            f"{s.failures} failures in {len(s.failure_classes)} classes, {s.soft} soft"
        )

    def write_summary(self) -> None:
        doc = self.stats.as_json()
        doc["failure_examples"] = [
            dataclasses.asdict(r) | {"path": str(r.path)} for r in self.failures
        ]
        (self.cfg.out / "summary.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")


def run_campaign(cfg: Config) -> Result:
    campaign = Campaign(cfg)
    try:
        return campaign.run()
    finally:
        campaign.close()


def iter_failure_lines(result: Result) -> Iterator[str]:
    for rec in result.failures:
        yield rec.describe()


def replay(cfg: Config, folder: Path) -> int:
    """Re-run every saved reproducer under `folder` (its .json files) through the
    loaders and hermetic; print which still fail. Returns the count still failing."""
    campaign = Campaign(cfg, make_seeds_too=False)
    still = 0
    try:
        for meta_path in sorted(folder.rglob("*.json")):
            if meta_path.name == "summary.json":
                continue
            meta = json.loads(meta_path.read_text())
            data = (meta_path.parent / meta["file"]).read_bytes()
            name = meta.get("scanned_as") or ("mutant" + _suffix(meta["file"]))
            v = campaign.evaluate(data, name)
            state = "FAILS" if v.failure else ("soft " + v.soft if v.soft else "ok")
            still += v.failure
            print(
                f"{state:>24}  {meta_path.parent.name}/{meta['file']}: fired {v.fired}, "
                f"hermetic {v.scan.format} {v.scan.verdict}"
            )
    finally:
        campaign.close()
    return still


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--serve", choices=sorted(SERVER_IMPORTS), help=argparse.SUPPRESS)
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--max-mutants", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hermetic", default=None, help="the hermetic command (default: PATH)")
    parser.add_argument("--out", type=Path, default=Path("difffuzz-out"))
    parser.add_argument("--round-robin", action="store_true")
    parser.add_argument("--no-minimize", action="store_true")
    parser.add_argument("--no-attack-seeds", action="store_true")
    parser.add_argument("--mutators", default=None, help="comma-separated subset")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--replay", type=Path, default=None, help="re-run saved reproducers")
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    if args.replay:
        cfg = Config(hermetic=hermetic_command(args.hermetic), out=args.out)
        return 1 if replay(cfg, args.replay) else 0
    if args.minutes is None and args.max_mutants is None:
        parser.error("give --minutes or --max-mutants")
    # A terminated campaign still stops its servers and removes its temporary folder.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cfg = Config(
        hermetic=hermetic_command(args.hermetic),
        out=args.out,
        seed=args.seed,
        minutes=args.minutes,
        max_mutants=args.max_mutants,
        round_robin=args.round_robin,
        minimize=not args.no_minimize,
        include_attacks=not args.no_attack_seeds,
        verbose=args.verbose,
        mutators=args.mutators.split(",") if args.mutators else None,
    )
    result = run_campaign(cfg)
    s = result.stats
    print(
        f"{s.mutants} mutants in {s.seconds:.0f} s ({s.mutants / max(s.seconds, 1e-9):.1f}/s); "
        f"{s.fired} fired a loader {dict(s.by_loader)}; verdicts when fired "
        f"{dict(s.verdicts_when_fired)}; {s.failures} failures, {s.soft} soft"
    )
    for klass, n in s.failure_classes.most_common():
        print(f"  FAILURE x{n} {klass}")
    for klass, n in s.soft_classes.most_common():
        print(f"  soft x{n} {klass}")
    print(f"details: {cfg.out}/summary.json")
    return 1 if s.failures else 0


if __name__ == "__main__":
    sys.exit(main())
