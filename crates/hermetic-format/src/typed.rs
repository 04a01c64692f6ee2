//! Version 2 of the tree (docs/SPEC.md, section 10): class records, enum
//! members, callables by reference and a few standard-library values. This
//! module holds the syntax rules a writer and a reader both check, and the
//! listing of the classes and callables a tree names.
//!
//! Names are data here: nothing in this crate resolves or imports them.

use crate::tree::{Node, NodeId, Tree};
use std::collections::HashMap;

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

/// What kind of thing a tree names by `module:qualname`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefKind {
    /// A class record (`$object`): an instance rebuilt from its fields.
    Object,
    /// An enum member (`$enum`).
    Enum,
    /// A function or class by reference (`$callable`, or the function of a
    /// `$partial`).
    Callable,
}

impl RefKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            RefKind::Object => "object",
            RefKind::Enum => "enum",
            RefKind::Callable => "callable",
        }
    }
}

/// One name a tree uses, with how often it appears and (for class records)
/// the field names of its first appearance.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedRef {
    pub kind: RefKind,
    pub name: String,
    pub count: usize,
    pub fields: Vec<String>,
}

impl Tree {
    /// The version a document holding this tree must declare: 2 if any node
    /// is a section-10 node, else 1.
    pub fn required_version(&self) -> u64 {
        let based = |n: &Node| matches!(n, Node::Tensor(t) if t.base.is_some());
        if self.nodes.iter().any(|n| matches!(n, Node::Attrs { .. })) {
            ATTRS_VERSION
        } else if self.nodes.iter().any(based) {
            VIEWS_VERSION
        } else if self.nodes.iter().any(Node::is_typed) {
            TYPED_VERSION
        } else {
            1
        }
    }

    /// Every class, enum and callable name reachable from `from` (following
    /// `$ref`s), in document order of first appearance.
    pub fn named_refs(&self, from: NodeId) -> Vec<NamedRef> {
        let mut out: Vec<NamedRef> = Vec::new();
        let mut index: HashMap<(RefKind, String), usize> = HashMap::new();
        let mut seen = vec![false; self.nodes.len()];
        let mut stack = vec![from];
        let mut note = |kind: RefKind, name: &str, fields: &[String]| match index
            .get(&(kind, name.to_string()))
        {
            Some(&i) => out[i].count += 1,
            None => {
                index.insert((kind, name.to_string()), out.len());
                out.push(NamedRef {
                    kind,
                    name: name.to_string(),
                    count: 1,
                    fields: fields.to_vec(),
                });
            }
        };
        while let Some(id) = stack.pop() {
            let id = self.resolve(id);
            if std::mem::replace(&mut seen[id], true) {
                continue;
            }
            match &self.nodes[id] {
                Node::Object { shape, .. } => note(RefKind::Object, &shape.class, &shape.fields),
                Node::Enum { class, .. } => note(RefKind::Enum, class, &[]),
                Node::Callable(name) => note(RefKind::Callable, name, &[]),
                Node::Partial { func, .. } => note(RefKind::Callable, func, &[]),
                _ => {}
            }
            self.push_children_rev(id, &mut stack);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "a:B",
            "__main__:Config",
            "pkg.mod:Outer.Inner",
            "tests.t:test_x.<locals>.Cfg",
            "m:f.<locals>.g.<locals>.H",
            "mödule:Klasse",
        ] {
            assert!(is_class_name(ok), "{ok}");
        }
        for bad in [
            "",
            "a",
            ":B",
            "a:",
            "a.:B",
            "a:B.",
            "1a:B",
            "a:<locals>.B",
            "a:B.<locals>",
            "a:B.<lambda>",
            "a:B:C",
            "a b:C",
            "a:B.<locals>.<locals>.C",
        ] {
            assert!(!is_class_name(bad), "{bad}");
        }
        assert!(is_import_name("torch._C._nn:gelu"));
        assert!(!is_import_name("m:f.<locals>.g"));
    }

    #[test]
    fn datetimes() {
        for ok in [
            "2024-02-29T13:45:00",
            "0001-01-01T00:00:00.000001",
            "2024-01-02T03:04:05+00:00",
            "2024-01-02T03:04:05.123456-05:30",
            "2024-01-02T03:04:05+05:30:15.000001",
            "2024-01-02T03:04:05+01:00[Europe/Paris]",
            "2024-01-02T03:04:05-03:00[America/Argentina/Buenos_Aires]",
            "2024-01-02T03:04:05+00:00[Etc/GMT+5]",
        ] {
            assert!(is_datetime(ok), "{ok}");
        }
        for bad in [
            "2024-01-02",
            "2024-01-02 03:04:05",
            "2024-13-02T03:04:05",
            "0000-01-02T03:04:05",
            "2024-01-02T24:00:00",
            "2024-01-02T03:04:05.12",
            "2024-01-02T03:04:05Z",
            "2024-01-02T03:04:05+24:00",
            "2024-01-02T03:04:05[Europe/Paris]",
            "2024-01-02T03:04:05+01:00[../etc/passwd]",
            "2024-01-02T03:04:05+01:00[]",
            "2024-01-02T03:04:05+01:00[a//b]",
        ] {
            assert!(!is_datetime(bad), "{bad}");
        }
        assert!(is_date("1999-12-31"));
        assert!(!is_date("1999-12-32") && !is_date("99-12-31") && !is_date("1999/12/31"));
    }

    #[test]
    fn uuids_decimals_timedeltas() {
        assert!(is_uuid("12345678-9abc-def0-1234-56789abcdef0"));
        assert!(!is_uuid("12345678-9ABC-def0-1234-56789abcdef0"));
        assert!(!is_uuid("123456789abcdef0123456789abcdef0"));
        for ok in [
            "0", "-0", "1.5", "1.", ".5", "1E+5", "-1.23e-7", "Infinity", "-Inf", "NaN", "sNaN12",
            "-nan",
        ] {
            assert!(is_decimal(ok), "{ok}");
        }
        for bad in [
            "", ".", "e5", "1e", "1e+", "1.2.3", "0x10", "1_000", " 1", "NaNx", "infinit",
        ] {
            assert!(!is_decimal(bad), "{bad}");
        }
        assert!(is_timedelta(-1, 86_399, 999_999));
        assert!(!is_timedelta(0, 86_400, 0) && !is_timedelta(0, 0, -1));
        assert!(!is_timedelta(1_000_000_000, 0, 0));
    }
}
