//! The syntax rules a tree writer and reader both check for section-10
//! values (docs/SPEC.md): identifiers and import names, the text forms of
//! dates, times, UUIDs and decimals. Pure functions over text, so the tree
//! model and the typed listing can both use them without depending on
//! each other.

/// The spec version a tree that uses any section-10 node needs.
pub const TYPED_VERSION: u64 = 2;
/// The spec version that adds tensors viewing another entry's storage
/// (`base`, SPEC section 3.1).
pub const VIEWS_VERSION: u64 = 3;

/// The version that adds `$attrs` (instance attributes of an OrderedDict).
pub const ATTRS_VERSION: u64 = 4;

/// Whether `s` is an identifier: a letter or `_`, then letters, digits or `_`
/// (Unicode letters and digits count).
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c == '_' || c.is_alphabetic() => {}
        _ => return false,
    }
    chars.all(|c| c == '_' || c.is_alphanumeric())
}

/// Whether `s` is a `module:qualname` name: a dotted module path of
/// identifiers, `:`, and a dotted qualified name of identifiers in which
/// `<locals>` may appear between two identifiers (a class defined inside a
/// function). At most 1024 bytes.
pub fn is_class_name(s: &str) -> bool {
    if s.len() > 1024 {
        return false;
    }
    let Some((module, qualname)) = s.split_once(':') else {
        return false;
    };
    if !module.split('.').all(is_identifier) {
        return false;
    }
    let parts: Vec<&str> = qualname.split('.').collect();
    let last = parts.len() - 1;
    parts.iter().enumerate().all(|(i, p)| {
        is_identifier(p) || (*p == "<locals>" && i > 0 && i < last && is_identifier(parts[i - 1]))
    })
}

/// Whether `s` names something importable: a class name without `<locals>`.
pub fn is_import_name(s: &str) -> bool {
    is_class_name(s) && !s.contains("<locals>")
}

fn digits(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(u8::is_ascii_digit)
}

fn num(s: &[u8]) -> u32 {
    s.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0'))
}

/// `YYYY-MM-DD`, year 0001-9999, month 01-12, day 01-31 (the exact day
/// count of the month is checked when the value is built).
pub fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && digits(&b[0..4])
        && digits(&b[5..7])
        && digits(&b[8..10])
        && num(&b[0..4]) >= 1
        && (1..=12).contains(&num(&b[5..7]))
        && (1..=31).contains(&num(&b[8..10]))
}

/// `HH:MM:SS` with an optional `.ffffff`; returns the rest of the text.
fn clock(b: &[u8], max_hour: u32) -> Option<&[u8]> {
    if b.len() < 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    if !(digits(&b[0..2]) && digits(&b[3..5]) && digits(&b[6..8])) {
        return None;
    }
    if num(&b[0..2]) > max_hour || num(&b[3..5]) > 59 || num(&b[6..8]) > 59 {
        return None;
    }
    let rest = &b[8..];
    if rest.first() == Some(&b'.') {
        if rest.len() < 7 || !digits(&rest[1..7]) {
            return None;
        }
        return Some(&rest[7..]);
    }
    Some(rest)
}

/// A UTC offset `+HH:MM`, `+HH:MM:SS` or `+HH:MM:SS.ffffff` (or `-`),
/// strictly less than 24 hours; returns the rest of the text.
fn offset(b: &[u8]) -> Option<&[u8]> {
    if !matches!(b.first(), Some(b'+' | b'-')) || b.len() < 6 {
        return None;
    }
    let b = &b[1..];
    if b[2] != b':' || !digits(&b[0..2]) || !digits(&b[3..5]) {
        return None;
    }
    if num(&b[0..2]) > 23 || num(&b[3..5]) > 59 {
        return None;
    }
    if b.len() > 5 && b[5] == b':' {
        return clock(b, 23);
    }
    Some(&b[5..])
}

/// An IANA time zone key: `[A-Za-z0-9_+-]` parts joined by `/`, none empty,
/// `.` or `..`; at most 255 bytes.
fn is_zone_key(s: &[u8]) -> bool {
    s.len() <= 255
        && s.split(|&c| c == b'/').all(|p| {
            !p.is_empty()
                && p.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'+' | b'-'))
        })
}

/// `DATE "T" TIME [OFFSET ["[" ZONE "]"]]`, as `datetime.isoformat()`
/// writes it, plus the RFC 9557 zone suffix.
pub fn is_datetime(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 19 || b[10] != b'T' || !is_date(&s[..10]) {
        return false;
    }
    let Some(rest) = clock(&b[11..], 23) else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let Some(rest) = offset(rest) else {
        return false;
    };
    match rest {
        [] => true,
        [b'[', key @ .., b']'] => is_zone_key(key),
        _ => false,
    }
}

/// `HH:MM:SS[.ffffff][OFFSET]`, as `datetime.time.isoformat()` writes it
/// (a `datetime.timezone` offset or none).
pub fn is_time(s: &str) -> bool {
    match clock(s.as_bytes(), 23) {
        Some([]) => true,
        Some(rest) => offset(rest).is_some_and(|r| r.is_empty()),
        None => false,
    }
}

/// A UTC offset alone: `+HH:MM`, `+HH:MM:SS` or `+HH:MM:SS.ffffff` (or `-`),
/// under 24 hours.
pub fn is_utc_offset(s: &str) -> bool {
    offset(s.as_bytes()).is_some_and(|r| r.is_empty())
}

/// `8-4-4-4-12` lowercase hexadecimal digits.
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => matches!(c, b'0'..=b'9' | b'a'..=b'f'),
        })
}

/// The numeric-string syntax of Python's `decimal` module, in ASCII:
/// `[sign] (digits ["." [digits]] | "." digits) [("e"|"E") [sign] digits]`,
/// `[sign] ("Inf" | "Infinity")`, `[sign] ["s"] "NaN" [digits]`, the words
/// in any case. At most 10,000 bytes.
pub fn is_decimal(s: &str) -> bool {
    if s.is_empty() || s.len() > 10_000 {
        return false;
    }
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let lower = body.to_ascii_lowercase();
    if lower == "inf" || lower == "infinity" {
        return true;
    }
    let nan = lower
        .strip_prefix("snan")
        .or_else(|| lower.strip_prefix("nan"));
    if let Some(payload) = nan {
        return payload.bytes().all(|c| c.is_ascii_digit());
    }
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (mantissa, None),
    };
    let int_ok = int.bytes().all(|c| c.is_ascii_digit());
    let frac_ok = frac.is_none_or(|f| f.bytes().all(|c| c.is_ascii_digit()));
    let some_digit = !int.is_empty() || frac.is_some_and(|f| !f.is_empty());
    let exp_ok =
        exponent.is_none_or(|e| digits(e.strip_prefix(['+', '-']).unwrap_or(e).as_bytes()));
    int_ok && frac_ok && some_digit && exp_ok
}

/// `timedelta`'s normalised ranges: |days| <= 999999999, 0 <= seconds <
/// 86400, 0 <= microseconds < 1000000.
pub fn is_timedelta(days: i64, seconds: i64, microseconds: i64) -> bool {
    (-999_999_999..=999_999_999).contains(&days)
        && (0..86_400).contains(&seconds)
        && (0..1_000_000).contains(&microseconds)
}
