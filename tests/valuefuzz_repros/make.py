"""Minimal reproducers of the mismatches tests/valuefuzz.py found (each a few
opcodes, written by hand after the fuzzer's mutant). Run this to (re)write the
files and their .json next to it, then `python tests/valuefuzz.py --replay
tests/valuefuzz_repros` checks them against the current hermetic."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def u(s: bytes) -> bytes:  # SHORT_BINUNICODE
    return b"\x8c" + bytes([len(s)]) + s


def npdtype(code: bytes, state: bytes) -> bytes:
    """numpy.dtype(code, False, True) with BUILD state (a pickled tuple body)."""
    return b"cnumpy\ndtype\n" + u(code) + b"\x89\x88\x87R" + state + b"b"


def recon(shape: bytes, dtype: bytes, fortran: bytes, data: bytes) -> bytes:
    return (
        b"cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87R"
        + b"(K\x01"
        + shape
        + dtype
        + fortran
        + data
        + b"tb"
    )


F4_STATE = b"(K\x03" + u(b"<") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t"


def f4(state: bytes = F4_STATE, code: bytes = b"f4") -> bytes:
    return npdtype(code, state)


P = b"\x80\x02"
CASES: dict[str, tuple[str, bytes, str]] = {}


def case(name: str, data: bytes, diagnosis: str, kind: str = "pickle") -> None:
    CASES[name] = (kind, data, diagnosis)


def st(
    order: bytes = b"<",
    names: bytes = b"N",
    fields: bytes = b"N",
    elsize: bytes = b"J\xff\xff\xff\xff",
    flags: bytes = b"K\x00",
    ver: bytes = b"K\x03",
) -> bytes:
    """A dtype BUILD state (version, byteorder, subarray, names, fields, elsize,
    alignment, flags)."""
    return (
        b"(" + ver + u(order) + b"N" + names + fields + elsize + b"J\xff\xff\xff\xff" + flags + b"t"
    )


OBJ = npdtype(b"O8", st(order=b"|", flags=b"K?"))
ARR = recon(b"K\x02\x85", f4(), b"\x89", b"C\x08" + b"\x00" * 8)

case(
    "float-text-overflow",
    P + b"F1e400\n.",
    "hermetic returns inf, pickle.loads raises OverflowError ('value too large to convert "
    "to float'): CPython's load_float calls PyOS_string_to_double(s, &end, "
    "PyExc_OverflowError), which refuses an out-of-range decimal. hermetic is wrong: "
    "parser.rs parse_py_float (FLOAT argument) uses Rust's str::parse::<f64>, which "
    "rounds to infinity; eval/machine.rs step (FLOAT) takes the value as is.",
)
case(
    "float-text-underscore",
    P + b"F1_0\n.",
    "hermetic returns 10.0, pickle.loads raises ValueError ('could not convert string to "
    "float'): PyOS_string_to_double takes no underscores (only float() of a str does). "
    "hermetic is wrong: parser.rs parse_py_float strips '_' before parsing.",
)
case(
    "int-text-octal",
    b"I010\n.",
    "both return, hermetic 10, pickle.loads 8: the C unpickler's load_int reads the text "
    "with strtol(s, &end, 0), base 0, so a leading 0 is octal (and 0x hex; int(s, 0) for "
    "longer values). hermetic is wrong (it reads base 10): parser.rs decimal (INT "
    "argument). A top-level 'I0x10\\n.' is even refused as 'not a pickle' (the format "
    "sniffing), where pickle.loads returns 16.",
)
case(
    "int-text-two-chars-bool",
    b"I+1\n.",
    "both return, pickle.loads True, hermetic 1: _pickle.c load_int makes a bool of any "
    "3-byte line (two chars and the newline) that strtol reads as 0 or 1 ('01', '00', "
    "'+1', ' 1', '-0'), not only of the exact '01'/'00' protocol 0 writes. hermetic is "
    "wrong: parser.rs decimal (INT argument) special-cases only b'01' and b'00'.",
)
case(
    "long-text-leading-zero",
    b"L01\n.",
    "hermetic returns 1, pickle.loads raises ValueError: load_long reads the text with "
    "int(s, 0), where a leading zero is invalid ('I01 \\n' with a trailing space fails "
    "the same way in load_int). hermetic is wrong: parser.rs decimal accepts leading zeros "
    "and surrounding spaces for LONG (and for INT outside strtol's syntax).",
)
case(
    "range-big-bound",
    P + b"cbuiltins\nrange\n\x8a\x09" + (2**64).to_bytes(9, "little") + b"\x85R.",
    "hermetic raises 'REDUCE: a range bound is an int, not an int', pickle.loads returns "
    "range(0, 2**64): range takes any int. hermetic is wrong: eval/calls.rs call_known "
    "(Known::Range) reads bounds with int_arg, which only takes i64 (and its message "
    "calls the big int 'an int, not an int'); the Maker's range() takes Python ints.",
)
case(
    "dtype-state-version",
    P + f4(st(ver=b"J\xff\xff\xff\xff")) + b".",
    "hermetic returns dtype('float32'), pickle.loads raises ValueError (\"can't handle "
    'version -1 of numpy.dtype pickle"): arraydescr_setstate accepts only versions 0-4 '
    "(and checks the version against the tuple's length). hermetic is wrong: "
    "eval/numpy.rs dtype_setstate picks the layout by the tuple's length and never reads "
    "parts[0] (versions 5, -125, 2**31 are taken too).",
)
case(
    "dtype-state-flags-big",
    P + f4(st(flags=b"\x8a\x09" + (2**64).to_bytes(9, "little"))) + b".",
    "hermetic raises 'BUILD: the dtype flags is an int, not an int', numpy returns "
    "dtype('float32') (it reads flags as a C long long / ignores the overflow for a "
    "builtin type). hermetic is stricter and its message is wrong: eval/numpy.rs "
    "dtype_setstate reads flags with calls.rs int_arg (i64 only). Low priority, but the "
    "message should say 'too large'.",
)
case(
    "dtype-byteorder-bang",
    P + f4(st(order=b"!")) + b".",
    "hermetic raises 'BUILD: the dtype byte order \"!\"', numpy returns dtype('<f4'): "
    "arraydescr_setstate takes any one-char endian code and, for a builtin type, keeps "
    "the type's own order where the char is not '<', '>' or '|'. hermetic is wrong (it "
    "refuses): eval/numpy.rs dtype_setstate's endian match (around 'the dtype byte order').",
)
case(
    "dtype-byteorder-pipe",
    P + recon(b"K\x02\x85", f4(st(order=b"|")), b"\x89", b"C\x08" + b"\x00" * 8) + b".",
    "both return an array; numpy's dtype is '|f4' (arraydescr_setstate stores '|' as "
    "given, even for a 4-byte type), hermetic's is '<f4': the Comparer reports 'byte "
    "order differs'. hermetic is wrong (the real loader is the specification, odd as "
    "'|f4' is): eval/numpy.rs dtype_setstate normalises '|' to native order for an "
    "itemsize > 1 instead of keeping it.",
)
case(
    "dtype-type-V",
    P + npdtype(b"V", st(order=b"|")) + b".",
    "hermetic refuses 'not supported: REDUCE: the numpy type \"V\"', numpy returns "
    "dtype('V') (void of size 0, resized by the state's elsize). Also '?' (bool), 'O' "
    "without size are refused. hermetic is wrong: eval/numpy.rs parse_typestr (called "
    "from numpy.rs call, Known::NpDtype) lacks the size-less and '?' spellings that "
    "np.dtype() accepts.",
)
case(
    "reconstruct-typecode",
    P + ARR.replace(b"C\x01b\x87R", b"C\x00\x87R") + b".",
    "hermetic returns the array, pickle.loads raises TypeError (\"data type '' not "
    "understood\"): numpy's _reconstruct(ndarray, shape, typecode) builds "
    "np.dtype(typecode) first, so a bad third argument fails (bytes b'\\x00', a "
    "bytearray, an array are all refused). hermetic is wrong: eval/numpy.rs call "
    "(Known::NpReconstruct) checks the subtype only and ignores the typecode.",
)
case(
    "object-array-extra-items",
    P + recon(b"K\x02\x85", OBJ, b"\x89", b"(K\x01K\x02K\x03K\x04l") + b".",
    "hermetic refuses 'BUILD: an object array of shape [2] has 4 items', numpy returns "
    "array([1, 2], dtype=object): array_setstate for object arrays copies the first "
    "prod(shape) items and ignores the rest (a shorter list does fail). hermetic is "
    "stricter than the loader: eval/numpy.rs array_setstate's length check should be "
    "'at least' (what numpy does), or this is a refusal to document.",
)
case(
    "scalar-long-data",
    P + b"cnumpy._core.multiarray\nscalar\n" + f4() + b"C\x05\x00\x00\xc0?\x00\x86R.",
    "hermetic refuses 'REDUCE: a numpy scalar of <f4 holds 5 bytes, not 4', numpy returns "
    "np.float32(1.5): multiarray.scalar(dtype, data) needs at least itemsize bytes and "
    "ignores the tail (a shorter string fails, and both refuse it). hermetic is stricter: "
    "eval/numpy.rs call (Known::NpScalar) compares with !=; numpy's test is <.",
)
case(
    "tuple-of-bytes",
    P + b"cbuiltins\ntuple\nC\x02ab\x85R.",
    "hermetic refuses 'not supported: REDUCE: builtins.tuple of bytes', pickle.loads "
    "returns (97, 98). Only reachable by a global swap (CPython never pickles this); "
    "hermetic is stricter: eval/calls.rs call_known (Known::Tuple/List/Set) iterates only "
    "containers; bytes/bytearray/str (iterated by code point) are missing.",
)


def _torch_case(name: str, obj_edit: str, diagnosis: str) -> None:
    import torch
    import valuefuzz

    b = io.BytesIO()
    torch.save({"t": torch.ones(2)}, b)
    members = []
    for n, d in valuefuzz.zip_read(b.getvalue()):
        if obj_edit == "requires_grad" and n.endswith("data.pkl"):
            i = d.rindex(b"\x89")
            d = d[:i] + b"K\x01" + d[i + 1 :]
        if obj_edit == "version" and n.endswith("/version"):
            d = b"x\n"
        members.append((n, d))
    case(name, valuefuzz.zip_write(members), diagnosis, "torch")


def main() -> None:
    _torch_case(
        "torch-requires-grad-int",
        "requires_grad",
        "hermetic returns the tensor, torch.load(weights_only=True) raises RuntimeError "
        "('requires_grad must be a bool'): _rebuild_tensor_v2 sets "
        "tensor.requires_grad = 1, and torch takes only a bool there. hermetic is wrong: "
        "eval/torch.rs flag accepts Int 0/1 as well as Bool (right for nothing in torch's "
        "rebuilds; Parameter's requires_grad also goes through _make_subclass, which wants a "
        "bool).",
    )
    _torch_case(
        "torch-version-record",
        "version",
        "hermetic returns the state dict, torch.load raises RuntimeError (\"Couldn't parse "
        'the version x as Long Long"): PyTorchStreamReader reads archive/version (or '
        ".data/version) and refuses one that is not a number or is out of its supported "
        "range. hermetic is wrong: eval/checkpoint.rs torch_zip never reads the version "
        "record.",
    )
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.array([1, "x"], dtype=object), allow_pickle=True)
    from difffuzz import npy_build, npy_split

    _, _, start = npy_split(buf.getvalue())  # type: ignore[misc]
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (9223372036854775808,), }"
    npy = npy_build(header, buf.getvalue()[start:])
    case(
        "npy-object-header-shape",
        npy,
        "hermetic refuses ('npy shape holds a bad dimension': the header says shape "
        "(2**63,), the pickle holds 2 items), np.load "
        "returns the pickled array: numpy's read_array for object dtypes returns "
        "pickle.load(fp) and never looks at the header's shape. hermetic is stricter: "
        "eval/checkpoint.rs npy_header_in validates every header dimension (fits in i64) "
        "before npy_value knows the array is an object array whose header shape numpy "
        "ignores; numpy only checks the header parses.",
        "npy",
    )
    for old in HERE.glob("*.json"):
        old.unlink()
    suffix = {"torch": ".pt", "pickle": ".pkl", "npy": ".npy"}
    for name, (kind, data, diagnosis) in CASES.items():
        path = HERE / f"{name}{suffix[kind]}"
        path.write_bytes(data)
        meta = {"seed": name, "kind": kind, "mutations": ["minimal"], "diagnosis": diagnosis}
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
