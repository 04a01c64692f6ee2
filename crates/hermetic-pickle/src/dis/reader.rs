//! `pickletools`' argument readers (its `read_*` functions) and Python's
//! `int()`/`float()` of bytes.

use super::*;
use crate::text;
use std::borrow::Cow;

/// An opcode's argument as `pickletools` reads it.
#[derive(Debug)]
pub(super) enum Val<'a> {
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
    pub(super) fn repr(&self, cap: usize) -> Result<Option<String>, String> {
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
    pub(super) fn short_repr(&self) -> String {
        self.repr(usize::MAX).ok().flatten().unwrap_or_default()
    }

    /// The value as a memo key; `True`/`False` hash and compare like 1/0.
    pub(super) fn memo_key(&self) -> Option<MemoKey> {
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
pub(super) enum Text<'a> {
    /// Code points below 256: ASCII or latin-1.
    Latin1(Cow<'a, [u8]>),
    Utf8(&'a str),
    /// UTF-8 with encoded lone surrogates, checked by [`check_utf8`].
    Surrogates(&'a [u8]),
    /// raw-unicode-escape, checked by [`check_raw_unicode_escape`].
    RawUnicodeEscape(&'a [u8]),
}

impl Text<'_> {
    pub(super) fn code_points(&self) -> Box<dyn Iterator<Item = u32> + '_> {
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
pub(super) struct Utf8Points<'a> {
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
pub(super) struct RawUnicodeEscapePoints<'a> {
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
pub(super) enum MemoKey {
    Small(i128),
    /// Canonical decimal, never in `i128` range, so never equal to a `Small`.
    Big(String),
}

/// An exception raised while reading an argument: class and message.
pub(super) type Raise = (&'static str, String);

pub(super) fn value_error(message: impl Into<String>) -> Raise {
    ("ValueError", message.into())
}

pub(super) fn limit_error(max: usize) -> Raise {
    (
        "LimitExceeded",
        format!("disassembly exceeds {max} bytes of text"),
    )
}

/// `io.BytesIO` over the stream, as `pickletools._genops` reads it.
pub(super) struct Reader<'a> {
    pub(super) data: &'a [u8],
    pub(super) pos: usize,
    /// The text limit, which also bounds the input quoted in messages.
    pub(super) max_text: usize,
}

impl<'a> Reader<'a> {
    /// `f.read(n)`: at most `n` bytes.
    pub(super) fn read(&mut self, n: u64) -> &'a [u8] {
        let rest = &self.data[self.pos..];
        let take = usize::try_from(n).map_or(rest.len(), |n| n.min(rest.len()));
        self.pos += take;
        &rest[..take]
    }

    /// `f.readline()`: through the next newline, or the rest.
    pub(super) fn readline(&mut self) -> &'a [u8] {
        let rest = &self.data[self.pos..];
        let take = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        self.pos += take;
        &rest[..take]
    }

    pub(super) fn fixed<const N: usize>(&mut self, what: &str) -> Result<[u8; N], Raise> {
        let got = self.read(N as u64);
        <[u8; N]>::try_from(got)
            .map_err(|_| value_error(format!("not enough data in stream to read {what}")))
    }

    pub(super) fn uint1(&mut self) -> Result<u8, Raise> {
        Ok(self.fixed::<1>("uint1")?[0])
    }

    pub(super) fn uint2(&mut self) -> Result<u16, Raise> {
        Ok(u16::from_le_bytes(self.fixed("uint2")?))
    }

    pub(super) fn int4(&mut self) -> Result<i32, Raise> {
        Ok(i32::from_le_bytes(self.fixed("int4")?))
    }

    pub(super) fn uint4(&mut self) -> Result<u32, Raise> {
        Ok(u32::from_le_bytes(self.fixed("uint4")?))
    }

    pub(super) fn uint8(&mut self) -> Result<u64, Raise> {
        Ok(u64::from_le_bytes(self.fixed("uint8")?))
    }

    /// The `n` bytes of a counted argument (`read_string1` and friends).
    pub(super) fn counted(&mut self, n: u64, what: &str) -> Result<&'a [u8], Raise> {
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
    pub(super) fn count8(&mut self, what: &str) -> Result<u64, Raise> {
        let n = self.uint8()?;
        if n > i64::MAX as u64 {
            return Err(value_error(format!("{what} byte count > sys.maxsize: {n}")));
        }
        Ok(n)
    }

    /// `read_stringnl`: the line without its newline, optionally unquoted
    /// and escape-decoded (then ASCII-decoded).
    pub(super) fn stringnl(
        &mut self,
        decode: bool,
        stripquotes: bool,
    ) -> Result<Cow<'a, [u8]>, Raise> {
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
    pub(super) fn quoted(&self, data: &[u8]) -> Result<String, Raise> {
        bytes_repr(data, self.max_text).ok_or_else(|| limit_error(self.max_text))
    }

    /// `str(data, 'utf-8', 'surrogatepass')`.
    pub(super) fn utf8(&mut self, n: u64, what: &str) -> Result<Val<'a>, Raise> {
        let data = self.counted(n, what)?;
        if let Ok(s) = std::str::from_utf8(data) {
            return Ok(Val::Str(Text::Utf8(s)));
        }
        check_utf8(data).map_err(|m| ("UnicodeDecodeError", m))?;
        Ok(Val::Str(Text::Surrogates(data)))
    }

    /// Reads `op`'s argument with the matching `pickletools.read_*`.
    pub(super) fn arg(&mut self, op: Opcode) -> Result<Option<Val<'a>>, Raise> {
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

// ---------------------------------------------------------------------------
// Python's int() and float() of a bytes object.

/// `Py_ISSPACE`: the ASCII whitespace `int()` and `float()` strip.
pub(super) fn py_isspace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// `int(s)` for bytes `s` (base 10), with CPython's messages.
pub(super) fn py_int(s: &[u8]) -> Result<Val<'static>, Raise> {
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
pub(super) fn py_float(s: &[u8]) -> Option<f64> {
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
