//! Blob ids: `sha256:` followed by the 64 lowercase hex digits of the SHA-256
//! of a pickle stream's exact bytes, from its first opcode through `STOP`.
//! They are the ids `hermetic hash` prints and the scanner reports.

use crate::ManifestError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// A validated blob id. Only the canonical spelling is accepted: the
/// lowercase `sha256:` prefix and 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlobId([u8; 32]);

impl BlobId {
    /// The id of exactly these bytes.
    pub fn of(bytes: &[u8]) -> Self {
        BlobId(Sha256::digest(bytes).into())
    }

    /// Parses the canonical text form.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let bad = || ManifestError::BadBlobId(text.to_string());
        let hex_part = text.strip_prefix("sha256:").ok_or_else(bad)?;
        if hex_part.len() != 64
            || !hex_part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).map_err(|_| bad())?;
        Ok(BlobId(out))
    }

    pub fn digest(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({self})")
    }
}

impl FromStr for BlobId {
    type Err = ManifestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BlobId::parse(s)
    }
}

impl Serialize for BlobId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BlobId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        BlobId::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Where the first pickle stream in a buffer ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extent {
    /// The stream parsed through `STOP`; the value is the offset just past it.
    Complete(usize),
    /// The buffer ends inside the stream: more bytes are needed.
    NeedMore,
    /// The bytes are not a well-formed pickle stream. A firewall treats
    /// everything from the start to the end of the input as the blob, which
    /// is what the scanner hashes for such a stream.
    Malformed,
}

/// Finds the end of the pickle stream starting at `data[0]` by reading
/// opcodes only (no analysis), with the same opcode reader the scanner uses,
/// so the blob a firewall hashes is the stream the scanner reports.
pub fn stream_extent(data: &[u8]) -> Extent {
    use hermetic_pickle::parser::ParseErrorKind;
    use hermetic_pickle::{Opcode, Parser};
    if data.is_empty() {
        return Extent::NeedMore;
    }
    for item in Parser::new(data, 0) {
        match item {
            Ok(instr) if instr.op == Opcode::STOP => return Extent::Complete(instr.end),
            Ok(_) => {}
            Err(e) => {
                return match e.kind {
                    ParseErrorKind::Truncated { .. }
                    | ParseErrorKind::NoStop
                    | ParseErrorKind::MissingNewline => Extent::NeedMore,
                    _ => Extent::Malformed,
                }
            }
        }
    }
    Extent::NeedMore
}

/// The blob a loader reading `data` from its start would hand the
/// unpickler: the first stream through `STOP`, or all of `data` when the
/// stream is malformed or truncated. Returns its length and id.
pub fn first_blob(data: &[u8]) -> (usize, BlobId) {
    let end = match stream_extent(data) {
        Extent::Complete(end) => end,
        Extent::NeedMore | Extent::Malformed => data.len(),
    };
    (end, BlobId::of(&data[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_canonical_ids_only() {
        let id = BlobId::of(b"abc");
        let text = id.to_string();
        assert_eq!(
            text,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(BlobId::parse(&text).unwrap(), id);
        for bad in [
            "",
            "sha256:",
            "sha1:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "SHA256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD",
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a",
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015adz",
            " sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ] {
            assert!(BlobId::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn extent_of_streams() {
        // pickle.dumps([1, 2], protocol=2) followed by trailing bytes.
        let p = b"\x80\x02]q\x00(K\x01K\x02e.";
        assert_eq!(stream_extent(p), Extent::Complete(p.len()));
        let mut with_tail = p.to_vec();
        with_tail.extend_from_slice(b"\x00\x01garbage");
        assert_eq!(stream_extent(&with_tail), Extent::Complete(p.len()));
        assert_eq!(first_blob(&with_tail), (p.len(), BlobId::of(p)));
        assert_eq!(stream_extent(&p[..5]), Extent::NeedMore);
        assert_eq!(stream_extent(b""), Extent::NeedMore);
        assert_eq!(stream_extent(b"\x00\x01\x02"), Extent::Malformed);
        assert_eq!(first_blob(b"\x00\x01\x02").0, 3);
        // Protocol 0 text pickle: `cos\nsystem\n` needs the newline.
        assert_eq!(stream_extent(b"cos\nsys"), Extent::NeedMore);
    }

    #[test]
    fn serde_round_trip() {
        let id = BlobId::of(b"x");
        let json = serde_json::to_string(&id).unwrap();
        let back: BlobId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
        assert!(serde_json::from_str::<BlobId>("\"sha256:00\"").is_err());
    }
}
