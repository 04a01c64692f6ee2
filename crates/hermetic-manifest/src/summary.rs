//! What the scanner found in a blob, condensed for refusals, inventories and
//! manifest notes.

use hermetic_pickle::{FileReport, FindingCode};

/// The scanner's view of one blob or file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanSummary {
    /// `safe`, `suspicious` or `dangerous`.
    pub verdict: String,
    /// `module.name` of every global imported, in order of appearance.
    pub imports: Vec<String>,
    /// Finding codes, in order, without duplicates.
    pub findings: Vec<FindingCode>,
    /// One line for people: `dangerous; imports os.system (called); findings: dangerous_import`.
    pub text: String,
}

/// Most globals a one-line summary names before it says "and N more".
const MAX_NAMED: usize = 8;

impl ScanSummary {
    pub fn from_report(r: &FileReport) -> Self {
        let mut imports: Vec<String> = Vec::new();
        let mut called: Vec<bool> = Vec::new();
        for s in &r.streams {
            for g in &s.globals {
                let q = format!("{}.{}", g.module, g.name);
                match imports.iter().position(|i| *i == q) {
                    Some(i) => called[i] |= g.called,
                    None => {
                        imports.push(q);
                        called.push(g.called);
                    }
                }
            }
        }
        let mut findings: Vec<FindingCode> = Vec::new();
        for f in r.all_findings() {
            if !findings.contains(&f.code) {
                findings.push(f.code);
            }
        }
        let verdict = r.verdict.as_str().to_string();
        let mut text = verdict.clone();
        if imports.is_empty() {
            text.push_str("; imports nothing");
        } else {
            let named: Vec<String> = imports
                .iter()
                .zip(&called)
                .take(MAX_NAMED)
                .map(|(i, c)| {
                    if *c {
                        format!("{i} (called)")
                    } else {
                        i.clone()
                    }
                })
                .collect();
            text.push_str(&format!("; imports {}", named.join(", ")));
            if imports.len() > MAX_NAMED {
                text.push_str(&format!(" and {} more", imports.len() - MAX_NAMED));
            }
        }
        if !findings.is_empty() {
            let codes: Vec<&str> = findings.iter().map(|c| c.as_str()).collect();
            text.push_str(&format!("; findings: {}", codes.join(", ")));
        }
        ScanSummary {
            verdict,
            imports,
            findings,
            text,
        }
    }

    /// Analyses the exact bytes an unpickler is about to read as what they
    /// are to it: one pickle stream (or a joblib dump, whose arrays sit
    /// between opcodes). Unlike [`ScanSummary::of_bytes`] it never sniffs
    /// containers, so a blob that happens to start like a compressed file is
    /// not inflated.
    pub fn of_blob(data: &[u8]) -> Self {
        if hermetic_pickle::containers::joblib::is_joblib(data, 0) {
            return ScanSummary::of_bytes(data, "<blob>");
        }
        let a = hermetic_pickle::analyze_stream(
            data,
            0,
            0,
            "blob",
            &hermetic_pickle::Policy::default(),
            &hermetic_pickle::Limits::default(),
        );
        let mut r = FileReport::new("<blob>", "pickle");
        r.streams.push(a.report);
        r.finish();
        ScanSummary::from_report(&r)
    }

    /// Scans in-memory bytes with the default policy and limits.
    pub fn of_bytes(data: &[u8], name: &str) -> Self {
        let r = hermetic_pickle::scan_bytes(
            data,
            name,
            &hermetic_pickle::Policy::default(),
            &hermetic_pickle::Limits::default(),
        );
        ScanSummary::from_report(&r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_dangerous_and_safe_blobs() {
        // cos\nsystem\n(S'true'\ntR.  (protocol 0: os.system("true"))
        let evil = b"cos\nsystem\n(S'true'\ntR.";
        let s = ScanSummary::of_bytes(evil, "evil");
        assert_eq!(s.verdict, "dangerous");
        assert_eq!(s.imports, ["os.system"]);
        assert!(s.findings.contains(&FindingCode::DangerousImport));
        assert!(s.text.contains("os.system (called)"), "{}", s.text);
        assert_eq!(ScanSummary::of_blob(evil), s);
        // A blob that starts like bz2 is analysed as the pickle it is fed as.
        let b = ScanSummary::of_blob(b"BZh91AY&SY");
        assert_eq!(b.verdict, "dangerous");
        assert!(b
            .findings
            .iter()
            .any(|f| *f == FindingCode::MalformedStream || *f == FindingCode::TruncatedStream));
        let safe = ScanSummary::of_bytes(b"\x80\x02]q\x00(K\x01K\x02e.", "list");
        assert_eq!(safe.verdict, "safe");
        assert!(safe.imports.is_empty());
        assert_eq!(safe.text, "safe; imports nothing");
    }
}
