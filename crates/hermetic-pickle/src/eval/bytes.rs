//! Byte-level helpers with no machine in them: Python ints from two's
//! complement bytes and digit strings, and byte order.

use super::value::Value;

/// An integer from little-endian two's complement bytes.
pub(crate) fn long_value<'a>(bytes: &[u8]) -> Value<'a> {
    let b = minimal_twos(bytes);
    if b.len() <= 8 {
        let negative = b.last().is_some_and(|&x| x & 0x80 != 0);
        let mut buf = [if negative { 0xff } else { 0 }; 8];
        buf[..b.len()].copy_from_slice(b);
        Value::Int(i64::from_le_bytes(buf))
    } else {
        Value::BigInt(b.to_vec().into_boxed_slice())
    }
}

/// Drops redundant sign bytes from the top.
fn minimal_twos(bytes: &[u8]) -> &[u8] {
    let mut n = bytes.len();
    while n > 1 {
        let top = bytes[n - 1];
        let next_sign = bytes[n - 2] & 0x80;
        if (top == 0 && next_sign == 0) || (top == 0xff && next_sign != 0) {
            n -= 1;
        } else {
            break;
        }
    }
    &bytes[..n]
}

/// Digits of a power-of-two `base` (underscores skipped) to little-endian
/// two's complement bytes, in time linear in the digits (`int(s, 16)` has no
/// digit limit, unlike decimal).
pub(crate) fn radix_to_twos(negative: bool, base: u32, digits: &[u8]) -> Option<Vec<u8>> {
    let bits = match base {
        2 => 1,
        8 => 3,
        16 => 4,
        _ => return None,
    };
    let mut out = Vec::with_capacity(digits.len() * bits as usize / 8 + 2);
    let (mut acc, mut n): (u32, u32) = (0, 0);
    for &c in digits.iter().rev().filter(|&&c| c != b'_') {
        acc |= (c as char).to_digit(base)? << n;
        n += bits;
        while n >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            n -= 8;
        }
    }
    out.push(acc as u8);
    out.push(0); // room for the sign bit
    if negative {
        // Two's complement: invert and add one.
        let mut carry = true;
        for b in &mut out {
            *b = !*b;
            if carry {
                let (v, c) = b.overflowing_add(1);
                *b = v;
                carry = c;
            }
        }
    }
    Some(minimal_twos(&out).to_vec())
}

/// `[+-]digits` to little-endian two's complement bytes. Underscores are
/// skipped: the parser has already checked each stands between two digits.
pub(crate) fn decimal_to_twos(text: &[u8]) -> Option<Vec<u8>> {
    let (negative, digits) = match text.first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if !digits.first().is_some_and(u8::is_ascii_digit)
        || !digits.iter().all(|c| c.is_ascii_digit() || *c == b'_')
    {
        return None;
    }
    // Magnitude, little-endian base 256.
    let mut mag: Vec<u8> = vec![0];
    for &d in digits.iter().filter(|&&c| c != b'_') {
        let mut carry = u32::from(d - b'0');
        for byte in mag.iter_mut() {
            let v = u32::from(*byte) * 10 + carry;
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            mag.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    mag.push(0); // room for the sign bit
    if negative {
        // Two's complement: invert and add one.
        let mut carry = 1u16;
        for byte in mag.iter_mut() {
            let v = u16::from(!*byte) + carry;
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
    }
    Some(minimal_twos(&mag).to_vec())
}

/// Byte-swaps `bytes` in place in units of `unit` bytes.
pub fn byteswap(bytes: &mut [u8], unit: usize) {
    if unit > 1 {
        for chunk in bytes.chunks_exact_mut(unit) {
            chunk.reverse();
        }
    }
}
