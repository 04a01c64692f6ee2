//! The scan report: the data behind the CLI's text, JSON and SARIF output and
//! `hermetic.scan` in Python. The JSON shape is a contract other tools parse.

use crate::codes::FindingCode;
use crate::policy::Verdict;
use serde::Serialize;

/// Something a scan found: an import outside the allowlist, or a structural
/// problem. `code` is a stable snake_case identifier (JSON: its string).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub module: String,
    pub name: String,
    /// Byte offset in the file (in the decompressed data for compressed files).
    pub offset: u64,
    /// Whether the stream calls it (REDUCE, NEWOBJ, OBJ, INST, BUILD's `__setstate__`).
    pub called: bool,
    pub reason: String,
    pub code: FindingCode,
    pub severity: Verdict,
}

/// One global a stream resolves, whatever its classification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GlobalRef {
    pub module: String,
    pub name: String,
    pub offset: u64,
    pub opcode: String,
    pub called: bool,
}

/// One pickle stream inside a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StreamReport {
    /// Where the stream lives: `pickle`, `archive/data.pkl`, `pickle[2]`, ...
    pub name: String,
    pub offset: u64,
    pub length: u64,
    /// The blob id: `sha256:` and the hex digest of the stream's exact bytes,
    /// from its first opcode through STOP.
    pub sha256: String,
    pub protocol: Option<u8>,
    pub verdict: Verdict,
    pub findings: Vec<Finding>,
    pub globals: Vec<GlobalRef>,
    pub persistent_ids: u64,
    pub opcodes: u64,
}

impl StreamReport {
    /// The verdict the findings give once some were added or dropped: the
    /// worst of them, `safe` for none.
    pub fn rejudge(&mut self) {
        self.verdict = worst(&self.findings);
    }
}

/// The worst severity among `findings` (`safe` for none).
pub fn worst(findings: &[Finding]) -> Verdict {
    findings
        .iter()
        .map(|f| f.severity)
        .max()
        .unwrap_or(Verdict::Safe)
}

/// Everything known about one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileReport {
    pub path: String,
    /// `pickle`, `torch-zip`, `torch-legacy`, `torch-tar`, `torchscript`,
    /// `npy`, `npz`, `joblib`, `zip`, `safetensors`, `none`, ...
    pub format: String,
    pub verdict: Verdict,
    pub streams: Vec<StreamReport>,
    /// Findings about the container itself (ambiguous zip, polyglot, ...).
    pub findings: Vec<Finding>,
    /// Set when the file could not be read at all.
    pub error: Option<String>,
}

impl FileReport {
    pub fn new(path: impl Into<String>, format: impl Into<String>) -> Self {
        FileReport {
            path: path.into(),
            format: format.into(),
            verdict: Verdict::Safe,
            streams: Vec::new(),
            findings: Vec::new(),
            error: None,
        }
    }

    /// Whether the file holds any pickle (or anything scanned for one).
    pub fn has_pickle(&self) -> bool {
        !self.streams.is_empty() || !self.findings.is_empty()
    }

    /// Recomputes the file verdict from its streams and findings.
    pub fn finish(&mut self) {
        self.verdict = self
            .streams
            .iter()
            .map(|s| s.verdict)
            .chain(self.findings.iter().map(|f| f.severity))
            .chain(self.error.is_some().then_some(Verdict::Error))
            .max()
            .unwrap_or(Verdict::Safe);
    }

    /// A file that could not be read or analysed: verdict `error`, never `safe`.
    pub fn unreadable(path: impl Into<String>, error: impl Into<String>) -> Self {
        let mut r = FileReport::new(path, "error");
        r.error = Some(error.into());
        r.finish();
        r
    }

    /// A container-level finding.
    pub fn add_finding(
        &mut self,
        severity: Verdict,
        code: FindingCode,
        offset: u64,
        reason: impl Into<String>,
    ) {
        self.findings.push(Finding {
            module: String::new(),
            name: String::new(),
            offset,
            called: false,
            reason: reason.into(),
            code,
            severity,
        });
    }

    /// All findings, container-level first, then each stream's.
    pub fn all_findings(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .chain(self.streams.iter().flat_map(|s| s.findings.iter()))
    }
}
