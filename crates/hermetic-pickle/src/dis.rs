//! A disassembler whose text is, byte for byte, what CPython 3.11's
//! `pickletools.dis(data)` prints with its default arguments
//! (`indentlevel=4`, `annotate=0`).
//!
//! It reads its arguments the way `pickletools` does (its `read_*`
//! functions), not the way the unpickler or [`crate::parser::Parser`] does:
//! the two disagree at the edges (for example `pickletools` accepts the
//! one-character `STRING` argument `'` and escape-decodes the `GLOBAL`
//! lines). It also replays the bookkeeping `pickletools.dis` does between
//! opcodes: the MARK stack behind the indentation and the `(MARK at N)`
//! notes, the memo behind `(as N)` and the memo checks, and the stack of
//! object kinds whose underflow or leftovers make `pickletools` raise.
//!
//! Offsets in the text are relative to `start`, so `disassemble(data, s)`
//! prints exactly what `pickletools.dis(data[s:])` prints. When
//! `pickletools` would raise, [`DisError`] carries what it printed before
//! raising and its exception's message.
//!
//! Nothing here panics on hostile input, and the text is bounded (see
//! [`DEFAULT_MAX_TEXT`]): `pickletools`' indentation makes its output
//! quadratic in the nesting of MARKs, and this is the one place the
//! disassembler knowingly stops where `pickletools` would go on.

use crate::opcodes::{ArgKind, Opcode};
use crate::text;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use unicode_general_category::{get_general_category, GeneralCategory};

/// The most text [`disassemble`] produces before giving up with a
/// [`DisError`] whose `exception` is `"LimitExceeded"`.
pub const DEFAULT_MAX_TEXT: usize = 256 << 20;

/// CPython's default `sys.get_int_max_str_digits()`.
const MAX_STR_DIGITS: usize = 4300;

/// The disassembly of one pickle stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disassembly {
    /// Exactly what `pickletools.dis` prints, through the
    /// `highest protocol among opcodes = N` line.
    pub text: String,
    /// Offset in the input just past `STOP` (where a following stream starts).
    pub end: usize,
}

/// Where `pickletools.dis` would raise.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{exception}: {message}")]
pub struct DisError {
    /// Offset in the input of the opcode being disassembled (the input's
    /// length when it ran out before `STOP`; `STOP`'s offset when the stack
    /// was not empty after it).
    pub offset: usize,
    /// The Python exception class `pickletools` raises: `ValueError`,
    /// `UnicodeDecodeError` (a `ValueError`), or `IndexError` (pickletools'
    /// own bug when a MARK was consumed as an ordinary stack item). The one
    /// hermetic-only value, `LimitExceeded`, means the text outgrew the limit.
    pub exception: &'static str,
    /// The exception's message (`str(exc)`), as CPython words it. Like
    /// CPython's, it can quote bytes of the input (an unparsable decimal, a
    /// badly quoted STRING); reports that must not echo payload bytes should
    /// use `exception` and `offset` instead.
    pub message: String,
    /// What `pickletools.dis` printed before raising. It can end in the
    /// `"%5d: "` position of the opcode at fault, without a newline, when
    /// the error came while formatting that opcode's line.
    pub partial_text: String,
}

/// Disassembles the pickle stream that starts at `start`, through its STOP.
pub fn disassemble(data: &[u8], start: usize) -> Result<Disassembly, DisError> {
    disassemble_with_limit(data, start, DEFAULT_MAX_TEXT)
}

/// [`disassemble`] with an explicit bound on the bytes of text produced.
pub fn disassemble_with_limit(
    data: &[u8],
    start: usize,
    max_text: usize,
) -> Result<Disassembly, DisError> {
    Machine::new(data, start, max_text).run()
}

/// The kinds of objects `pickletools` tracks on its stack (its
/// `StackObject`s); the names are what it prints for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Obj {
    IntOrBool,
    Int,
    BytesOrStr,
    Bytes,
    ByteArray,
    Buffer,
    PyNone,
    Bool,
    Str,
    Float,
    List,
    Any,
    Tuple,
    Dict,
    Set,
    FrozenSet,
    Mark,
    StackSlice,
}

impl Obj {
    fn name(self) -> &'static str {
        match self {
            Obj::IntOrBool => "int_or_bool",
            Obj::Int => "int",
            Obj::BytesOrStr => "bytes_or_str",
            Obj::Bytes => "bytes",
            Obj::ByteArray => "bytearray",
            Obj::Buffer => "buffer",
            Obj::PyNone => "None",
            Obj::Bool => "bool",
            Obj::Str => "str",
            Obj::Float => "float",
            Obj::List => "list",
            Obj::Any => "any",
            Obj::Tuple => "tuple",
            Obj::Dict => "dict",
            Obj::Set => "set",
            Obj::FrozenSet => "frozenset",
            Obj::Mark => "mark",
            Obj::StackSlice => "stackslice",
        }
    }
}

/// `stack_before` and `stack_after` of each opcode, as pickletools
/// documents them. The match is exhaustive, so a new opcode in the table
/// cannot be forgotten here.
fn stack_effect(op: Opcode) -> (&'static [Obj], &'static [Obj]) {
    use Obj::*;
    use Opcode as O;
    match op {
        O::INT => (&[], &[IntOrBool]),
        O::BININT | O::BININT1 | O::BININT2 | O::LONG | O::LONG1 | O::LONG4 => (&[], &[Int]),
        O::STRING | O::BINSTRING | O::SHORT_BINSTRING => (&[], &[BytesOrStr]),
        O::BINBYTES | O::SHORT_BINBYTES | O::BINBYTES8 => (&[], &[Bytes]),
        O::BYTEARRAY8 => (&[], &[ByteArray]),
        O::NEXT_BUFFER => (&[], &[Buffer]),
        O::READONLY_BUFFER => (&[Buffer], &[Buffer]),
        O::NONE => (&[], &[PyNone]),
        O::NEWTRUE | O::NEWFALSE => (&[], &[Bool]),
        O::UNICODE | O::SHORT_BINUNICODE | O::BINUNICODE | O::BINUNICODE8 => (&[], &[Str]),
        O::FLOAT | O::BINFLOAT => (&[], &[Float]),
        O::EMPTY_LIST => (&[], &[List]),
        O::APPEND => (&[List, Any], &[List]),
        O::APPENDS => (&[List, Mark, StackSlice], &[List]),
        O::LIST => (&[Mark, StackSlice], &[List]),
        O::EMPTY_TUPLE => (&[], &[Tuple]),
        O::TUPLE => (&[Mark, StackSlice], &[Tuple]),
        O::TUPLE1 => (&[Any], &[Tuple]),
        O::TUPLE2 => (&[Any, Any], &[Tuple]),
        O::TUPLE3 => (&[Any, Any, Any], &[Tuple]),
        O::EMPTY_DICT => (&[], &[Dict]),
        O::DICT => (&[Mark, StackSlice], &[Dict]),
        O::SETITEM => (&[Dict, Any, Any], &[Dict]),
        O::SETITEMS => (&[Dict, Mark, StackSlice], &[Dict]),
        O::EMPTY_SET => (&[], &[Set]),
        O::ADDITEMS => (&[Set, Mark, StackSlice], &[Set]),
        O::FROZENSET => (&[Mark, StackSlice], &[FrozenSet]),
        O::POP => (&[Any], &[]),
        O::DUP => (&[Any], &[Any, Any]),
        O::MARK => (&[], &[Mark]),
        O::POP_MARK => (&[Mark, StackSlice], &[]),
        O::GET | O::BINGET | O::LONG_BINGET => (&[], &[Any]),
        O::PUT | O::BINPUT | O::LONG_BINPUT => (&[], &[]),
        O::MEMOIZE => (&[Any], &[Any]),
        O::EXT1 | O::EXT2 | O::EXT4 => (&[], &[Any]),
        O::GLOBAL => (&[], &[Any]),
        O::STACK_GLOBAL => (&[Str, Str], &[Any]),
        O::REDUCE | O::BUILD | O::NEWOBJ => (&[Any, Any], &[Any]),
        O::INST => (&[Mark, StackSlice], &[Any]),
        O::OBJ => (&[Mark, Any, StackSlice], &[Any]),
        O::NEWOBJ_EX => (&[Any, Any, Any], &[Any]),
        O::PROTO | O::FRAME => (&[], &[]),
        O::STOP => (&[Any], &[]),
        O::PERSID => (&[], &[Any]),
        O::BINPERSID => (&[Any], &[Any]),
    }
}

/// An opcode's argument as `pickletools` reads it.
#[derive(Debug)]
enum Val<'a> {
    Int(i128),
    /// A decimal integer beyond `i128`, in canonical form (no `+`, no
    /// leading zeros).
    BigDecimal(String),
    Bool(bool),
    /// `LONG1`/`LONG4`: little-endian two's complement, converted to decimal
    /// only when printed (that conversion is what can fail).
    Long(&'a [u8]),
    Float(f64),
    Str(Text<'a>),
    Bytes(&'a [u8]),
    ByteArray(&'a [u8]),
}

impl Val<'_> {
    /// Python's `repr()` of the value; `None` once it outgrows `cap` bytes,
    /// the error message where CPython cannot convert an int to decimal.
    fn repr(&self, cap: usize) -> Result<Option<String>, String> {
        Ok(Some(match self {
            Val::Int(v) => v.to_string(),
            Val::BigDecimal(s) => s.clone(),
            Val::Bool(true) => "True".to_owned(),
            Val::Bool(false) => "False".to_owned(),
            Val::Long(bytes) => long_repr(bytes)?,
            Val::Float(f) => float_repr(*f),
            Val::Str(t) => return Ok(str_repr(t, cap)),
            Val::Bytes(b) => return Ok(bytes_repr(b, cap)),
            Val::ByteArray(b) => return Ok(bytearray_repr(b, cap)),
        }))
    }

    /// The repr of a (memo key) int.
    fn short_repr(&self) -> String {
        self.repr(usize::MAX).ok().flatten().unwrap_or_default()
    }

    /// The value as a memo key; `True`/`False` hash and compare like 1/0.
    fn memo_key(&self) -> Option<MemoKey> {
        match self {
            Val::Int(v) => Some(MemoKey::Small(*v)),
            Val::Bool(b) => Some(MemoKey::Small(i128::from(*b))),
            Val::BigDecimal(s) => Some(MemoKey::Big(s.clone())),
            _ => None,
        }
    }
}

/// A `str` argument, kept as its validated input bytes and decoded on the
/// fly, so that no argument costs more memory than its own bytes.
#[derive(Debug)]
enum Text<'a> {
    /// Code points below 256: ASCII or latin-1.
    Latin1(Cow<'a, [u8]>),
    Utf8(&'a str),
    /// UTF-8 with encoded lone surrogates, checked by [`check_utf8`].
    Surrogates(&'a [u8]),
    /// raw-unicode-escape, checked by [`check_raw_unicode_escape`].
    RawUnicodeEscape(&'a [u8]),
}

impl Text<'_> {
    fn code_points(&self) -> Box<dyn Iterator<Item = u32> + '_> {
        match self {
            Text::Latin1(b) => Box::new(b.iter().map(|&b| u32::from(b))),
            Text::Utf8(s) => Box::new(s.chars().map(u32::from)),
            Text::Surrogates(data) => Box::new(Utf8Points { data }),
            Text::RawUnicodeEscape(data) => Box::new(RawUnicodeEscapePoints {
                data,
                pending: None,
            }),
        }
    }
}

/// The code points of UTF-8 that [`check_utf8`] accepted.
struct Utf8Points<'a> {
    data: &'a [u8],
}

impl Iterator for Utf8Points<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let (&b0, rest) = self.data.split_first()?;
        let (len, init) = match b0 {
            0x00..=0x7f => (1, b0),
            0x80..=0xdf => (2, b0 & 0x1f),
            0xe0..=0xef => (3, b0 & 0x0f),
            _ => (4, b0 & 0x07),
        };
        let tail = rest.get(..len - 1).unwrap_or(rest);
        self.data = &rest[tail.len()..];
        Some(
            tail.iter()
                .fold(u32::from(init), |cp, &b| (cp << 6) | u32::from(b & 0x3f)),
        )
    }
}

/// The code points of raw-unicode-escape text that
/// [`check_raw_unicode_escape`] accepted.
struct RawUnicodeEscapePoints<'a> {
    data: &'a [u8],
    pending: Option<u32>,
}

impl Iterator for RawUnicodeEscapePoints<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        if let Some(c) = self.pending.take() {
            return Some(c);
        }
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        if b != b'\\' {
            return Some(u32::from(b));
        }
        // A backslash and the byte after it go together, escape or not.
        let Some((&c, rest)) = self.data.split_first() else {
            return Some(u32::from(b));
        };
        self.data = rest;
        let width = match c {
            b'u' => 4,
            b'U' => 8,
            _ => {
                self.pending = Some(u32::from(c));
                return Some(u32::from(b));
            }
        };
        let hex = self.data.get(..width).unwrap_or(self.data);
        self.data = &self.data[hex.len()..];
        Some(hex.iter().fold(0, |cp, &h| {
            (cp << 4) | char::from(h).to_digit(16).unwrap_or(0)
        }))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum MemoKey {
    Small(i128),
    /// Canonical decimal, never in `i128` range, so never equal to a `Small`.
    Big(String),
}

/// An exception raised while reading an argument: class and message.
type Raise = (&'static str, String);

fn value_error(message: impl Into<String>) -> Raise {
    ("ValueError", message.into())
}

fn limit_error(max: usize) -> Raise {
    (
        "LimitExceeded",
        format!("disassembly exceeds {max} bytes of text"),
    )
}

/// `io.BytesIO` over the stream, as `pickletools._genops` reads it.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    /// The text limit, which also bounds the input quoted in messages.
    max_text: usize,
}

impl<'a> Reader<'a> {
    /// `f.read(n)`: at most `n` bytes.
    fn read(&mut self, n: u64) -> &'a [u8] {
        let rest = &self.data[self.pos..];
        let take = usize::try_from(n).map_or(rest.len(), |n| n.min(rest.len()));
        self.pos += take;
        &rest[..take]
    }

    /// `f.readline()`: through the next newline, or the rest.
    fn readline(&mut self) -> &'a [u8] {
        let rest = &self.data[self.pos..];
        let take = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        self.pos += take;
        &rest[..take]
    }

    fn fixed<const N: usize>(&mut self, what: &str) -> Result<[u8; N], Raise> {
        let got = self.read(N as u64);
        <[u8; N]>::try_from(got)
            .map_err(|_| value_error(format!("not enough data in stream to read {what}")))
    }

    fn uint1(&mut self) -> Result<u8, Raise> {
        Ok(self.fixed::<1>("uint1")?[0])
    }

    fn uint2(&mut self) -> Result<u16, Raise> {
        Ok(u16::from_le_bytes(self.fixed("uint2")?))
    }

    fn int4(&mut self) -> Result<i32, Raise> {
        Ok(i32::from_le_bytes(self.fixed("int4")?))
    }

    fn uint4(&mut self) -> Result<u32, Raise> {
        Ok(u32::from_le_bytes(self.fixed("uint4")?))
    }

    fn uint8(&mut self) -> Result<u64, Raise> {
        Ok(u64::from_le_bytes(self.fixed("uint8")?))
    }

    /// The `n` bytes of a counted argument (`read_string1` and friends).
    fn counted(&mut self, n: u64, what: &str) -> Result<&'a [u8], Raise> {
        let got = self.read(n);
        if got.len() as u64 == n {
            Ok(got)
        } else {
            Err(value_error(format!(
                "expected {n} bytes in a {what}, but only {} remain",
                got.len()
            )))
        }
    }

    /// A `uint8` count, refused above `sys.maxsize` as pickletools does.
    fn count8(&mut self, what: &str) -> Result<u64, Raise> {
        let n = self.uint8()?;
        if n > i64::MAX as u64 {
            return Err(value_error(format!("{what} byte count > sys.maxsize: {n}")));
        }
        Ok(n)
    }

    /// `read_stringnl`: the line without its newline, optionally unquoted
    /// and escape-decoded (then ASCII-decoded).
    fn stringnl(&mut self, decode: bool, stripquotes: bool) -> Result<Cow<'a, [u8]>, Raise> {
        let line = self.readline();
        let Some(mut data) = line.strip_suffix(b"\n") else {
            return Err(value_error("no newline found when trying to read stringnl"));
        };
        if stripquotes {
            let quote = [b'"', b'\''].into_iter().find(|q| data.first() == Some(q));
            match quote {
                Some(q) => {
                    if data.last() != Some(&q) {
                        let data = self.quoted(data)?;
                        return Err(value_error(format!(
                            "strinq quote {} not found at both ends of {data}",
                            bytes_repr_full(&[q]),
                        )));
                    }
                    // Python's data[1:-1], also for the one-byte line `'`.
                    data = data.get(1..data.len() - 1).unwrap_or_default();
                }
                None => {
                    let data = self.quoted(data)?;
                    return Err(value_error(format!("no string quotes around {data}")));
                }
            }
        }
        if !decode {
            return Ok(Cow::Borrowed(data));
        }
        let decoded = text::escape_decode(data).ok_or_else(|| escape_decode_error(data))?;
        if let Some(i) = decoded.iter().position(|&b| b >= 0x80) {
            return Err((
                "UnicodeDecodeError",
                format!(
                    "'ascii' codec can't decode byte 0x{:02x} in position {i}: ordinal not in range(128)",
                    decoded[i]
                ),
            ));
        }
        Ok(Cow::Owned(decoded))
    }

    /// `repr(data)` for a message, within the text limit.
    fn quoted(&self, data: &[u8]) -> Result<String, Raise> {
        bytes_repr(data, self.max_text).ok_or_else(|| limit_error(self.max_text))
    }

    /// `str(data, 'utf-8', 'surrogatepass')`.
    fn utf8(&mut self, n: u64, what: &str) -> Result<Val<'a>, Raise> {
        let data = self.counted(n, what)?;
        if let Ok(s) = std::str::from_utf8(data) {
            return Ok(Val::Str(Text::Utf8(s)));
        }
        check_utf8(data).map_err(|m| ("UnicodeDecodeError", m))?;
        Ok(Val::Str(Text::Surrogates(data)))
    }

    /// Reads `op`'s argument with the matching `pickletools.read_*`.
    fn arg(&mut self, op: Opcode) -> Result<Option<Val<'a>>, Raise> {
        let val = match op.arg_kind() {
            ArgKind::None => return Ok(None),
            ArgKind::Uint1 => Val::Int(self.uint1()?.into()),
            ArgKind::Uint2 => Val::Int(self.uint2()?.into()),
            ArgKind::Int4 => Val::Int(self.int4()?.into()),
            ArgKind::Uint4 => Val::Int(self.uint4()?.into()),
            ArgKind::Uint8 => Val::Int(self.uint8()?.into()),
            ArgKind::DecimalNlShort => {
                let s = self.stringnl(false, false)?;
                match &*s {
                    b"00" => Val::Bool(false),
                    b"01" => Val::Bool(true),
                    s => py_int(s)?,
                }
            }
            ArgKind::DecimalNlLong => {
                let s = self.stringnl(false, false)?;
                py_int(s.strip_suffix(b"L").unwrap_or(&s))?
            }
            ArgKind::FloatNl => {
                let s = self.stringnl(false, false)?;
                match py_float(&s) {
                    Some(f) => Val::Float(f),
                    None => {
                        let shown = self.quoted(&s)?;
                        return Err(value_error(format!(
                            "could not convert string to float: {shown}"
                        )));
                    }
                }
            }
            ArgKind::Float8 => Val::Float(f64::from_be_bytes(self.fixed("float8")?)),
            ArgKind::Long1 => {
                let n = self.uint1()?;
                let data = self.read(n.into());
                if data.len() != usize::from(n) {
                    return Err(value_error("not enough data in stream to read long1"));
                }
                Val::Long(data)
            }
            ArgKind::Long4 => {
                let n = self.int4()?;
                let Ok(n) = u64::try_from(n) else {
                    return Err(value_error(format!("long4 byte count < 0: {n}")));
                };
                let data = self.read(n);
                if data.len() as u64 != n {
                    return Err(value_error("not enough data in stream to read long4"));
                }
                Val::Long(data)
            }
            ArgKind::StringNl => Val::Str(Text::Latin1(self.stringnl(true, true)?)),
            ArgKind::StringNlNoescape => Val::Str(Text::Latin1(self.stringnl(true, false)?)),
            ArgKind::StringNlNoescapePair => {
                let first = self.stringnl(true, false)?;
                let second = self.stringnl(true, false)?;
                let mut both = first.into_owned();
                both.push(b' ');
                both.extend_from_slice(&second);
                Val::Str(Text::Latin1(Cow::Owned(both)))
            }
            ArgKind::String1 => {
                let n = self.uint1()?;
                Val::Str(Text::Latin1(Cow::Borrowed(
                    self.counted(n.into(), "string1")?,
                )))
            }
            ArgKind::String4 => {
                let n = self.int4()?;
                let Ok(n) = u64::try_from(n) else {
                    return Err(value_error(format!("string4 byte count < 0: {n}")));
                };
                Val::Str(Text::Latin1(Cow::Borrowed(self.counted(n, "string4")?)))
            }
            ArgKind::Bytes1 => {
                let n = self.uint1()?;
                Val::Bytes(self.counted(n.into(), "bytes1")?)
            }
            ArgKind::Bytes4 => {
                let n = self.uint4()?;
                Val::Bytes(self.counted(n.into(), "bytes4")?)
            }
            ArgKind::Bytes8 => {
                let n = self.count8("bytes8")?;
                Val::Bytes(self.counted(n, "bytes8")?)
            }
            ArgKind::ByteArray8 => {
                let n = self.count8("bytearray8")?;
                Val::ByteArray(self.counted(n, "bytearray8")?)
            }
            ArgKind::UnicodeStringNl => {
                let line = self.readline();
                let Some(data) = line.strip_suffix(b"\n") else {
                    return Err(value_error(
                        "no newline found when trying to read unicodestringnl",
                    ));
                };
                check_raw_unicode_escape(data).map_err(|m| ("UnicodeDecodeError", m))?;
                Val::Str(Text::RawUnicodeEscape(data))
            }
            ArgKind::UnicodeString1 => {
                let n = self.uint1()?;
                self.utf8(n.into(), "unicodestring1")?
            }
            ArgKind::UnicodeString4 => {
                let n = self.uint4()?;
                self.utf8(n.into(), "unicodestring4")?
            }
            ArgKind::UnicodeString8 => {
                let n = self.count8("unicodestring8")?;
                self.utf8(n, "unicodestring8")?
            }
        };
        Ok(Some(val))
    }
}

/// The state `pickletools.dis` keeps between opcodes.
struct Machine<'a> {
    data: &'a [u8],
    /// Where the stream starts; printed positions are relative to it.
    base: usize,
    max_text: usize,
    out: String,
    stack: Vec<Obj>,
    /// Relative positions of the MARKs not yet closed.
    markstack: Vec<usize>,
    memo: HashMap<MemoKey, Obj>,
}

impl<'a> Machine<'a> {
    fn new(data: &'a [u8], start: usize, max_text: usize) -> Self {
        Machine {
            data,
            base: start.min(data.len()),
            max_text,
            out: String::new(),
            stack: Vec::new(),
            markstack: Vec::new(),
            memo: HashMap::new(),
        }
    }

    fn fail(&mut self, offset: usize, (exception, message): Raise) -> DisError {
        DisError {
            offset,
            exception,
            message,
            partial_text: std::mem::take(&mut self.out),
        }
    }

    /// Room for `extra` more bytes of text, or the limit error.
    fn room(&mut self, offset: usize, extra: usize) -> Result<(), DisError> {
        if self.out.len().saturating_add(extra) > self.max_text {
            return Err(self.fail(offset, limit_error(self.max_text)));
        }
        Ok(())
    }

    fn run(mut self) -> Result<Disassembly, DisError> {
        let mut reader = Reader {
            data: self.data,
            pos: self.base,
            max_text: self.max_text,
        };
        let mut maxproto = 0u8;
        loop {
            let at = reader.pos;
            let rel = at - self.base;
            let Some(&code) = self.data.get(at) else {
                return Err(self.fail(at, value_error("pickle exhausted before seeing STOP")));
            };
            let Some(op) = Opcode::from_byte(code) else {
                let code = bytes_repr_full(&[code]);
                let message = format!("at position {rel}, opcode {code} unknown");
                return Err(self.fail(at, value_error(message)));
            };
            reader.pos += 1;
            let arg = match reader.arg(op) {
                Ok(arg) => arg,
                Err(raise) => return Err(self.fail(at, raise)),
            };
            self.step(at, rel, op, arg.as_ref())?;
            maxproto = maxproto.max(op.protocol());
            if op == Opcode::STOP {
                break;
            }
        }
        let last = format!("highest protocol among opcodes = {maxproto}\n");
        let stop_at = reader.pos - 1;
        self.room(stop_at, last.len())?;
        self.out.push_str(&last);
        if !self.stack.is_empty() {
            let names: Vec<&str> = self.stack.iter().map(|o| o.name()).collect();
            let message = format!("stack not empty after STOP: [{}]", names.join(", "));
            return Err(self.fail(stop_at, value_error(message)));
        }
        Ok(Disassembly {
            text: self.out,
            end: reader.pos,
        })
    }

    /// One iteration of the loop in `pickletools.dis`.
    fn step(
        &mut self,
        at: usize,
        rel: usize,
        op: Opcode,
        arg: Option<&Val<'_>>,
    ) -> Result<(), DisError> {
        let prefix = format!("{rel:5}: ");
        self.room(at, prefix.len())?;
        self.out.push_str(&prefix);

        let depth = self.markstack.len();
        let (before, after) = stack_effect(op);
        let mut after: Cow<'static, [Obj]> = Cow::Borrowed(after);
        let mut numtopop = before.len();
        let mut markmsg: Option<String> = None;
        let mut errormsg: Option<String> = None;

        let pops_mark = before.contains(&Obj::Mark)
            || (op == Opcode::POP && self.stack.last() == Some(&Obj::Mark));
        if pops_mark {
            if let Some(markpos) = self.markstack.pop() {
                markmsg = Some(format!("(MARK at {markpos})"));
                // `while stack[-1] is not markobject: stack.pop()`, which
                // raises IndexError when a MARK was already consumed as an
                // ordinary item.
                loop {
                    match self.stack.pop() {
                        Some(Obj::Mark) => break,
                        Some(_) => {}
                        None => {
                            return Err(
                                self.fail(at, ("IndexError", "list index out of range".into()))
                            )
                        }
                    }
                }
                numtopop = before.iter().position(|o| *o == Obj::Mark).unwrap_or(0);
            } else {
                let msg = "no MARK exists on stack".to_owned();
                markmsg = Some(msg.clone());
                errormsg = Some(msg);
            }
        }

        match op {
            Opcode::PUT | Opcode::BINPUT | Opcode::LONG_BINPUT | Opcode::MEMOIZE => {
                let key = if op == Opcode::MEMOIZE {
                    let idx = self.memo.len();
                    markmsg = Some(format!("(as {idx})"));
                    Some(MemoKey::Small(idx as i128))
                } else {
                    arg.and_then(Val::memo_key)
                };
                if let Some(key) = key {
                    if self.memo.contains_key(&key) {
                        let shown = match arg {
                            Some(v) => v.short_repr(),
                            None => "None".to_owned(),
                        };
                        errormsg = Some(format!("memo key {shown} already defined"));
                    } else {
                        match self.stack.last() {
                            None => {
                                errormsg = Some("stack is empty -- can't store into memo".into())
                            }
                            Some(Obj::Mark) => {
                                errormsg = Some("can't store markobject in the memo".into())
                            }
                            Some(&top) => {
                                self.memo.insert(key, top);
                            }
                        }
                    }
                }
            }
            Opcode::GET | Opcode::BINGET | Opcode::LONG_BINGET => {
                match arg.and_then(Val::memo_key).and_then(|k| self.memo.get(&k)) {
                    Some(&obj) => after = Cow::Owned(vec![obj]),
                    None => {
                        let shown = arg.map(Val::short_repr).unwrap_or_default();
                        errormsg = Some(format!("memo key {shown} has never been stored into"));
                    }
                }
            }
            _ => {}
        }

        // '%-4s %s%s' % (repr(opcode.code)[1:-1], indentchunk * len(markstack), opcode.name)
        let code = str_repr(&Text::Latin1(Cow::Borrowed(&[op.byte()])), usize::MAX);
        let code = code.unwrap_or_default();
        let code = code.get(1..code.len() - 1).unwrap_or_default();
        let indent = depth.saturating_mul(4);
        self.room(at, indent.saturating_add(32))?;
        let mut line = String::with_capacity(indent + 32);
        let _ = write!(line, "{code:<4} ");
        line.extend(std::iter::repeat_n(' ', indent));
        line.push_str(op.name());
        if arg.is_some() || markmsg.is_some() {
            let pad = 10usize.saturating_sub(op.name().len());
            line.extend(std::iter::repeat_n(' ', pad));
            if let Some(v) = arg {
                let cap = self.max_text.saturating_sub(self.out.len() + line.len());
                let shown = match v.repr(cap) {
                    Ok(Some(s)) => s,
                    Ok(None) => return Err(self.fail(at, limit_error(self.max_text))),
                    Err(message) => return Err(self.fail(at, value_error(message))),
                };
                line.push(' ');
                line.push_str(&shown);
            }
            if let Some(m) = &markmsg {
                line.push(' ');
                line.push_str(m);
            }
        }
        line.push('\n');
        self.room(at, line.len())?;
        self.out.push_str(&line);

        if let Some(msg) = errormsg {
            return Err(self.fail(at, value_error(msg)));
        }
        if self.stack.len() < numtopop {
            let message = format!(
                "tries to pop {numtopop} items from stack with only {} items",
                self.stack.len()
            );
            return Err(self.fail(at, value_error(message)));
        }
        self.stack.truncate(self.stack.len() - numtopop);
        if after.contains(&Obj::Mark) {
            self.markstack.push(rel);
        }
        self.stack.extend_from_slice(&after);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Python's int() and float() of a bytes object.

/// `Py_ISSPACE`: the ASCII whitespace `int()` and `float()` strip.
fn py_isspace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// `int(s)` for bytes `s` (base 10), with CPython's messages.
fn py_int(s: &[u8]) -> Result<Val<'static>, Raise> {
    let invalid = || {
        let shown = bytes_repr_full(&s[..s.len().min(200)]);
        let shown: String = shown.chars().take(200).collect();
        value_error(format!("invalid literal for int() with base 10: {shown}"))
    };
    // PyLong_FromString sees a C string: it stops at the first NUL, and a
    // NUL before the end makes the literal invalid afterwards.
    let c = &s[..s.iter().position(|&b| b == 0).unwrap_or(s.len())];
    let mut i = 0;
    while i < c.len() && py_isspace(c[i]) {
        i += 1;
    }
    let negative = match c.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    if c.get(i) == Some(&b'_') {
        return Err(invalid());
    }
    let mut digits = String::new();
    let mut count = 0usize;
    let mut prev = 0u8;
    while let Some(&b) = c.get(i) {
        if b == b'_' {
            if prev == b'_' {
                return Err(invalid());
            }
        } else if b.is_ascii_digit() {
            count += 1;
            if count <= MAX_STR_DIGITS {
                digits.push(char::from(b));
            }
        } else {
            break;
        }
        prev = b;
        i += 1;
    }
    if prev == b'_' {
        return Err(invalid());
    }
    if count > MAX_STR_DIGITS {
        return Err(value_error(format!(
            "Exceeds the limit ({MAX_STR_DIGITS} digits) for integer string conversion: \
             value has {count} digits; use sys.set_int_max_str_digits() to increase the limit"
        )));
    }
    if count == 0 {
        return Err(invalid());
    }
    while i < c.len() && py_isspace(c[i]) {
        i += 1;
    }
    if i != s.len() {
        return Err(invalid());
    }
    let trimmed = digits.trim_start_matches('0');
    if trimmed.is_empty() {
        return Ok(Val::Int(0));
    }
    let canonical = if negative {
        format!("-{trimmed}")
    } else {
        trimmed.to_owned()
    };
    Ok(match canonical.parse::<i128>() {
        Ok(v) => Val::Int(v),
        Err(_) => Val::BigDecimal(canonical),
    })
}

/// `float(s)` for bytes `s`; `None` where CPython raises.
fn py_float(s: &[u8]) -> Option<f64> {
    let owned;
    let mut s = s;
    let c_len = s.iter().position(|&b| b == 0).unwrap_or(s.len());
    if s[..c_len].contains(&b'_') {
        // _Py_string_to_number_with_underscores: only between digits.
        let mut prev = 0u8;
        let mut dup = Vec::with_capacity(s.len());
        for &b in s {
            if b == b'_' {
                if !prev.is_ascii_digit() {
                    return None;
                }
            } else {
                if prev == b'_' && !b.is_ascii_digit() {
                    return None;
                }
                dup.push(b);
            }
            prev = b;
        }
        if prev == b'_' {
            return None;
        }
        owned = dup;
        s = &owned;
    }
    let start = s.iter().position(|&b| !py_isspace(b))?;
    let end = s
        .iter()
        .rposition(|&b| !py_isspace(b))
        .map_or(start, |i| i + 1);
    let body = std::str::from_utf8(&s[start..end]).ok()?;
    // Rust's grammar is CPython's (dtoa plus inf/infinity/nan, any case,
    // optional sign) once whitespace and underscores are gone; it is
    // correctly rounded like dtoa. Refuse anything else up front.
    if !body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-'))
    {
        return None;
    }
    body.parse::<f64>().ok()
}

// ---------------------------------------------------------------------------
// Python's repr() of the argument types.

/// `repr(float)`: the shortest round-tripping digits, positional for
/// decimal exponents -4 <= e < 16, scientific otherwise.
fn float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    let (digits, exp) = shortest_digits(x.abs());
    let decpt = exp + 1;
    let mut out = String::new();
    if x.is_sign_negative() {
        out.push('-');
    }
    let n = digits.len() as i32;
    if decpt <= -4 || decpt > 16 {
        out.push_str(&digits[..1]);
        if n > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = decpt - 1;
        let _ = write!(
            out,
            "e{}{:02}",
            if e < 0 { '-' } else { '+' },
            e.unsigned_abs()
        );
    } else if decpt <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', decpt.unsigned_abs() as usize));
        out.push_str(&digits);
    } else if decpt >= n {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (decpt - n) as usize));
        out.push_str(".0");
    } else {
        let (int, frac) = digits.split_at(decpt as usize);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    }
    out
}

/// The shortest digits that round-trip to `x` (finite, not negative) and
/// the decimal exponent of the first one, as CPython's `dtoa` mode 0 picks
/// them. Rust's formatter picks the same digits except when `x` lies exactly
/// halfway between two shortest candidates that both round-trip: Rust then
/// rounds up, `dtoa` rounds half to even.
fn shortest_digits(x: f64) -> (String, i32) {
    // `{:e}` gives the shortest round-trip digits: "d.ddde-7", "0e0".
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let mut digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let exp: i32 = exp.parse().unwrap_or(0);
    let n = digits.len() as i32;
    let last_odd = digits.bytes().last().is_some_and(|d| (d - b'0') % 2 == 1);
    if let (true, Ok(high)) = (last_odd && n <= 17, digits.parse::<u64>()) {
        // The midpoint below `high` is (10*high - 5) * 10^(exp - n).
        if equals_decimal(x, high * 10 - 5, exp - n) {
            let low = high - 1;
            if format!("{low}e{}", exp - n + 1).parse::<f64>() == Ok(x) {
                digits = low.to_string();
                while digits.len() > 1 && digits.ends_with('0') {
                    digits.pop();
                }
            }
        }
    }
    (digits, exp)
}

/// Whether the finite, non-negative `x` is exactly `p * 10^q`.
fn equals_decimal(x: f64, p: u64, q: i32) -> bool {
    let bits = x.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1u64 << 52) - 1);
    let (mut m, mut e) = if biased == 0 {
        (frac, -1074)
    } else {
        (frac | (1u64 << 52), biased - 1075)
    };
    if m == 0 || p == 0 {
        return m == p;
    }
    // x = m * 2^e and p * 10^q = p_odd * 5^q * 2^(b + q), with m and p_odd odd.
    let tz = m.trailing_zeros();
    m >>= tz;
    e += tz as i32;
    let b = p.trailing_zeros() as i32;
    let p_odd = p >> b;
    if e != b + q {
        return false;
    }
    let five = |k: i32| 5u128.checked_pow(k.unsigned_abs());
    if q >= 0 {
        five(q).and_then(|f| f.checked_mul(u128::from(p_odd))) == Some(u128::from(m))
    } else {
        five(q).and_then(|f| f.checked_mul(u128::from(m))) == Some(u128::from(p_odd))
    }
}

/// `repr(int)` of `int.from_bytes(bytes, "little", signed=True)`, refused
/// past 4300 decimal digits as CPython does.
fn long_repr(bytes: &[u8]) -> Result<String, String> {
    let Some(&last) = bytes.last() else {
        return Ok("0".into());
    };
    let negative = last & 0x80 != 0;
    // Drop sign-extension bytes so a huge but small-valued argument is cheap.
    let mut n = bytes.len();
    if negative {
        while n >= 2 && bytes[n - 1] == 0xff && bytes[n - 2] & 0x80 != 0 {
            n -= 1;
        }
    } else {
        while n >= 1 && bytes[n - 1] == 0 {
            n -= 1;
        }
    }
    let too_long = || {
        format!(
            "Exceeds the limit ({MAX_STR_DIGITS} digits) for integer string conversion; \
             use sys.set_int_max_str_digits() to increase the limit"
        )
    };
    // 1800 bytes or more of magnitude is at least 10^4334: too many digits.
    if n > 1800 {
        return Err(too_long());
    }
    let bytes = &bytes[..n];
    let magnitude: Vec<u8> = if negative {
        let mut carry = 1u16;
        bytes
            .iter()
            .map(|&b| {
                let v = u16::from(!b) + carry;
                carry = v >> 8;
                v as u8
            })
            .collect()
    } else {
        bytes.to_vec()
    };
    let mut limbs: Vec<u32> = magnitude
        .chunks(4)
        .map(|c| {
            let mut a = [0u8; 4];
            a[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(a)
        })
        .collect();
    let mut chunks: Vec<u32> = Vec::new();
    loop {
        while limbs.last() == Some(&0) {
            limbs.pop();
        }
        if limbs.is_empty() {
            break;
        }
        let mut rem = 0u64;
        for limb in limbs.iter_mut().rev() {
            let cur = (rem << 32) | u64::from(*limb);
            *limb = (cur / 1_000_000_000) as u32;
            rem = cur % 1_000_000_000;
        }
        chunks.push(rem as u32);
    }
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    match chunks.split_last() {
        None => out.push('0'),
        Some((high, rest)) => {
            let _ = write!(out, "{high}");
            for c in rest.iter().rev() {
                let _ = write!(out, "{c:09}");
            }
        }
    }
    if out.len() - usize::from(negative) > MAX_STR_DIGITS {
        return Err(too_long());
    }
    Ok(out)
}

/// Code points that Unicode 15.0 and 16.0 assigned printable categories,
/// unassigned (so not printable) in Unicode 14.0.0, the database of
/// Python 3.11's `str.isprintable`. The crate's tables are 16.0.0; these
/// ranges were computed by comparing it with Python 3.11 over every code
/// point, and `tests/test_dis_differential.py` re-checks all of them.
#[rustfmt::skip]
const UNASSIGNED_IN_UNICODE_14: &[(u32, u32)] = &[
    (0x00897, 0x00897), (0x00CF3, 0x00CF3), (0x00ECE, 0x00ECE), (0x01B4E, 0x01B4F),
    (0x01B7F, 0x01B7F), (0x01C89, 0x01C8A), (0x02427, 0x02429), (0x02FFC, 0x02FFF),
    (0x031E4, 0x031E5), (0x031EF, 0x031EF), (0x0A7CB, 0x0A7CD), (0x0A7DA, 0x0A7DC),
    (0x105C0, 0x105F3), (0x10D40, 0x10D65), (0x10D69, 0x10D85), (0x10D8E, 0x10D8F),
    (0x10EC2, 0x10EC4), (0x10EFC, 0x10EFF), (0x1123F, 0x11241), (0x11380, 0x11389),
    (0x1138B, 0x1138B), (0x1138E, 0x1138E), (0x11390, 0x113B5), (0x113B7, 0x113C0),
    (0x113C2, 0x113C2), (0x113C5, 0x113C5), (0x113C7, 0x113CA), (0x113CC, 0x113D5),
    (0x113D7, 0x113D8), (0x113E1, 0x113E2), (0x116D0, 0x116E3), (0x11B00, 0x11B09),
    (0x11BC0, 0x11BE1), (0x11BF0, 0x11BF9), (0x11F00, 0x11F10), (0x11F12, 0x11F3A),
    (0x11F3E, 0x11F5A), (0x1342F, 0x1342F), (0x13440, 0x13455), (0x13460, 0x143FA),
    (0x16100, 0x16139), (0x16D40, 0x16D79), (0x18CFF, 0x18CFF), (0x1B132, 0x1B132),
    (0x1B155, 0x1B155), (0x1CC00, 0x1CCF9), (0x1CD00, 0x1CEB3), (0x1D2C0, 0x1D2D3),
    (0x1DF25, 0x1DF2A), (0x1E030, 0x1E06D), (0x1E08F, 0x1E08F), (0x1E4D0, 0x1E4F9),
    (0x1E5D0, 0x1E5FA), (0x1E5FF, 0x1E5FF), (0x1F6DC, 0x1F6DC), (0x1F774, 0x1F776),
    (0x1F77B, 0x1F77F), (0x1F7D9, 0x1F7D9), (0x1F8B2, 0x1F8BB), (0x1F8C0, 0x1F8C1),
    (0x1FA75, 0x1FA77), (0x1FA87, 0x1FA89), (0x1FA8F, 0x1FA8F), (0x1FAAD, 0x1FAAF),
    (0x1FABB, 0x1FABF), (0x1FAC6, 0x1FAC6), (0x1FACE, 0x1FACF), (0x1FADA, 0x1FADC),
    (0x1FADF, 0x1FADF), (0x1FAE8, 0x1FAE9), (0x1FAF7, 0x1FAF8), (0x1FBCB, 0x1FBEF),
    (0x2B739, 0x2B739), (0x2EBF0, 0x2EE5D), (0x31350, 0x323AF),
];

/// Python 3.11's `str.isprintable()` for one character: false for the
/// categories Cc, Cf, Cs, Co, Cn, Zl, Zp and Zs (except the space).
fn is_printable(c: char) -> bool {
    use GeneralCategory as G;
    if c == ' ' {
        return true;
    }
    if matches!(
        get_general_category(c),
        G::Control
            | G::Format
            | G::Surrogate
            | G::PrivateUse
            | G::Unassigned
            | G::LineSeparator
            | G::ParagraphSeparator
            | G::SpaceSeparator
    ) {
        return false;
    }
    let cp = u32::from(c);
    let i = UNASSIGNED_IN_UNICODE_14.partition_point(|&(_, hi)| hi < cp);
    match UNASSIGNED_IN_UNICODE_14.get(i) {
        Some(&(lo, _)) => cp < lo,
        None => true,
    }
}

/// `repr(str)`, or `None` once it outgrows `cap` bytes.
fn str_repr(text: &Text<'_>, cap: usize) -> Option<String> {
    let (mut single, mut double) = (false, false);
    for c in text.code_points() {
        single |= c == 0x27;
        double |= c == 0x22;
        if single && double {
            break;
        }
    }
    let quote = if single && !double { '"' } else { '\'' };
    let mut out = String::new();
    out.push(quote);
    for c in text.code_points() {
        match c {
            0x5c => out.push_str("\\\\"),
            0x09 => out.push_str("\\t"),
            0x0a => out.push_str("\\n"),
            0x0d => out.push_str("\\r"),
            _ if c == u32::from(quote) => {
                out.push('\\');
                out.push(quote);
            }
            0..=0x1f | 0x7f => {
                let _ = write!(out, "\\x{c:02x}");
            }
            _ => match char::from_u32(c) {
                Some(ch) if ch.is_ascii() || is_printable(ch) => out.push(ch),
                _ if c <= 0xff => {
                    let _ = write!(out, "\\x{c:02x}");
                }
                _ if c <= 0xffff => {
                    let _ = write!(out, "\\u{c:04x}");
                }
                _ => {
                    let _ = write!(out, "\\U{c:08x}");
                }
            },
        }
        if out.len() >= cap {
            return None;
        }
    }
    out.push(quote);
    Some(out)
}

fn push_escaped_byte(out: &mut String, b: u8) {
    match b {
        b'\\' => out.push_str("\\\\"),
        b'\t' => out.push_str("\\t"),
        b'\n' => out.push_str("\\n"),
        b'\r' => out.push_str("\\r"),
        0x20..=0x7e => out.push(char::from(b)),
        _ => {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

/// Both reprs prefer single quotes, and use double quotes when the data
/// holds a single quote and no double quote.
fn bytes_quote(b: &[u8]) -> u8 {
    if b.contains(&b'\'') && !b.contains(&b'"') {
        b'"'
    } else {
        b'\''
    }
}

/// `repr(bytes)`, or `None` once it outgrows `cap` bytes.
fn bytes_repr(b: &[u8], cap: usize) -> Option<String> {
    let quote = bytes_quote(b);
    let mut out = String::from("b");
    out.push(char::from(quote));
    for &c in b {
        if c == quote {
            out.push('\\');
            out.push(char::from(c));
        } else {
            push_escaped_byte(&mut out, c);
        }
        if out.len() >= cap {
            return None;
        }
    }
    out.push(char::from(quote));
    Some(out)
}

/// `repr(bytes)` of a few bytes.
fn bytes_repr_full(b: &[u8]) -> String {
    bytes_repr(b, usize::MAX).unwrap_or_default()
}

/// `repr(bytearray)`: like bytes, except that a single quote is always
/// escaped, even inside double quotes.
fn bytearray_repr(b: &[u8], cap: usize) -> Option<String> {
    let quote = bytes_quote(b);
    let mut out = String::from("bytearray(b");
    out.push(char::from(quote));
    for &c in b {
        if c == b'\'' {
            out.push_str("\\'");
        } else {
            push_escaped_byte(&mut out, c);
        }
        if out.len() >= cap {
            return None;
        }
    }
    out.push(char::from(quote));
    out.push(')');
    Some(out)
}

// ---------------------------------------------------------------------------
// CPython's messages for the decoders in `crate::text`; called only once the
// decoder has refused its input.

/// `codecs.escape_decode`'s ValueError.
fn escape_decode_error(data: &[u8]) -> Raise {
    let mut i = 0;
    while i < data.len() {
        if data[i] != b'\\' {
            i += 1;
            continue;
        }
        match data.get(i + 1) {
            None => return value_error("Trailing \\ in string"),
            Some(b'x') => {
                let ok = data
                    .get(i + 2..i + 4)
                    .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
                if !ok {
                    return value_error(format!("invalid \\x escape at position {i}"));
                }
                i += 4;
            }
            Some(_) => i += 2,
        }
    }
    value_error("invalid escape")
}

fn unicode_decode_error(
    codec: &str,
    data: &[u8],
    start: usize,
    end: usize,
    reason: &str,
) -> String {
    if end == start + 1 {
        format!(
            "'{codec}' codec can't decode byte 0x{:02x} in position {start}: {reason}",
            data[start]
        )
    } else {
        format!(
            "'{codec}' codec can't decode bytes in position {start}-{}: {reason}",
            end - 1
        )
    }
}

/// Checks `str(data, 'utf-8', 'surrogatepass')`: the UnicodeDecodeError
/// message follows the error ranges of CPython's UTF-8 decoder.
fn check_utf8(data: &[u8]) -> Result<(), String> {
    let cont = |i: usize| data.get(i).is_some_and(|b| b & 0xc0 == 0x80);
    let mut i = 0;
    while i < data.len() {
        let ch = data[i];
        let rem = data.len() - i;
        // Ok(length) of a valid sequence, or Err((end, reason)).
        let step: Result<usize, (usize, &str)> = {
            const START: &str = "invalid start byte";
            const CONT: &str = "invalid continuation byte";
            const EOD: &str = "unexpected end of data";
            let c2 = data.get(i + 1).copied().unwrap_or(0);
            match ch {
                0x00..=0x7f => Ok(1),
                0x80..=0xc1 | 0xf5..=0xff => Err((i + 1, START)),
                0xc2..=0xdf => {
                    if rem < 2 {
                        Err((data.len(), EOD))
                    } else if !cont(i + 1) {
                        Err((i + 1, CONT))
                    } else {
                        Ok(2)
                    }
                }
                0xe0..=0xef => {
                    let bad2 =
                        !cont(i + 1) || (ch == 0xe0 && c2 < 0xa0) || (ch == 0xed && c2 >= 0xa0);
                    if rem < 2 {
                        Err((data.len(), EOD))
                    } else if bad2 {
                        Err((i + 1, CONT))
                    } else if rem < 3 {
                        Err((data.len(), EOD))
                    } else if !cont(i + 2) {
                        Err((i + 2, CONT))
                    } else {
                        Ok(3)
                    }
                }
                0xf0..=0xf4 => {
                    let bad2 =
                        !cont(i + 1) || (ch == 0xf0 && c2 < 0x90) || (ch == 0xf4 && c2 >= 0x90);
                    if rem < 2 {
                        Err((data.len(), EOD))
                    } else if bad2 {
                        Err((i + 1, CONT))
                    } else if rem < 3 {
                        Err((data.len(), EOD))
                    } else if !cont(i + 2) {
                        Err((i + 2, CONT))
                    } else if rem < 4 {
                        Err((data.len(), EOD))
                    } else if !cont(i + 3) {
                        Err((i + 3, CONT))
                    } else {
                        Ok(4)
                    }
                }
            }
        };
        match step {
            Ok(n) => i += n,
            Err((end, reason)) => {
                // surrogatepass accepts an encoded surrogate at the error.
                let surrogate = ch == 0xed
                    && data.get(i + 1).is_some_and(|b| (0xa0..=0xbf).contains(b))
                    && cont(i + 2);
                if surrogate {
                    i += 3;
                    continue;
                }
                return Err(unicode_decode_error("utf-8", data, i, end, reason));
            }
        }
    }
    Ok(())
}

/// Checks `str(data, 'raw-unicode-escape')`, with CPython's
/// UnicodeDecodeError message.
fn check_raw_unicode_escape(data: &[u8]) -> Result<(), String> {
    let mut i = 0;
    while i < data.len() {
        if data[i] != b'\\' {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        let Some(&c) = data.get(i) else { break };
        i += 1;
        let (count, reason) = match c {
            b'u' => (4, "truncated \\uXXXX escape"),
            b'U' => (8, "truncated \\UXXXXXXXX escape"),
            _ => continue,
        };
        let mut cp = 0u32;
        for _ in 0..count {
            match data.get(i).and_then(|b| char::from(*b).to_digit(16)) {
                Some(d) => {
                    cp = (cp << 4) | d;
                    i += 1;
                }
                None => {
                    return Err(unicode_decode_error(
                        "rawunicodeescape",
                        data,
                        start,
                        i,
                        reason,
                    ))
                }
            }
        }
        if cp > 0x10ffff {
            let reason = "\\Uxxxxxxxx out of range";
            return Err(unicode_decode_error(
                "rawunicodeescape",
                data,
                start,
                i,
                reason,
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dis(data: &[u8]) -> String {
        match disassemble(data, 0) {
            Ok(d) => d.text,
            Err(e) => panic!("{e}\n{}", e.partial_text),
        }
    }

    fn dis_err(data: &[u8]) -> DisError {
        disassemble(data, 0).expect_err("pickletools raises here")
    }

    /// Expected texts below are `pickletools.dis` output from CPython 3.11.7.
    #[test]
    fn string_quoting_and_escapes() {
        let text = "\x7f\u{ad}\u{2028}\u{1f600}\u{1fae8}é";
        let mut data = b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00(".to_vec();
        data.extend_from_slice(b"\x8c\x03a'b\x8c\x05a'b\"c\x8c\x04\\\n\t\x00X");
        // The lone surrogate U+D800 in CPython's surrogatepass UTF-8.
        let mut utf8 = text.as_bytes()[..6].to_vec();
        utf8.extend_from_slice(b"\xed\xa0\x80");
        utf8.extend_from_slice(&text.as_bytes()[6..]);
        data.extend_from_slice(&(utf8.len() as u32).to_le_bytes());
        data.extend_from_slice(&utf8);
        data.extend_from_slice(b"C\x02'\"\x96\x02\x00\x00\x00\x00\x00\x00\x00'xU\x02\xe9\xa0t.");
        let want = concat!(
            "    0: \\x80 PROTO      4\n",
            "    2: \\x95 FRAME      0\n",
            "   11: (    MARK\n",
            "   12: \\x8c     SHORT_BINUNICODE \"a'b\"\n",
            "   17: \\x8c     SHORT_BINUNICODE 'a\\'b\"c'\n",
            "   24: \\x8c     SHORT_BINUNICODE '\\\\\\n\\t\\x00'\n",
            "   30: X        BINUNICODE '\\x7f\\xad\\u2028\\ud800😀\\U0001fae8é'\n",
            "   54: C        SHORT_BINBYTES b'\\'\"'\n",
            "   58: \\x96     BYTEARRAY8 bytearray(b\"\\'x\")\n",
            "   69: U        SHORT_BINSTRING 'é\\xa0'\n",
            "   73: t        TUPLE      (MARK at 11)\n",
            "   74: .    STOP\n",
            "highest protocol among opcodes = 5\n",
        );
        assert_eq!(dis(&data), want);
    }

    #[test]
    fn printable_follows_unicode_14() {
        assert!(is_printable('é'));
        assert!(is_printable('😀'));
        assert!(!is_printable('\u{a0}'));
        assert!(!is_printable('\u{ad}'));
        assert!(!is_printable('\u{2028}'));
        assert!(!is_printable('\u{e000}'));
        assert!(!is_printable('\u{1fae8}')); // assigned in Unicode 15
        assert!(!is_printable('\u{31350}')); // assigned in Unicode 15
        assert!(is_printable('\u{3134a}'));
        let utf8 = b"\xf0\x9f\x9b\x9c\xf4\x8f\xbf\xbf\xed\xbf\xbf";
        assert_eq!(check_utf8(utf8), Ok(()));
        assert_eq!(
            str_repr(&Text::Surrogates(utf8), usize::MAX).as_deref(),
            Some("'\\U0001f6dc\\U0010ffff\\udfff'")
        );
        let text = Text::RawUnicodeEscape(br"\\u0041\u0041\U0001F6DC\\");
        assert_eq!(
            str_repr(&text, usize::MAX).as_deref(),
            Some(r"'\\\\u0041A\U0001f6dc\\\\'")
        );
        assert_eq!(str_repr(&text, 10), None);
    }

    #[test]
    fn float_repr_edge_cases() {
        let cases: &[(f64, &str)] = &[
            (1.0, "1.0"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1e-5, "1e-05"),
            (1e-4, "0.0001"),
            (0.1, "0.1"),
            (123.456, "123.456"),
            (-1.5e300, "-1.5e+300"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
            (9999999999999998.0, "9999999999999998.0"),
            (12345678901234567890.0, "1.2345678901234567e+19"),
            // Exactly halfway between two 17-digit candidates: CPython
            // rounds half to even, Rust's formatter rounds up.
            (162341648443658.0 + 0.625, "162341648443658.62"),
            (1989521545203322.0 + 0.25, "1989521545203322.2"),
        ];
        for &(x, want) in cases {
            assert_eq!(float_repr(x), want, "{x:e}");
        }
    }

    #[test]
    fn long_repr_twos_complement() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "0"),
            (b"\xff", "-1"),
            (b"\x80", "-128"),
            (b"\x00\x80", "-32768"),
            (b"\xff\x00", "255"),
            (b"\x00\xff", "-256"),
            (
                b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f",
                "39614081257132168796771975167",
            ),
            (
                b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80",
                "-39614081257132168796771975168",
            ),
            (b"\x05\x00\x00\x00\x00\x00", "5"),
            (b"\xfe\xff\xff\xff\xff\xff", "-2"),
        ];
        for &(bytes, want) in cases {
            assert_eq!(long_repr(bytes).as_deref(), Ok(want), "{bytes:?}");
        }
        // 10**4299 has 4300 digits, 10**4300 has 4301: the first is the last
        // CPython prints.
        let big = |digits: usize| {
            let mut v = vec![0u8; 1800];
            // A magnitude with exactly `digits` digits: 10^(digits-1), built
            // by repeated multiplication by 10 on little-endian bytes.
            v[0] = 1;
            for _ in 1..digits {
                let mut carry = 0u16;
                for b in v.iter_mut() {
                    let x = u16::from(*b) * 10 + carry;
                    *b = x as u8;
                    carry = x >> 8;
                }
            }
            v
        };
        assert_eq!(long_repr(&big(4300)).map(|s| s.len()), Ok(4300));
        assert!(long_repr(&big(4301))
            .unwrap_err()
            .starts_with("Exceeds the limit (4300 digits)"));
        assert!(long_repr(&[0x7f; 4000]).is_err());
        // A huge argument with a small value is cheap and fine.
        let mut padded = vec![0xffu8; 100_000];
        padded[0] = 0xfe;
        assert_eq!(long_repr(&padded).as_deref(), Ok("-2"));
    }

    #[test]
    fn decimal_arguments_follow_python_int() {
        assert_eq!(
            dis(b"I01\n."),
            "    0: I    INT        True\n    4: .    STOP\nhighest protocol among opcodes = 0\n"
        );
        let one = |line: &[u8]| {
            let mut data = b"I".to_vec();
            data.extend_from_slice(line);
            data.extend_from_slice(b"\n.");
            match disassemble(&data, 0) {
                Ok(d) => Ok(d.text.lines().next().unwrap_or("")[16..].trim().to_owned()),
                Err(e) => Err(e.message),
            }
        };
        assert_eq!(one(b" 1_000 ").as_deref(), Ok("1000"));
        assert_eq!(one(b"-0").as_deref(), Ok("0"));
        assert_eq!(one(b"007").as_deref(), Ok("7"));
        assert_eq!(one(b"00").as_deref(), Ok("False"));
        assert_eq!(one(b"\x0b+12\x0c").as_deref(), Ok("12"));
        assert_eq!(
            one(b"-123456789012345678901234567890123456789012").as_deref(),
            Ok("-123456789012345678901234567890123456789012")
        );
        assert_eq!(
            one(b"1__0").unwrap_err(),
            "invalid literal for int() with base 10: b'1__0'"
        );
        assert_eq!(
            one(b"1\x002").unwrap_err(),
            "invalid literal for int() with base 10: b'1\\x002'"
        );
        let long = one(&[b'1'; 5000]).unwrap_err();
        assert!(long.contains("value has 5000 digits"), "{long}");
        let junk = one(&[b'x'; 300]).unwrap_err();
        assert_eq!(
            junk.len(),
            "invalid literal for int() with base 10: ".len() + 200
        );
    }

    #[test]
    fn mark_nesting_and_notes() {
        let want = concat!(
            "    0: (    MARK\n",
            "    1: (        MARK\n",
            "    2: (            MARK\n",
            "    3: N                NONE\n",
            "    4: N                NONE\n",
            "    5: t                TUPLE      (MARK at 2)\n",
            "    6: I            INT        True\n",
            "   10: t            TUPLE      (MARK at 1)\n",
            "   11: (        MARK\n",
            "   12: l            LIST       (MARK at 11)\n",
            "   13: (        MARK\n",
            "   14: d            DICT       (MARK at 13)\n",
            "   15: t        TUPLE      (MARK at 0)\n",
        );
        assert_eq!(
            dis(b"(((NNtI01\nt(l(dt."),
            format!("{want}   16: .    STOP\nhighest protocol among opcodes = 0\n")
        );
        let err = dis_err(b"(((NNtI01\nt(l(dtt.");
        assert_eq!(err.message, "no MARK exists on stack");
        assert_eq!(
            err.partial_text,
            format!("{want}   16: t    TUPLE      no MARK exists on stack\n")
        );
        assert_eq!(err.offset, 16);
    }

    #[test]
    fn memoize_numbering() {
        let data =
            b"\x80\x04\x95\x11\x00\x00\x00\x00\x00\x00\x00]\x94(]\x94\x8c\x01a\x94a]\x94h\x02ae.";
        let want = concat!(
            "    0: \\x80 PROTO      4\n",
            "    2: \\x95 FRAME      17\n",
            "   11: ]    EMPTY_LIST\n",
            "   12: \\x94 MEMOIZE    (as 0)\n",
            "   13: (    MARK\n",
            "   14: ]        EMPTY_LIST\n",
            "   15: \\x94     MEMOIZE    (as 1)\n",
            "   16: \\x8c     SHORT_BINUNICODE 'a'\n",
            "   19: \\x94     MEMOIZE    (as 2)\n",
            "   20: a        APPEND\n",
            "   21: ]        EMPTY_LIST\n",
            "   22: \\x94     MEMOIZE    (as 3)\n",
            "   23: h        BINGET     2\n",
            "   25: a        APPEND\n",
            "   26: e        APPENDS    (MARK at 13)\n",
            "   27: .    STOP\n",
            "highest protocol among opcodes = 4\n",
        );
        assert_eq!(dis(data), want);
        // PUT 0 spelled `00` is key False, which is key 0.
        let err = dis_err(b"Np00\np0\n.");
        assert_eq!(err.message, "memo key 0 already defined");
        let err = dis_err(b"N\x94p0\n.");
        assert_eq!(err.message, "memo key 0 already defined");
        let err = dis_err(b"Np1\n\x94.");
        assert_eq!(err.message, "memo key None already defined");
    }

    #[test]
    fn errors_carry_the_partial_text() {
        let err = dis_err(b"N\x94h\x05.");
        assert_eq!(err.message, "memo key 5 has never been stored into");
        assert_eq!(
            err.partial_text,
            "    0: N    NONE\n    1: \\x94 MEMOIZE    (as 0)\n    2: h    BINGET     5\n"
        );
        // pickletools' own IndexError, raised after the position is printed.
        let err = dis_err(b"(Nal.");
        assert_eq!(
            (err.exception, err.message.as_str()),
            ("IndexError", "list index out of range")
        );
        assert_eq!(
            err.partial_text,
            "    0: (    MARK\n    1: N        NONE\n    2: a        APPEND\n    3: "
        );
        let err = dis_err(b"NN.");
        assert_eq!(err.message, "stack not empty after STOP: [None]");
        assert!(err
            .partial_text
            .ends_with("highest protocol among opcodes = 0\n"));
        let err = dis_err(b"N\xff");
        assert_eq!(err.message, "at position 1, opcode b'\\xff' unknown");
        assert_eq!(err.partial_text, "    0: N    NONE\n");
        let err = dis_err(b"N");
        assert_eq!(err.message, "pickle exhausted before seeing STOP");
        assert_eq!(err.offset, 1);
        let err = dis_err(b"a.");
        assert_eq!(
            err.message,
            "tries to pop 2 items from stack with only 0 items"
        );
        let err = dis_err(b"S'\xe9'\n.");
        assert_eq!(err.exception, "UnicodeDecodeError");
        assert_eq!(
            err.message,
            "'ascii' codec can't decode byte 0xe9 in position 0: ordinal not in range(128)"
        );
        let err = dis_err(b"X\x04\x00\x00\x00a\xe0\x80\x80.");
        assert_eq!(
            err.message,
            "'utf-8' codec can't decode byte 0xe0 in position 1: invalid continuation byte"
        );
        let err = dis_err(b"Vab\\u12zz\n.");
        assert_eq!(
            err.message,
            "'rawunicodeescape' codec can't decode bytes in position 2-5: truncated \\uXXXX escape"
        );
        let mut huge = b"\x8b\xa0\x0f\x00\x00".to_vec();
        huge.extend_from_slice(&[0x7f; 4000]);
        huge.push(b'.');
        let err = dis_err(&huge);
        assert_eq!(err.partial_text, "    0: ");
        assert!(err.message.starts_with("Exceeds the limit (4300 digits)"));
    }

    #[test]
    fn string_arguments_as_pickletools_reads_them() {
        let first = |data: &[u8]| dis(data).lines().next().unwrap_or("").to_owned();
        assert_eq!(first(b"S'\n."), "    0: S    STRING     ''");
        assert_eq!(
            first(b"S'a\\x41\\101\\q'\n."),
            "    0: S    STRING     'aAA\\\\q'"
        );
        assert_eq!(
            first(b"cmod\\x41\nna me\n."),
            "    0: c    GLOBAL     'modA na me'"
        );
        assert_eq!(
            first(b"V\\u00e9\\\\u0041\n."),
            "    0: V    UNICODE    'é\\\\\\\\u0041'"
        );
        assert_eq!(
            dis_err(b"S'abc\n.").message,
            "strinq quote b\"'\" not found at both ends of b\"'abc\""
        );
        assert_eq!(
            dis_err(b"Sabc\n.").message,
            "no string quotes around b'abc'"
        );
        assert_eq!(
            dis_err(b"S'\\x4'\n.").message,
            "invalid \\x escape at position 0"
        );
        assert_eq!(dis_err(b"S'ab\\'\n.").message, "Trailing \\ in string");
    }

    #[test]
    fn offsets_are_relative_to_start() {
        let data = b"N.\x80\x02K\x05.\xfftail";
        let first = disassemble(data, 0).unwrap();
        assert_eq!(first.end, 2);
        let second = disassemble(data, first.end).unwrap();
        assert_eq!(second.end, 7);
        assert_eq!(
            second.text,
            "    0: \\x80 PROTO      2\n    2: K    BININT1    5\n    4: .    STOP\nhighest protocol among opcodes = 2\n"
        );
        let err = disassemble(data, 7).unwrap_err();
        assert_eq!(err.message, "at position 0, opcode b'\\xff' unknown");
        assert_eq!(err.offset, 7);
        assert!(disassemble(data, 100).is_err());
    }

    #[test]
    fn text_is_bounded() {
        let mut data = vec![b'('; 10_000];
        data.push(b'.');
        let err = disassemble_with_limit(&data, 0, 1 << 20).unwrap_err();
        assert_eq!(err.exception, "LimitExceeded");
        assert!(err.partial_text.len() <= 1 << 20);
        // A long argument stops at the limit instead of being rendered whole.
        let mut data = b"X\x00\x00\x10\x00".to_vec();
        data.extend(std::iter::repeat_n(b'\x01', 1 << 20));
        data.push(b'.');
        let err = disassemble_with_limit(&data, 0, 1000).unwrap_err();
        assert_eq!(err.exception, "LimitExceeded");
        assert_eq!(err.message, "disassembly exceeds 1000 bytes of text");
        assert!(disassemble_with_limit(&data, 0, 5 << 20).is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200), start in 0usize..210) {
            let _ = disassemble(&data, start);
        }

        #[test]
        fn opcode_soup_never_panics(
            ops in proptest::collection::vec((0usize..68, proptest::collection::vec(any::<u8>(), 0..6)), 0..40),
            tail in proptest::sample::select(vec![b"\n".to_vec(), b"'\n".to_vec(), b"1\n".to_vec(), vec![]]),
        ) {
            let mut data = Vec::new();
            for (i, arg) in ops {
                data.push(Opcode::ALL[i].byte());
                data.extend_from_slice(&arg);
                data.extend_from_slice(&tail);
            }
            data.push(b'.');
            match disassemble(&data, 0) {
                Ok(d) => prop_assert!(d.end <= data.len()),
                Err(e) => prop_assert!(e.offset <= data.len()),
            }
        }
    }
}
