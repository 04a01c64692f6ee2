//! A streaming, zero-copy reader of pickle opcodes.
//!
//! The reader never allocates from a length found in the input: every inline
//! argument borrows from the input slice, and a length prefix is checked
//! against the bytes that remain before anything is read.

use crate::codes::FindingCode;
use crate::opcodes::{ArgKind, Opcode};
use std::fmt;

/// An opcode's decoded inline argument. Text arguments borrow their raw bytes;
/// see [`crate::text`] for decoding them exactly as CPython does.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg<'a> {
    None,
    /// A fixed-width integer, or a decimal one that fits in an `i64`.
    Int(i64),
    /// `FRAME`'s unsigned 64-bit length.
    U64(u64),
    /// `INT` with the protocol 0 spellings `00` and `01`.
    Bool(bool),
    /// A decimal integer too large for `i64` (validated ASCII, optional sign,
    /// single underscores between digits as `int(s, 0)` takes them).
    BigDecimal(&'a [u8]),
    /// A hex, octal or binary integer too large for `i64` (`int(s, 0)` of an
    /// INT or LONG line): validated digits of `base` (2, 8 or 16), possibly
    /// with single underscores between them.
    BigRadix {
        negative: bool,
        base: u32,
        digits: &'a [u8],
    },
    /// `LONG1`/`LONG4`: little-endian two's complement bytes.
    LongBytes(&'a [u8]),
    Float(f64),
    /// `STRING`: the backslash-escaped text between the quotes.
    Quoted(&'a [u8]),
    /// `BINSTRING`/`SHORT_BINSTRING`: raw bytes (Python 2 `str`).
    Latin1(&'a [u8]),
    Bytes(&'a [u8]),
    ByteArray(&'a [u8]),
    /// UTF-8, possibly with surrogates (CPython decodes with `surrogatepass`).
    Utf8(&'a [u8]),
    /// `UNICODE`: raw-unicode-escape text.
    RawUnicodeEscape(&'a [u8]),
    /// `PERSID`: one unquoted line.
    Line(&'a [u8]),
    /// `GLOBAL`/`INST`: module and name lines.
    Pair(&'a [u8], &'a [u8]),
}

/// One decoded instruction.
#[derive(Clone, Debug, PartialEq)]
pub struct Instr<'a> {
    /// Byte offset of the opcode within the input slice.
    pub offset: usize,
    /// Byte offset just past the instruction.
    pub end: usize,
    pub op: Opcode,
    pub arg: Arg<'a>,
}

/// What went wrong while reading opcodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseErrorKind {
    UnknownOpcode(u8),
    /// The input ended inside an argument that needed `needed` more bytes.
    Truncated {
        needed: u64,
    },
    MissingNewline,
    BadQuotes,
    BadDecimal,
    BadFloat,
    NegativeLength(i64),
    BadUtf8,
    /// The input ended before a `STOP` opcode.
    NoStop,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    /// Offset of the opcode being read.
    pub offset: usize,
    pub opcode: Option<Opcode>,
    pub kind: ParseErrorKind,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = match self.opcode {
            Some(op) => format!("at byte {} ({})", self.offset, op.name()),
            None => format!("at byte {}", self.offset),
        };
        match &self.kind {
            ParseErrorKind::UnknownOpcode(b) => write!(f, "unknown opcode 0x{b:02x} {at}"),
            ParseErrorKind::Truncated { needed } => {
                write!(
                    f,
                    "stream truncated {at}: argument needs {needed} more bytes"
                )
            }
            ParseErrorKind::MissingNewline => write!(f, "missing newline {at}"),
            ParseErrorKind::BadQuotes => write!(f, "STRING argument is not quoted {at}"),
            ParseErrorKind::BadDecimal => write!(f, "expected a decimal integer {at}"),
            ParseErrorKind::BadFloat => write!(f, "expected a decimal float {at}"),
            ParseErrorKind::NegativeLength(n) => write!(f, "negative length {n} {at}"),
            ParseErrorKind::BadUtf8 => write!(f, "argument is not valid UTF-8 {at}"),
            ParseErrorKind::NoStop => write!(f, "stream ended before STOP {at}"),
        }
    }
}

impl ParseError {
    /// The finding the scanner reports the error as: `truncated_stream` when
    /// the input ends too soon, `malformed_stream` otherwise.
    pub fn code(&self) -> FindingCode {
        match self.kind {
            ParseErrorKind::Truncated { .. } | ParseErrorKind::NoStop => {
                FindingCode::TruncatedStream
            }
            ParseErrorKind::UnknownOpcode(_)
            | ParseErrorKind::MissingNewline
            | ParseErrorKind::BadQuotes
            | ParseErrorKind::BadDecimal
            | ParseErrorKind::BadFloat
            | ParseErrorKind::NegativeLength(_)
            | ParseErrorKind::BadUtf8 => FindingCode::MalformedStream,
        }
    }
}

/// Iterates over the instructions of one pickle stream, from `start` through
/// its `STOP` opcode. After `STOP` (or the first error) it yields nothing.
pub struct Parser<'a> {
    data: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> Parser<'a> {
    pub fn new(data: &'a [u8], start: usize) -> Self {
        Parser {
            data,
            pos: start.min(data.len()),
            done: false,
        }
    }

    /// Offset of the next byte to read.
    pub fn position(&self) -> usize {
        self.pos
    }

    fn take(&mut self, n: u64, at: usize, op: Opcode) -> Result<&'a [u8], ParseError> {
        let remaining = (self.data.len() - self.pos) as u64;
        if n > remaining {
            return Err(ParseError {
                offset: at,
                opcode: Some(op),
                kind: ParseErrorKind::Truncated {
                    needed: n - remaining,
                },
            });
        }
        // n <= remaining <= usize::MAX, so the cast is lossless.
        let n = n as usize;
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn line(&mut self, at: usize, op: Opcode) -> Result<&'a [u8], ParseError> {
        let rest = &self.data[self.pos..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.pos += i + 1;
                Ok(&rest[..i])
            }
            None => Err(ParseError {
                offset: at,
                opcode: Some(op),
                kind: ParseErrorKind::MissingNewline,
            }),
        }
    }

    fn read_arg(&mut self, op: Opcode, at: usize) -> Result<Arg<'a>, ParseError> {
        let err = |kind| ParseError {
            offset: at,
            opcode: Some(op),
            kind,
        };
        Ok(match op.arg_kind() {
            ArgKind::None => Arg::None,
            ArgKind::Uint1 => Arg::Int(self.take(1, at, op)?[0] as i64),
            ArgKind::Uint2 => Arg::Int(u16::from_le_bytes(arr(self.take(2, at, op)?)) as i64),
            ArgKind::Int4 => Arg::Int(i32::from_le_bytes(arr(self.take(4, at, op)?)) as i64),
            ArgKind::Uint4 => Arg::Int(u32::from_le_bytes(arr(self.take(4, at, op)?)) as i64),
            ArgKind::Uint8 => Arg::U64(u64::from_le_bytes(arr(self.take(8, at, op)?))),
            ArgKind::DecimalNlShort => {
                let line = self.line(at, op)?;
                load_int(line).ok_or_else(|| err(ParseErrorKind::BadDecimal))?
            }
            ArgKind::DecimalNlLong => {
                // load_long: a final `L` (Python 2's) is cut, then int(s, 0).
                let line = self.line(at, op)?;
                let digits = line.strip_suffix(b"L").unwrap_or(line);
                py_int_base0(digits).ok_or_else(|| err(ParseErrorKind::BadDecimal))?
            }
            ArgKind::FloatNl => {
                let line = self.line(at, op)?;
                let text = std::str::from_utf8(line).map_err(|_| err(ParseErrorKind::BadFloat))?;
                Arg::Float(load_float(text).ok_or_else(|| err(ParseErrorKind::BadFloat))?)
            }
            ArgKind::Float8 => Arg::Float(f64::from_be_bytes(arr(self.take(8, at, op)?))),
            ArgKind::Long1 => {
                let n = self.take(1, at, op)?[0];
                Arg::LongBytes(self.take(n as u64, at, op)?)
            }
            ArgKind::Long4 => {
                let n = i32::from_le_bytes(arr(self.take(4, at, op)?));
                if n < 0 {
                    return Err(err(ParseErrorKind::NegativeLength(n as i64)));
                }
                Arg::LongBytes(self.take(n as u64, at, op)?)
            }
            ArgKind::StringNl => {
                let line = self.line(at, op)?;
                let inner = match line {
                    [q @ (b'\'' | b'"'), inner @ .., last] if q == last => inner,
                    _ => return Err(err(ParseErrorKind::BadQuotes)),
                };
                Arg::Quoted(inner)
            }
            ArgKind::StringNlNoescape => Arg::Line(self.line(at, op)?),
            ArgKind::StringNlNoescapePair => {
                let module = self.line(at, op)?;
                let name = self.line(at, op)?;
                Arg::Pair(module, name)
            }
            ArgKind::String1 => {
                let n = self.take(1, at, op)?[0];
                Arg::Latin1(self.take(n as u64, at, op)?)
            }
            ArgKind::String4 => {
                let n = i32::from_le_bytes(arr(self.take(4, at, op)?));
                if n < 0 {
                    return Err(err(ParseErrorKind::NegativeLength(n as i64)));
                }
                Arg::Latin1(self.take(n as u64, at, op)?)
            }
            ArgKind::Bytes1 => {
                let n = self.take(1, at, op)?[0];
                Arg::Bytes(self.take(n as u64, at, op)?)
            }
            ArgKind::Bytes4 => {
                let n = u32::from_le_bytes(arr(self.take(4, at, op)?));
                Arg::Bytes(self.take(n as u64, at, op)?)
            }
            ArgKind::Bytes8 => {
                let n = u64::from_le_bytes(arr(self.take(8, at, op)?));
                Arg::Bytes(self.take(n, at, op)?)
            }
            ArgKind::ByteArray8 => {
                let n = u64::from_le_bytes(arr(self.take(8, at, op)?));
                Arg::ByteArray(self.take(n, at, op)?)
            }
            ArgKind::UnicodeStringNl => Arg::RawUnicodeEscape(self.line(at, op)?),
            ArgKind::UnicodeString1 => {
                let n = self.take(1, at, op)?[0];
                utf8_arg(self.take(n as u64, at, op)?)
                    .ok_or_else(|| err(ParseErrorKind::BadUtf8))?
            }
            ArgKind::UnicodeString4 => {
                let n = u32::from_le_bytes(arr(self.take(4, at, op)?));
                utf8_arg(self.take(n as u64, at, op)?)
                    .ok_or_else(|| err(ParseErrorKind::BadUtf8))?
            }
            ArgKind::UnicodeString8 => {
                let n = u64::from_le_bytes(arr(self.take(8, at, op)?));
                utf8_arg(self.take(n, at, op)?).ok_or_else(|| err(ParseErrorKind::BadUtf8))?
            }
        })
    }
}

impl<'a> Iterator for Parser<'a> {
    type Item = Result<Instr<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let at = self.pos;
        let Some(&byte) = self.data.get(at) else {
            self.done = true;
            return Some(Err(ParseError {
                offset: at,
                opcode: None,
                kind: ParseErrorKind::NoStop,
            }));
        };
        let Some(op) = Opcode::from_byte(byte) else {
            self.done = true;
            return Some(Err(ParseError {
                offset: at,
                opcode: None,
                kind: ParseErrorKind::UnknownOpcode(byte),
            }));
        };
        self.pos += 1;
        match self.read_arg(op, at) {
            Ok(arg) => {
                if op == Opcode::STOP {
                    self.done = true;
                }
                Some(Ok(Instr {
                    offset: at,
                    end: self.pos,
                    op,
                    arg,
                }))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

fn arr<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    a
}

/// INT's argument as CPython's `load_int` reads the line: `strtol(s, &end,
/// 0)` (C's rules: whitespace, sign, `0x` hex, a leading `0` octal), a bool
/// when the line has two characters and reads 0 or 1, and where strtol
/// stops early or overflows, `int(s, 0)`.
fn load_int(line: &[u8]) -> Option<Arg<'_>> {
    if let Some((v, end)) = strtol_base0(line) {
        if end == line.len() {
            if line.len() == 2 && (v == 0 || v == 1) {
                return Some(Arg::Bool(v == 1));
            }
            return Some(Arg::Int(v));
        }
    }
    py_int_base0(line)
}

/// C's `strtol(s, &end, 0)` on `s`: the value and where it stopped, or
/// `None` on overflow (`ERANGE`).
fn strtol_base0(s: &[u8]) -> Option<(i64, usize)> {
    let is_space = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let mut i = 0;
    while i < s.len() && is_space(s[i]) {
        i += 1;
    }
    let mut negative = false;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        negative = s[i] == b'-';
        i += 1;
    }
    let (base, start) = if s.get(i) == Some(&b'0')
        && matches!(s.get(i + 1), Some(b'x' | b'X'))
        && s.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
    {
        (16, i + 2)
    } else if s.get(i) == Some(&b'0') {
        (8, i)
    } else {
        (10, i)
    };
    let mut j = start;
    let mut v: i128 = 0;
    while let Some(d) = s.get(j).and_then(|&c| (c as char).to_digit(base)) {
        v = v * i128::from(base) + i128::from(d);
        if v > i128::from(i64::MAX) + 1 {
            return None;
        }
        j += 1;
    }
    if j == start {
        return Some((0, 0)); // no digits: strtol leaves `end` at the start
    }
    let v = if negative { -v } else { v };
    Some((i64::try_from(v).ok()?, j))
}

/// Python's `int(s, 0)` (`PyLong_FromString(s, NULL, 0)`): surrounding
/// whitespace, a sign, a `0x`/`0o`/`0b` prefix or decimal without leading
/// zeros, single underscores between digits. Values beyond i64 are kept as
/// their decimal text only when written plainly (otherwise refused).
fn py_int_base0(line: &[u8]) -> Option<Arg<'_>> {
    let trimmed = trim_ascii(line);
    let body = trimmed
        .strip_prefix(b"-")
        .or_else(|| trimmed.strip_prefix(b"+"))
        .unwrap_or(trimmed);
    let negative = trimmed.first() == Some(&b'-');
    let (base, digits) = match body {
        [b'0', b'x' | b'X', rest @ ..] => (16, rest),
        [b'0', b'o' | b'O', rest @ ..] => (8, rest),
        [b'0', b'b' | b'B', rest @ ..] => (2, rest),
        _ => (10, body),
    };
    // Underscores: one at a time, between digits (or right after a prefix).
    let prefixed = base != 10;
    let mut clean = Vec::with_capacity(digits.len());
    let mut prev_underscore = !prefixed;
    for &c in digits {
        if c == b'_' {
            if prev_underscore {
                return None;
            }
            prev_underscore = true;
        } else {
            (c as char).to_digit(base)?;
            clean.push(c);
            prev_underscore = false;
        }
    }
    if clean.is_empty() || prev_underscore && !digits.is_empty() && digits.last() == Some(&b'_') {
        return None;
    }
    if base == 10 && clean[0] == b'0' && clean.iter().any(|&c| c != b'0') {
        return None; // leading zeros are not decimal in base 0
    }
    let text = std::str::from_utf8(&clean).ok()?;
    match i128::from_str_radix(text, base) {
        Ok(v) => {
            let v = if negative { -v } else { v };
            if let Ok(i) = i64::try_from(v) {
                return Some(Arg::Int(i));
            }
            if base != 10 {
                return Some(Arg::BigRadix {
                    negative,
                    base,
                    digits,
                });
            }
        }
        Err(_) if base != 10 => {
            return Some(Arg::BigRadix {
                negative,
                base,
                digits,
            })
        }
        Err(_) => {}
    }
    // Decimal digits, possibly signed and with single underscores between
    // digits (checked above): the evaluator reads the text.
    (base == 10).then_some(Arg::BigDecimal(trimmed))
}

/// FLOAT's argument as `load_float` reads it: `PyOS_string_to_double` over
/// the whole line, which takes no whitespace and no underscores, and fails
/// (`OverflowError`) on a finite spelling too large for a double.
fn load_float(text: &str) -> Option<f64> {
    let lower = text.to_ascii_lowercase();
    let body = lower.strip_prefix(['+', '-']).unwrap_or(&lower);
    let negative = lower.starts_with('-');
    let special = match body {
        "inf" | "infinity" => Some(f64::INFINITY),
        "nan" => Some(f64::NAN),
        _ => None,
    };
    if let Some(v) = special {
        return Some(if negative { -v } else { v });
    }
    if !text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    let v = text.parse::<f64>().ok()?;
    v.is_finite().then_some(v)
}

fn trim_ascii(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &s[start..end]
}

/// Parses the float spellings Python's `float()` accepts from a pickle.
pub(crate) fn parse_py_float(text: &str) -> Option<f64> {
    let lower = text.to_ascii_lowercase();
    let body = lower.trim_start_matches(['+', '-']);
    let negative = lower.starts_with('-');
    let special = match body {
        "inf" | "infinity" => Some(f64::INFINITY),
        "nan" => Some(f64::NAN),
        _ => None,
    };
    if let Some(v) = special {
        if lower.len() - body.len() > 1 {
            return None;
        }
        return Some(if negative { -v } else { v });
    }
    if !text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-' | b'_'))
    {
        return None;
    }
    text.replace('_', "").parse::<f64>().ok()
}

fn utf8_arg(bytes: &[u8]) -> Option<Arg<'_>> {
    if crate::text::decode_utf8_surrogatepass(bytes).is_some() {
        Some(Arg::Utf8(bytes))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(data: &[u8]) -> Vec<Result<Instr<'_>, ParseError>> {
        Parser::new(data, 0).collect()
    }

    #[test]
    fn reads_protocol_0_global_and_stop() {
        let got = ops(b"cos\nsystem\n.");
        assert_eq!(got.len(), 2);
        let first = got[0].as_ref().unwrap();
        assert_eq!(first.op, Opcode::GLOBAL);
        assert_eq!(first.arg, Arg::Pair(b"os", b"system"));
        assert_eq!(got[1].as_ref().unwrap().op, Opcode::STOP);
    }

    #[test]
    fn huge_length_prefix_is_an_error_not_an_allocation() {
        let mut data = vec![0x8e];
        data.extend_from_slice(&u64::MAX.to_le_bytes());
        let got = ops(&data);
        let err = got[0].as_ref().unwrap_err();
        assert!(matches!(err.kind, ParseErrorKind::Truncated { .. }));
        assert_eq!(err.offset, 0);
    }

    #[test]
    fn stream_without_stop_is_reported() {
        let got = ops(b"N");
        assert!(matches!(
            got.last().unwrap().as_ref().unwrap_err().kind,
            ParseErrorKind::NoStop
        ));
    }

    #[test]
    fn int_bool_spellings() {
        let got = ops(b"I01\n.");
        assert_eq!(got[0].as_ref().unwrap().arg, Arg::Bool(true));
        let got = ops(b"I123456789012345678901234567890\n.");
        assert!(matches!(got[0].as_ref().unwrap().arg, Arg::BigDecimal(_)));
    }
}
