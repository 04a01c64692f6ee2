//! Python's `repr()` of the argument types, as `pickletools.dis` prints them.

use super::*;
use std::fmt::Write as _;
use unicode_general_category::{get_general_category, GeneralCategory};

// ---------------------------------------------------------------------------
// Python's repr() of the argument types.

/// `repr(float)`: the shortest round-tripping digits, positional for
/// decimal exponents -4 <= e < 16, scientific otherwise.
pub(super) fn float_repr(x: f64) -> String {
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
pub(super) fn shortest_digits(x: f64) -> (String, i32) {
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
pub(super) fn equals_decimal(x: f64, p: u64, q: i32) -> bool {
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
pub(super) fn long_repr(bytes: &[u8]) -> Result<String, String> {
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
pub(super) const UNASSIGNED_IN_UNICODE_14: &[(u32, u32)] = &[
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
pub(super) fn is_printable(c: char) -> bool {
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
pub(super) fn str_repr(text: &Text<'_>, cap: usize) -> Option<String> {
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

pub(super) fn push_escaped_byte(out: &mut String, b: u8) {
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
pub(super) fn bytes_quote(b: &[u8]) -> u8 {
    if b.contains(&b'\'') && !b.contains(&b'"') {
        b'"'
    } else {
        b'\''
    }
}

/// `repr(bytes)`, or `None` once it outgrows `cap` bytes.
pub(super) fn bytes_repr(b: &[u8], cap: usize) -> Option<String> {
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
pub(super) fn bytes_repr_full(b: &[u8]) -> String {
    bytes_repr(b, usize::MAX).unwrap_or_default()
}

/// `repr(bytearray)`: like bytes, except that a single quote is always
/// escaped, even inside double quotes.
pub(super) fn bytearray_repr(b: &[u8], cap: usize) -> Option<String> {
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
