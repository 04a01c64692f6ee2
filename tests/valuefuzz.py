"""A value-level differential fuzzer: hermetic's safe evaluator against the real loaders.

Issue #12, point 2: "the evaluator refuses whatever the real loader refuses". For every
input, `hermetic.load_pickle` / `hermetic.torch.load` must either raise where the real
loader raises, or return a value equal to the real loader's (tests/evaluate_compare.py's
Comparer: types, bitwise floats, tensors and arrays, layout, shared identity).

Real loaders (the specification):

- plain pickles: `pickle.loads` through an Unpickler whose `find_class` permits exactly
  what hermetic permits without `allow=` (hermetic_pickle::policy's SAFE_GLOBALS, torch
  dtypes and storages, INERT_CLASSES as exported by `hermetic._hermetic.INERT_CLASSES`,
  and `copyreg._reconstructor` for the protocol 0/1 wrappers); any other class is
  refused by both sides, so mutants never rename a global to one outside the list;
- torch zip checkpoints: `torch.load(f, weights_only=True, map_location="cpu")` against
  `hermetic.torch.load(f, map_location="cpu")`; global swaps in torch pickles stay
  inside torch's own weights-only allow list;
- .npy / .npz: `np.load(f, allow_pickle=True)` whose object-array pickle goes through the
  restricted Unpickler above (an .npz is compared as `{name: z[name]}`), against
  `hermetic.load_pickle(bytes)`.

Seeds are written by the real libraries (pickle protocols 0-5 of nested containers,
big ints, floats, bytes, strings, OrderedDict/Counter, datetime/Decimal/Fraction/
Namespace/UUID/paths/deque/defaultdict, numpy arrays of many dtypes incl. big-endian,
Fortran order, structured, object and 0-d, numpy scalars and dtypes; torch.save state
dicts with many dtypes, views, shared storages, Parameters, protocols 2 and 4; np.save /
np.savez). Mutants rewrite opcode *arguments*, not random bytes: the pickle is parsed
with `pickletools.genops`, one to three arguments are re-encoded (and the stream is
re-framed correctly), then fed to both sides. Mutation kinds (the summary counts them):

  int          integer arguments (INT/BININT*/LONG*): boundaries, negatives, huge,
               re-encoded in another int opcode; text INT/LONG spellings (0x, _, 010)
  long_enc     LONG1/LONG4/LONG non-minimal and alternative encodings of the same value
  str          string contents (unicode ops and py2 strings): dtype codes, byte orders,
               codec names, invalid UTF-8, surrogates, NULs, long strings
  bytes        BINBYTES/SHORT_BINBYTES/BYTEARRAY8 payloads too short/long/empty
  length       a length prefix changed without its payload
  float        BINFLOAT bits (NaN payloads, sNaN, -0.0, subnormals), FLOAT text
  bool         NEWTRUE/NEWFALSE/NONE/I01/I00 exchanged (fortran flags, requires_grad)
  memo_get     GET indices to other, unknown or huge slots
  memo_put     PUT to reused slots, dropped PUT/MEMOIZE, duplicated MEMOIZE
  frame        FRAME lengths off by one, zero, huge, frames removed
  proto        PROTO version
  global       GLOBAL/STACK_GLOBAL swapped inside the allowed lists
  persid       torch persistent ids: storage key, location ("cuda:0", garbage), numel,
               storage class
  tensor       integers of a tensor rebuild (storage offset, sizes, strides)
  zip_name     torch zip records renamed, missing, duplicated, extra prefix directories
  zip_meta     the byteorder and version records
  zip_data     a storage record truncated or extended
  npy_header   .npy header: descr, fortran_order, shape, format version
  npy_data     .npy array data truncated or extended
  npz_name     .npz member names

Classification of a mutant: agree_raise (both raise; error types may differ), agree_equal
(both return equal values), documented (hermetic raises, the real loader returns, and
the refusal is one hermetic documents, see DOCUMENTED), mismatch (anything else where
one side raises and the other returns, or the values differ), hermetic_crash (hermetic
killed the process or ran past the time limit while the real loader had finished), and
timeout (the real loader itself did not finish: no verdict).

Documented refusals used (DOCUMENTED, matched on hermetic's message, strictly): only
the scanner's structural findings, which README.md documents as refused whatever
`allow=` says ("and so is anything structural the scanner finds"):

  frame_violation   an opcode crosses the end of its FRAME (CPython's C unpickler reads
                    on; its Python unpickler refuses)
  malformed_stream  a text INT/LONG/GET argument int() would read (" 5", "0x10", "1_0")
  ambiguous_zip     a zip with duplicate member names (zipfile and numpy take the last)

and what docs/SPEC.md lists under "Where the evaluator refuses what the real loader
returns": dtype states numpy keeps but never writes (a byte order on a type that has none,
'|' on one that has, a negative or odd flexible element size, record names missing from
the fields, negative field offsets) and functions as values.

Every other hermetic refusal of a file the real loader returns a value for is a
mismatch. Two more outcomes give no verdict and are counted apart: real_oom (the real
loader hit the child's address-space limit, e.g. a PUT to memo slot 2**31 grows
CPython's memo array) and timeout.

Run:     nice python tests/valuefuzz.py --minutes 10 --seed 1 --out /tmp/valuefuzz
Replay:  python tests/valuefuzz.py --replay /tmp/valuefuzz
"""

from __future__ import annotations

import argparse
import collections
import datetime
import decimal
import fractions
import io
import json
import os
import pathlib
import pickle
import pickletools
import random
import re
import select
import signal
import struct
import sys
import tempfile
import time
import uuid
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from difffuzz import ZEntry, build_zip, npy_build, npy_split  # noqa: E402

TIMEOUT_S = 10.0
MEMORY = 3 << 30  # address space a child may add to the parent's

# (reason, regex on hermetic's "Type: message") of refusals docs/SPEC.md documents.
DOCUMENTED: list[tuple[str, str]] = [
    # README, "Checkpoints that hold your own classes": "... and so is anything
    # structural the scanner finds" (refused whatever allow= says).
    ("scanner: frame_violation", r"^UnsafePickleError: .*\n  frame_violation at byte"),
    ("scanner: malformed_stream", r"^UnsafePickleError: .*\n  malformed_stream at byte"),
    ("scanner: ambiguous_zip", r"^UnsafePickleError: .*\n  ambiguous_zip at byte"),
    # docs/SPEC.md, "Where the evaluator refuses what the real loader returns": dtypes
    # numpy builds from a state but no numpy writes ('|f4', 'V-1', a 5-byte U).
    (
        "spec: dtype byte order",
        r"^CheckpointError: .*numpy keeps it as given, a dtype no numpy writes",
    ),
    ("spec: flexible dtype size", r"^CheckpointError: .*BUILD: a dtype element size of -?\d+$"),
    ("spec: record field offset", r"^CheckpointError: .*BUILD: a negative field offset$"),
    (
        "spec: record names",
        r"^CheckpointError: .*BUILD: the record field .* has no entry in fields$",
    ),
    (
        "spec: dtype flags",
        r"^CheckpointError: .*a dtype state with the flags .*; numpy writes \d+ for",
    ),
    (
        "spec: record flags",
        r"^CheckpointError: .*a record dtype state whose flags are negative or beyond",
    ),
    (
        "spec: record outside",
        r"^CheckpointError: .*BUILD: the record field .* lies outside the record's \d+ bytes$",
    ),
    ("spec: record offset", r"^CheckpointError: .*BUILD: a field offset is an int beyond 64 bits$"),
    ("spec: record on non-void", r"^CheckpointError: .*a record dtype state on the numpy type"),
    ("spec: record aligned", r"^CheckpointError: a record dtype numpy cannot rebuild as aligned"),
    (
        "spec: object array short",
        r"^CheckpointError: .*BUILD: an object array of shape .* has only \d+ items$",
    ),
    (
        "spec: dtype state version",
        r"^CheckpointError: .*a dtype state of version -?\d+ in a tuple of",
    ),
    ("spec: longlong", r'^CheckpointError: .*not supported: REDUCE: the numpy type "[qQ]"$'),
    ("spec: record size", r"^CheckpointError: .*BUILD: a record dtype's size -?\d+$"),
    (
        "spec: record field dtype",
        r"^CheckpointError: .*BUILD: (an? |the global )?[\w .]+ where a numpy dtype belongs$",
    ),
    (
        "spec: storage location",
        r"^CheckpointError: .*BINPERSID: a storage location is .*, not a str$",
    ),
    (
        "spec: storage size",
        r"^CheckpointError: .*BINPERSID: a storage('s size overflows| size is not a non-negative"
        r" int)$",
    ),
    (
        "spec: negative stride",
        r"^CheckpointError: .*REDUCE: the (size|stride) holds a negative value -?\d+$",
    ),
    (
        "spec: ndarray()",
        r"^CheckpointError: .*REDUCE: calling numpy.ndarray \(only its use as an argument is"
        r" data\)$",
    ),
    ("spec: torch.Tensor()", r"^CheckpointError: .*REDUCE: calling torch.Tensor \(only its use"),
    ("spec: backward hooks", r"^CheckpointError: .*REDUCE: backward hooks in a checkpoint"),
    (
        "spec: dtype spelling",
        r"^CheckpointError: .*REDUCE: (numpy.dtype's type is .*, not a str|_reconstruct's dtype )",
    ),
    (
        "spec: storage type",
        r"^CheckpointError: .*BINPERSID: a storage persistent id's type is ",
    ),
    (
        "spec: slice key",
        r"^CheckpointError: .*a slice as a dict key or set item \(hashable from Python 3\.12",
    ),
    (
        "spec: keys not comparable",
        r"^CheckpointError: .*of a dict keyed by .*, which hermetic cannot compare as Python does$",
    ),
    (
        "spec: record field dtype 2",
        r"^CheckpointError: .*BUILD: bytes where a numpy dtype belongs$",
    ),
    (
        "spec: datetime metadata",
        r"^CheckpointError: .*a datetime dtype state whose \w+ (is not 1|\d+ is beyond 32 bits)$",
    ),
    (
        "spec: big torch.Size",
        r"^CheckpointError: .*a torch.Size dimension is an int beyond 64 bits$",
    ),
    ("spec: complex(str)", r"^CheckpointError: .*REDUCE: complex of a str$"),
    ("spec: Parameter()", r"^CheckpointError: .*REDUCE: Parameter takes 1 or 2 arguments$"),
    ("scanner: unusual_structure", r"^UnsafePickleError: .*\n  unusual_structure at byte"),
    (
        "spec: no functions",
        r"^CheckpointError: \S+ appears as a value; hermetic does not hand out functions$",
    ),
]

# --------------------------------------------------------------------------
# The reference loaders.

_SAFE_GLOBALS = {
    ("collections", "OrderedDict"),
    ("collections", "Counter"),
    *(
        ("builtins", n)
        for n in (
            "set frozenset complex slice range bytearray bytes int float bool str list tuple dict"
        ).split()
    ),
    ("_codecs", "encode"),
    ("torch", "Size"),
    ("torch", "Tensor"),
    ("torch", "device"),
    ("torch.nn.parameter", "Parameter"),
    ("torch.nn.parameter", "Buffer"),
    ("torch.serialization", "_get_layout"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    *(
        ("torch._utils", n)
        for n in (
            "_rebuild_tensor _rebuild_tensor_v2 _rebuild_tensor_v3 _rebuild_parameter "
            "_rebuild_parameter_with_state _rebuild_qtensor _rebuild_sparse_tensor "
            "_rebuild_meta_tensor_no_storage _rebuild_wrapper_subclass "
            "_rebuild_device_tensor_from_cpu_tensor _rebuild_device_tensor_from_numpy"
        ).split()
    ),
    ("torch.storage", "TypedStorage"),
    ("torch.storage", "UntypedStorage"),
    *(
        ("torch", n)
        for n in (
            "strided sparse_coo sparse_csr sparse_csc sparse_bsr sparse_bsc _mkldnn "
            "contiguous_format channels_last channels_last_3d preserve_format "
            "per_tensor_affine per_tensor_symmetric per_channel_affine "
            "per_channel_symmetric per_channel_affine_float_qparams"
        ).split()
    ),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core._internal", "_reconstruct"),
}
_STORAGE_PREFIXES = (
    "BFloat16 Bool Byte Char ComplexDouble ComplexFloat Double Float Half Int Long "
    "QInt32 QInt8 QUInt2x4 QUInt4x2 QUInt8 Short"
).split()


def allowed_globals() -> set[tuple[str, str]]:
    """What hermetic permits without allow= (mirrors hermetic_pickle::policy)."""
    from hermetic import _hermetic

    out = set(_SAFE_GLOBALS)
    out |= {tuple(s.split(":", 1)) for s in _hermetic.INERT_CLASSES}  # type: ignore[misc]
    out |= {("torch", d) for d in _hermetic.TORCH_DTYPE_NAMES}
    for p in _STORAGE_PREFIXES:
        out |= {("torch", f"{p}Storage"), ("torch.cuda", f"{p}Storage")}
    return out


class RestrictedUnpickler(pickle.Unpickler):
    allowed: set[tuple[str, str]] = set()

    def find_class(self, module: str, name: str) -> Any:
        # Judge the name after Python 2 mapping; the C unpickler maps it itself
        # (only below protocol 3), so the raw name goes to super().
        import _compat_pickle

        mapped = (module, name)
        if mapped in _compat_pickle.NAME_MAPPING:
            mapped = _compat_pickle.NAME_MAPPING[mapped]
        elif module in _compat_pickle.IMPORT_MAPPING:
            mapped = (_compat_pickle.IMPORT_MAPPING[module], name)
        if mapped not in self.allowed:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return super().find_class(module, name)


def restricted_loads(data: bytes) -> Any:
    return RestrictedUnpickler(io.BytesIO(data)).load()


class _RestrictedPickleModule:
    """Stands for `pickle` inside numpy's .npy reader."""

    UnpicklingError = pickle.UnpicklingError

    @staticmethod
    def load(f: Any, **kw: Any) -> Any:
        return RestrictedUnpickler(f, **kw).load()

    def __getattr__(self, name: str) -> Any:
        return getattr(pickle, name)


def real_load(kind: str, path: str, data: bytes) -> Any:
    if kind == "pickle":
        return restricted_loads(data)
    if kind == "torch":
        import torch

        return torch.load(path, weights_only=True, map_location="cpu")
    import numpy as np
    import numpy.lib._format_impl as fmt

    fmt.pickle = _RestrictedPickleModule()  # type: ignore[assignment]
    if kind == "npz":
        with np.load(path, allow_pickle=True) as z:
            return {k: z[k] for k in z.files}
    return np.load(path, allow_pickle=True)


class _RestrictedModule:
    """A `pickle_module` for torch.load whose Unpickler is RestrictedUnpickler."""

    Unpickler = RestrictedUnpickler
    UnpicklingError = pickle.UnpicklingError
    load = staticmethod(_RestrictedPickleModule.load)

    def __getattr__(self, name: str) -> Any:
        return getattr(pickle, name)


def torch_restricted_load(path: str) -> Any:
    import torch

    return torch.load(
        path, weights_only=False, map_location="cpu", pickle_module=_RestrictedModule()
    )


def hermetic_load(kind: str, path: str, data: bytes) -> Any:
    import hermetic

    if kind == "torch":
        return hermetic.torch.load(path, map_location="cpu")
    return hermetic.load_pickle(data)


# --------------------------------------------------------------------------
# Comparison (evaluate_compare.Comparer, NaN-tolerant in set members and dict keys).


def _key(x: Any) -> str:
    return f"{type(x).__name__}:{x!r}"


def make_comparer() -> Any:
    from evaluate_compare import Comparer

    class ValueComparer(Comparer):  # type: ignore[misc, valid-type]
        def same(self, a: Any, b: Any, path: str = "root") -> None:
            if type(a) is type(b):
                if isinstance(a, argparse.Namespace) and a != b:
                    self.attrs(a, b, path)
                    return
                if isinstance(a, decimal.Decimal):
                    assert a.as_tuple() == b.as_tuple(), f"{path}: {a!r} != {b!r}"
                    return
                if isinstance(a, slice):
                    # Part by part: slice(nan) == slice(nan) is False.
                    for part in ("start", "stop", "step"):
                        self.same(getattr(a, part), getattr(b, part), f"{path}.{part}")
                    return
                if isinstance(a, (set, frozenset)) and a != b:
                    assert sorted(map(_key, a)) == sorted(map(_key, b)), f"{path}: {a} != {b}"
                    return
                if isinstance(a, dict) and list(a) != list(b):
                    ka, kb = [_key(k) for k in a], [_key(k) for k in b]
                    assert ka == kb, f"{path}: keys {ka} != {kb}"
                    for i, (x, y) in enumerate(zip(a.values(), b.values(), strict=True)):
                        self.same(x, y, f"{path}[key {i}]")
                    self.attrs(a, b, path)
                    return
            super().same(a, b, path)

    return ValueComparer()


# --------------------------------------------------------------------------
# Running one mutant: a forked child with limits loads it both ways.


def _vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def _outcome(fn: Any) -> tuple[Any, dict[str, Any]]:
    try:
        return fn(), {"status": "value"}
    except BaseException as exc:  # noqa: B036 - a loader may raise anything
        msg = str(exc)
        if "WeightsUnpickler error" in msg:  # torch's advice first, the reason after it
            msg = msg[msg.index("WeightsUnpickler error") :]
        return None, {"status": "raise", "error": f"{type(exc).__name__}: {msg[:400]}"}


def _child(kind: str, path: str, data: bytes, wfd: int, real_too: bool = True) -> None:
    import resource
    import warnings

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        limit = _vm_size() + MEMORY
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        warnings.simplefilter("ignore")

        def send(obj: dict[str, Any]) -> None:
            os.write(wfd, (json.dumps(obj) + "\n").encode())

        send({"stage": "real"})
        rv, real = (
            _outcome(lambda: real_load(kind, path, data))
            if real_too
            else (None, {"status": "skipped"})
        )
        if kind == "torch" and "Unsupported operand" in real.get("error", ""):
            # torch's weights-only unpickler lacks the opcode: the same file
            # through torch.load with the restricted pickle module.
            rv, real2 = _outcome(lambda: torch_restricted_load(path))
            real["restricted_pickle_module"] = real2
        send({"stage": "real_done", "real": real})
        hv, herm = _outcome(lambda: hermetic_load(kind, path, data))
        send({"stage": "hermetic_done", "hermetic": herm})
        if (
            herm["status"] == "value"
            and real.get("restricted_pickle_module", {}).get("status") == "value"
        ):
            _, cmp = _outcome(lambda: make_comparer().same(hv, rv))
            send({"stage": "compared", "compare": cmp.get("error")})
        elif real["status"] == herm["status"] == "value":
            _, cmp = _outcome(lambda: make_comparer().same(hv, rv))
            send({"stage": "compared", "compare": cmp.get("error")})
    finally:
        os._exit(0)


def run_one(kind: str, data: bytes, work: Path, real_too: bool = True) -> dict[str, Any]:
    suffix = {"torch": ".pt", "npy": ".npy", "npz": ".npz"}.get(kind, ".pkl")
    path = work / f"mutant{suffix}"
    path.write_bytes(data)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        _child(kind, str(path), data, wfd, real_too)
    os.close(wfd)
    buf = b""
    deadline = time.monotonic() + TIMEOUT_S
    timed_out = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            os.kill(pid, signal.SIGKILL)
            break
        r, _, _ = select.select([rfd], [], [], left)
        if r:
            chunk = os.read(rfd, 65536)
            if not chunk:
                break
            buf += chunk
    os.close(rfd)
    _, status = os.waitpid(pid, 0)
    result: dict[str, Any] = {"stage": None}
    for line in buf.decode().splitlines():
        result.update(json.loads(line))
    if result["stage"] in ("real", None):
        result["real"] = {"status": "timeout" if timed_out else "crash", "status_code": status}
        if real_too:  # does hermetic finish on it at least?
            result["hermetic"] = run_one(kind, data, work, real_too=False).get("hermetic")
    elif result["stage"] == "real_done":
        result["hermetic"] = {
            "status": "timeout" if timed_out else "crash",
            "status_code": status,
        }
        if real_too:
            # The real loader ran first in the same process and may have left
            # it corrupted (numpy segfaults on some dtype states): hermetic's
            # outcome is the one it has alone, in a fresh process.
            alone = run_one(kind, data, work, real_too=False).get("hermetic")
            if alone and alone.get("status") not in ("timeout", "crash"):
                result["hermetic_after_real"] = result["hermetic"]
                result["hermetic"] = alone
    return result


def classify(res: dict[str, Any]) -> str:
    real, herm = res.get("real", {}), res.get("hermetic", {})
    if real.get("status") in ("timeout", "crash"):
        if (herm or {}).get("status") in ("timeout", "crash"):
            return "hermetic_crash"
        return "timeout"
    if herm.get("status") in ("timeout", "crash"):
        return "hermetic_crash"
    if (
        real["status"] == "raise"
        and real["error"].startswith("MemoryError")
        and herm["status"] == "value"
    ):
        return "real_oom"  # the real loader ran out of the child's address space: no verdict
    if (
        real["status"] == "raise"
        and real.get("restricted_pickle_module", {}).get("error", "").startswith("MemoryError")
        and herm["status"] == "value"
    ):
        # torch's weights-only unpickler refused an opcode hermetic reads as pickle does,
        # and pickle itself ran out of memory (a PUT to a huge memo slot): no verdict.
        return "real_oom"
    if (
        real.get("restricted_pickle_module", {}).get("status") == "value"
        and herm["status"] == "value"
    ):
        # torch.load(weights_only=True) lacks an opcode that pickle has.
        return "weights_only_opcode" if res.get("compare") is None else "mismatch"
    if real["status"] == herm["status"] == "raise":
        return "agree_raise"
    if real["status"] == herm["status"] == "value":
        return "agree_equal" if res.get("compare") is None else "mismatch"
    if herm["status"] == "raise":
        for reason, pattern in DOCUMENTED:
            if re.search(pattern, herm["error"]):
                res["documented"] = reason
                return "documented"
    return "mismatch"


# --------------------------------------------------------------------------
# Pickle opcodes: parse, edit arguments, re-serialise with correct framing.


@dataclass
class Op:
    name: str
    arg: Any
    raw: bytes


def parse(data: bytes, start: int = 0) -> tuple[list[Op], int]:
    """The ops of the pickle at `start` (FRAMEs dropped) and the offset after STOP."""
    items = []
    end = start
    for opcode, arg, pos in pickletools.genops(io.BytesIO(data[start:])):
        items.append((opcode.name, arg, pos))
        if opcode.name == "STOP":
            end = start + pos + 1
    ops = []
    for i, (name, arg, pos) in enumerate(items):
        nxt = items[i + 1][2] if i + 1 < len(items) else end - start
        if name != "FRAME":
            ops.append(Op(name, arg, data[start + pos : start + nxt]))
    return ops, end


FRAME_TARGET = 64 * 1024


def serialise(ops: list[Op], framed: bool) -> bytes:
    out = bytearray()
    frame = bytearray()

    def flush() -> None:
        if frame:
            out.extend(b"\x95" + struct.pack("<Q", len(frame)) + frame)
            frame.clear()

    for op in ops:
        if not framed or op.name == "PROTO":
            out += op.raw
        elif len(op.raw) >= FRAME_TARGET:
            flush()
            out += op.raw
        else:
            frame += op.raw
            if len(frame) >= FRAME_TARGET:
                flush()
    flush()
    return bytes(out)


INT_OPS = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"}
UNICODE_OPS = {"UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"}
PY2STR_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING"}
BYTES_OPS = {"SHORT_BINBYTES", "BINBYTES", "BINBYTES8", "BYTEARRAY8"}
GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
LENGTH_PREFIX = {
    "SHORT_BINUNICODE": "<B",
    "BINUNICODE": "<I",
    "BINUNICODE8": "<Q",
    "SHORT_BINBYTES": "<B",
    "BINBYTES": "<I",
    "BINBYTES8": "<Q",
    "BYTEARRAY8": "<Q",
    "BINSTRING": "<i",
    "SHORT_BINSTRING": "<B",
    "LONG1": "<B",
    "LONG4": "<i",
}


def is_int_op(op: Op) -> bool:
    return op.name in INT_OPS and not isinstance(op.arg, bool)


def enc_int(v: int, text: bool, rng: random.Random) -> Op:
    if text:
        if rng.random() < 0.5:
            return Op("INT", v, b"I%d\n" % v)
        return Op("LONG", v, b"L%dL\n" % v)
    choices = []
    if 0 <= v < 256:
        choices.append(Op("BININT1", v, b"K" + bytes([v])))
    if 0 <= v < 65536:
        choices.append(Op("BININT2", v, b"M" + struct.pack("<H", v)))
    if -(2**31) <= v < 2**31:
        choices.append(Op("BININT", v, b"J" + struct.pack("<i", v)))
    enc = pickle.encode_long(v)
    if len(enc) < 256:
        choices.append(Op("LONG1", v, b"\x8a" + bytes([len(enc)]) + enc))
    choices.append(Op("LONG4", v, b"\x8b" + struct.pack("<i", len(enc)) + enc))
    return choices[0] if rng.random() < 0.6 else rng.choice(choices)


def enc_unicode(payload: bytes, name: str, rng: random.Random) -> Op:
    """A unicode op whose raw payload is `payload` (utf-8, maybe invalid)."""
    if name == "UNICODE":
        try:
            s = payload.decode("utf-8", "surrogatepass")
            body = (
                s.replace("\\", "\\u005c")
                .replace("\0", "\\u0000")
                .replace("\n", "\\u000a")
                .replace("\r", "\\u000d")
                .replace("\x1a", "\\u001a")
                .encode("raw-unicode-escape")
            )
        except UnicodeDecodeError:
            body = payload.replace(b"\n", b"")
        return Op("UNICODE", None, b"V" + body + b"\n")
    if name == "SHORT_BINUNICODE" and len(payload) < 256 and rng.random() < 0.8:
        return Op(name, None, b"\x8c" + bytes([len(payload)]) + payload)
    if name == "BINUNICODE8" or rng.random() < 0.1:
        return Op("BINUNICODE8", None, b"\x8d" + struct.pack("<Q", len(payload)) + payload)
    return Op("BINUNICODE", None, b"X" + struct.pack("<I", len(payload)) + payload)


def enc_bytes(payload: bytes, name: str) -> Op:
    if name == "SHORT_BINBYTES" and len(payload) < 256:
        return Op(name, payload, b"C" + bytes([len(payload)]) + payload)
    if name == "BINBYTES8":
        return Op(name, payload, b"\x8e" + struct.pack("<Q", len(payload)) + payload)
    if name == "BYTEARRAY8":
        return Op(name, payload, b"\x96" + struct.pack("<Q", len(payload)) + payload)
    return Op("BINBYTES", payload, b"B" + struct.pack("<I", len(payload)) + payload)


def enc_py2str(payload: bytes, name: str) -> Op:
    if name == "STRING":
        return Op(name, None, b"S" + repr(payload)[1:].encode("latin-1", "replace") + b"\n")
    if name == "SHORT_BINSTRING" and len(payload) < 256:
        return Op(name, None, b"U" + bytes([len(payload)]) + payload)
    return Op("BINSTRING", None, b"T" + struct.pack("<i", len(payload)) + payload)


def int_candidates(v: int) -> list[int]:
    return [
        0,
        1,
        -1,
        2,
        3,
        4,
        5,
        v + 1,
        v - 1,
        -v,
        2 * v,
        v // 2,
        255,
        256,
        65535,
        65536,
        2**31 - 1,
        -(2**31),
        2**31,
        2**32,
        2**32 - 1,
        2**53 + 1,
        2**62,
        2**63 - 1,
        -(2**63),
        2**63,
        2**64,
        -(2**64) - 1,
        2**200,
        -(10**80),
    ]


DTYPE_CODES = (
    "f4 f8 f2 i1 i2 i4 i8 u1 u2 u4 u8 b1 ? c8 c16 O O8 O4 U5 U0 U S3 S0 S a2 V8 V0 V "
    "M8 M8[s] m8[ns] M8[xyz] <f4 >i8 |b1 <U5 f3 i0 i16 x q Q e g G T StringDType"
).split()
BYTEORDERS = ["<", ">", "|", "=", "!", "x", "", "<<"]
CODECS = (
    "latin1 latin-1 LATIN1 iso-8859-1 utf-8 utf8 ascii rot13 hex base64 utf-16 cp1252 x".split()
)
LOCATIONS = [
    "cpu",
    "cuda",
    "cuda:0",
    "cuda:1",
    "meta",
    "mps",
    "cpu:0",
    "xla:0",
    "",
    "garbage",
    "CPU",
]
STORAGE_KEYS = ["0", "1", "2", "9", "99", "", "00", "-1", "0/../0", "../0", "a", "0 "]


def str_candidates(orig: str) -> list[bytes]:
    generic: list[bytes] = [
        b"",
        orig.encode("utf-8", "surrogatepass") + b"x",
        orig.encode("utf-8", "surrogatepass")[:-1],
        orig.encode("utf-8", "surrogatepass") * 2,
        "é".encode(),
        "✓𝄞".encode(),
        b"\xed\xa0\x80",  # a lone surrogate, surrogatepass UTF-8
        b"a\xed\xb0\x80b",
        b"\xff",
        b"\xc3",
        b"\xf4\x90\x80\x80",
        b"\xc0\x80",
        b"\x00",
        b"a\x00b",
        b"x" * 300,
    ]
    if orig in BYTEORDERS:
        return [s.encode() for s in BYTEORDERS] + generic[:3]
    if re.fullmatch(r"[<>|=]?[a-zA-Z?]\d*(\[\w+\])?", orig):
        return [s.encode() for s in DTYPE_CODES] + generic[:4]
    if orig.lower().replace("-", "") in ("latin1", "bytes", "ascii"):
        return [s.encode() for s in CODECS] + generic[:2]
    if orig in LOCATIONS or orig.startswith("cuda"):
        return [s.encode() for s in LOCATIONS]
    if orig.isdigit():
        return [s.encode() for s in STORAGE_KEYS] + generic[:3]
    return generic


FLOAT_BITS = [
    0x7FF8000000000000,
    0x7FF0000000000001,
    0xFFF8000000000000,
    0x7FF8DEAD0000BEEF,
    0x7FF4000000000000,
    0x7FF0000000000000,
    0xFFF0000000000000,
    0x8000000000000000,
    0x0000000000000001,
    0x800FFFFFFFFFFFFF,
    0x7FEFFFFFFFFFFFFF,
    0x3FF0000000000001,
]
FLOAT_TEXT = [
    b"nan",
    b"-nan",
    b"NaN",
    b"inf",
    b"-inf",
    b"infinity",
    b"1e400",
    b"-1e400",
    b"1e-400",
    b"0x1p3",
    b"1_0",
    b" 1.5",
    b"1.5 ",
    b"+0",
    b"-0.0",
    b"",
    b"1e",
    b"4.9e-324",
]


class Ctx:
    def __init__(self, rng: random.Random, kind: str, torch_allowed: set[str]) -> None:
        self.rng = rng
        self.kind = kind
        self.torch_allowed = torch_allowed


def _pick(ops: list[Op], pred: Any, rng: random.Random) -> int | None:
    idx = [i for i, op in enumerate(ops) if pred(op)]
    return rng.choice(idx) if idx else None


def m_int(ops: list[Op], ctx: Ctx) -> bool:
    rng = ctx.rng
    i = _pick(ops, is_int_op, rng)
    if i is None:
        return False
    v = int(ops[i].arg)
    text = ops[i].name in ("INT", "LONG")
    if text and rng.random() < 0.3:
        spell = rng.choice(
            [
                b"0x%x" % abs(v),
                b"0%d" % abs(v),
                b"1_%d" % abs(v),
                b" %d" % v,
                b"+%d" % v,
                b"%d " % v,
            ]
        )
        ops[i] = Op("INT", None, b"I" + spell + b"\n")
        return True
    ops[i] = enc_int(rng.choice(int_candidates(v)), text, rng)
    return True


def m_long_enc(ops: list[Op], ctx: Ctx) -> bool:
    rng = ctx.rng
    i = _pick(ops, is_int_op, rng)
    if i is None:
        return False
    v = int(ops[i].arg)
    enc = pickle.encode_long(v)
    pad = (b"\xff" if v < 0 else b"\x00") * rng.choice([1, 2, 7])
    choice = rng.randrange(5)
    if choice == 0:
        body = enc + pad
        ops[i] = Op("LONG1", v, b"\x8a" + bytes([len(body)]) + body)
    elif choice == 1:
        body = enc + pad
        ops[i] = Op("LONG4", v, b"\x8b" + struct.pack("<i", len(body)) + body)
    elif choice == 2:
        ops[i] = Op("LONG1", 0, b"\x8a\x00")
    elif choice == 3:
        ops[i] = Op("LONG", v, b"L%d\n" % v)  # no L suffix
    else:
        flipped = bytearray(enc or b"\x00")
        flipped[-1] ^= 0x80
        ops[i] = Op("LONG1", None, b"\x8a" + bytes([len(flipped)]) + bytes(flipped))
    return True


def m_str(ops: list[Op], ctx: Ctx) -> bool:
    rng = ctx.rng
    i = _pick(ops, lambda op: op.name in UNICODE_OPS | PY2STR_OPS, rng)
    if i is None:
        return False
    op = ops[i]
    orig = op.arg if isinstance(op.arg, str) else ""
    payload = rng.choice(str_candidates(orig))
    if op.name in PY2STR_OPS:
        ops[i] = enc_py2str(payload, op.name)
    else:
        ops[i] = enc_unicode(payload, op.name, rng)
        ops[i].arg = payload.decode("utf-8", "replace")
    return True


def m_bytes(ops: list[Op], ctx: Ctx) -> bool:
    rng = ctx.rng
    i = _pick(ops, lambda op: op.name in BYTES_OPS, rng)
    if i is None:
        return False
    b = bytes(ops[i].arg)
    k = rng.choice([1, 2, 3, 4, 7, 8])
    new = rng.choice(
        [b[:-k], b + b"\x00" * k, b"", b * 2, b[: len(b) // 2], b[k:], b"\xff" * len(b)]
    )
    ops[i] = enc_bytes(new, rng.choice([ops[i].name] * 4 + sorted(BYTES_OPS)))
    return True


def m_length(ops: list[Op], ctx: Ctx) -> bool:
    rng = ctx.rng
    i = _pick(ops, lambda op: op.name in LENGTH_PREFIX, rng)
    if i is None:
        return False
    op = ops[i]
    fmt = LENGTH_PREFIX[op.name]
    size = struct.calcsize(fmt)
    (n,) = struct.unpack(fmt, op.raw[1 : 1 + size])
    lo, hi = (
        (-(2 ** (8 * size - 1)), 2 ** (8 * size - 1) - 1)
        if fmt[1] == "i"
        else (0, 2 ** (8 * size) - 1)
    )
    new = rng.choice([n + 1, n - 1, 0, n + 8, n - 8, hi, lo, -1, 2**31 - 1, 2**40, 2**62])
    new = min(max(new, lo), hi)
    ops[i] = Op(op.name, None, op.raw[:1] + struct.pack(fmt, new) + op.raw[1 + size :])
    return True


def m_float(ops: list[Op], ctx: Ctx) -> bool:
    rng = ctx.rng
    i = _pick(ops, lambda op: op.name in ("FLOAT", "BINFLOAT"), rng)
    if i is None:
        return False
    if ops[i].name == "FLOAT" and rng.random() < 0.7 or rng.random() < 0.1:
        ops[i] = Op("FLOAT", None, b"F" + rng.choice(FLOAT_TEXT) + b"\n")
    else:
        ops[i] = Op("BINFLOAT", None, b"G" + struct.pack(">Q", rng.choice(FLOAT_BITS)))
    return True


BOOL_RAWS = [b"\x88", b"\x89", b"N", b"I01\n", b"I00\n", b"I1\n", b"I2\n", b"K\x01", b"K\x00"]


def m_bool(ops: list[Op], ctx: Ctx) -> bool:
    rng = ctx.rng
    i = _pick(
        ops,
        lambda op: op.name in ("NEWTRUE", "NEWFALSE", "NONE") or isinstance(op.arg, bool),
        rng,
    )
    if i is None:
        return False
    ops[i] = Op("BOOLISH", None, rng.choice(BOOL_RAWS))
    return True


def memo_slots(ops: list[Op]) -> list[int]:
    slots: list[int] = []
    for op in ops:
        if op.name in PUT_OPS:
            slots.append(int(op.arg))
        elif op.name == "MEMOIZE":
            slots.append(len(set(slots)))
    return sorted(set(slots))


def enc_memo(kind: str, i: int) -> Op:
    if kind == "get":
        if 0 <= i < 256:
            return Op("BINGET", i, b"h" + bytes([i]))
        if 0 <= i < 2**32:
            return Op("LONG_BINGET", i, b"j" + struct.pack("<I", i))
        return Op("GET", i, b"g%d\n" % i)
    if 0 <= i < 256:
        return Op("BINPUT", i, b"q" + bytes([i]))
    if 0 <= i < 2**32:
        return Op("LONG_BINPUT", i, b"r" + struct.pack("<I", i))
    return Op("PUT", i, b"p%d\n" % i)


def m_memo_get(ops: list[Op], ctx: Ctx) -> bool:
    rng = ctx.rng
    i = _pick(ops, lambda op: op.name in GET_OPS, rng)
    slots = memo_slots(ops)
    if i is None:
        # No GET: add one that repeats an earlier memoized object.
        j = _pick(ops, lambda op: op.name in PUT_OPS or op.name == "MEMOIZE", rng)
        if j is None or not slots:
            return False
        ops.insert(j + 1, Op("POP", None, b"0"))
        ops.insert(j + 2, enc_memo("get", rng.choice(slots)))
        ops.insert(j + 3, Op("POP", None, b"0"))
        return True
    top = max(slots, default=0)
    new = rng.choice(
        [*rng.sample(slots, min(3, len(slots))), top + 1, 255, 256, 2**32 - 1, -1, 2**40]
    )
    if ops[i].name == "GET" or rng.random() < 0.15:
        ops[i] = Op("GET", new, b"g%d\n" % new)
    else:
        ops[i] = enc_memo("get", new)
    return True


def m_memo_put(ops: list[Op], ctx: Ctx) -> bool:
    rng = ctx.rng
    i = _pick(ops, lambda op: op.name in PUT_OPS or op.name == "MEMOIZE", rng)
    if i is None:
        return False
    slots = memo_slots(ops)
    choice = rng.randrange(4)
    if choice == 0:
        del ops[i]
    elif choice == 1:
        ops.insert(i, ops[i])
    else:
        new = rng.choice([*slots, 2**31, 2**32 - 1, -1]) if slots else 0
        ops[i] = Op("PUT", new, b"p%d\n" % new) if new < 0 or choice == 3 else enc_memo("put", new)
    return True


def m_proto(ops: list[Op], ctx: Ctx) -> bool:
    if not ops or ops[0].name != "PROTO":
        ops.insert(0, Op("PROTO", 2, b"\x80\x02"))
    ops[0] = Op("PROTO", None, b"\x80" + bytes([ctx.rng.choice([0, 1, 2, 3, 4, 5, 6, 255])]))
    return True


GLOBAL_GROUPS = [
    [f"torch\n{p}Storage" for p in _STORAGE_PREFIXES] + ["torch.cuda\nFloatStorage"],
    [
        "numpy.core.multiarray\n_reconstruct",
        "numpy._core.multiarray\n_reconstruct",
        "numpy.core._internal\n_reconstruct",
        "numpy.core.multiarray\nscalar",
        "numpy._core.multiarray\nscalar",
        "numpy._core.numeric\n_frombuffer",
        "numpy\ndtype",
        "numpy\nndarray",
    ],
    [
        "torch._utils\n_rebuild_tensor",
        "torch._utils\n_rebuild_tensor_v2",
        "torch._utils\n_rebuild_tensor_v3",
        "torch._utils\n_rebuild_parameter",
        "torch._utils\n_rebuild_parameter_with_state",
        "torch._utils\n_rebuild_meta_tensor_no_storage",
        "torch._tensor\n_rebuild_from_type_v2",
        "torch\nSize",
        "torch\nTensor",
        "torch.nn.parameter\nParameter",
    ],
    [
        f"builtins\n{n}"
        for n in "set frozenset complex slice range bytearray bytes list tuple dict".split()
    ]
    + [
        "collections\nOrderedDict",
        "collections\nCounter",
        "collections\ndeque",
        "collections\ndefaultdict",
    ],
    [f"datetime\n{n}" for n in "datetime date time timedelta timezone".split()]
    + ["decimal\nDecimal", "fractions\nFraction", "uuid\nUUID", "argparse\nNamespace"]
    + [f"pathlib\n{n}" for n in "PurePath PurePosixPath PureWindowsPath Path PosixPath".split()],
]


def m_global(ops: list[Op], ctx: Ctx) -> bool:
    rng = ctx.rng
    i = _pick(ops, lambda op: op.name in ("GLOBAL", "STACK_GLOBAL"), rng)
    if i is None:
        return False
    # Plain pickles keep to numpy, builtins and the stdlib (torch objects never
    # reach a plain pickle but through torch.storage._load_from_bytes).
    group = rng.choice(
        GLOBAL_GROUPS if ctx.kind == "torch" else GLOBAL_GROUPS[1:2] + GLOBAL_GROUPS[3:]
    )
    if ctx.kind == "torch":
        group = [g for g in group if g.replace("\n", ".") in ctx.torch_allowed]
        if not group:
            return False
    new = rng.choice(group)
    if ops[i].name == "GLOBAL":
        ops[i] = Op("GLOBAL", new.replace("\n", " "), b"c" + new.encode() + b"\n")
        return True
    # STACK_GLOBAL: rewrite the two strings pushed right before it.
    strs = [j for j in range(max(0, i - 4), i) if ops[j].name in UNICODE_OPS]
    if len(strs) < 2:
        return False
    mod, name = new.split("\n")
    ops[strs[-2]] = enc_unicode(mod.encode(), ops[strs[-2]].name, rng)
    ops[strs[-1]] = enc_unicode(name.encode(), ops[strs[-1]].name, rng)
    return True


def _persid_spans(ops: list[Op]) -> list[tuple[int, int]]:
    spans = []
    for i, op in enumerate(ops):
        if op.name == "BINPERSID":
            j = i - 1
            while j > 0 and ops[j].name != "MARK":
                j -= 1
            spans.append((j, i))
    return spans


def m_persid(ops: list[Op], ctx: Ctx) -> bool:
    rng = ctx.rng
    spans = _persid_spans(ops)
    if not spans:
        return False
    lo, hi = rng.choice(spans)
    strs = [j for j in range(lo, hi) if ops[j].name in UNICODE_OPS]
    ints = [j for j in range(lo, hi) if is_int_op(ops[j])]
    globs = [j for j in range(lo, hi) if ops[j].name == "GLOBAL"]
    what = rng.randrange(4)
    if what == 0 and len(strs) >= 2:  # storage key
        keys = [ops[s].arg for a, b in spans for s in range(a, b) if ops[s].name in UNICODE_OPS]
        keys = [k for k in keys if isinstance(k, str) and k.isdigit()]
        new = rng.choice(keys + STORAGE_KEYS)
        ops[strs[1]] = enc_unicode(new.encode(), ops[strs[1]].name, rng)
    elif what == 1 and len(strs) >= 3:  # location
        ops[strs[2]] = enc_unicode(rng.choice(LOCATIONS).encode(), ops[strs[2]].name, rng)
    elif what == 2 and ints:  # numel
        v = int(ops[ints[-1]].arg)
        new = rng.choice([0, 1, v - 1, v + 1, 2 * v, -1, 2**31, 2**40, 2**63 - 1, 2**64])
        ops[ints[-1]] = enc_int(new, False, rng)
    elif globs:  # storage class
        group = [g for g in GLOBAL_GROUPS[0] if g.replace("\n", ".") in ctx.torch_allowed]
        new = rng.choice(group)
        ops[globs[0]] = Op("GLOBAL", None, b"c" + new.encode() + b"\n")
    else:
        return False
    return True


def m_tensor(ops: list[Op], ctx: Ctx) -> bool:
    """An integer between a storage's BINPERSID and the REDUCE that rebuilds the tensor."""
    rng = ctx.rng
    spans = _persid_spans(ops)
    if not spans:
        return False
    _, p = rng.choice(spans)
    ints = []
    for j in range(p + 1, len(ops)):
        if ops[j].name in ("REDUCE", "BINPERSID"):
            break
        if is_int_op(ops[j]):
            ints.append(j)
    if not ints:
        return False
    j = rng.choice(ints)
    v = int(ops[j].arg)
    new = rng.choice(
        [0, 1, -1, v + 1, v - 1, 2 * v, -v, 2**31, 2**32, 2**62, 2**63 - 1, -(2**63), 2**64]
    )
    ops[j] = enc_int(new, False, rng)
    return True


OP_MUTATORS: dict[str, Any] = {
    "int": m_int,
    "long_enc": m_long_enc,
    "str": m_str,
    "bytes": m_bytes,
    "length": m_length,
    "float": m_float,
    "bool": m_bool,
    "memo_get": m_memo_get,
    "memo_put": m_memo_put,
    "proto": m_proto,
    "global": m_global,
    "persid": m_persid,
    "tensor": m_tensor,
}
OP_WEIGHTS = {
    "int": 5,
    "long_enc": 2,
    "str": 5,
    "bytes": 3,
    "length": 1,
    "float": 2,
    "bool": 2,
    "memo_get": 3,
    "memo_put": 2,
    "proto": 1,
    "global": 2,
    "persid": 4,
    "tensor": 5,
}


def mutate_pickle(data: bytes, ctx: Ctx, kinds: list[str]) -> bytes | None:
    """One to three argument mutations of the pickle `data`, re-framed."""
    rng = ctx.rng
    try:
        ops, end = parse(data)
    except Exception:
        return None
    framed = bool(ops) and ops[0].name == "PROTO" and ops[0].arg >= 4
    names = list(OP_MUTATORS)
    if ctx.kind != "torch":
        names = [n for n in names if n not in ("persid", "tensor")]
    weights = [OP_WEIGHTS[n] for n in names]
    count = rng.choice([1, 1, 1, 2, 3])
    done = 0
    for _ in range(count * 4):
        name = rng.choices(names, weights)[0]
        if OP_MUTATORS[name](ops, ctx):
            kinds.append(name)
            done += 1
            if done == count:
                break
    out = serialise(ops, framed)
    if framed and rng.random() < 0.15:
        kinds.append("frame")
        out = mutate_frame(out, rng)
    return out + data[end:] if done or "frame" in kinds else None


def mutate_frame(data: bytes, rng: random.Random) -> bytes:
    pos = data.find(b"\x95", 2)
    if pos < 0 or pos + 9 > len(data):
        return data
    (n,) = struct.unpack_from("<Q", data, pos + 1)
    choice = rng.randrange(3)
    if choice == 0:  # no frames at all: still a valid pickle
        return data[:pos] + data[pos + 9 :]
    new = (
        rng.choice([n + 1, n - 1, 0, 1, n + 100, 2**31, 2**63, 2**64 - 1])
        if choice == 1
        else n // 2
    )
    return data[: pos + 1] + struct.pack("<Q", max(0, min(new, 2**64 - 1))) + data[pos + 9 :]


# --------------------------------------------------------------------------
# Containers: torch zips, .npy, .npz.


def zip_read(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(i.filename, z.read(i)) for i in z.infolist()]


def zip_write(members: list[tuple[str, bytes]]) -> bytes:
    """Stored records with data aligned to 64 bytes, as torch writes them."""
    entries = []
    offset = 0
    for name, body in members:
        base = offset + 30 + len(name.encode()) + 4
        pad = (64 - base % 64) % 64
        extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad
        entries.append(ZEntry(name=name, data=body, extra=extra))
        offset = base + pad + len(body)
    return build_zip(entries)


def mutate_torch(data: bytes, ctx: Ctx, kinds: list[str]) -> bytes | None:
    rng = ctx.rng
    members = zip_read(data)
    names = [n for n, _ in members]
    pkl = next((i for i, n in enumerate(names) if n.endswith("data.pkl")), None)
    if pkl is None:
        return None
    prefix = names[pkl][: -len("data.pkl")]
    r = rng.random()
    if r < 0.7:
        new = mutate_pickle(members[pkl][1], ctx, kinds)
        if new is None:
            return None
        members[pkl] = (names[pkl], new)
    elif r < 0.8:
        kinds.append("zip_name")
        data_idx = [i for i, n in enumerate(names) if "/data/" in n]
        i = rng.choice(data_idx or [pkl])
        n, body = members[i]
        choice = rng.randrange(6)
        if choice == 0:
            members[i] = (n[:-1] + rng.choice("0123456789"), body)
        elif choice == 1:
            del members[i]
        elif choice == 2:
            members.insert(i + 1, (n, body[: len(body) // 2] if rng.random() < 0.5 else body))
        elif choice == 3:
            members[i] = (prefix + "x/" + n[len(prefix) :], body)
        elif choice == 4:
            members[i] = ("other/" + n[len(prefix) :], body)
        else:
            members = [(m.replace(prefix, "", 1), b) for m, b in members]
    elif r < 0.9:
        kinds.append("zip_meta")
        rec = rng.choice(["byteorder", "version", ".data/version", ".data/serialization_id"])
        idx = next((i for i, n in enumerate(names) if n == prefix + rec), None)
        values = {
            "byteorder": [b"big", b"little\n", b"", b"middle", b"BIG"],
            "version": [b"1\n", b"2\n", b"4\n", b"99\n", b"x\n", b"", b"3", b"-1\n"],
        }.get(rec.split("/")[-1], [b"", b"x" * 40])
        if idx is None:
            members.insert(pkl, (prefix + rec, rng.choice(values)))
        elif rng.random() < 0.3:
            del members[idx]
        else:
            members[idx] = (names[idx], rng.choice(values))
    else:
        kinds.append("zip_data")
        data_idx = [i for i, n in enumerate(names) if "/data/" in n]
        if not data_idx:
            return None
        i = rng.choice(data_idx)
        n, body = members[i]
        k = rng.choice([1, 2, 4, 8, len(body) // 2 or 1])
        members[i] = (n, rng.choice([body[:-k], body + b"\x00" * k, b""]))
    return zip_write(members)


NPY_DESCRS = [
    "'<f4'",
    "'>f4'",
    "'<i8'",
    "'>i8'",
    "'|b1'",
    "'|u1'",
    "'<U5'",
    "'>U5'",
    "'|S3'",
    "'|V8'",
    "'<M8[s]'",
    "'<c16'",
    "'|O'",
    "'<f2'",
    "'f4'",
    "'<f3'",
    "'<i0'",
    "'x'",
    "''",
    "[('a', '<f4')]",
    "[('a', '<f4'), ('b', '>i2')]",
    "[('a', '<f4'), ('a', '<f4')]",
    "[('a', '|O')]",
    "{'names': ['a'], 'formats': ['<f4'], 'offsets': [4], 'itemsize': 8}",
]


def mutate_npy(data: bytes, ctx: Ctx, kinds: list[str]) -> bytes | None:
    rng = ctx.rng
    parts = npy_split(data)
    if parts is None:
        return None
    version, header, start = parts
    body = data[start:]
    try:
        import ast

        d = ast.literal_eval(header.strip())
    except Exception:
        return None
    if d["descr"] == "|O" and rng.random() < 0.4:
        new = mutate_pickle(body, ctx, kinds)
        return None if new is None else data[:start] + new
    if rng.random() < 0.3:
        kinds.append("npy_data")
        k = rng.choice([1, 2, 4, 8, len(body) // 2 or 1])
        body = rng.choice([body[:-k], body + b"\x00" * k, b"", body * 2])
        return data[:start] + body
    kinds.append("npy_header")
    descr = repr(d["descr"]) if isinstance(d["descr"], str) else repr(d["descr"])
    fortran = d["fortran_order"]
    shape = d["shape"]
    n = shape[0] if shape else 1
    what = rng.randrange(4)
    if what == 0:
        descr = rng.choice(NPY_DESCRS)
    elif what == 1:
        fortran = rng.choice([not fortran, 0, 1, "'x'", None])
    elif what == 2:
        shape = rng.choice(
            [
                (),
                (0,),
                (n + 1,),
                (max(n - 1, 0),),
                (-1,),
                (2**40,),
                (2**63,),
                (n, 1),
                tuple(reversed(shape)),
                (*shape, 1),
                (1, *shape),
                (0, *shape),
            ]
        )
    else:
        version = rng.choice([(1, 0), (2, 0), (3, 0), (4, 0), (0, 0)])
    text = f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape!r}, }}"
    return npy_build(text, body, version) or None


def mutate_npz(data: bytes, ctx: Ctx, kinds: list[str]) -> bytes | None:
    rng = ctx.rng
    members = zip_read(data)
    if rng.random() < 0.3:
        kinds.append("npz_name")
        i = rng.randrange(len(members))
        n, body = members[i]
        choice = rng.randrange(4)
        if choice == 0:
            members[i] = (n[: -len(".npy")], body)
        elif choice == 1:
            members.append((n, body))
        elif choice == 2:
            members[i] = ("x/" + n, body)
        else:
            members[i] = (n.replace(".npy", ".NPY"), body)
    else:
        i = rng.randrange(len(members))
        new = mutate_npy(members[i][1], ctx, kinds)
        if new is None:
            return None
        members[i] = (members[i][0], new)
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        warnings.simplefilter("ignore")
        for n, body in members:
            z.writestr(n, body)
    return buf.getvalue()


# --------------------------------------------------------------------------
# Seeds.


@dataclass
class Seed:
    name: str
    kind: str  # pickle, torch, npy, npz
    data: bytes


def _pickle_values() -> dict[str, Any]:
    import numpy as np

    shared = [1, 2]
    cyc: list[Any] = []
    cyc.append(cyc)
    od: collections.OrderedDict[str, Any] = collections.OrderedDict(b=2, a=[shared, shared])
    ns = argparse.Namespace(lr=0.1, layers=[1, 2], name="x")
    return {
        "ints": [
            0,
            1,
            -1,
            255,
            256,
            65535,
            65536,
            2**31 - 1,
            -(2**31),
            2**31,
            2**63,
            -(2**64),
            2**100,
            -(3**200),
        ],
        "floats": (1.5, -0.0, float("inf"), 1e-320, 3.14159, -2.5e300),
        "strings": ["", "ascii", "héllo", "✓ 𝄞", "a\nb\\c", "\x00\x7f\x80", "\ud800", "x" * 300],
        "bytes": [b"", b"\x00\xff" * 20, bytearray(b"mutable"), b"x" * 300],
        "containers": {
            "t": ((), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4)),
            "s": {1, 2, 3},
            "fs": frozenset({"a", "b"}),
            "n": None,
            "b": [True, False],
            "c": complex(1, -2),
            "shared": (shared, shared),
            "cycle": cyc,
        },
        "ordered": [od, collections.Counter(a=2, b=-1)],
        "stdlib": [
            datetime.datetime(2024, 1, 2, 3, 4, 5, 6),
            datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
            datetime.date(1999, 12, 31),
            datetime.time(23, 59, 1, 5),
            datetime.timedelta(days=-1, seconds=5, microseconds=7),
            decimal.Decimal("1.2300"),
            decimal.Decimal("-Inf"),
            fractions.Fraction(3, 7),
            pathlib.PurePosixPath("a/b.txt"),
            collections.deque([1, 2], maxlen=5),
            collections.defaultdict(list, {"a": [1]}),
            slice(1, None, 3),
            range(2, 30, 7),
        ],
        "namespace": {"args": ns, "again": ns, "uuid": uuid.UUID(int=0x1234567890ABCDEF)},
        "np_arrays": [
            np.arange(6, dtype="<f4").reshape(2, 3),
            np.arange(4, dtype=">i8"),
            np.array([True, False, True]),
            np.array([1 + 2j], dtype="<c16"),
            np.array(["ab", "cde"], dtype="<U5"),
            np.array([b"ab"], dtype="S3"),
        ],
        "np_layout": [
            np.asfortranarray(np.arange(6, dtype=">f4").reshape(2, 3)),
            np.array(7.5, dtype="<f8"),
            np.zeros((0, 3), dtype="<i2"),
            np.array([(1.5, 2)], dtype=[("a", "<f4"), ("b", ">i2")]),
            np.array(["2024-01-01"], dtype="M8[s]"),
            np.arange(3, dtype="<f2"),
        ],
        "np_object": np.array([1, "x", None, [2]], dtype=object),
        "np_scalars": [
            np.float32(1.5),
            np.int64(-3),
            np.bool_(True),
            np.float64("nan"),
            np.str_("ab"),
            np.uint8(200),
            np.dtype(">i4"),
            np.dtype([("x", "<f8"), ("y", "|u1")]),
        ],
    }


def _torch_seeds() -> list[Seed]:
    import torch

    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    values: dict[str, Any] = {
        "state_dict": collections.OrderedDict(
            [
                ("w", base),
                ("wt", base.t()),
                ("row", base[1]),
                ("col", base[:, 2]),
                ("h", torch.arange(5, dtype=torch.float16)),
                ("bf", torch.arange(3, dtype=torch.bfloat16)),
                ("i64", torch.tensor([-1, 2**40], dtype=torch.int64)),
                ("b", torch.tensor([True, False])),
                ("u8", torch.arange(4, dtype=torch.uint8)),
                ("c", torch.tensor([1 + 2j], dtype=torch.complex64)),
                ("i8", torch.tensor([-3], dtype=torch.int8)),
            ]
        ),
        "nested": {
            "model": {"p": torch.nn.Parameter(torch.ones(2, 2)), "zero_d": torch.tensor(3.5)},
            "empty": torch.empty(0, 3),
            "list": [torch.arange(3), 1, "x", 2.5, None, True],
            "size": torch.Size([2, 3]),
            "dtype": torch.float64,
            "step": 10,
            "t": (1, (2, 3)),
        },
        "shared": {"a": base[1:3], "b": base, "c": base[2:, 1::2]},
    }
    seeds = []
    for name, value in values.items():
        for proto in (2, 3):  # torch's weights-only unpickler refuses FRAME
            buf = io.BytesIO()
            torch.save(value, buf, pickle_protocol=proto)
            members = zip_read(buf.getvalue())
            seeds.append(Seed(f"torch-{name}-p{proto}", "torch", zip_write(members)))
    return seeds


def make_seeds() -> list[Seed]:
    import numpy as np

    seeds = []
    for name, value in _pickle_values().items():
        for proto in range(pickle.HIGHEST_PROTOCOL + 1):
            if name == "namespace" and proto < 2:
                continue  # copyreg._reconstructor: hermetic needs allow= for it
            seeds.append(
                Seed(f"pickle-{name}-p{proto}", "pickle", pickle.dumps(value, protocol=proto))
            )
    seeds += _torch_seeds()
    arrays = {
        "f4": np.arange(6, dtype="<f4").reshape(2, 3),
        "be": np.arange(4, dtype=">i8"),
        "fortran": np.asfortranarray(np.arange(6, dtype="<f8").reshape(2, 3)),
        "bool": np.array([True, False]),
        "u5": np.array(["ab", "cde"], dtype="<U5"),
        "struct": np.array([(1.5, 2)], dtype=[("a", "<f4"), ("b", ">i2")]),
        "object": np.array([1, "x", None], dtype=object),
        "scalar": np.array(2.5),
    }
    for name, arr in arrays.items():
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=True)
        seeds.append(Seed(f"npy-{name}", "npy", buf.getvalue()))
    for comp in (False, True):
        buf = io.BytesIO()
        (np.savez_compressed if comp else np.savez)(
            buf, a=arrays["f4"], b=arrays["be"], o=arrays["object"]
        )
        seeds.append(Seed(f"npz-{'z' if comp else 's'}", "npz", buf.getvalue()))
    return seeds


# --------------------------------------------------------------------------
# The campaign.


@dataclass
class Stats:
    mutants: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    documented: Counter[str] = field(default_factory=Counter)
    controls_failed: list[str] = field(default_factory=list)
    mismatches: list[Path] = field(default_factory=list)
    crashes: list[Path] = field(default_factory=list)


def mutate(seed: Seed, ctx: Ctx, kinds: list[str]) -> bytes | None:
    fn = {"pickle": mutate_pickle, "torch": mutate_torch, "npy": mutate_npy, "npz": mutate_npz}
    try:
        return fn[seed.kind](seed.data, ctx, kinds)
    except Exception:
        return None


def save_repro(
    out: Path, cls: str, seed: Seed, data: bytes, kinds: list[str], res: dict[str, Any]
) -> Path:
    import hashlib

    digest = hashlib.sha256(data).hexdigest()[:16]
    folder = out / cls
    folder.mkdir(parents=True, exist_ok=True)
    suffix = {"torch": ".pt", "npy": ".npy", "npz": ".npz"}.get(seed.kind, ".pkl")
    path = folder / f"{seed.name}-{digest}{suffix}"
    path.write_bytes(data)
    meta = {"seed": seed.name, "kind": seed.kind, "mutations": kinds, "class": cls, **res}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return path


def torch_allowed_names() -> set[str]:
    try:
        import torch._weights_only_unpickler as w

        return set(w._get_allowed_globals())
    except Exception:
        return set()


def campaign(
    seconds: float, seed: int, out: Path, max_mutants: int | None = None, verbose: bool = True
) -> Stats:
    import torch

    torch.set_num_threads(1)
    RestrictedUnpickler.allowed = allowed_globals()
    rng = random.Random(seed)
    ctx = Ctx(rng, "pickle", torch_allowed_names())
    seeds = make_seeds()
    stats = Stats()
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for s in seeds:  # controls: every unmutated seed loads equal on both sides
            res = run_one(s.kind, s.data, work)
            if classify(res) != "agree_equal":
                stats.controls_failed.append(f"{s.name}: {res}")
        last = start
        while time.monotonic() - start < seconds and (
            max_mutants is None or stats.mutants < max_mutants
        ):
            s = rng.choice(seeds)
            ctx.kind = s.kind
            kinds: list[str] = []
            data = mutate(s, ctx, kinds)
            if data is None or data == s.data:
                continue
            res = run_one(s.kind, data, work)
            cls = classify(res)
            stats.mutants += 1
            stats.kinds.update(set(kinds))
            stats.outcomes[cls] += 1
            if cls == "documented":
                stats.documented[res["documented"]] += 1
            if cls == "timeout":
                save_repro(out, cls, s, data, kinds, res)
            if cls in ("mismatch", "hermetic_crash"):
                p = save_repro(out, cls, s, data, kinds, res)
                (stats.mismatches if cls == "mismatch" else stats.crashes).append(p)
            if verbose and time.monotonic() - last > 30:
                last = time.monotonic()
                print(
                    f"[{last - start:6.0f}s] {stats.mutants} mutants {dict(stats.outcomes)}",
                    flush=True,
                )
    return stats


def summary(stats: Stats) -> str:
    lines = [f"mutants: {stats.mutants}"]
    lines.append("per kind: " + ", ".join(f"{k}={v}" for k, v in sorted(stats.kinds.items())))
    o = stats.outcomes
    lines.append(
        f"agree both-raise: {o['agree_raise']}  agree both-equal: {o['agree_equal']}  "
        f"documented refusals: {o['documented']} {dict(stats.documented)}  "
        f"mismatches: {o['mismatch']}  hermetic crashes/timeouts: {o['hermetic_crash']}  "
        f"real loader timeouts / out of memory (no verdict): {o['timeout']} / {o['real_oom']}  "
        f"torch weights-only opcode gaps (equal through pickle): {o['weights_only_opcode']}"
    )
    if stats.controls_failed:
        lines.append(f"controls failed ({len(stats.controls_failed)}):")
        lines += [f"  {c}" for c in stats.controls_failed]
    for p in stats.mismatches + stats.crashes:
        lines.append(f"  saved {p}")
    return "\n".join(lines)


def replay(folder: Path) -> int:
    import torch

    torch.set_num_threads(1)
    RestrictedUnpickler.allowed = allowed_globals()
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for meta_path in sorted(folder.rglob("*.json")):
            meta = json.loads(meta_path.read_text())
            data_path = next(
                p for p in meta_path.parent.glob(meta_path.stem + ".*") if p.suffix != ".json"
            )
            res = run_one(meta["kind"], data_path.read_bytes(), Path(tmp))
            cls = classify(res)
            bad += cls in ("mismatch", "hermetic_crash")
            print(f"{cls:15} {data_path}")
            if cls in ("mismatch", "hermetic_crash"):
                print(f"    real:     {res.get('real')}\n    hermetic: {res.get('hermetic')}")
                if res.get("compare"):
                    print(f"    compare:  {res['compare']}")
    print(f"{bad} still failing")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("valuefuzz-out"))
    ap.add_argument("--max-mutants", type=int, default=None)
    ap.add_argument("--replay", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.replay:
        return replay(args.replay)
    stats = campaign(args.minutes * 60, args.seed, args.out, args.max_mutants)
    print(summary(stats))
    return 1 if stats.mismatches or stats.crashes or stats.controls_failed else 0


if __name__ == "__main__":
    sys.exit(main())
