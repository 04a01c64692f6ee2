"""The evaluator's builtins against CPython's own: `_codecs.encode` by every codec
name spelling, `int(str)`, `Counter(iterable)`, `tuple`/`list` of bytes and str, and
`range` of any size. Each case is a REDUCE of the real global: both sides raise, or
both return equal values of equal types."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

import hermetic


def _reduce(module: str, name: str, *args: Any) -> bytes:
    """`module.name(*args)` as protocol 2 opcodes (args pickled by pickle itself)."""
    inner = pickle.dumps(args, protocol=2)
    assert inner[:2] == b"\x80\x02" and inner.endswith(b".")
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + inner[2:-1] + b"R."


def _both(data: bytes) -> tuple[Any, Any]:
    try:
        real: Any = ("value", pickle.loads(data))
    except Exception as e:  # noqa: BLE001 - any refusal counts as one
        real = ("raise", type(e).__name__)
    try:
        mine: Any = ("value", hermetic.load_pickle(data))
    except Exception as e:  # noqa: BLE001
        mine = ("raise", type(e).__name__)
    return real, mine


def _agree(data: bytes) -> None:
    real, mine = _both(data)
    assert real[0] == mine[0], (real, mine)
    if real[0] == "value":
        assert type(real[1]) is type(mine[1]) and real[1] == mine[1], (real, mine)


CODECS = [
    "latin1", "LATIN-1", " latin 1 ", "L1", "iso8859-1", "ISO_8859-1", "8859", "cp819",
    "utf8", "UTF-8", "U8", "utf", "utf-16", "UTF_16_LE", "utf-16be", "rot13", "ROT_13",
    "cp1252", "windows-1252", "ascii", "US-ASCII", "646", "hex", "base64", "x", "", "utf-8-sig",
]  # fmt: skip
TEXTS = ["abc", "é€", "\x81", "Ωmega", "", "a\u20ac\u0178z"]


@pytest.mark.parametrize("codec", CODECS)
def test_codecs_encode_as_cpython(codec: str) -> None:
    for text in TEXTS:
        _agree(_reduce("_codecs", "encode", text, codec))
    _agree(_reduce("_codecs", "encode", "abc", codec.encode()))  # a bytes codec name


@pytest.mark.parametrize(
    "text",
    [
        "12",
        " 12 ",
        "-0012",
        "+7",
        "1_000",
        "1__0",
        "_1",
        "1_",
        "0x10",
        "١٢",
        "1 2",
        "",
        "\x1c5\x1f",
    ],
)
def test_int_of_str_as_cpython(text: str) -> None:
    data = _reduce("builtins", "int", text)
    if not text.isascii():
        # Unicode digits and spaces are refused on purpose (docs/SPEC.md).
        with pytest.raises(hermetic.CheckpointError, match="non-ASCII"):
            hermetic.load_pickle(data)
        return
    _agree(data)


@pytest.mark.parametrize(
    "items", [[1, 2, 1, True], ["a", "b", "a"], "abracadabra", b"aab", [b"x", "x", 1], [1.0, 1]]
)
def test_counter_of_an_iterable_as_cpython(items: Any) -> None:
    real, mine = _both(_reduce("collections", "Counter", items))
    if real[0] == "value" and mine[0] == "raise":
        # A float key is refused on purpose (1.0 == 1 == True merge by value).
        assert any(type(x) is float for x in items)
        return
    assert real[0] == mine[0], (real, mine)
    if real[0] == "value":
        assert list(real[1].items()) == list(mine[1].items())


@pytest.mark.parametrize("ctor", ["tuple", "list"])
@pytest.mark.parametrize(
    "arg", [b"ab", bytearray(b"\x00\xff"), "h\u00e9\U0001f600", "a\ud800\udc00b", {"k": 1}, {5}]
)
def test_sequence_of_an_iterable_as_cpython(ctor: str, arg: Any) -> None:
    _agree(_reduce("builtins", ctor, arg))


def test_sequence_of_a_set_is_refused_not_guessed() -> None:
    data = _reduce("builtins", "tuple", {3, 1, 2})
    with pytest.raises(hermetic.CheckpointError, match="sets of one item"):
        hermetic.load_pickle(data)


@pytest.mark.parametrize(
    "bounds", [(2**64,), (-(2**70), 2**70, 3), (0, 10, -(2**65)), (True, 5), (0, 5, 0)]
)
def test_range_of_any_size_as_cpython(bounds: tuple[int, ...]) -> None:
    _agree(_reduce("builtins", "range", *bounds))


# Dict keys and set items: CPython hashes them where they go in, and merges
# repeated keys by `==`; the evaluator must fail where it fails and merge as it
# merges, also where Rust consumes the dict itself (`tuple(d)`).
HASH_CASES = [
    b"(lp0\n(dg0\nI1\nsa.",  # SETITEM with a list key
    b"(lp0\ncbuiltins\ntuple\n((dg0\nI1\nstRa.",  # ... consumed by tuple(): found by the fuzzer
    b"cbuiltins\ntuple\n((d(I1\ntI1\ns(I1\ntI2\nstR.",  # equal tuple keys are one key
    b"cbuiltins\ntuple\n((dcbuiltins\nint\nI1\nscbuiltins\nint\nI2\nstR.",  # one class, twice
    b"cbuiltins\ntuple\n((dF1.0\nI1\nsI1\nI2\nstR.",  # 1.0 and 1 are one key
    b"cbuiltins\ntuple\n((d(I1\n(ltI1\nstR.",  # a tuple holding a list
    b"cbuiltins\ntuple\n(cbuiltins\nset\n(((lltRtR.",  # set([[]])
    b"cbuiltins\ntuple\n(cbuiltins\nfrozenset\n(((dltRtR.",  # frozenset([{}])
    b"(lp0\n(g0\nI1\nd0.",  # DICT with a list key, never built
    b"\x80\x04\x8f(]\x90.",  # ADDITEMS of a list
    b"\x80\x04(]\x91.",  # FROZENSET of a list
    b"cbuiltins\ntuple\n(ccollections\nOrderedDict\n((((lI1\ntltRtR.",  # OrderedDict([([], 1)])
]


@pytest.mark.parametrize("data", HASH_CASES)
def test_dict_keys_and_set_items_as_cpython(data: bytes) -> None:
    _agree(data)


@pytest.mark.parametrize("ctor", ["set", "frozenset"])
def test_set_of_a_str_with_lone_surrogates_as_cpython(ctor: str) -> None:
    # Found by the value fuzzer: each lone surrogate is one item.
    _agree(_reduce("builtins", ctor, "a\ud800\ud800b\udfff"))
