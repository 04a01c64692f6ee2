//! Per-entry digests. XXH3-128 is a non-cryptographic hash: it detects
//! corruption (bit flips, truncation, torn writes) at memory speed. It does not
//! authenticate: whoever can rewrite the payload can rewrite the header too,
//! so a cryptographic hash here would cost time and buy nothing.

use twox_hash::XxHash3_128;

/// The digest algorithm name recorded in files.
pub const DIGEST_ALGORITHM: &str = "xxh3-128";

/// XXH3-128 of `data` as 32 lowercase hex digits (the canonical big-endian form).
pub fn digest(data: &[u8]) -> String {
    format!("{:032x}", XxHash3_128::oneshot(data))
}

/// A streaming digest.
pub struct Hasher(XxHash3_128);

impl Default for Hasher {
    fn default() -> Self {
        Self::new()
    }
}

impl Hasher {
    pub fn new() -> Self {
        Hasher(XxHash3_128::new())
    }
    pub fn update(&mut self, data: &[u8]) {
        self.0.write(data);
    }
    pub fn finish(&self) -> String {
        format!("{:032x}", self.0.finish_128())
    }
}

/// A digest's 32 lowercase hex digits as a number.
pub fn parse_digest(s: &str) -> Option<u128> {
    // A header holds one digest per entry; `u128::from_str_radix` spent
    // about 700 instructions on each (checked 128-bit multiplies), this
    // about a fifth of that.
    if s.len() != 32 {
        return None;
    }
    s.bytes().try_fold(0u128, |acc, b| {
        let nibble = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | u128::from(nibble))
    })
}

/// The canonical text of a digest number.
pub fn digest_text(d: u128) -> String {
    format!("{d:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_matches_one_shot() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut h = Hasher::new();
        for c in data.chunks(4093) {
            h.update(c);
        }
        assert_eq!(h.finish(), digest(&data));
        assert!(parse_digest(&digest(b"")).is_some());
        assert_ne!(digest(b"a"), digest(b"b"));
        // The empty input's XXH3-128; tests/golden pins digests of real
        // payloads written before the switch from xxhash-rust to twox-hash.
        assert_eq!(digest(b""), "99aa06d3014798d86001c324468d497f");
    }

    #[test]
    fn parse_is_the_inverse_of_text() {
        for d in [0u128, 1, u128::MAX, 0x99aa06d3014798d86001c324468d497f] {
            assert_eq!(parse_digest(&digest_text(d)), Some(d));
        }
        let good = "99aa06d3014798d86001c324468d497f";
        assert_eq!(parse_digest(&good.to_uppercase()), None, "lowercase only");
        assert_eq!(parse_digest(&good[1..]), None);
        assert_eq!(parse_digest(&format!("{good}0")), None);
        assert_eq!(parse_digest(&good.replace('f', "g")), None);
        assert_eq!(parse_digest(&format!("+{}", &good[1..])), None);
    }
}
