//! Container readers: find every pickle stream a real loader would unpickle.
//!
//! A container is recognised by its content, never by its file name, and in
//! the order the loaders themselves test for it: `torch.load` checks for a
//! zip local header at offset 0, then tries a tar archive, then reads pickle
//! streams; `np.load` checks for the `.npy` magic or a zip; `joblib.load`
//! checks compression magics; Python's `zipfile` finds the end of central
//! directory record at the end of the file.
//!
//! Every reader treats its input as hostile: lengths are checked against the
//! bytes that remain before anything is sliced, arithmetic is checked,
//! nothing is allocated from an untrusted length, and nesting is bounded by
//! [`Limits::max_nesting`].

pub mod compress;
pub mod joblib;
pub mod npy;
pub mod pyliteral;
pub mod safetensors;
pub mod tar;
pub mod torch_legacy;
pub mod zip;

#[cfg(test)]
mod testutil;

use crate::analysis::{analyze_stream, StreamAnalysis};
use crate::codes::FindingCode;
use crate::policy::{Policy, Verdict};
use crate::report::FileReport;
use crate::streams::{looks_like_pickle, scan_pickle_sequence};
use crate::Limits;
use compress::Compression;

/// Why a container could not be read. Offsets are relative to the start of
/// the container's bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContainerError {
    #[error("{what} truncated at byte {offset}: {needed} more bytes needed")]
    Truncated {
        what: &'static str,
        offset: u64,
        needed: u64,
    },
    #[error("bad {what} signature at byte {offset}")]
    BadSignature { what: &'static str, offset: u64 },
    #[error("malformed {what} at byte {offset}: {reason}")]
    Malformed {
        what: &'static str,
        offset: u64,
        reason: String,
    },
    #[error("{what} exceeds the limit of {limit} at byte {offset}")]
    LimitExceeded {
        what: &'static str,
        offset: u64,
        limit: u64,
    },
}

impl ContainerError {
    /// The finding a scan reports the error as where nothing more specific
    /// applies: `limit_exceeded` for a bound, else `malformed_container`.
    pub fn code(&self) -> FindingCode {
        match self {
            ContainerError::LimitExceeded { .. } => FindingCode::LimitExceeded,
            ContainerError::Truncated { .. }
            | ContainerError::BadSignature { .. }
            | ContainerError::Malformed { .. } => FindingCode::MalformedContainer,
        }
    }

    /// The byte offset the error refers to.
    pub fn offset(&self) -> u64 {
        match self {
            ContainerError::Truncated { offset, .. }
            | ContainerError::BadSignature { offset, .. }
            | ContainerError::Malformed { offset, .. }
            | ContainerError::LimitExceeded { offset, .. } => *offset,
        }
    }
}

/// What a file is, decided from its first bytes (and, for a zip with data
/// before it, its last 64 KiB) without scanning it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A zip local header (or an empty archive's directory) at offset 0.
    Zip,
    Npy,
    Compressed(Compression),
    Safetensors,
    Tar,
    Pickle,
    /// A zip archive that does not start at offset 0 (`zipfile` still opens it).
    EmbeddedZip,
    None,
}

/// Decides what kind of file `data` is, cheaply and in the loaders' order.
/// Compressed data is not decompressed.
pub fn sniff(data: &[u8]) -> Kind {
    if data.starts_with(zip::LOCAL_SIG) || data.starts_with(zip::EOCD_SIG) {
        Kind::Zip
    } else if data.starts_with(npy::MAGIC) {
        Kind::Npy
    } else if is_safetensors(data) {
        Kind::Safetensors
    } else if let Some(c) = Compression::detect(data) {
        Kind::Compressed(c)
    } else if tar::is_tar(data) {
        Kind::Tar
    } else if looks_like_pickle(data) {
        Kind::Pickle
    } else if zip::ZipArchive::parse(data, 1 << 16).is_ok_and(|a| !a.entries.is_empty()) {
        Kind::EmbeddedZip
    } else {
        Kind::None
    }
}

/// Whether the data is a safetensors file: a little-endian u64 header length
/// that fits the file, then a JSON object. Only the first and last bytes of
/// the header are looked at.
pub fn is_safetensors(data: &[u8]) -> bool {
    let Some(n) = le_u64(data, 0) else {
        return false;
    };
    let Ok(n) = usize::try_from(n) else {
        return false;
    };
    if n < 2 || data.get(8) != Some(&b'{') {
        return false;
    }
    let Some(header) = n.checked_add(8).and_then(|end| data.get(8..end)) else {
        return false;
    };
    header
        .iter()
        .rposition(|&b| b != b' ')
        .is_some_and(|i| header[i] == b'}')
}

/// Where a piece of data sits inside the file: how its offsets map to file
/// offsets and how its streams are named.
#[derive(Clone, Debug, Default)]
pub(crate) struct Loc {
    /// Added to offsets within this data. Zero inside decompressed data, whose
    /// offsets are into the decompressed bytes (the name says so).
    pub base: u64,
    /// The names of the enclosing containers, each followed by `:`.
    pub prefix: String,
    /// The entry this data is, when it is a member of an archive.
    pub leaf: Option<String>,
    /// How many containers enclose this data.
    pub depth: u32,
}

impl Loc {
    /// The prefix for names inside this data.
    pub fn scope(&self) -> String {
        match &self.leaf {
            Some(l) => format!("{}{l}:", self.prefix),
            None => self.prefix.clone(),
        }
    }

    /// The name of this data when it is itself a pickle stream.
    pub fn stream_name(&self) -> String {
        match &self.leaf {
            Some(l) => format!("{}{l}", self.prefix),
            None => format!("{}pickle", self.prefix),
        }
    }

    /// A name for a part of this data (`payload`, `sys_info`, ...).
    pub fn named(&self, local: &str) -> String {
        format!("{}{local}", self.scope())
    }

    /// A member of this container whose bytes are stored as they are at
    /// `offset` within this data.
    pub fn member(&self, name: &str, offset: u64) -> Loc {
        Loc {
            base: self.base.saturating_add(offset),
            prefix: self.scope(),
            leaf: Some(name.to_string()),
            depth: self.depth + 1,
        }
    }

    /// A member whose bytes are the output of a decompressor `tag`.
    pub fn decompressed_member(&self, tag: &str, name: &str) -> Loc {
        Loc {
            base: 0,
            prefix: format!("{}{tag}:", self.scope()),
            leaf: Some(name.to_string()),
            depth: self.depth + 1,
        }
    }

    /// The decompressed content of this data.
    pub fn decompressed(&self, tag: &str) -> Loc {
        Loc {
            base: 0,
            prefix: format!("{}{tag}:", self.scope()),
            leaf: None,
            depth: self.depth + 1,
        }
    }

    fn context(&self) -> Option<String> {
        let s = self.scope();
        let s = s.trim_end_matches(':');
        (!s.is_empty()).then(|| s.to_string())
    }
}

/// The state of one file's scan.
pub(crate) struct Scanner<'a> {
    pub report: FileReport,
    pub policy: &'a Policy,
    pub limits: &'a Limits,
    /// Bytes all decompressions of this file may still produce.
    pub decompress_budget: u64,
    stream_limit_reported: bool,
}

impl<'a> Scanner<'a> {
    pub fn new(
        report: FileReport,
        policy: &'a Policy,
        limits: &'a Limits,
        input_len: usize,
    ) -> Self {
        Scanner {
            report,
            policy,
            limits,
            decompress_budget: limits.decompression_budget(input_len as u64),
            stream_limit_reported: false,
        }
    }

    /// A container-level finding at `offset` within the data at `loc`.
    pub fn finding(
        &mut self,
        loc: &Loc,
        severity: Verdict,
        code: FindingCode,
        offset: u64,
        reason: impl Into<String>,
    ) {
        let reason = reason.into();
        let reason = match loc.context() {
            Some(c) => format!("in `{c}`: {reason}"),
            None => reason,
        };
        self.report
            .add_finding(severity, code, loc.base.saturating_add(offset), reason);
    }

    /// Whether another stream may be added; reports the limit once.
    pub fn stream_allowed(&mut self, loc: &Loc, offset: u64) -> bool {
        if self.report.streams.len() < self.limits.max_streams {
            return true;
        }
        if !self.stream_limit_reported {
            self.stream_limit_reported = true;
            self.finding(
                loc,
                Verdict::Dangerous,
                FindingCode::LimitExceeded,
                offset,
                format!("more than {} pickle streams", self.limits.max_streams),
            );
        }
        false
    }

    /// Analyses the single stream at `start` (a loader that calls
    /// `pickle.load` once) and records it. `None` when the stream limit is hit.
    pub fn single_stream(
        &mut self,
        data: &[u8],
        start: usize,
        loc: &Loc,
        name: &str,
    ) -> Option<StreamAnalysis> {
        if !self.stream_allowed(loc, start as u64) {
            return None;
        }
        let a = analyze_stream(data, start, loc.base, name, self.policy, self.limits);
        self.report.streams.push(a.report.clone());
        Some(a)
    }

    /// Reads the streams at `start` as `pickle.load` would, for data that
    /// its loader reads otherwise (`format`). Nothing is recorded unless a
    /// stream imports a global the policy does not allow, or one no earlier
    /// reading of this file already reported at the same offset: then the
    /// stream is recorded with those imports only, since its structural
    /// failures are expected of data that is not a pickle.
    pub fn possible_streams(
        &mut self,
        data: &[u8],
        start: usize,
        loc: &Loc,
        name: &str,
        format: &str,
    ) {
        let mut pos = start;
        let mut index = 0;
        while pos < data.len() {
            // Hitting the stream limit is a finding, never a quiet stop.
            if !self.stream_allowed(loc, pos as u64) {
                return;
            }
            let a = analyze_stream(data, pos, loc.base, name, self.policy, self.limits);
            // What an earlier reading of the same bytes already judged: its
            // findings, and the globals it resolved and found allowed.
            let known: std::collections::HashSet<(u64, String, String)> = self
                .report
                .all_findings()
                .map(|f| (f.offset, f.module.clone(), f.name.clone()))
                .chain(self.report.streams.iter().flat_map(|s| {
                    s.globals
                        .iter()
                        .map(|g| (g.offset, g.module.clone(), g.name.clone()))
                }))
                .collect();
            let mut report = a.report;
            // A STACK_GLOBAL whose names were computed (by an allowed call
            // such as `_codecs.encode`) imports whatever they spell; random
            // bytes that fail first resolve no global to compute them with.
            let computes = report.globals.iter().any(|g| g.module != "?");
            report.findings.retain(|f| {
                let import = !f.module.is_empty()
                    && (f.module == "?" || crate::streams::is_importable_name(&f.module, &f.name));
                (import || (computes && f.code == FindingCode::DynamicGlobal))
                    && !known.contains(&(f.offset, f.module.clone(), f.name.clone()))
            });
            report.globals.retain(|g| {
                g.module == "?" || crate::streams::is_importable_name(&g.module, &g.name)
            });
            if !report.findings.is_empty() {
                report.rejudge();
                if index > 0 {
                    report.name = format!("{name}[{index}]");
                }
                let at = report.offset.saturating_sub(loc.base);
                self.report.streams.push(report);
                self.finding(
                    loc,
                    Verdict::Dangerous,
                    FindingCode::PolyglotPickle,
                    at,
                    format!("the file reads as {format}, but pickle.load reads it from byte {at} as a pickle that imports globals"),
                );
            }
            match a.end {
                Some(end) if end > pos => {
                    pos = end;
                    index += 1;
                }
                _ => return,
            }
        }
    }

    /// Scans consecutive streams as repeated `pickle.load` calls read them.
    pub fn stream_sequence(&mut self, data: &[u8], start: usize, loc: &Loc, name: &str) -> usize {
        scan_pickle_sequence(
            data,
            start,
            loc.base,
            name,
            &mut self.report,
            self.policy,
            self.limits,
        )
    }
}

/// Scans `data` as a whole file (or a member of one) the way every loader
/// that could be handed it reads it, and returns the format name.
///
/// Recognising one format never ends the analysis: `torch.load` reads a zip
/// at offset 0, else tries `tarfile`, else reads pickles from byte 0;
/// `numpy.load` reads a zip, a `.npy`, else a pickle; `joblib.load`
/// decompresses by its own magic prefixes, else unpickles from byte 0;
/// `pickle.load` always starts at byte 0; `zipfile` finds an archive by its
/// end record wherever it starts. Each reading that applies is scanned and
/// the file's verdict is the worst of them. The format named is the first
/// that applies, in that order.
pub(crate) fn scan_data(data: &[u8], loc: &Loc, sc: &mut Scanner<'_>) -> String {
    if loc.depth > sc.limits.max_nesting {
        sc.finding(
            loc,
            Verdict::Dangerous,
            FindingCode::LimitExceeded,
            0,
            format!(
                "containers nested more than {} deep; the inner data was not scanned",
                sc.limits.max_nesting
            ),
        );
        return "none".into();
    }
    let mut formats: Vec<String> = Vec::new();
    let zip_at_start = data.starts_with(zip::LOCAL_SIG) || data.starts_with(zip::EOCD_SIG);
    if zip_at_start {
        formats.push(zip::scan_zip(data, loc, sc));
    }
    if data.starts_with(npy::MAGIC) {
        formats.push(npy::scan_npy(data, loc, sc));
    }
    if let Some(f) = safetensors::scan_safetensors(data, loc, sc) {
        formats.push(f);
    }
    if let Some(kind) = Compression::detect(data) {
        if let Some(f) = compress::scan_compressed(data, kind, loc, sc) {
            formats.push(f);
        }
    }
    // torch.load tries tarfile on everything that is not a zip at offset 0.
    if !zip_at_start && tar::is_tar(data) {
        formats.push(tar::scan_tar(data, loc, sc));
    }
    // pickle.load, numpy.load's fallback, torch.load's legacy path and
    // joblib's uncompressed path all unpickle from byte 0.
    let pickle = if formats.is_empty() {
        scan_pickle_file(data, loc, sc)
    } else {
        if !zip_at_start {
            alternate_pickle_reading(data, loc, sc, &formats[0]);
        }
        None
    };
    // zipfile (np.load's npz, a user's ZipFile) reads an archive by its end
    // record, wherever the archive starts.
    if !zip_at_start {
        if let Some(f) = zip::scan_embedded_zip(data, loc, sc, pickle.is_some()) {
            formats.push(f);
        }
    }
    match pickle {
        Some(p) => p,
        None => formats.into_iter().next().unwrap_or_else(|| "none".into()),
    }
}

/// `pickle.load` run on data another loader reads as something else (a tar,
/// an npy, a safetensors file, compressed data): the streams it would
/// unpickle from byte 0 are scanned and reported when they import anything
/// the policy does not allow. A reading that fails before importing
/// anything ran nothing, and is not reported.
fn alternate_pickle_reading(data: &[u8], loc: &Loc, sc: &mut Scanner<'_>, format: &str) {
    sc.possible_streams(data, 0, loc, &loc.named("pickle.load"), format);
}

/// Scans data that a loader reads as pickles from byte 0: a PyTorch legacy
/// checkpoint, a joblib dump, or plain pickle streams. `None` when
/// `pickle.load` would fail on it before doing anything.
pub(crate) fn scan_pickle_file(data: &[u8], loc: &Loc, sc: &mut Scanner<'_>) -> Option<String> {
    if !looks_like_pickle(data) {
        return None;
    }
    let format = if torch_legacy::magic_stream_end(data, 0).is_some() {
        torch_legacy::scan_legacy(data, loc, sc);
        "torch-legacy"
    } else if joblib::is_joblib(data, 0) {
        if joblib::scan_joblib(data, 0, loc, sc) {
            // pickle.load reads the array bytes joblib reads raw as opcodes.
            sc.possible_streams(data, 0, loc, &loc.named("pickle.load"), "joblib");
            "joblib"
        } else {
            "pickle"
        }
    } else {
        sc.stream_sequence(data, 0, loc, &loc.stream_name());
        "pickle"
    };
    Some(format.into())
}

/// Whether a member of a generic archive (zip or tar) is worth reading, from
/// its name: pickles, numpy arrays and joblib dumps.
pub(crate) fn is_pickle_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [".pkl", ".pickle", ".joblib"]
        .iter()
        .any(|ext| lower.ends_with(ext))
}

/// Whether a member of a generic archive is worth reading, from its first
/// bytes: a pickle with a PROTO opcode, a zip, or a `.npy` array.
pub(crate) fn is_interesting_content(head: &[u8]) -> bool {
    matches!(head, [0x80, 0..=5, ..])
        || head.starts_with(zip::LOCAL_SIG)
        || head.starts_with(zip::EOCD_SIG)
        || head.starts_with(npy::MAGIC)
}

/// Scans the content of an archive member selected by name or content.
/// Members named like pickles are scanned as pickles even when they do not
/// look like one, because a loader would unpickle them anyway.
pub(crate) fn scan_member(content: &[u8], name: &str, loc: &Loc, sc: &mut Scanner<'_>) {
    let container = content.starts_with(zip::LOCAL_SIG)
        || content.starts_with(zip::EOCD_SIG)
        || content.starts_with(npy::MAGIC)
        || Compression::detect(content).is_some()
        || joblib::is_joblib(content, 0)
        || torch_legacy::magic_stream_end(content, 0).is_some();
    if !container && is_pickle_name(name) {
        sc.stream_sequence(content, 0, loc, &loc.stream_name());
        return;
    }
    scan_data(content, loc, sc);
}

pub(crate) fn le_u16(data: &[u8], at: usize) -> Option<u16> {
    let s = data.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

pub(crate) fn le_u32(data: &[u8], at: usize) -> Option<u32> {
    let s = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

pub(crate) fn le_u64(data: &[u8], at: usize) -> Option<u64> {
    let s = data.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

/// `data[at..at + len]` with both numbers untrusted.
pub(crate) fn slice_at(data: &[u8], at: u64, len: u64) -> Option<&[u8]> {
    let at = usize::try_from(at).ok()?;
    let len = usize::try_from(len).ok()?;
    data.get(at..at.checked_add(len)?)
}

/// Bytes for display in a reason: printable ASCII kept, the rest escaped,
/// and never more than 200 characters.
pub(crate) fn display_name(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes.iter().take(200) {
        if (0x20..0x7f).contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    if bytes.len() > 200 {
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;
