"""Differential test: hermetic's pickle disassembler against CPython's `pickletools.dis`.

`hermetic_pickle::dis::disassemble` promises the exact text `pickletools.dis(data)` prints
(default arguments) and an error wherever pickletools raises, with the text printed before
the raise. This module generates a deterministic corpus (seeded random object trees in
protocols 0-5 with and without `pickletools.optimize`, hand-assembled pickles for the opcodes
CPython never writes, error cases, mutations, and sweeps over every code point) and compares
the two byte for byte.

Implementation under test, in order of preference (`HERMETIC_DIS_IMPL=binding|example` forces
one):

* `hermetic._hermetic.dis(data: bytes) -> str`: the text of the first stream in `data`. On an
  error it raises `ValueError(summary, partial_text)`: `args[0]` is
  `"<PythonException>: <message>"` (for example
  `"ValueError: memo key 0 has never been stored into"`; the exception names are
  `DisError::exception`), `args[1]` is `DisError::partial_text`.
* the example binary (`cargo build -p hermetic-pickle --example dis`; path from
  `HERMETIC_DIS_EXAMPLE`, default `target/debug/examples/dis`) in `--batch DIR` mode: for each
  file `F` it writes `F.dis` (the text) or `F.err` (first line `"<PythonException>: <message>"`,
  then the partial text).
"""

from __future__ import annotations

import collections
import copyreg
import io
import math
import os
import pickle
import pickletools
import random
import struct
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

# The reference is CPython 3.11's pickletools: its messages, and its Unicode 14.0.0
# str.isprintable behind every str repr.
pytestmark = pytest.mark.skipif(
    sys.version_info[:2] != (3, 11), reason="the reference is CPython 3.11's pickletools"
)

ROOT = Path(__file__).resolve().parent.parent
SEED = 20240611
ALL_OPCODES = {op.name for op in pickletools.opcodes}


# ---------------------------------------------------------------------------------------------
# Objects with interesting reductions. They live at module level so pickle can name them.


class Reduced:
    """A `__reduce__` with a callable and arguments (GLOBAL/STACK_GLOBAL + REDUCE)."""

    def __init__(self, a: object, b: object) -> None:
        self.a, self.b = a, b

    def __reduce__(self) -> tuple[object, ...]:
        return (Reduced, (self.a, self.b))


class WithState:
    """Default reduction: NEWOBJ (or copyreg._reconstructor) + BUILD with a dict state."""

    def __init__(self, state: object) -> None:
        self.state = state
        self.tag = "with-state"


class Slotted:
    """`__slots__` state: BUILD with a (None, slots) pair."""

    __slots__ = ("x", "y")

    def __init__(self, x: object, y: object) -> None:
        self.x, self.y = x, y


class KwOnly:
    """Keyword-only constructor arguments: NEWOBJ_EX in protocol 4 and 5."""

    def __new__(cls, *, value: object) -> KwOnly:
        self = super().__new__(cls)
        self.value = value
        return self

    def __getnewargs_ex__(self) -> tuple[tuple[object, ...], dict[str, object]]:
        return ((), {"value": self.value})


class Persistent:
    """Objects a Pickler subclass writes as persistent ids (PERSID/BINPERSID)."""

    def __init__(self, key: str) -> None:
        self.key = key


class Ext1:
    pass


class Ext2:
    pass


class Ext4:
    pass


class PersistingPickler(pickle.Pickler):
    def persistent_id(self, obj: object) -> str | None:
        return f"pid-{obj.key}" if isinstance(obj, Persistent) else None


@contextmanager
def extensions() -> Iterator[None]:
    """Registers copyreg extension codes so protocol 2+ writes EXT1, EXT2 and EXT4."""
    codes = [(Ext1, 0x7F), (Ext2, 0x1234), (Ext4, 0x123456)]
    for cls, code in codes:
        copyreg.add_extension(__name__, cls.__qualname__, code)
    try:
        yield
    finally:
        for cls, code in codes:
            copyreg.remove_extension(__name__, cls.__qualname__, code)


# ---------------------------------------------------------------------------------------------
# Random object trees.

SPECIAL_FLOATS = [
    0.0,
    -0.0,
    math.inf,
    -math.inf,
    math.nan,
    5e-324,
    -5e-324,
    2.2250738585072014e-308,
    1.7976931348623157e308,
    1e16,
    1e15,
    9999999999999998.0,
    1e-4,
    1e-5,
    0.1,
    1 / 3,
    123.456,
    -1.5,
    1e22,
    1e-7,
    12345678901234567890.0,
    0.30000000000000004,
]
SPECIAL_INTS = [
    0,
    1,
    -1,
    255,
    256,
    -256,
    65535,
    65536,
    2**31 - 1,
    -(2**31),
    2**31,
    -(2**31) - 1,
    2**63,
    -(2**63),
    2**64,
    2**127,
    -(2**127) - 1,
    10**40,
    -(10**40),
]
CHARS = (
    list("abcXYZ019 _-.,")
    + ["'", '"', "\\", "\n", "\r", "\t", "\x00", "\x1a", "\x7f", "\x80", "\x9f", "\xa0", "\xad"]
    + ["é", "ÿ", "Ā", "ß", "€", "\u2028", "\u200b", "\ufeff", "\ue000", "\uffff", "\u0378"]
    + ["😀", "\U0001fae8", "\U0001f6dc", "\U000e0001", "\U0010ffff", "\U00020000"]
    + ["\ud800", "\udfff", "\udc80", "中", "\u0301", "\u3000", "\u00a0"]
)


def rand_int(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.3:
        return rng.choice(SPECIAL_INTS)
    if roll < 0.6:
        return rng.randint(-300, 70000)
    if roll < 0.9:
        return rng.getrandbits(rng.randint(1, 200)) * rng.choice([1, -1])
    return rng.getrandbits(rng.randint(200, 14000)) * rng.choice([1, -1])


def rand_float(rng: random.Random) -> float:
    roll = rng.random()
    if roll < 0.3:
        return rng.choice(SPECIAL_FLOATS)
    if roll < 0.6:
        return struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
    if roll < 0.8:
        return rng.uniform(-1e6, 1e6)
    return rng.random() * 10.0 ** rng.randint(-30, 30)


def rand_str(rng: random.Random) -> str:
    n = rng.choice([0, 1, 2, 5, 12, 40, 300])
    roll = rng.random()
    if roll < 0.3:
        return "".join(rng.choice(CHARS) for _ in range(n))
    if roll < 0.5:
        return "".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(n))
    if roll < 0.7:
        return "".join(chr(rng.randint(0, 0x3000)) for _ in range(n))
    return "".join(chr(rng.randint(32, 126)) for _ in range(n))


def rand_bytes(rng: random.Random) -> bytes:
    n = rng.choice([0, 1, 3, 10, 60, 255, 256, 400])
    roll = rng.random()
    if roll < 0.3:
        return bytes(rng.choice(b"'\"\\\n\r\t\x00ab\x7f\x80\xff") for _ in range(n))
    return bytes(rng.getrandbits(8) for _ in range(n))


HASHABLE_FLOATS = [0.0, -0.0, math.inf, -math.inf, 5e-324, 1.5, 1e300]


def rand_hashable(rng: random.Random, depth: int) -> object:
    """Hashables whose hash (and so set order) depends neither on PYTHONHASHSEED nor on
    object ids (str, bytes and nan do)."""
    roll = rng.random()
    if roll < 0.5 or depth <= 0:
        return rng.choice([rand_int(rng), rng.choice(HASHABLE_FLOATS), None, True, False])
    if roll < 0.8:
        return tuple(rand_hashable(rng, depth - 1) for _ in range(rng.randint(0, 4)))
    return frozenset(rand_int(rng) for _ in range(rng.randint(0, 4)))


class TreeGen:
    def __init__(self, rng: random.Random, protocol: int) -> None:
        self.rng = rng
        self.protocol = protocol
        self.pool: list[object] = []  # shared references -> memo GETs

    def leaf(self) -> object:
        rng = self.rng
        kind = rng.randrange(9)
        if kind == 0:
            return rng.choice([None, True, False])
        if kind in (1, 2):
            return rand_int(rng)
        if kind == 3:
            return rand_float(rng)
        if kind in (4, 5):
            return rand_str(rng)
        if kind == 6:
            return rand_bytes(rng)
        if kind == 7:
            return bytearray(rand_bytes(rng))
        return complex(rand_float(rng), rand_float(rng))

    def value(self, depth: int) -> object:
        rng = self.rng
        if self.pool and rng.random() < 0.12:
            return rng.choice(self.pool)
        if depth <= 0 or rng.random() < 0.3:
            return self.leaf()
        kind = rng.randrange(16)
        width = rng.choice([0, 1, 2, 3, 4, 6, 9])

        def items() -> list[object]:
            return [self.value(depth - 1) for _ in range(width)]

        obj: object
        if kind in (0, 1):
            obj = items()
        elif kind in (2, 3):
            obj = tuple(items())
        elif kind in (4, 5):
            obj = {
                rand_str(rng) if rng.random() < 0.6 else rand_hashable(rng, 1): v for v in items()
            }
        elif kind == 6:
            obj = {rand_hashable(rng, 2) for _ in range(width)}
        elif kind == 7:
            obj = frozenset(rand_hashable(rng, 2) for _ in range(width))
        elif kind == 8:
            obj = collections.OrderedDict((rand_str(rng), v) for v in items())
        elif kind == 9:
            obj = Reduced(self.value(depth - 1), self.value(depth - 1))
        elif kind == 10:
            obj = WithState(self.value(depth - 1))
        elif kind == 11 and self.protocol >= 2:
            # Protocols 0 and 1 refuse __slots__ without __getstate__.
            obj = Slotted(self.value(depth - 1), self.leaf())
        elif kind == 12:
            obj = KwOnly(value=self.value(depth - 1))
        elif kind == 13:
            obj = self.recursive()
        elif kind == 14:
            key = "".join(c for c in rand_str(rng) if c.isascii() and c.isalnum())
            obj = [Persistent(key), Ext1(), Ext2(), Ext4()]
        elif kind == 15 and self.protocol >= 5:
            obj = self.buffer()
        else:
            obj = items()
        self.pool.append(obj)
        return obj

    def recursive(self) -> object:
        """Self-referencing structures: GETs of unfinished objects, POP / POP_MARK."""
        rng = self.rng
        kind = rng.randrange(4)
        lst: list[object] = [self.leaf()]
        if kind == 0:
            lst.append(lst)
            return lst
        if kind == 1:
            d: dict[object, object] = {"self": None}
            d["self"] = d
            return d
        # A tuple reachable from itself: pickle writes POP*(n+1) (protocol 0) or POP_MARK.
        size = rng.choice([1, 2, 3, 4, 5])
        tup = tuple([lst] + [self.leaf() for _ in range(size - 1)])
        lst.append(tup)
        return tup if kind == 2 else [tup, lst]

    def buffer(self) -> object:
        rng = self.rng
        data = rand_bytes(rng)
        if rng.random() < 0.5:
            return pickle.PickleBuffer(data)  # read-only
        return pickle.PickleBuffer(bytearray(data))


def dumps(obj: object, protocol: int, rng: random.Random) -> bytes | None:
    buf = io.BytesIO()
    kwargs: dict[str, object] = {}
    if protocol >= 5 and rng.random() < 0.6:
        # None -> out of band (NEXT_BUFFER [READONLY_BUFFER]); True -> in band.
        kwargs["buffer_callback"] = lambda _b: rng.random() < 0.3
    try:
        PersistingPickler(buf, protocol=protocol, **kwargs).dump(obj)
    except (ValueError, TypeError, pickle.PicklingError, RecursionError):
        return None  # e.g. a > 4300-digit int in protocol 0/1, which needs repr()
    return buf.getvalue()


def generated_corpus() -> list[tuple[str, bytes]]:
    rng = random.Random(SEED)
    out: list[tuple[str, bytes]] = []
    with extensions():
        for i in range(190):
            for protocol in range(6):
                gen = TreeGen(rng, protocol)
                obj = gen.value(rng.choice([1, 2, 3, 4]))
                data = dumps(obj, protocol, rng)
                if data is None:
                    continue
                out.append((f"tree{i}-p{protocol}", data))
                optimized = pickletools.optimize(data)
                if optimized != data:
                    out.append((f"tree{i}-p{protocol}-opt", optimized))
        # Over 256 memo entries: LONG_BINPUT / LONG_BINGET, and big frames.
        strings = [f"s{k}" for k in range(300)]
        for protocol in range(6):
            data = dumps([strings, strings[::-1], {s: s for s in strings[250:]}], protocol, rng)
            assert data is not None
            out.append((f"big-memo-p{protocol}", data))
        # Many floats: float repr (binary) and float parsing + repr (protocol 0 text).
        floats = [rand_float(rng) for _ in range(3000)]
        for protocol in (0, 1, 4):
            out.append((f"floats-p{protocol}", pickle.dumps(floats, protocol=protocol)))
        ints = [rand_int(rng) for _ in range(600)]
        for protocol in (0, 2, 5):
            ok = [v for v in ints if abs(v).bit_length() < 14000] if protocol < 2 else ints
            out.append((f"ints-p{protocol}", pickle.dumps(ok, protocol=protocol)))
    return out


# ---------------------------------------------------------------------------------------------
# Hand-assembled pickles: the opcodes CPython never writes, and the argument spellings it
# never writes but pickletools reads.


def u4(n: int) -> bytes:
    return n.to_bytes(4, "little")


def u8(n: int) -> bytes:
    return n.to_bytes(8, "little")


def binunicode8(s: str) -> bytes:
    raw = s.encode("utf-8", "surrogatepass")
    return b"\x8d" + u8(len(raw)) + raw


def long4(n: int) -> bytes:
    raw = n.to_bytes((n.bit_length() + 8) // 8 or 1, "little", signed=True)
    return b"\x8b" + u4(len(raw)) + raw


HAND_VALID: list[bytes] = [
    # STRING: quotes, escapes, the one-character quote pickletools accepts.
    b"S'abc'\n.",
    b'S"a\'b"\n.',
    b"S'a\\'b\"c'\n.",
    b"S'a\\nb\\x41\\101\\q\\\\\\t\\r\\0\\177\\a\\b\\f\\v'\n.",
    b"S'\n.",
    b'S"\n.',
    b"S''\n.",
    # BINSTRING / SHORT_BINSTRING: latin-1 with non-printables.
    b"T" + u4(3) + b"abc.",
    b"T" + u4(256) + bytes(range(256)) + b".",
    b"U\x05\xe9\x80\xad\xa0'.",
    b"U\x00.",
    # BINBYTES8 / BINUNICODE8 / BYTEARRAY8.
    b"\x8e" + u8(4) + b"a'b\".",
    b"\x8e" + u8(0) + b".",
    binunicode8("é\ud800😀'\"\\") + b".",
    binunicode8("") + b".",
    b"\x96" + u8(3) + b"'\"x.",
    b"\x96" + u8(2) + b"'x.",
    b"\x96" + u8(256) + bytes(range(256)) + b".",
    # BINBYTES / SHORT_BINBYTES with quote choices.
    b"C\x02'x.",
    b"C\x02'\".",
    b"B" + u4(3) + b'"\\\x00.',
    # PROTO / FRAME / POP / POP_MARK / DUP.
    b"\x80\x05N.",
    b"\x80\xffN.",
    b"\x80\x00N.",
    b"\x95" + u8(2) + b"N.",
    b"\x95" + u8(2**64 - 1) + b"N.",
    b"NN0.",
    b"N(NN1.",
    b"N(0.",
    b"N2\x86.",
    b"(N2t.",
    # MARK nesting and the (MARK at N) notes.
    b"((((NNtI1\nt(l(dtt.",
    b"](K\x01(K\x02K\x03tK\x04e.",
    b"}(K\x01K\x02u.",
    b"\x8f(K\x01\x90.",
    b"(K\x01\x91.",
    b"(((((((((((((((((((((((((NNNNNNNNNNNNNNNNNNNNNNNNNttttttttttttttttttttttttt.",
    # GET / PUT text forms and the True/False hack of decimalnl_short.
    b"Np0\n0g0\n.",
    b"Np00\n0g0\n.",
    b"Np01\n0g1\n.",
    b"Np 7 \n0g007\n.",
    b"Np99999999999999999999999999\n0g99999999999999999999999999\n.",
    b"Np-3\n0g-3\n.",
    b"Nq\x00h\x00\x86.",
    b"Nr" + u4(2**32 - 1) + b"j" + u4(2**32 - 1) + b"\x86.",
    b"\x80\x04N\x94\x94p2\n\x94h\x03\x86.",
    # INT / LONG text forms.
    b"I00\n.",
    b"I01\n.",
    b"I 5\n.",
    b"I1_000\n.",
    b"I-0\n.",
    b"I+7\n.",
    b"I007\n.",
    b"I\t\x0b12\x0c\r\n.",
    b"I123456789012345678901234567890\n.",
    b"L123L\n.",
    b"L-0\n.",
    b"L 12 \n.",
    b"L0L\n.",
    b"L-" + b"9" * 4300 + b"\n.",
    b"L" + b"0" * 4000 + b"1L\n.",
    # LONG1 / LONG4.
    b"\x8a\x00.",
    b"\x8a\x01\xff.",
    b"\x8a\x01\x80.",
    b"\x8a\x02\x00\x80.",
    b"\x8a\x02\xff\x00.",
    b"\x8a\x03\xff\xff\xff.",
    b"\x8b" + u4(0) + b".",
    b"\x8b" + u4(8) + b"\xff" * 8 + b".",
    b"\x8b" + u4(3000) + b"\x05" + b"\x00" * 2999 + b".",
    b"\x8b" + u4(3000) + b"\xfe" + b"\xff" * 2999 + b".",
    long4(10**4299) + b".",
    long4(-(10**4299)) + b".",
    long4(-(10**4300) + 1) + b".",
    # FLOAT text forms.
    b"F1.5\n.",
    b"Fnan\n.",
    b"F-nan\n.",
    b"F-inf\n.",
    b"FInfinity\n.",
    b"F1e500\n.",
    b"F-1e-500\n.",
    b"F 1_0.5 \n.",
    b"F1.e5\n.",
    b"F.5\n.",
    b"F5.\n.",
    b"F1E+05\n.",
    b"F0.1000000000000000055511151231257827\n.",
    b"F2.2250738585072011e-308\n.",
    b"F1_000.000_1e1_0\n.",
    b"F\x0b1.25\x0c\n.",
    b"G" + struct.pack(">d", -0.0) + b".",
    b"G\x7f\xf8\x00\x00\x00\x00\x00\x01.",
    b"G\xff\xf0\x00\x00\x00\x00\x00\x00.",
    # UNICODE: raw-unicode-escape.
    b"V\\u00e9\\U0001f600abc\\\\u0041\n.",
    b"V\\ud800\\udfff\\\n.",
    b"V\xe9\xad\x85\n.",
    b"V\\x41\\n'\"\n.",
    b"V\n.",
    # GLOBAL / INST / PERSID arguments are escape-decoded too.
    b"cos\nsystem\n.",
    b"cmod\\x41\nna me\n.",
    b"c\n\n.",
    b"c\\'q\n\\\\\n.",
    b"(I1\nI2\nicollections\nOrderedDict\n.",
    b"(icollections\nOrderedDict\n.",
    b"(ccollections\nOrderedDict\nI1\no.",
    b"(ccollections\nOrderedDict\no.",
    b"Pabc\n.",
    b"Pa\\x41 'b'\n.",
    b"P\n.",
    b"NQ.",
    b"\x8c\x0bcollections\x8c\x0bOrderedDict\x93)R.",
    b"\x8c\x01a\x8c\x01b\x93)}\x92.",
    b"\x8c\x01a\x8c\x01b\x93)\x81N\x81.",
    b"cbuiltins\nlist\n)R}b.",
    b"(cbuiltins\nlist\nt)R.",
    # EXT1 / EXT2 / EXT4, including a negative EXT4 code.
    b"\x80\x02\x82\x01.",
    b"\x80\x02\x82\x00.",
    b"\x83\x01\x02.",
    b"\x84\x01\x02\x03\x04.",
    b"\x84\xff\xff\xff\xff.",
    # Protocol 5 buffers.
    b"\x80\x05\x97.",
    b"\x80\x05\x97\x98.",
    b"\x80\x05N\x98.",
    # A MARK consumed as an ordinary stack item.
    b"(.",
    b"((NNa1.",
    b"(N(Na0l.",
    b"(ccollections\nOrderedDict\n2o.",
    # Data after STOP is never read.
    b"N.garbage\xff",
    b"N.N.",
]

HAND_ERRORS: list[bytes] = [
    b"",
    b"N",
    b"\xff",
    b"N\xff.",
    b"N\x00.",
    b"N'.",
    b"N\x99.",
    b"g0\n.",
    b"h\x05.",
    b"j" + u4(7) + b".",
    b"Np0\ng1\n.",
    b"p0\n.",
    b"(p0\n.",
    b"Np0\np0\n.",
    b"Np00\np0\n.",
    b"Np01\nq\x01.",
    b"\x94.",
    b"(\x94.",
    b"N\x94p0\n.",
    b"a.",
    b"l.",
    b"t.",
    b"1.",
    b"0.",
    b"(0.",
    b".",
    b"NN.",
    b"((N.",
    b"]N(N.",
    b"(Nal.",
    b"]((K\x01K\x02K\x03ee.",
    b"(NN\x86ot.",
    b"I12a\n.",
    b"I\n.",
    b"I_1\n.",
    b"I1__0\n.",
    b"I1_\n.",
    b"I1\x002\n.",
    b"I" + b"1" * 5000 + b"\n.",
    b"I" + b"1" * 4301 + b"x\n.",
    b"I" + b"x" * 300 + b"\n.",
    b"I" + b"\xff" * 250 + b"\n.",
    b"I1L\n.",
    b"L" + b"1" * 4301 + b"L\n.",
    b"LL\n.",
    b"L1LL\n.",
    b"Fabc\n.",
    b"F1_.5\n.",
    b"F_1\n.",
    b"F1e\n.",
    b"Finfinit\n.",
    b"F\n.",
    b"F1.5\x00\n.",
    b"F" + b"x" * 300 + b"\n.",
    b"S'abc\n.",
    b"S\"abc'\n.",
    b"Sabc\n.",
    b"S\n.",
    b"S'\\x4'\n.",
    b"S'\\x4g'\n.",
    b"S'\\xg4'\n.",
    b"S'\\777'\n.",
    b"S'\xe9'\n.",
    b"S'abc\\'\n.",
    b"S'line\\\ncontinued'\n.",
    b"S'abc'",
    b"cos\\\nx\n.",
    b"cos\nsys",
    b"cos\n",
    b"cmod\\x4\nname\n.",
    b"c\xe9\nname\n.",
    b"cmod\nna\\x80me\n.",
    b"Pabc",
    b"P\\x\n.",
    b"X" + u4(2) + b"\xed\xa0.",
    b"X" + u4(1) + b"\xff.",
    b"X" + u4(4) + b"a\xe0\x80\x80.",
    b"X" + u4(3) + b"a\xf0\x90.",
    b"X" + u4(2) + b"a\xc3.",
    b"X" + u4(5) + b"\xed\xa0\x80\xc3(.",
    b"X" + u4(4) + b"\xf4\x90\x80\x80.",
    b"\x8c\x02\xc0\x80.",
    b"\x8d" + u8(3) + b"\xe0\xa0.",
    b"\x8d" + u8(2**63) + b".",
    b"\x8d" + u8(2**63 - 1) + b".",
    b"V\\u12\n.",
    b"Vab\\u12zz\n.",
    b"V\\U00110000\n.",
    b"V\\U0011\n.",
    b"V\\u00e9",
    b"\x8b\xff\xff\xff\xff.",
    b"\x8b" + u4(5) + b"\x01\x02.",
    b"\x8b" + u4(4000) + b"\x7f" * 4000 + b".",
    b"\x8b" + u4(1800) + b"\xff" * 1799 + b"\x7f.",
    long4(10**4300) + b".",
    long4(-(10**4300)) + b".",
    b"(\x8b" + u4(4000) + b"\x7f" * 4000 + b"t.",
    b"\x8a\x05\x01.",
    b"\x8a",
    b"T\xff\xff\xff\xff.",
    b"T" + u4(10) + b"abc",
    b"U\x05ab",
    b"\x8e" + u8(2**64 - 1) + b".",
    b"\x8e" + u8(2**63) + b".",
    b"\x8e" + u8(5) + b"ab",
    b"\x96" + u8(2**63) + b".",
    b"\x96" + u8(9) + b"ab",
    b"B\x10\x00\x00\x00ab",
    b"B\x10\x00",
    b"C\x05ab",
    b"K",
    b"M\x01",
    b"J\x01\x02",
    b"G\x00\x00",
    b"\x95\x01\x00",
    b"\x82",
    b"\x83\x01",
    b"\x84\x01\x02\x03",
    b"r\x01\x02",
    b"\x80",
    b"\x93.",
    b"\x98.",
    b"N\x81.",
    b"NN\x92.",
    b"NNNb0R.",
    b"\x80\x05" + b"(" * 40 + b"N" + b"t" * 41 + b".",
]


def hand_corpus() -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    valid = [(f"hand{i}", data) for i, data in enumerate(HAND_VALID)]
    errors = [(f"handerr{i}", data) for i, data in enumerate(HAND_ERRORS)]
    return valid, errors


def sweep_corpus() -> list[tuple[str, bytes]]:
    """Every code point through str repr (BINUNICODE) and raw-unicode-escape (UNICODE),
    every byte through bytes, bytearray and latin-1 str reprs."""
    out = []
    step = 0x2000
    for lo in range(0, 0x110000, step):
        s = "".join(chr(c) for c in range(lo, lo + step))
        raw = s.encode("utf-8", "surrogatepass")
        out.append((f"sweep-binunicode-{lo:06x}", b"X" + u4(len(raw)) + raw + b"."))
    for lo in range(0, 0x110000, 0x10000):
        s = "".join(f"\\U{c:08x}" for c in range(lo, lo + 0x10000, 7))
        out.append((f"sweep-unicode-{lo:06x}", b"V" + s.encode() + b"\n."))
    every = bytes(range(256))
    out.append(("sweep-bytes", b"B" + u4(256) + every + b"."))
    out.append(("sweep-bytearray", b"\x96" + u8(256) + every + b"."))
    out.append(("sweep-binstring", b"T" + u4(256) + every + b"."))
    escaped = "".join(f"\\x{b:02x}" for b in range(128)).encode()
    out.append(("sweep-string-escapes", b"S'" + escaped + b"'\n."))
    return out


def soup_arg(rng: random.Random, op: pickletools.OpcodeInfo) -> bytes:
    """A plausible (sometimes broken) argument for `op`."""
    name = op.arg.name if op.arg else None
    small = rng.choice([0, 1, 2, 3, 5, 255, 256])
    line = rng.choice([b"0", b"1", b"00", b"01", b"2", b"-1", b" 3", b"x", b"", b"1.5", b"'a'"])
    if name is None:
        return b""
    if name in ("uint1", "uint2", "int4", "uint4", "uint8"):
        size = {"uint1": 1, "uint2": 2, "int4": 4, "uint4": 4, "uint8": 8}[name]
        value = rng.choice([small, rng.getrandbits(8 * size)]) % (1 << (8 * size))
        return value.to_bytes(size, "little")
    if name in ("decimalnl_short", "decimalnl_long", "floatnl", "stringnl", "stringnl_noescape"):
        return line + b"\n"
    if name == "stringnl_noescape_pair":
        return b"mod\n" + line + b"\n"
    if name == "unicodestringnl":
        return rng.choice([b"abc", b"\\u00e9", b"\\ud800", b"\\u12"]) + b"\n"
    if name in ("long1", "string1", "bytes1", "unicodestring1"):
        body = rng.choice([b"", b"a", b"\xff\x00", "é".encode(), b"\xed\xa0\x80"])
        return bytes([len(body)]) + body
    if name in ("long4", "string4", "bytes4", "unicodestring4"):
        body = rng.choice([b"", b"ab", b"\x80", "😀".encode()])
        return len(body).to_bytes(4, "little") + body
    body = rng.choice([b"", b"ab", b"'\"", "é".encode()])
    return len(body).to_bytes(8, "little") + body


def opcode_soup() -> list[tuple[str, bytes]]:
    """Random opcode sequences with plausible arguments: the MARK, memo and stack
    bookkeeping of pickletools.dis, mostly on its error paths."""
    rng = random.Random(SEED + 2)
    ops = list(pickletools.opcodes)
    stop = next(op for op in ops if op.name == "STOP")
    common = [op for op in ops if op.name in ("MARK", "NONE", "BINPUT", "BINGET", "MEMOIZE")]
    out = []
    for k in range(700):
        data = b""
        for _ in range(rng.randint(1, 14)):
            op = rng.choice(common if rng.random() < 0.4 else ops)
            if op is stop:
                continue
            data += op.code.encode("latin-1") + soup_arg(rng, op)
        out.append((f"soup{k}", data + b"." + (b"N." if k % 2 else b"")))
    return out


def mutations(corpus: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Truncations, byte flips and inserted opcodes of valid pickles: error paths."""
    rng = random.Random(SEED + 1)
    opcode_bytes = [op.code.encode("latin-1") for op in pickletools.opcodes]
    out = []
    small = [(n, d) for n, d in corpus if len(d) < 20000]
    for k in range(900):
        name, data = rng.choice(small)
        mode = k % 3
        if mode == 0:
            cut = rng.randrange(len(data))
            out.append((f"{name}-cut{cut}", data[:cut]))
        elif mode == 1:
            pos = rng.randrange(len(data))
            b = bytes([rng.getrandbits(8)])
            out.append((f"{name}-flip{pos}", data[:pos] + b + data[pos + 1 :]))
        else:
            pos = rng.randrange(len(data))
            b = rng.choice(opcode_bytes)
            out.append((f"{name}-ins{pos}", data[:pos] + b + data[pos:]))
    return out


# ---------------------------------------------------------------------------------------------
# Running both sides.


@dataclass
class Outcome:
    ok: bool
    text: str  # full text, or partial text on error
    error: str | None  # "<Exception>: <message>"


def reference(data: bytes) -> Outcome:
    out = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # escape_decode's DeprecationWarning for "\q"
        try:
            pickletools.dis(data, out=out)
        except Exception as exc:  # noqa: BLE001 - any exception is the expected error
            return Outcome(False, out.getvalue(), f"{type(exc).__name__}: {exc}")
    return Outcome(True, out.getvalue(), None)


def binding_dis() -> object | None:
    try:
        from hermetic import _hermetic
    except ImportError:
        return None
    return getattr(_hermetic, "dis", None)


def example_path() -> Path:
    return Path(os.environ.get("HERMETIC_DIS_EXAMPLE", ROOT / "target/debug/examples/dis"))


def run_binding(dis: object, cases: list[tuple[str, bytes]]) -> list[Outcome]:
    results = []
    for _, data in cases:
        try:
            text = dis(data)  # type: ignore[operator]
        except ValueError as exc:
            summary, partial = exc.args
            results.append(Outcome(False, partial, summary))
        else:
            results.append(Outcome(True, text, None))
    return results


def run_example(cases: list[tuple[str, bytes]], workdir: Path) -> list[Outcome]:
    workdir.mkdir(parents=True, exist_ok=True)
    for i, (_, data) in enumerate(cases):
        (workdir / f"{i:05d}.pkl").write_bytes(data)
    subprocess.run([str(example_path()), "--batch", str(workdir)], check=True, timeout=600)
    results = []
    for i in range(len(cases)):
        dis_file = workdir / f"{i:05d}.pkl.dis"
        if dis_file.exists():
            results.append(Outcome(True, dis_file.read_bytes().decode(), None))
            continue
        summary, _, partial = (workdir / f"{i:05d}.pkl.err").read_bytes().decode().partition("\n")
        results.append(Outcome(False, partial, summary))
    return results


def hermetic_outcomes(cases: list[tuple[str, bytes]], workdir: Path) -> list[Outcome]:
    impl = os.environ.get("HERMETIC_DIS_IMPL", "")
    dis = binding_dis() if impl in ("", "binding") else None
    if dis is not None:
        return run_binding(dis, cases)
    if impl == "binding":
        pytest.fail("HERMETIC_DIS_IMPL=binding but hermetic._hermetic.dis is missing")
    if not example_path().exists():
        if impl == "example":
            pytest.fail(f"{example_path()} is missing")
        pytest.fail(
            "neither hermetic._hermetic.dis nor the example binary; run "
            "`cargo build -p hermetic-pickle --example dis`"
        )
    return run_example(cases, workdir)


@dataclass
class Corpus:
    valid: list[tuple[str, bytes]]  # pickletools disassembles these
    errors: list[tuple[str, bytes]]  # pickletools raises on these
    reference: dict[str, Outcome]
    hermetic: dict[str, Outcome]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    generated = generated_corpus()
    hand_valid, hand_errors = hand_corpus()
    sweeps = sweep_corpus()
    cases = generated + hand_valid + hand_errors + sweeps + opcode_soup()
    cases += mutations(generated + hand_valid)
    names = [n for n, _ in cases]
    assert len(set(names)) == len(names), "case names must be unique"
    ref = {name: reference(data) for name, data in cases}
    outcomes = hermetic_outcomes(cases, tmp_path_factory.mktemp("dis"))
    herm = dict(zip(names, outcomes, strict=True))
    valid = [(n, d) for n, d in cases if ref[n].ok]
    errors = [(n, d) for n, d in cases if not ref[n].ok]
    return Corpus(valid, errors, ref, herm)


def opcode_names(data: bytes) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [op.name for op, _, _ in pickletools.genops(data)]


def describe(name: str, data: bytes, want: Outcome, got: Outcome) -> str:
    import difflib

    diff = "".join(
        list(
            difflib.unified_diff(
                want.text.splitlines(True),
                got.text.splitlines(True),
                "pickletools",
                "hermetic",
                n=1,
            )
        )[:30]
    )
    return (
        f"--- {name} ({len(data)} bytes: {data[:80]!r})\n"
        f"pickletools: ok={want.ok} {want.error}\nhermetic:    ok={got.ok} {got.error}\n{diff}"
    )


def compare(corpus: Corpus, cases: list[tuple[str, bytes]], *, messages: bool) -> list[str]:
    failures = []
    for name, data in cases:
        want, got = corpus.reference[name], corpus.hermetic[name]
        same = want.ok == got.ok and want.text == got.text
        if same and messages:
            same = want.error == got.error
        if not same:
            failures.append(describe(name, data, want, got))
    return failures


# ---------------------------------------------------------------------------------------------
# The tests.


def test_corpus_size_and_opcode_coverage(corpus: Corpus) -> None:
    generated = [n for n, _ in corpus.valid if n.startswith(("tree", "big-", "floats", "ints"))]
    assert len(generated) >= 1000, len(generated)
    assert len(corpus.valid) + len(corpus.errors) >= 3000
    seen: collections.Counter[str] = collections.Counter()
    for _, data in corpus.valid:
        seen.update(opcode_names(data))
    missing = ALL_OPCODES - set(seen)
    assert len(ALL_OPCODES) == 68
    assert not missing, f"opcodes never exercised: {sorted(missing)}"
    # Every opcode also appears in a pickle CPython itself wrote, where CPython writes it.
    never_written = {
        "STRING", "BINSTRING", "SHORT_BINSTRING", "BINBYTES8", "BINUNICODE8", "DUP",
        "INST", "OBJ",
    }  # fmt: skip
    written: set[str] = set()
    for name, data in corpus.valid:
        if name.startswith(("tree", "big-", "floats", "ints")):
            written.update(opcode_names(data))
    assert ALL_OPCODES - never_written <= written, sorted(ALL_OPCODES - never_written - written)


def test_valid_pickles_match_byte_for_byte(corpus: Corpus) -> None:
    failures = compare(corpus, corpus.valid, messages=True)
    assert not failures, f"{len(failures)} of {len(corpus.valid)} differ:\n" + "\n".join(
        failures[:5]
    )


def test_errors_match_partial_text_and_message(corpus: Corpus) -> None:
    assert len(corpus.errors) >= 300
    failures = compare(corpus, corpus.errors, messages=True)
    assert not failures, f"{len(failures)} of {len(corpus.errors)} differ:\n" + "\n".join(
        failures[:5]
    )


def test_hand_cases_are_what_they_claim(corpus: Corpus) -> None:
    hand_valid, hand_errors = hand_corpus()
    for name, data in hand_valid:
        assert corpus.reference[name].ok, f"{name} {data[:60]!r}: {corpus.reference[name].error}"
    for name, data in hand_errors:
        assert not corpus.reference[name].ok, f"{name} {data[:60]!r} is valid for pickletools"
