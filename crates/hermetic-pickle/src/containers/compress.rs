//! Compressed files: gzip, bz2, xz, lzma ("alone"), zlib and joblib's old
//! `ZF` z-files, recognised by the magic numbers joblib's `_detect_compressor`
//! and the `gzip`/`bz2`/`lzma` modules use.
//!
//! Decompression output is bounded by the scan's budget (at most
//! [`crate::Limits::max_decompressed`] for the whole file); data that is
//! clearly not a pickle container is abandoned after its first 64 KiB.

use super::{scan_data, sniff, Kind, Loc, Scanner};
use crate::codes::FindingCode;
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
            // joblib's prefix is two bytes; lzma's "alone" header then holds
            // the rest of the dictionary size, which liblzma accepts whatever
            // its value.
            [0x5d, 0x00, ..] => Some(Compression::Lzma),
            [0x78, flg, ..] if (0x7800u16 | *flg as u16) % 31 == 0 && flg & 0x20 == 0 => {
                Some(Compression::Zlib)
            }
            [b'Z', b'F', rest @ ..]
                if is_zfile_length(&rest[..rest.len().min(ZFILE_LEN_FIELD)]) =>
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

/// joblib reads the length with `int(field, 16)` and passes it to
/// `zlib.decompress` as the initial buffer size, so any field Python's
/// `int` accepts (whitespace, a sign, `0x`, underscores) and that is not
/// negative makes a z-file.
fn is_zfile_length(field: &[u8]) -> bool {
    crate::text::py_int_bytes(field, 16).is_some_and(|n| n >= 0)
}

/// The data of a whole z-file, as joblib's `read_zfile` returns it: the
/// stream decompressed (at most `max` bytes), which must be exactly as long
/// as the header says (joblib asserts that).
pub fn read_zfile(data: &[u8], max: u64) -> Result<Vec<u8>, String> {
    if Compression::detect(data) != Some(Compression::ZFile) {
        return Err("not a joblib z-file (`ZF` and a hex length)".into());
    }
    let field = &data[2..data.len().min(2 + ZFILE_LEN_FIELD)];
    let length =
        crate::text::py_int_bytes(field, 16).ok_or("a z-file length that is not a hex number")?;
    let d = decompress(data, Compression::ZFile, max);
    if d.limit_hit {
        return Err(format!("the z-file decompresses to more than {max} bytes"));
    }
    if let Some(e) = d.error {
        return Err(format!("the z-file's zlib data is corrupt: {e}"));
    }
    if i128::try_from(d.data.len()).ok() != Some(length) {
        return Err(format!(
            "the z-file says {length} bytes and holds {}",
            d.data.len()
        ));
    }
    Ok(d.data)
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
        Compression::Xz | Compression::Lzma => lzma_streams(data, &mut sink),
        Compression::ZFile => {
            let mut start = 2 + ZFILE_LEN_FIELD;
            if data.get(start) == Some(&b' ') {
                start += 1;
            }
            let body = data.get(start..).unwrap_or(&[]);
            copy(flate2::read::ZlibDecoder::new(body), &mut sink)
        }
        Compression::Lz4 => lz4_frames(data, &mut sink),
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

/// `lzma.LZMAFile` (what joblib opens `.xz` and `.lzma` files with) reads
/// concatenated streams, each in whichever format it starts like
/// (`FORMAT_AUTO`: xz by its magic, else "alone"), and ignores trailing data
/// that does not decode. This is the same liblzma, driven the same way.
fn lzma_streams(data: &[u8], sink: &mut Sink<'_>) -> Result<(), String> {
    use liblzma::stream::{Action, Error as LzmaError, Status, Stream};
    let mut input = data;
    let mut buf = vec![0u8; 64 * 1024];
    let mut first = true;
    while !input.is_empty() {
        let mut stream = Stream::new_auto_decoder(LZMA_MEMLIMIT, 0).map_err(|e| e.to_string())?;
        loop {
            let (in0, out0) = (stream.total_in(), stream.total_out());
            let action = if input.is_empty() {
                Action::Finish
            } else {
                Action::Run
            };
            let status = stream.process(input, &mut buf, action);
            let used = (stream.total_in() - in0) as usize;
            let made = (stream.total_out() - out0) as usize;
            input = &input[used..];
            sink.write_all(&buf[..made]).map_err(|e| e.to_string())?;
            match status {
                Ok(Status::StreamEnd) => break,
                Ok(_) if used == 0 && made == 0 && input.is_empty() => {
                    return Err("the data ends inside an lzma stream".into());
                }
                Ok(_) => {}
                Err(LzmaError::MemLimit) => {
                    sink.limit_hit = true;
                    return Err(format!(
                        "an lzma stream needs more than {LZMA_MEMLIMIT} bytes of memory to decode"
                    ));
                }
                // Python drops a stream after the first that does not decode;
                // what it produced before failing was read all the same.
                Err(_) if !first => return Ok(()),
                Err(e) => return Err(e.to_string()),
            }
        }
        first = false;
    }
    Ok(())
}

/// What one lzma stream may take to decode (its dictionary, mostly). Python
/// has no such bound, so a stream over it is reported as a limit, never
/// taken as clean.
const LZMA_MEMLIMIT: u64 = 256 << 20;

/// python-lz4's `LZ4FrameFile` (joblib's lz4 reader) reads concatenated
/// frames, skipping skippable frames (magic `0x184D2A50`-`5F`, a length,
/// that many bytes), and ignores trailing data that does not decode: a
/// payload in a second frame, after an empty or skippable one, is read.
fn lz4_frames(data: &[u8], sink: &mut Sink<'_>) -> Result<(), String> {
    let mut input = data;
    let mut first = true;
    while !input.is_empty() {
        if let Some(magic) = super::le_u32(input, 0).filter(|m| m & 0xFFFF_FFF0 == 0x184D_2A50) {
            let _ = magic;
            let Some(len) = super::le_u32(input, 4) else {
                return Ok(());
            };
            let skip = 8usize.saturating_add(len as usize);
            input = input.get(skip..).unwrap_or(&[]);
            continue;
        }
        let before = input.len();
        let mut reader = &mut input;
        let result = copy(lz4_flex::frame::FrameDecoder::new(&mut reader), sink);
        match result {
            Ok(()) if input.len() < before => first = false,
            Ok(()) => return Ok(()),
            Err(e) if first || sink.limit_hit || sink.abandoned => return Err(e),
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

fn copy<R: Read>(mut reader: R, sink: &mut Sink<'_>) -> Result<(), String> {
    io::copy(&mut reader, sink)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Whether decompressed bytes may hold a pickle: anything [`sniff`] knows, or
/// a prefix that parses as pickle opcodes up to where it was cut.
fn worth_scanning(prefix: &[u8]) -> bool {
    sniff(prefix) != Kind::None || crate::streams::opcodes_reach_end(prefix)
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
        // Not a pickle container: joblib's unpickler fails within these
        // bytes, but runs what comes before the failure, so they are read.
        let inner = scan_data(&out.data, &loc.decompressed(kind.name()), sc);
        return Some(if inner == "none" {
            kind.name().to_string()
        } else {
            format!("{inner}+{}", kind.name())
        });
    }
    if out.limit_hit {
        sc.finding(
            loc,
            Verdict::Dangerous,
            FindingCode::DecompressionLimit,
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
            FindingCode::MalformedContainer,
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
        let stream =
            liblzma::stream::Stream::new_easy_encoder(6, liblzma::stream::Check::Crc64).unwrap();
        let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn lzma(data: &[u8]) -> Vec<u8> {
        let opts = liblzma::stream::LzmaOptions::new_preset(6).unwrap();
        let stream = liblzma::stream::Stream::new_lzma_encoder(&opts).unwrap();
        let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
        e.write_all(data).unwrap();
        e.finish().unwrap()
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

    /// joblib opens `.xz`/`.lzma` with `lzma.LZMAFile`, which reads every
    /// concatenated stream: the payload may sit in the second.
    #[test]
    fn concatenated_lzma_streams_are_all_read() {
        let e = evil();
        let (a, b) = e.split_at(9);
        for (kind, f) in [("xz", xz as fn(&[u8]) -> Vec<u8>), ("lzma", lzma)] {
            let mut d = f(a);
            d.extend(f(b));
            let out = decompress(&d, Compression::detect(&d).unwrap(), 1 << 20);
            assert_eq!(out.data, e, "{kind}");
            let r = scan(&d);
            assert_eq!(r.verdict, Verdict::Dangerous, "{kind}");
            assert!(r.all_findings().any(|f| f.module == "os"), "{kind}: {r:?}");
            // Trailing data that is not a stream is ignored, as Python does.
            d.extend_from_slice(b"garbage");
            assert_eq!(decompress(&d, Compression::Lzma, 1 << 20).data, e, "{kind}");
        }
        // xz then alone, as FORMAT_AUTO reads them.
        let mut d = xz(a);
        d.extend(lzma(b));
        assert_eq!(decompress(&d, Compression::Xz, 1 << 20).data, e);
    }

    /// python-lz4 reads every frame, skipping skippable ones.
    #[test]
    fn every_lz4_frame_is_read() {
        let e = evil();
        let (a, b) = e.split_at(9);
        let mut d = lz4(b"");
        d.extend(lz4(a));
        d.extend_from_slice(&0x184D_2A5Au32.to_le_bytes());
        d.extend_from_slice(&3u32.to_le_bytes());
        d.extend_from_slice(b"xyz");
        d.extend(lz4(b));
        assert_eq!(decompress(&d, Compression::Lz4, 1 << 20).data, e);
        assert_eq!(scan(&d).verdict, Verdict::Dangerous);
        d.extend_from_slice(b"trailing garbage");
        assert_eq!(decompress(&d, Compression::Lz4, 1 << 20).data, e);
    }

    /// joblib routes any file starting `5d 00` to LZMAFile; the third byte
    /// belongs to the dictionary size.
    #[test]
    fn lzma_prefix_is_as_wide_as_joblibs() {
        assert_eq!(
            Compression::detect(b"\x5d\x00\x18\x00\x00"),
            Some(Compression::Lzma)
        );
    }

    /// joblib parses a z-file's length with `int(field, 16)`.
    #[test]
    fn zfile_lengths_python_accepts() {
        for field in [
            &b"0x1f              "[..],
            b"\x0b1f               ",
            b"+1_f               ",
        ] {
            let mut d = b"ZF".to_vec();
            d.extend_from_slice(&field[..17.min(field.len())]);
            d.resize(2 + ZFILE_LEN_FIELD, b' ');
            assert_eq!(
                Compression::detect(&d),
                Some(Compression::ZFile),
                "{field:?}"
            );
        }
        let mut d = b"ZF-1".to_vec();
        d.resize(2 + ZFILE_LEN_FIELD, b' ');
        assert_eq!(Compression::detect(&d), None);
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
        assert!(
            r.findings
                .iter()
                .any(|f| f.code == FindingCode::DecompressionLimit
                    && f.severity == Verdict::Dangerous)
        );
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
