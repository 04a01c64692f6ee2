//! PyTorch's legacy (non-zip) checkpoints, written by
//! `torch.save(obj, f, _use_new_zipfile_serialization=False)`.
//!
//! `torch.serialization._legacy_load` reads five pickle streams in sequence:
//! the magic number `0x1950a86a20f9469cfc6c`, the protocol version, the
//! `sys_info` dict, the checkpoint object, and the sorted list of storage
//! keys. Raw storage bytes follow (each an 8-byte element count and the
//! elements); they are read with `_set_from_file`, never unpickled, so they
//! are not trailing data.

use super::{Loc, Scanner};
use crate::opcodes::Opcode;
use crate::parser::{Arg, Parser};

/// `torch.serialization.MAGIC_NUMBER`.
pub const MAGIC_NUMBER: u128 = 0x1950_a86a_20f9_469c_fc6c;

/// The streams of a legacy checkpoint, in order.
pub const STREAM_NAMES: [&str; 5] = [
    "magic_number",
    "protocol_version",
    "sys_info",
    "pickle",
    "storage_keys",
];

/// An integer a pickle stream evaluates to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PickledInt(pub i128);

/// When the stream at `start` is nothing but one integer (optionally with
/// PROTO, FRAME and memo opcodes), its value and the offset past STOP.
/// Integers that do not fit an `i128` are `None`.
pub fn pickled_int(data: &[u8], start: usize) -> Option<(PickledInt, usize)> {
    let mut value = None;
    for item in Parser::new(data, start).take(8) {
        let instr = item.ok()?;
        match (instr.op, &instr.arg) {
            (Opcode::PROTO | Opcode::FRAME, _) if value.is_none() => {}
            (Opcode::PUT | Opcode::BINPUT | Opcode::LONG_BINPUT | Opcode::MEMOIZE, _)
                if value.is_some() => {}
            (
                Opcode::INT | Opcode::BININT | Opcode::BININT1 | Opcode::BININT2 | Opcode::LONG,
                arg,
            ) if value.is_none() => {
                value = Some(match arg {
                    Arg::Int(v) => *v as i128,
                    Arg::Bool(b) => *b as i128,
                    Arg::BigDecimal(text) => {
                        std::str::from_utf8(text).ok()?.parse::<i128>().ok()?
                    }
                    Arg::BigRadix { .. } => return None,
                    _ => return None,
                });
            }
            (Opcode::LONG1 | Opcode::LONG4, Arg::LongBytes(bytes)) if value.is_none() => {
                value = Some(long_bytes(bytes)?);
            }
            (Opcode::STOP, _) => return value.map(|v| (PickledInt(v), instr.end)),
            _ => return None,
        }
    }
    None
}

/// Decodes LONG1/LONG4 little-endian two's complement bytes into an `i128`.
fn long_bytes(bytes: &[u8]) -> Option<i128> {
    if bytes.is_empty() {
        return Some(0);
    }
    if bytes.len() > 16 {
        return None;
    }
    let negative = bytes[bytes.len() - 1] & 0x80 != 0;
    let mut buf = [if negative { 0xff } else { 0 }; 16];
    buf[..bytes.len()].copy_from_slice(bytes);
    Some(i128::from_le_bytes(buf))
}

/// When the stream at `start` is torch's legacy magic number, the offset past it.
pub fn magic_stream_end(data: &[u8], start: usize) -> Option<usize> {
    match pickled_int(data, start) {
        Some((PickledInt(v), end)) if v == MAGIC_NUMBER as i128 => Some(end),
        _ => None,
    }
}

/// Scans the five streams of a legacy checkpoint. Whatever follows the last
/// one is storage data and is not reported.
pub(crate) fn scan_legacy(data: &[u8], loc: &Loc, sc: &mut Scanner<'_>) {
    let mut pos = 0;
    for name in STREAM_NAMES {
        let Some(a) = sc.single_stream(data, pos, loc, &loc.named(name)) else {
            return;
        };
        match a.end {
            Some(end) => pos = end,
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::FindingCode;
    use crate::{scan_bytes, Limits, Policy, Verdict};

    fn legacy(main: &[u8]) -> Vec<u8> {
        let mut d = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.".to_vec();
        d.extend_from_slice(b"\x80\x02M\xe9\x03.");
        d.extend_from_slice(b"\x80\x02}q\x00X\x0d\x00\x00\x00little_endianq\x01\x88s.");
        d.extend_from_slice(main);
        d.extend_from_slice(b"\x80\x02]q\x00X\x01\x00\x00\x000q\x01a.");
        // Raw storage: element count, then the elements; not a pickle.
        d.extend_from_slice(&3u64.to_le_bytes());
        d.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0x80, 0x3f, 1, 2, 3, 4]);
        d
    }

    #[test]
    fn magic_number_forms() {
        assert_eq!(
            magic_stream_end(
                b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.",
                0
            ),
            Some(15)
        );
        assert!(magic_stream_end(b"L119547037146038801333356L\n.", 0).is_some());
        assert!(magic_stream_end(b"\x80\x02K\x01.", 0).is_none());
        assert_eq!(
            pickled_int(b"\x80\x02K\x07q\x00.", 0),
            Some((PickledInt(7), 7))
        );
        assert_eq!(
            pickled_int(b"\x80\x02\x8a\x01\xff.", 0).unwrap().0,
            PickledInt(-1)
        );
    }

    #[test]
    fn legacy_checkpoint_is_safe_and_storage_is_not_trailing_data() {
        let d = legacy(b"\x80\x02}q\x00X\x01\x00\x00\x00wq\x01K\x01s.");
        let r = scan_bytes(&d, "t", &Policy::default(), &Limits::default());
        assert_eq!(r.format, "torch-legacy");
        assert_eq!(r.streams.len(), 5);
        assert_eq!(r.streams[3].name, "pickle");
        assert_eq!(r.verdict, Verdict::Safe, "{:?}", r.findings);
        assert!(r
            .all_findings()
            .all(|f| f.code != FindingCode::TrailingData));
    }

    #[test]
    fn legacy_checkpoint_with_payload_is_dangerous() {
        let d = legacy(b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00idq\x00\x85R.");
        let r = scan_bytes(&d, "t", &Policy::default(), &Limits::default());
        assert_eq!(r.format, "torch-legacy");
        assert_eq!(r.verdict, Verdict::Dangerous);
        let f = r.streams[3]
            .findings
            .iter()
            .find(|f| f.name == "system")
            .unwrap();
        // Absolute file offset of the GLOBAL opcode.
        assert_eq!(&d[f.offset as usize..f.offset as usize + 3], b"cos");
    }
}
