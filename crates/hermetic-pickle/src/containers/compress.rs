//! Compressed files: gzip, bz2, xz, lzma ("alone"), zlib and joblib's old
//! `ZF` z-files, recognised by the magic numbers joblib's `_detect_compressor`
//! and the `gzip`/`bz2`/`lzma` modules use.
//!
//! Decompression output is bounded by the scan's budget (at most
//! [`crate::Limits::max_decompressed`] for the whole file); data that is
//! clearly not a pickle container is abandoned after its first 64 KiB.

use super::{scan_data, sniff, Kind, Loc, Scanner};
use crate::policy::Verdict;
use std::io::{self, Read, Write};

/// How much decompressed output is looked at before deciding whether the rest
/// is worth decompressing.
pub const SNIFF_LEN: usize = 64 * 1024;

/// A compression format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    Gzip,
    Bz2,
    Xz,
    /// The legacy `.lzma` ("alone") format joblib writes.
    Lzma,
    Zlib,
    /// joblib < 0.10 z-files: `ZF`, a hex length padded to 19 bytes, zlib data.
    ZFile,
    /// An LZ4 frame (joblib with the `lz4` package).
    Lz4,
}

impl Compression {
    /// The format whose magic number starts `data`.
    pub fn detect(data: &[u8]) -> Option<Compression> {
        match data {
            [0x1f, 0x8b, ..] => Some(Compression::Gzip),
            [b'B', b'Z', b'h', b'1'..=b'9', ..] => Some(Compression::Bz2),
            [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Some(Compression::Xz),
            [0x5d, 0x00, 0x00, ..] => Some(Compression::Lzma),
            [0x78, flg, ..] if (0x7800u16 | *flg as u16) % 31 == 0 && flg & 0x20 == 0 => {
                Some(Compression::Zlib)
            }
            [b'Z', b'F', rest @ ..]
                if rest.len() >= ZFILE_LEN_FIELD && is_zfile_length(&rest[..ZFILE_LEN_FIELD]) =>
            {
                Some(Compression::ZFile)
            }
            [0x04, 0x22, 0x4d, 0x18, ..] => Some(Compression::Lz4),
            _ => None,
        }
    }

    /// The name used in formats (`joblib+zlib`) and stream names (`zlib:pickle`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Bz2 => "bz2",
            Compression::Xz => "xz",
            Compression::Lzma => "lzma",
            Compression::Zlib => "zlib",
            Compression::ZFile => "zfile",
            Compression::Lz4 => "lz4",
        }
    }
}

/// `len(hex(2**64))`: the width of a z-file's length field.
const ZFILE_LEN_FIELD: usize = 19;

fn is_zfile_length(field: &[u8]) -> bool {
    let text = field.trim_ascii();
    let digits = text
        .strip_prefix(b"0x")
        .or_else(|| text.strip_prefix(b"0X"))
        .unwrap_or(text);
    !digits.is_empty() && digits.iter().all(|b| b.is_ascii_hexdigit() || *b == b'_')
}

/// Decides from the first decompressed bytes whether to go on.
pub type Gate<'g> = &'g dyn Fn(&[u8]) -> bool;

/// The result of a bounded decompression.
#[derive(Debug, Default)]
pub struct Decompressed {
    /// What was produced, at most the bound.
    pub data: Vec<u8>,
    /// Set when the compressed data is corrupt or truncated; `data` holds what
    /// came out before.
    pub error: Option<String>,
    /// The output would have been larger than the bound.
    pub limit_hit: bool,
    /// The gate decided after the first bytes that the rest is not needed.
    pub abandoned: bool,
}

struct Sink<'g> {
    buf: Vec<u8>,
    max: u64,
    limit_hit: bool,
    gate: Option<Gate<'g>>,
    abandoned: bool,
}

impl Write for Sink<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if b.is_empty() {
            return Ok(0);
        }
        let room = self.max.saturating_sub(self.buf.len() as u64);
        if room == 0 {
            self.limit_hit = true;
            return Err(io::Error::other("decompression limit reached"));
        }
        let n = b.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        self.buf.extend_from_slice(&b[..n]);
        if self.buf.len() >= SNIFF_LEN {
            if let Some(gate) = self.gate.take() {
                if !gate(&self.buf) {
                    self.abandoned = true;
                    return Err(io::Error::other("not a pickle container"));
                }
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Decompresses `data` as `kind`, producing at most `max` bytes.
pub fn decompress(data: &[u8], kind: Compression, max: u64) -> Decompressed {
    decompress_gated(data, kind, max, None)
}

/// Like [`decompress`]; once [`SNIFF_LEN`] bytes are out, `gate` decides from
/// them whether to go on.
pub fn decompress_gated(
    data: &[u8],
    kind: Compression,
    max: u64,
    gate: Option<Gate<'_>>,
) -> Decompressed {
    let mut sink = Sink {
        buf: Vec::new(),
        max,
        limit_hit: false,
        gate,
        abandoned: false,
    };
    let result: Result<(), String> = match kind {
        Compression::Gzip => copy(flate2::read::MultiGzDecoder::new(data), &mut sink),
        Compression::Zlib => copy(flate2::read::ZlibDecoder::new(data), &mut sink),
        Compression::Bz2 => copy(bzip2::read::MultiBzDecoder::new(data), &mut sink),
        Compression::Xz => {
            let mut input = data;
            lzma_rs::xz_decompress(&mut input, &mut sink).map_err(|e| e.to_string())
        }
        Compression::Lzma => {
            let mut input = data;
            let options = lzma_rs::decompress::Options {
                unpacked_size: lzma_rs::decompress::UnpackedSize::ReadFromHeader,
                memlimit: Some(usize::try_from(max).unwrap_or(usize::MAX).max(1 << 20)),
                allow_incomplete: false,
            };
            lzma_rs::lzma_decompress_with_options(&mut input, &mut sink, &options)
                .map_err(|e| e.to_string())
        }
        Compression::ZFile => {
            let mut start = 2 + ZFILE_LEN_FIELD;
            if data.get(start) == Some(&b' ') {
                start += 1;
            }
            let body = data.get(start..).unwrap_or(&[]);
            copy(flate2::read::ZlibDecoder::new(body), &mut sink)
        }
        Compression::Lz4 => copy(lz4_flex::frame::FrameDecoder::new(data), &mut sink),
    };
    let error = match result {
        Ok(()) => None,
        Err(_) if sink.limit_hit || sink.abandoned => None,
        Err(e) => Some(e),
    };
    Decompressed {
        data: sink.buf,
        error,
        limit_hit: sink.limit_hit,
        abandoned: sink.abandoned,
    }
}

fn copy<R: Read>(mut reader: R, sink: &mut Sink<'_>) -> Result<(), String> {
    io::copy(&mut reader, sink)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Whether decompressed bytes may hold a pickle: anything [`sniff`] knows, or
/// a prefix that parses as pickle opcodes up to where it was cut.
fn worth_scanning(prefix: &[u8]) -> bool {
    sniff(prefix) != Kind::None || crate::scan::opcodes_reach_end(prefix)
}

/// Decompresses and scans. `None` when the data does not decompress at all,
/// so it is not this format.
pub(crate) fn scan_compressed(
    data: &[u8],
    kind: Compression,
    loc: &Loc,
    sc: &mut Scanner<'_>,
) -> Option<String> {
    let max = sc.decompress_budget;
    let gate: Gate<'_> = &worth_scanning;
    let out = decompress_gated(data, kind, max, Some(gate));
    if out.data.is_empty() && !out.limit_hit {
        return None;
    }
    sc.decompress_budget = sc.decompress_budget.saturating_sub(out.data.len() as u64);
    if out.abandoned || (out.data.len() < SNIFF_LEN && !worth_scanning(&out.data)) {
        return Some(kind.name().into());
    }
    if out.limit_hit {
        sc.finding(
            loc,
            Verdict::Dangerous,
            "decompression_limit",
            0,
            format!(
                "{} data decompresses to more than the {max} bytes allowed; only the first {} bytes were scanned",
                kind.name(),
                out.data.len()
            ),
        );
    }
    if let Some(e) = &out.error {
        sc.finding(
            loc,
            Verdict::Suspicious,
            "malformed_container",
            0,
            format!(
                "{} data is corrupt after {} decompressed bytes: {e}",
                kind.name(),
                out.data.len()
            ),
        );
    }
    let inner = scan_data(&out.data, &loc.decompressed(kind.name()), sc);
    Some(if inner == "none" {
        kind.name().to_string()
    } else {
        format!("{inner}+{}", kind.name())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{scan_bytes, Limits, Policy};

    fn pickle() -> Vec<u8> {
        b"\x80\x04\x95\x0a\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s.".to_vec()
    }

    fn evil() -> Vec<u8> {
        b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00idq\x00\x85R.".to_vec()
    }

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(3));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn bz2(data: &[u8]) -> Vec<u8> {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        lzma_rs::xz_compress(&mut &data[..], &mut out).unwrap();
        out
    }

    fn lzma(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        lzma_rs::lzma_compress(&mut &data[..], &mut out).unwrap();
        out
    }

    fn lz4(data: &[u8]) -> Vec<u8> {
        let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn scan(data: &[u8]) -> crate::FileReport {
        scan_bytes(data, "t", &Policy::default(), &Limits::default())
    }

    #[test]
    fn every_compression_round_trips() {
        for (name, f) in [
            ("gzip", gzip as fn(&[u8]) -> Vec<u8>),
            ("zlib", zlib),
            ("bz2", bz2),
            ("xz", xz),
            ("lzma", lzma),
            ("lz4", lz4),
        ] {
            let r = scan(&f(&pickle()));
            assert_eq!(r.format, format!("pickle+{name}"), "{name}");
            assert_eq!(r.verdict, Verdict::Safe, "{name}");
            assert_eq!(r.streams[0].name, format!("{name}:pickle"));
            let r = scan(&f(&evil()));
            assert_eq!(r.verdict, Verdict::Dangerous, "{name}");
        }
    }

    #[test]
    fn lz4_bomb_stops_at_the_limit() {
        let c = lz4(&vec![b'N'; 1_000_000]);
        assert_eq!(Compression::detect(&c), Some(Compression::Lz4));
        let d = decompress(&c, Compression::Lz4, 1000);
        assert!(d.limit_hit);
        assert_eq!(d.data.len(), 1000);
        let mut broken = lz4(&evil());
        let n = broken.len();
        broken[n - 3] ^= 0xff;
        assert!(decompress(&broken, Compression::Lz4, 1 << 20)
            .error
            .is_some());
    }

    #[test]
    fn zfile_is_decoded() {
        let mut d = b"ZF".to_vec();
        let body = pickle();
        d.extend_from_slice(format!("{:<19}", format!("0x{:x}", body.len())).as_bytes());
        d.extend_from_slice(&zlib(&body));
        assert_eq!(Compression::detect(&d), Some(Compression::ZFile));
        assert_eq!(scan(&d).format, "pickle+zfile");
    }

    #[test]
    fn decompression_limit_is_dangerous() {
        let big = vec![b'N'; 100_000];
        let c = gzip(&big);
        let limits = Limits {
            max_decompressed: 1000,
            ..Limits::default()
        };
        let r = scan_bytes(&c, "t", &Policy::default(), &limits);
        assert!(r
            .findings
            .iter()
            .any(|f| f.code == "decompression_limit" && f.severity == Verdict::Dangerous));
        let d = decompress(&c, Compression::Gzip, 1000);
        assert!(d.limit_hit);
        assert_eq!(d.data.len(), 1000);
    }

    #[test]
    fn compressed_text_is_not_a_pickle() {
        let text = b"just some words\n".repeat(10_000);
        let r = scan(&gzip(&text));
        assert_eq!(r.format, "gzip");
        assert!(r.streams.is_empty());
        assert_eq!(r.verdict, Verdict::Safe);
    }

    #[test]
    fn corrupt_stream_is_reported() {
        let mut c = gzip(&evil());
        let n = c.len();
        c.truncate(n - 12);
        let r = scan(&c);
        // Either nothing came out (not gzip at all), or what came out is scanned.
        assert!(r.format == "none" || r.verdict >= Verdict::Suspicious);
        assert!(Compression::detect(b"x\x9c").is_some());
        assert!(Compression::detect(b"xa").is_none());
        assert_eq!(
            decompress(b"\x1f\x8bgarbage", Compression::Gzip, 100)
                .data
                .len(),
            0
        );
    }
}
