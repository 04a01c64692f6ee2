use super::{sarif, CliError};
use crate::args::{FailOn, Format, ScanArgs};
use crate::hf;
use crate::ExitStatus;
use hermetic_manifest::display;
use hermetic_pickle::walk::{scan_paths_with, Summary};
use hermetic_pickle::{FileReport, Policy, Verdict};
use serde::Serialize;
use std::io::Write;

#[derive(Serialize)]
struct JsonReport<'a> {
    files: Vec<&'a FileReport>,
    summary: &'a Summary,
}

pub(crate) fn run(args: &ScanArgs, out: &mut dyn Write) -> Result<ExitStatus, CliError> {
    let policy = match &args.policy {
        Some(p) => Policy::from_file(p).map_err(|e| CliError::Usage(e.to_string()))?,
        None => Policy::default(),
    };
    let cache = args
        .hf_cache
        .as_ref()
        .map(|d| d.clone().unwrap_or_else(hf::default_cache));
    let paths = match (&cache, args.paths.is_empty()) {
        (Some(c), _) => vec![c.clone()],
        (None, true) => vec![std::path::PathBuf::from(".")],
        (None, false) => args.paths.clone(),
    };
    let bar = Progress::new(args.quiet);
    let tick = |n: u64, total: u64| bar.tick(n, total);
    let (reports, summary) = scan_paths_with(&paths, &policy, args.jobs, Some(&tick))
        .map_err(|e| CliError::Usage(e.to_string()))?;
    bar.finish();
    let shown: Vec<&FileReport> = reports
        .iter()
        .filter(|r| args.all || r.format != "none" || r.verdict == Verdict::Error)
        .collect();
    if let Some(cache) = &cache {
        if args.format != Format::Sarif {
            write_hub(out, args.format, cache, &shown, &summary)?;
            return Ok(exit_status(&summary, threshold(args.fail_on)));
        }
    }
    match args.format {
        Format::Text => write_text(out, &shown, &summary)?,
        Format::Json => {
            serde_json::to_writer_pretty(
                &mut *out,
                &JsonReport {
                    files: shown,
                    summary: &summary,
                },
            )?;
            writeln!(out)?;
        }
        Format::Sarif => {
            let root = sarif::Root::new(args.sarif_root.as_deref())?;
            serde_json::to_writer_pretty(&mut *out, &sarif::report(&shown, &root))?;
            writeln!(out)?;
        }
    }
    Ok(exit_status(&summary, threshold(args.fail_on)))
}

fn threshold(fail_on: FailOn) -> Option<Verdict> {
    match fail_on {
        FailOn::Suspicious => Some(Verdict::Suspicious),
        FailOn::Dangerous => Some(Verdict::Dangerous),
        FailOn::Never => None,
    }
}

#[derive(Serialize)]
struct HubReport<'a> {
    cache: String,
    /// Distinct files read: a blob shared by several snapshots counts once.
    blobs_scanned: usize,
    repos: Vec<hf::HubRevision>,
    files: &'a [&'a FileReport],
    summary: &'a Summary,
}

/// A hub cache's report: each `org/name@revision` with its files' verdicts
/// (text), or the same in JSON beside the usual `files` and `summary`.
fn write_hub(
    out: &mut dyn Write,
    format: Format,
    cache: &std::path::Path,
    shown: &[&FileReport],
    summary: &Summary,
) -> Result<(), CliError> {
    let repos = hf::group(cache, shown);
    let blobs: std::collections::BTreeSet<std::path::PathBuf> = shown
        .iter()
        .map(|r| std::fs::canonicalize(&r.path).unwrap_or_else(|_| r.path.clone().into()))
        .collect();
    if format == Format::Json {
        serde_json::to_writer_pretty(
            &mut *out,
            &HubReport {
                cache: cache.display().to_string(),
                blobs_scanned: blobs.len(),
                repos,
                files: shown,
                summary,
            },
        )?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "Hugging Face cache {}", cache.display())?;
    for repo in &repos {
        let refs = if repo.refs.is_empty() {
            String::new()
        } else {
            format!(" ({})", repo.refs.join(", "))
        };
        writeln!(
            out,
            "\n{} {}{refs}: {}",
            repo.repo_type,
            repo.name(),
            repo.verdict
        )?;
        let mine: Vec<FileReport> = shown
            .iter()
            .filter(|r| repo.files.iter().any(|f| f.path == r.path))
            .map(|r| {
                let mut r = (*r).clone();
                if let Some(f) = repo.files.iter().find(|f| f.path == r.path) {
                    r.path = format!("  {}", f.file);
                }
                r
            })
            .collect();
        let mine: Vec<&FileReport> = mine.iter().collect();
        write_rows(out, &mine)?;
    }
    // What is in no snapshot (a path that could not be read, a stray file).
    let others: Vec<&FileReport> = shown
        .iter()
        .filter(|r| {
            !repos
                .iter()
                .any(|h| h.files.iter().any(|f| f.path == r.path))
        })
        .copied()
        .collect();
    if !others.is_empty() {
        writeln!(out, "\nnot in any repository snapshot:")?;
        write_rows(out, &others)?;
    }
    writeln!(out)?;
    write_footer(out, summary)?;
    Ok(())
}

/// `error` is the worst verdict: a file that could not be analysed fails
/// every `--fail-on` level, with its own exit status; only `never` passes it.
fn exit_status(summary: &Summary, threshold: Option<Verdict>) -> ExitStatus {
    let Some(threshold) = threshold else {
        return ExitStatus::Clean;
    };
    match summary.verdict {
        Some(Verdict::Error) => ExitStatus::Internal,
        Some(v) if v >= threshold => ExitStatus::Findings,
        _ => ExitStatus::Clean,
    }
}

/// A progress bar on stderr for scans that take longer than a second: only
/// on a terminal, never with `--quiet`, and drawn only once a second has
/// passed, so quick scans print nothing extra.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    start: std::time::Instant,
    shown: std::sync::atomic::AtomicBool,
}

impl Progress {
    fn new(quiet: bool) -> Self {
        use std::io::IsTerminal;
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::hidden();
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("scanning {pos}/{len} files {bar:30} {eta}")
            {
                b.set_style(style);
            }
            b
        });
        Progress {
            bar,
            start: std::time::Instant::now(),
            shown: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn tick(&self, done: u64, total: u64) {
        let Some(b) = &self.bar else { return };
        b.set_length(total);
        b.set_position(done);
        if self.start.elapsed() >= std::time::Duration::from_secs(1)
            && !self.shown.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            b.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn write_text(
    out: &mut dyn Write,
    reports: &[&FileReport],
    summary: &Summary,
) -> std::io::Result<()> {
    write_rows(out, reports)?;
    writeln!(out)?;
    write_footer(out, summary)
}

fn write_rows(out: &mut dyn Write, reports: &[&FileReport]) -> std::io::Result<()> {
    let path_w = reports
        .iter()
        .map(|r| display(&r.path).chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 60);
    let fmt_w = reports
        .iter()
        .map(|r| r.format.len())
        .max()
        .unwrap_or(6)
        .max(6);
    writeln!(
        out,
        "{:<path_w$}  {:<fmt_w$}  {:<10}  FINDINGS",
        "PATH", "FORMAT", "VERDICT"
    )?;
    for r in reports {
        let verdict = r.verdict.as_str();
        let mut lines: Vec<String> = Vec::new();
        if let Some(e) = &r.error {
            lines.push(display(e).into_owned());
        }
        for s in &r.streams {
            for f in &s.findings {
                lines.push(describe(f, Some(&s.name)));
            }
        }
        for f in &r.findings {
            lines.push(describe(f, None));
        }
        let first = lines.first().cloned().unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "{:<path_w$}  {:<fmt_w$}  {:<10}  {first}",
            display(&r.path),
            r.format,
            verdict
        )?;
        for line in lines.iter().skip(1) {
            writeln!(out, "{:<path_w$}  {:<fmt_w$}  {:<10}  {line}", "", "", "")?;
        }
    }
    Ok(())
}

fn write_footer(out: &mut dyn Write, summary: &Summary) -> std::io::Result<()> {
    writeln!(
        out,
        "{} files scanned, {} recognised, {} with pickles: {} safe, {} suspicious, {} dangerous{}",
        summary.files_scanned,
        summary.files_recognised,
        summary.files_with_pickles,
        summary.safe,
        summary.suspicious,
        summary.dangerous,
        if summary.errors > 0 {
            format!(", {} error (not analysed)", summary.errors)
        } else {
            String::new()
        }
    )
}

fn describe(f: &hermetic_pickle::Finding, stream: Option<&str>) -> String {
    let what = if f.module.is_empty() {
        f.code.to_string()
    } else {
        format!(
            "{}.{}{}",
            f.module,
            f.name,
            if f.called { " (called)" } else { "" }
        )
    };
    let place = match stream {
        Some(s) => format!("{} @{}", display(s), f.offset),
        None => format!("@{}", f.offset),
    };
    // Module, name and stream names come from the file: one line each.
    format!(
        "{}: {} in {place}: {}",
        f.severity,
        display(&what),
        display(&f.reason)
    )
}
