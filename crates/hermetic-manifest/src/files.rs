//! The blobs of a file as the firewall sees them when a loader reads it, for
//! `hermetic manifest add` and `check`.
//!
//! They are the scanner's streams, with one difference: joblib's unpickler
//! reads array data straight from its file in the middle of the pickle, so
//! for a joblib dump the blob is the whole span the scanner's joblib reader
//! finds, opcodes and inline arrays together, through the final `STOP`:
//! every byte that unpickler consumes. (The scanner's own id for such a
//! stream hashes the opcodes only.)
//!
//! A TorchScript archive is loaded by torch's C++ code, which runs the
//! TorchScript it carries, so the firewall decides on the whole file: its
//! blob is every byte of the file, listed in addition to its streams. So is
//! a zip the scanner cannot vouch for (see [`UNCERTAIN_ZIP_FINDINGS`]), which
//! the firewall's `torch.load` gate also decides on as a whole file.

use crate::blob::BlobId;
use hermetic_pickle::containers::compress::{decompress, Compression};
use hermetic_pickle::containers::joblib::is_joblib;
use hermetic_pickle::{FileReport, FindingCode, Limits, Policy, StreamReport};
use std::path::Path;

/// One blob of a file.
#[derive(Clone, Debug)]
pub struct FileBlob<'r> {
    pub id: BlobId,
    pub size: u64,
    /// The scanner's stream this blob stands for.
    pub stream: &'r StreamReport,
    /// Whether the id covers a joblib span (opcodes and inline arrays)
    /// rather than the scanner's stream id.
    pub whole_payload: bool,
    /// Whether the id covers the whole file (a TorchScript archive); then
    /// `stream` is the archive's first stream, for its verdict.
    pub whole_file: bool,
}

/// Whether the scanner calls the file a TorchScript archive (or found
/// TorchScript code in it): torch.jit.load, and torch.load, which hands
/// such archives to it, run its code, so its blob is the whole file.
pub fn is_torchscript(report: &FileReport) -> bool {
    report.format == "torchscript"
        || report
            .all_findings()
            .any(|f| f.code == FindingCode::TorchscriptCode)
}

/// Findings after which the scanner cannot rule out that torch's zip
/// reader (miniz) sees records it does not, a `constants.pkl` among them:
/// `torch.load` of such a zip is decided as a TorchScript archive, the
/// whole file (the Python gate, `hermetic.firewall._code`, keeps the same
/// list).
pub const UNCERTAIN_ZIP_FINDINGS: &[FindingCode] = &[
    FindingCode::AmbiguousZip,
    FindingCode::PolyglotPickleZip,
    FindingCode::LimitExceeded,
];

/// Whether the firewall decides on the whole file when torch loads it: a
/// TorchScript archive, or a file starting with a zip local header
/// (torch.serialization's `_is_zipfile`) the scanner cannot vouch for.
fn whole_file_blob(report: &FileReport, data: &[u8]) -> bool {
    is_torchscript(report)
        || (data.starts_with(b"PK\x03\x04")
            && report
                .all_findings()
                .any(|f| UNCERTAIN_ZIP_FINDINGS.contains(&f.code)))
}

fn joblib_payload(path: &Path, format: &str) -> Option<Vec<u8>> {
    let data = std::fs::read(path).ok()?;
    if format == "joblib" {
        return Some(data);
    }
    let kind = Compression::detect(&data)?;
    let out = decompress(&data, kind, Limits::default().max_decompressed);
    (out.error.is_none() && !out.limit_hit && !out.abandoned).then_some(out.data)
}

/// For bytes a joblib unpickler reads from their start: `None` when they
/// are not a joblib dump (no array wrapper before the first `STOP`), else
/// the end of the dump's span as the scanner's joblib reader finds it, or
/// `Some(None)` when it cannot tell yet (the data may be truncated).
pub fn joblib_span(data: &[u8]) -> Option<Option<usize>> {
    if !is_joblib(data, 0) {
        return None;
    }
    let r = hermetic_pickle::scan_bytes(data, "<joblib>", &Policy::default(), &Limits::default());
    if !r.format.starts_with("joblib") {
        return Some(None);
    }
    let first = r.streams.first();
    let truncated = first.is_some_and(|s| {
        s.findings
            .iter()
            .any(|f| f.code == FindingCode::TruncatedStream)
    });
    Some(
        first
            .filter(|_| !truncated)
            .and_then(|s| usize::try_from(s.offset.checked_add(s.length)?).ok())
            .filter(|&end| end <= data.len()),
    )
}

/// The blobs of the scanned file at `path`.
pub fn file_blobs<'r>(path: &Path, report: &'r FileReport) -> Vec<FileBlob<'r>> {
    let payload = if report.format.starts_with("joblib") {
        joblib_payload(path, &report.format)
    } else {
        None
    };
    let mut blobs: Vec<FileBlob<'r>> = report
        .streams
        .iter()
        .filter_map(|s| {
            let outer = !s.name.contains(":array[");
            let span = payload.as_ref().filter(|_| outer).and_then(|p| {
                let start = usize::try_from(s.offset).ok()?;
                let end = start.checked_add(usize::try_from(s.length).ok()?)?;
                p.get(start..end)
            });
            match span {
                Some(bytes) => Some(FileBlob {
                    id: BlobId::of(bytes),
                    size: bytes.len() as u64,
                    stream: s,
                    whole_payload: true,
                    whole_file: false,
                }),
                _ => BlobId::parse(&s.sha256).ok().map(|id| FileBlob {
                    id,
                    size: s.length,
                    stream: s,
                    whole_payload: false,
                    whole_file: false,
                }),
            }
        })
        .collect();
    let candidate = is_torchscript(report)
        || report
            .all_findings()
            .any(|f| UNCERTAIN_ZIP_FINDINGS.contains(&f.code));
    if let (true, Some(stream)) = (candidate, report.streams.first()) {
        if let Ok(data) = std::fs::read(path) {
            if whole_file_blob(report, &data) {
                blobs.push(FileBlob {
                    id: BlobId::of(&data),
                    size: data.len() as u64,
                    stream,
                    whole_payload: false,
                    whole_file: true,
                });
            }
        }
    }
    blobs
}
