//! CPython's messages for the decoders in `crate::text`, called only once a
//! decoder has refused its input.

use super::*;

// ---------------------------------------------------------------------------
// CPython's messages for the decoders in `crate::text`; called only once the
// decoder has refused its input.

/// `codecs.escape_decode`'s ValueError.
pub(super) fn escape_decode_error(data: &[u8]) -> Raise {
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

pub(super) fn unicode_decode_error(
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
pub(super) fn check_utf8(data: &[u8]) -> Result<(), String> {
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
pub(super) fn check_raw_unicode_escape(data: &[u8]) -> Result<(), String> {
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
