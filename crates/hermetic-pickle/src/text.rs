//! Decoding of pickle text arguments exactly as CPython's unpickler does it.

use std::borrow::Cow;

/// Decodes UTF-8 that may encode lone surrogates (CPython's `surrogatepass`)
/// into code points. `None` when the bytes are not decodable that way.
pub fn decode_utf8_surrogatepass(bytes: &[u8]) -> Option<Vec<u32>> {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return Some(s.chars().map(|c| c as u32).collect());
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b0 = bytes[i];
        let (len, min, init) = match b0 {
            0x00..=0x7f => {
                out.push(b0 as u32);
                i += 1;
                continue;
            }
            0xc2..=0xdf => (2, 0x80, (b0 & 0x1f) as u32),
            0xe0..=0xef => (3, 0x800, (b0 & 0x0f) as u32),
            0xf0..=0xf4 => (4, 0x10000, (b0 & 0x07) as u32),
            _ => return None,
        };
        if i + len > bytes.len() {
            return None;
        }
        let mut cp = init;
        for &b in &bytes[i + 1..i + len] {
            if b & 0xc0 != 0x80 {
                return None;
            }
            cp = (cp << 6) | (b & 0x3f) as u32;
        }
        if cp < min || cp > 0x10ffff {
            return None;
        }
        out.push(cp);
        i += len;
    }
    Some(out)
}

/// The text of a UTF-8 argument as a Rust string; lone surrogates (which no
/// importable module or attribute name contains) become U+FFFD.
pub fn utf8_lossy(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// Python's `raw-unicode-escape` decoding: latin-1, except that `\uXXXX` and
/// `\UXXXXXXXX` after an odd number of backslashes are code points.
pub fn decode_raw_unicode_escape(bytes: &[u8]) -> Option<Vec<u32>> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'\\' {
            out.push(b as u32);
            i += 1;
            continue;
        }
        // Count the run of backslashes; only the last one can start an escape,
        // and only when the run is odd.
        let run_start = i;
        while i < bytes.len() && bytes[i] == b'\\' {
            i += 1;
        }
        let run = i - run_start;
        let escape = run % 2 == 1 && i < bytes.len() && matches!(bytes[i], b'u' | b'U');
        let literal = if escape { run - 1 } else { run };
        out.extend(std::iter::repeat_n(b'\\' as u32, literal));
        if escape {
            let width = if bytes[i] == b'u' { 4 } else { 8 };
            let hex = bytes.get(i + 1..i + 1 + width)?;
            let text = std::str::from_utf8(hex).ok()?;
            if !text.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            let cp = u32::from_str_radix(text, 16).ok()?;
            if cp > 0x10ffff {
                return None;
            }
            out.push(cp);
            i += 1 + width;
        }
    }
    Some(out)
}

/// Python's `codecs.escape_decode` (the escapes of a bytes literal), used for
/// the protocol 0 `STRING` opcode.
pub fn escape_decode(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let Some(&c) = bytes.get(i) else {
            // A trailing lone backslash is an error in CPython.
            return None;
        };
        i += 1;
        match c {
            b'\n' => {}
            b'\\' => out.push(b'\\'),
            b'\'' => out.push(b'\''),
            b'"' => out.push(b'"'),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut v = (c - b'0') as u32;
                for _ in 0..2 {
                    match bytes.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + (d - b'0') as u32;
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            b'x' => {
                let hex = bytes.get(i..i + 2)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let text = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(text, 16).ok()?);
                i += 2;
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Some(out)
}

/// Whether `c` is whitespace to `str.isspace()` (and so to `str.strip()`
/// and `int()`), for ASCII characters: space, `\t\n\x0b\x0c\r` and the
/// separators `\x1c`-`\x1f`.
pub fn py_ascii_space(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r' | '\x1c'..='\x1f'
    )
}

/// Python's `int(b, base)` for a bytes argument (bases 2-36): surrounding
/// whitespace (`bytes` strips only space and `\t\n\x0b\x0c\r`), a sign,
/// the base's `0x`/`0o`/`0b` prefix, and single underscores between digits
/// or after the prefix. `None` where Python raises `ValueError`.
pub fn py_int_bytes(b: &[u8], base: u32) -> Option<i128> {
    let is_space = |c: &u8| matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let start = b.iter().position(|c| !is_space(c))?;
    let end = b.iter().rposition(|c| !is_space(c))? + 1;
    let mut s = &b[start..end];
    let neg = match s.first() {
        Some(b'-') => {
            s = &s[1..];
            true
        }
        Some(b'+') => {
            s = &s[1..];
            false
        }
        _ => false,
    };
    let prefix: &[u8] = match base {
        16 => b"x",
        8 => b"o",
        2 => b"b",
        _ => b"",
    };
    let mut after_prefix = false;
    if !prefix.is_empty() && s.len() >= 2 && s[0] == b'0' && s[1].to_ascii_lowercase() == prefix[0]
    {
        s = &s[2..];
        after_prefix = true;
    }
    if after_prefix {
        s = s.strip_prefix(b"_").unwrap_or(s);
    }
    if s.is_empty() || s[0] == b'_' || s[s.len() - 1] == b'_' {
        return None;
    }
    let mut n: i128 = 0;
    let mut last_underscore = false;
    for &c in s {
        if c == b'_' {
            if last_underscore {
                return None;
            }
            last_underscore = true;
            continue;
        }
        last_underscore = false;
        let d = (c as char).to_digit(base)?;
        n = n
            .checked_mul(i128::from(base))?
            .checked_add(i128::from(d))?;
    }
    Some(if neg { -n } else { n })
}

/// Code points to a Rust string, or `None` if any is a lone surrogate.
pub fn code_points_to_string(cps: &[u32]) -> Option<String> {
    cps.iter().map(|&c| char::from_u32(c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surrogatepass() {
        assert_eq!(
            decode_utf8_surrogatepass(b"\xed\xa0\x80"),
            Some(vec![0xd800])
        );
        assert_eq!(decode_utf8_surrogatepass(b"\xc0\x80"), None);
        assert_eq!(decode_utf8_surrogatepass("é".as_bytes()), Some(vec![0xe9]));
    }

    #[test]
    fn raw_unicode_escape_counts_backslashes() {
        assert_eq!(decode_raw_unicode_escape(br"\u0041"), Some(vec![0x41]));
        assert_eq!(
            decode_raw_unicode_escape(br"\\u0041"),
            Some(br"\\u0041".iter().map(|&b| b as u32).collect())
        );
        assert_eq!(decode_raw_unicode_escape(br"\u00"), None);
    }

    #[test]
    fn escape_decode_forms() {
        assert_eq!(escape_decode(br"a\n\x41\101\q"), Some(b"a\nAA\\q".to_vec()));
        assert_eq!(escape_decode(br"\x4"), None);
    }

    #[test]
    fn python_int_of_bytes() {
        assert_eq!(py_int_bytes(b"  0x1f  ", 16), Some(31));
        assert_eq!(py_int_bytes(b"\x0b1f\x0c", 16), Some(31));
        assert_eq!(py_int_bytes(b"+1_f", 16), Some(31));
        assert_eq!(py_int_bytes(b"0x_1f", 16), Some(31));
        assert_eq!(py_int_bytes(b"-10", 16), Some(-16));
        assert_eq!(py_int_bytes(b"1__f", 16), None);
        assert_eq!(py_int_bytes(b"_1f", 16), None);
        assert_eq!(
            py_int_bytes(b"\x1c1f", 16),
            None,
            "bytes do not strip \\x1c"
        );
        assert_eq!(py_int_bytes(b"", 16), None);
        assert_eq!(py_int_bytes(b"0o17", 8), Some(15));
    }
}
