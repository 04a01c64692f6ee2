//! A streaming, zero-copy reader of pickle opcodes.
//!
//! The reader never allocates from a length found in the input: every inline
//! argument borrows from the input slice, and a length prefix is checked
//! against the bytes that remain before anything is read.

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
    /// A decimal integer too large for `i64` (validated ASCII, optional sign).
    BigDecimal(&'a [u8]),
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
                match line {
                    b"00" => Arg::Bool(false),
                    b"01" => Arg::Bool(true),
                    _ => decimal(line).ok_or_else(|| err(ParseErrorKind::BadDecimal))?,
                }
            }
            ArgKind::DecimalNlLong => {
                let line = self.line(at, op)?;
                let digits = line.strip_suffix(b"L").unwrap_or(line);
                decimal(digits).ok_or_else(|| err(ParseErrorKind::BadDecimal))?
            }
            ArgKind::FloatNl => {
                let line = self.line(at, op)?;
                let text = std::str::from_utf8(line).map_err(|_| err(ParseErrorKind::BadFloat))?;
                Arg::Float(
                    parse_py_float(text.trim()).ok_or_else(|| err(ParseErrorKind::BadFloat))?,
                )
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

/// Parses a decimal integer as Python's `int()` does for the forms picklers
/// write: optional surrounding whitespace, optional sign, ASCII digits.
fn decimal(line: &[u8]) -> Option<Arg<'_>> {
    let trimmed = trim_ascii(line);
    let digits = trimmed
        .strip_prefix(b"-")
        .or_else(|| trimmed.strip_prefix(b"+"))
        .unwrap_or(trimmed);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let text = std::str::from_utf8(trimmed).ok()?;
    Some(match text.parse::<i64>() {
        Ok(v) => Arg::Int(v),
        Err(_) => Arg::BigDecimal(trimmed),
    })
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
