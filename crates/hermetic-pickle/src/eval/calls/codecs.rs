//! `str.encode` as `_codecs.encode` does it for the codecs pickles use
//! (latin-1 for protocol 0-2 bytes, utf-8, ascii, cp1252), names
//! normalized as Python's codec registry does.

use super::*;

/// A codec name as CPython's `encodings.normalize_encoding` leaves it
/// (lowercased first, as `codecs.lookup` does): runs of characters other
/// than ASCII letters, digits and `.` become one `_`, none at either end.
pub(super) fn normalize_codec(name: &str) -> String {
    let mut out = String::new();
    let mut punct = false;
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() || c == '.' {
            if punct && !out.is_empty() {
                out.push('_');
            }
            if c.is_ascii() {
                out.push(c);
            }
            punct = false;
        } else {
            punct = true;
        }
    }
    out
}

/// The codecs `_codecs.encode` is read with, by the names CPython's
/// `encodings.aliases` (and the codec modules) give them.
#[derive(Clone, Copy)]
pub(super) enum Codec {
    Latin1,
    Utf8,
    Utf8Sig,
    Ascii,
    Utf16,
    Utf16Le,
    Utf16Be,
    Cp1252,
    Rot13,
}

/// cp1252's 0x80..0x9F (CPython's table; 0x81, 0x8D, 0x8F, 0x90 and 0x9D are
/// undefined and encode nothing).
pub(super) const CP1252_HIGH: [Option<char>; 32] = [
    Some('\u{20AC}'),
    None,
    Some('\u{201A}'),
    Some('\u{0192}'),
    Some('\u{201E}'),
    Some('\u{2026}'),
    Some('\u{2020}'),
    Some('\u{2021}'),
    Some('\u{02C6}'),
    Some('\u{2030}'),
    Some('\u{0160}'),
    Some('\u{2039}'),
    Some('\u{0152}'),
    None,
    Some('\u{017D}'),
    None,
    None,
    Some('\u{2018}'),
    Some('\u{2019}'),
    Some('\u{201C}'),
    Some('\u{201D}'),
    Some('\u{2022}'),
    Some('\u{2013}'),
    Some('\u{2014}'),
    Some('\u{02DC}'),
    Some('\u{2122}'),
    Some('\u{0161}'),
    Some('\u{203A}'),
    Some('\u{0153}'),
    None,
    Some('\u{017E}'),
    Some('\u{0178}'),
];

pub(super) fn codec(name: &str) -> Option<Codec> {
    let norm = normalize_codec(name);
    let find = |n: &str| {
        Some(match n {
            "latin_1" | "latin1" | "latin" | "l1" | "iso8859_1" | "iso_8859_1" | "8859"
            | "cp819" | "iso_ir_100" | "csisolatin1" | "ibm819" | "iso_8859_1_1987" => {
                Codec::Latin1
            }
            "utf_8" | "utf8" | "u8" | "utf" | "utf8_ucs2" | "utf8_ucs4" | "cp65001" => Codec::Utf8,
            "utf_8_sig" => Codec::Utf8Sig,
            "ascii" | "646" | "ansi_x3_4_1968" | "ansi_x3_4_1986" | "cp367" | "csascii"
            | "ibm367" | "iso646_us" | "iso_646_irv_1991" | "iso_ir_6" | "us" | "us_ascii" => {
                Codec::Ascii
            }
            "utf_16" | "u16" | "utf16" => Codec::Utf16,
            "utf_16_le" | "utf_16le" | "unicodelittleunmarked" => Codec::Utf16Le,
            "utf_16_be" | "utf_16be" | "unicodebigunmarked" => Codec::Utf16Be,
            "rot_13" | "rot13" => Codec::Rot13,
            "cp1252" | "windows_1252" => Codec::Cp1252,
            _ => return None,
        })
    };
    find(&norm).or_else(|| find(&norm.replace('.', "_")))
}

/// `_codecs.encode(text, encoding)` with the strict error handler: bytes,
/// or, for rot13 (a str-to-str codec), a str.
pub(super) fn encode<'a>(s: &Str<'_>, encoding: &str) -> Result<Value<'a>, Problem> {
    let text = s
        .as_str()
        .ok_or_else(|| malformed(format!("cannot encode a lone surrogate as {encoding}")))?;
    let Some(c) = codec(encoding) else {
        return Err(unsupported(format!(
            "_codecs.encode with the codec {encoding:?} (only latin-1, utf-8, ascii, utf-16, cp1252 and rot13)"
        )));
    };
    let utf16 = |big: bool| -> Vec<u8> {
        text.encode_utf16()
            .flat_map(|u| {
                if big {
                    u.to_be_bytes()
                } else {
                    u.to_le_bytes()
                }
            })
            .collect()
    };
    let bytes = match c {
        Codec::Latin1 => text
            .chars()
            .map(|c| {
                u8::try_from(u32::from(c))
                    .map_err(|_| malformed(format!("{c:?} cannot be encoded as latin-1")))
            })
            .collect::<Result<Vec<u8>, _>>()?,
        Codec::Utf8 => text.as_bytes().to_vec(),
        Codec::Utf8Sig => [&[0xef, 0xbb, 0xbf][..], text.as_bytes()].concat(),
        Codec::Ascii if text.is_ascii() => text.as_bytes().to_vec(),
        Codec::Ascii => return Err(malformed("non-ASCII text encoded as ASCII")),
        // CPython's utf-16 writes a BOM and the machine's order (little
        // endian on every platform hermetic's wheels are built for).
        Codec::Utf16 => [&[0xff, 0xfe][..], &utf16(false)].concat(),
        Codec::Utf16Le => utf16(false),
        Codec::Utf16Be => utf16(true),
        Codec::Cp1252 => text
            .chars()
            .map(|c| match u32::from(c) {
                n @ (0..=0x7f | 0xa0..=0xff) => Ok(n as u8),
                _ => CP1252_HIGH
                    .iter()
                    .position(|&h| h == Some(c))
                    .map(|i| 0x80 + i as u8)
                    .ok_or_else(|| malformed(format!("{c:?} cannot be encoded as cp1252"))),
            })
            .collect::<Result<Vec<u8>, _>>()?,
        Codec::Rot13 => {
            let out: String = text
                .chars()
                .map(|c| match c {
                    'a'..='m' | 'A'..='M' => (c as u8 + 13) as char,
                    'n'..='z' | 'N'..='Z' => (c as u8 - 13) as char,
                    _ => c,
                })
                .collect();
            return Ok(Value::Str(Str {
                bytes: Cow::Owned(out.into_bytes()),
                utf8: true,
            }));
        }
    };
    Ok(Value::Bytes(Cow::Owned(bytes)))
}
