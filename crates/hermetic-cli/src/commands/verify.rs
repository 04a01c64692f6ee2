//! `hermetic verify`: recompute every tensor entry's digest and compare it
//! with the one the header records.

use super::CliError;
use crate::args::VerifyArgs;
use crate::ExitStatus;
use hermetic_format::{Archive, EntryCheck, FormatError};
use std::io::Write;
use std::path::Path;

/// What to do with a file that is not in hermetic's format, judged by its
/// content as the scanner reads it (a zip with `data.pkl`, a pickle, a legacy
/// torch file, npy ...); `None` for anything else.
fn not_hermetic_hint(path: &Path) -> Option<String> {
    if path.is_dir() {
        return None;
    }
    let r = hermetic_pickle::scan_file(
        path,
        &hermetic_pickle::Policy::default(),
        &hermetic_pickle::Limits::default(),
    );
    let what = match r.format.as_str() {
        "torch-zip" | "torch-legacy" | "torch-tar" => "a PyTorch pickle checkpoint",
        "pickle" => "a pickle (a legacy torch.save checkpoint is one too)",
        "joblib" => "a joblib dump (a pickle)",
        "npy" | "npz" => "a numpy file",
        _ => return None,
    };
    Some(format!(
        "this is {what}, not a hermetic/safetensors file: use hermetic.torch.load to read its \
         tensors without running it, or `hermetic convert IN OUT` to convert it"
    ))
}

pub(crate) fn run(args: &VerifyArgs, out: &mut dyn Write) -> Result<ExitStatus, CliError> {
    let mut status = ExitStatus::Clean;
    let mut report = Vec::new();
    for path in &args.files {
        let shown = hermetic_manifest::display(&path.display().to_string()).into_owned();
        let result = Archive::open(path).and_then(|ar| {
            let checks = ar.check(None)?;
            if checks.iter().all(|c| c.ok) {
                // Tensors viewed through a `base` against their own entries.
                ar.verify_views()?;
            }
            Ok((checks, ar.check_layout()))
        });
        let (verdict, mut detail, bad): (&str, String, Vec<EntryCheck>) = match result {
            Ok((checks, layout)) => {
                let bad: Vec<EntryCheck> = checks.iter().filter(|c| !c.ok).cloned().collect();
                let changed: Vec<&str> = layout
                    .iter()
                    .filter(|c| !c.ok())
                    .map(|c| c.file.as_str())
                    .collect();
                if !bad.is_empty() {
                    status = ExitStatus::Findings;
                    (
                        "corrupt",
                        format!("{} of {} entries do not match", bad.len(), checks.len()),
                        bad,
                    )
                } else if !changed.is_empty() {
                    status = ExitStatus::Findings;
                    let files: Vec<String> = changed
                        .iter()
                        .map(|f| hermetic_manifest::display(f).into_owned())
                        .collect();
                    (
                        "changed",
                        format!(
                            "{} entries match their digests, but the header changed since it was \
                             written (its dtypes, shapes, offsets, metadata or tree do not match \
                             the layout digest): {}",
                            checks.len(),
                            files.join(", ")
                        ),
                        bad,
                    )
                } else if layout.iter().any(|c| c.recorded.is_none()) {
                    (
                        "ok",
                        format!(
                            "{} entries match their digests (entry bytes only: the file was \
                             written before hermetic digested the header's layout)",
                            checks.len()
                        ),
                        bad,
                    )
                } else {
                    (
                        "ok",
                        format!(
                            "{} entries match their digests, and the header its layout digest",
                            checks.len()
                        ),
                        bad,
                    )
                }
            }
            Err(e @ FormatError::Io { .. }) => {
                status = status.max_with(ExitStatus::Internal);
                ("error", e.to_string(), Vec::new())
            }
            Err(e) => {
                status = status.max_with(ExitStatus::Findings);
                let v = if e.code() == "no_digests" {
                    "unverifiable"
                } else {
                    "invalid"
                };
                let detail = match not_hermetic_hint(path) {
                    Some(hint) => format!("{e}; {hint}"),
                    None => e.to_string(),
                };
                (v, detail, Vec::new())
            }
        };
        let stale = hermetic_format::stale_temporaries(path);
        if !stale.is_empty() {
            let names: Vec<String> = stale
                .iter()
                .map(|p| hermetic_manifest::display(&p.display().to_string()).into_owned())
                .collect();
            detail.push_str(&format!(
                "; {} temporary file(s) of interrupted saves beside it (the next save removes them): {}",
                stale.len(),
                names.join(", ")
            ));
        }
        report.push((shown, verdict, detail, bad));
    }
    if args.json {
        let doc: Vec<_> = report
            .iter()
            .map(|(p, v, d, bad)| {
                serde_json::json!({"path": p, "verdict": v, "detail": d, "corrupt": bad})
            })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &doc)?;
        writeln!(out)?;
    } else {
        for (p, v, d, bad) in &report {
            writeln!(out, "{:<12} {p}: {d}", v.to_uppercase())?;
            for c in bad {
                writeln!(
                    out,
                    "             entry `{}` in {}: digest {} (header says {})",
                    c.entry, c.file, c.actual, c.expected
                )?;
            }
        }
    }
    Ok(status)
}

trait Worst {
    fn max_with(self, other: ExitStatus) -> ExitStatus;
}

impl Worst for ExitStatus {
    /// Findings outrank a clean run; an internal error outranks both.
    fn max_with(self, other: ExitStatus) -> ExitStatus {
        if (self as u8) >= (other as u8) {
            self
        } else {
            other
        }
    }
}
