//! `hermetic manifest freeze|add|check`: write, extend and check the
//! manifests the pickle firewall enforces.

use super::CliError;
use crate::args::{AddArgs, CheckArgs, FreezeArgs, ManifestArgs, ManifestCommand};
use crate::ExitStatus;
use hermetic_manifest::{
    add_entries, display, file_blobs, freeze, read_inventory, BlobId, CallerPattern, Entry,
    FreezeOptions, Manifest,
};
use hermetic_pickle::{scan_file, FileReport, Limits, Policy, StreamReport, Verdict};
use serde::Serialize;
use std::io::Write;
use std::path::Path;

pub(crate) fn run(args: &ManifestArgs, out: &mut dyn Write) -> Result<ExitStatus, CliError> {
    match &args.command {
        ManifestCommand::Freeze(a) => run_freeze(a, out),
        ManifestCommand::Add(a) => run_add(a, out),
        ManifestCommand::Check(a) => run_check(a, out),
    }
}

/// Writes `text` to `path` through a temporary file and a rename, so a
/// reader never sees half a manifest.
fn write_atomically(path: &Path, text: &str) -> Result<(), CliError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| CliError::Usage(format!("{} is not a file name", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    // create_new (O_EXCL): a file or symlink already at the temporary name
    // (planted to redirect the write elsewhere) fails the write instead of
    // being followed.
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| {
                CliError::Io(std::io::Error::new(
                    e.kind(),
                    format!("cannot create {}: {e}", tmp.display()),
                ))
            })?;
        if let Err(e) = f.write_all(text.as_bytes()).and_then(|()| f.sync_all()) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    Ok(())
}

/// Reads a manifest's text, or the text of a new empty one when the file
/// does not exist.
fn manifest_text(path: &Path) -> Result<(String, bool), CliError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok((t, true)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok((Manifest::default().to_toml(), false))
        }
        Err(e) => Err(CliError::Io(std::io::Error::new(
            e.kind(),
            format!("cannot read {}: {e}", path.display()),
        ))),
    }
}

fn run_freeze(args: &FreezeArgs, out: &mut dyn Write) -> Result<ExitStatus, CliError> {
    let mut records = Vec::new();
    for p in &args.inventory {
        let f = std::fs::File::open(p).map_err(|e| {
            CliError::Io(std::io::Error::new(
                e.kind(),
                format!("cannot read {}: {e}", p.display()),
            ))
        })?;
        let mut r = read_inventory(std::io::BufReader::new(f))
            .map_err(|e| CliError::Usage(format!("{}: {e}", p.display())))?;
        records.append(&mut r);
    }
    let frozen = freeze(
        &records,
        FreezeOptions {
            any_caller: args.any_caller,
        },
    )
    .map_err(|e| CliError::Usage(e.to_string()))?;
    let (text, existed) = manifest_text(&args.output)?;
    let (new_text, added) = add_entries(&text, &frozen.entries)
        .map_err(|e| CliError::Usage(format!("{}: {e}", args.output.display())))?;
    if existed {
        // A manifest already at OUT (one a repository shipped, say) keeps
        // everything it trusted: say what, so a reviewer of this freeze
        // does not take the result for the inventory's alone.
        if let Some(note) = prior_trust(&text, &frozen.entries) {
            eprintln!(
                "hermetic: {} already existed; the frozen entries were added to it and \
                 everything it already trusts stays: {note}",
                display(&args.output.display().to_string())
            );
        }
    }
    write_atomically(&args.output, &new_text)?;
    writeln!(
        out,
        "{} {}: {added} blob(s) added, {} already listed",
        if existed { "updated" } else { "wrote" },
        args.output.display(),
        frozen.entries.len() - added
    )?;
    for (rule, n) in &frozen.covered_by_rules {
        writeln!(out, "{n} load(s) left to the call-site rule {rule}")?;
    }
    if !frozen.writers.is_empty() {
        writeln!(out, "call sites that write pickles (places to migrate):")?;
        for (entry, site, location) in frozen.writers.keys() {
            writeln!(
                out,
                "  {}  {}  via {}",
                display(site),
                display(location),
                display(entry)
            )?;
        }
    }
    if !frozen.unguarded.is_empty() {
        writeln!(
            out,
            "globals resolved by unpicklers the firewall did not see (not frozen):"
        )?;
        for (global, site) in frozen.unguarded.keys() {
            writeln!(out, "  {}  at {}", display(global), display(site))?;
        }
    }
    Ok(ExitStatus::Clean)
}

/// What a manifest that existed before a freeze trusts beyond the frozen
/// entries: blobs the inventory did not give, rules, `unlisted = "safe"`,
/// an allow list, a changed set of built-in rules. `None` if nothing.
fn prior_trust(text: &str, frozen: &[(BlobId, Entry)]) -> Option<String> {
    let m = Manifest::from_toml(text).ok()?;
    let ours: std::collections::HashSet<&BlobId> = frozen.iter().map(|(id, _)| id).collect();
    let other = m.blobs.keys().filter(|id| !ours.contains(id)).count();
    let mut parts = Vec::new();
    if other > 0 {
        parts.push(format!("{other} blob(s) not in the inventory"));
    }
    let rules: Vec<String> = m
        .active_rules()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n != "python-ipc")
        .collect();
    if !rules.is_empty() {
        parts.push(format!("call-site rules {}", display(&rules.join(", "))));
    }
    if m.unlisted == hermetic_manifest::Unlisted::Safe {
        parts.push("unlisted = \"safe\"".into());
    }
    if !m.allow.is_empty() {
        parts.push(format!("allow = {}", display(&m.allow.join(", "))));
    }
    if !m.loader_modules.is_empty() {
        parts.push(format!(
            "loader_modules {}",
            display(&m.loader_modules.join(", "))
        ));
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join("; "))
    }
}

/// A stream's one-line note: its verdict and imports.
fn stream_note(s: &StreamReport) -> String {
    let mut imports: Vec<String> = Vec::new();
    for g in &s.globals {
        let q = format!("{}.{}", g.module, g.name);
        if !imports.contains(&q) {
            imports.push(q);
        }
    }
    let mut note = format!("added by hermetic manifest add; scanner: {}", s.verdict);
    if !imports.is_empty() {
        note.push_str(&format!("; imports: {}", imports.join(", ")));
    }
    note
}

fn source_of(r: &FileReport, s: &StreamReport) -> String {
    if r.streams.len() == 1 && s.name == "pickle" {
        r.path.clone()
    } else {
        format!("{}:{}", r.path, s.name)
    }
}

fn run_add(args: &AddArgs, out: &mut dyn Write) -> Result<ExitStatus, CliError> {
    let callers = if args.caller.is_empty() {
        None
    } else {
        Some(
            args.caller
                .iter()
                .map(|c| CallerPattern::parse(c))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| CliError::Usage(e.to_string()))?,
        )
    };
    let policy = Policy::default();
    let limits = Limits::default();
    let mut entries: Vec<(BlobId, Entry)> = Vec::new();
    let mut status = ExitStatus::Clean;
    for f in &args.files {
        let r = scan_file(f, &policy, &limits);
        if let Some(e) = &r.error {
            eprintln!("hermetic: {}: {e}", r.path);
            status = ExitStatus::Internal;
            continue;
        }
        if r.streams.is_empty() {
            eprintln!(
                "hermetic: {}: no pickle stream found; nothing to list",
                r.path
            );
            if status == ExitStatus::Clean {
                status = ExitStatus::Findings;
            }
            continue;
        }
        for b in file_blobs(f, &r) {
            let s = b.stream;
            if s.verdict == Verdict::Dangerous && !args.force {
                let codes: Vec<&str> = s.findings.iter().map(|f| f.code.as_str()).collect();
                eprintln!(
                    "hermetic: {}: the scanner calls this blob dangerous ({}); review it, then pass --force to list it",
                    source_of(&r, s),
                    codes.join(", ")
                );
                if status == ExitStatus::Clean {
                    status = ExitStatus::Findings;
                }
                continue;
            }
            let mut note = args.note.clone().unwrap_or_else(|| stream_note(s));
            if b.whole_payload && args.note.is_none() {
                note.push_str("; id of the whole joblib payload");
            }
            if b.whole_file && args.note.is_none() {
                note.push_str(
                    "; id of the whole file (torch decides on the archive, not one pickle)",
                );
            }
            // A whole-file id stands for the file, not the stream lent for its verdict.
            let source = if b.whole_file {
                r.path.clone()
            } else {
                source_of(&r, s)
            };
            entries.push((
                b.id,
                Entry {
                    size: Some(b.size),
                    callers: callers.clone(),
                    source: Some(source),
                    note: Some(note),
                },
            ));
        }
    }
    if status != ExitStatus::Clean {
        eprintln!("hermetic: {} left unchanged", args.to.display());
        return Ok(status);
    }
    let (text, _) = manifest_text(&args.to)?;
    let (new_text, added) = add_entries(&text, &entries)
        .map_err(|e| CliError::Usage(format!("{}: {e}", args.to.display())))?;
    write_atomically(&args.to, &new_text)?;
    for (id, e) in &entries {
        writeln!(
            out,
            "{id}  {:>10}  {}",
            e.size.unwrap_or(0),
            e.source.as_deref().unwrap_or("")
        )?;
    }
    writeln!(
        out,
        "{}: {added} blob(s) added, {} already listed",
        args.to.display(),
        entries.len() - added
    )?;
    Ok(ExitStatus::Clean)
}

#[derive(Serialize)]
struct BlobStatus {
    path: String,
    stream: String,
    id: String,
    size: u64,
    /// `listed`, `listed-for-callers`, `size-mismatch` or `unlisted`.
    status: &'static str,
    callers: Option<Vec<String>>,
}

#[derive(Serialize)]
struct CheckReport {
    manifest: String,
    valid: bool,
    error: Option<String>,
    blobs: usize,
    rules: Vec<String>,
    unlisted: Option<&'static str>,
    files: Vec<BlobStatus>,
}

fn run_check(args: &CheckArgs, out: &mut dyn Write) -> Result<ExitStatus, CliError> {
    let mut report = CheckReport {
        manifest: args.manifest.display().to_string(),
        valid: false,
        error: None,
        blobs: 0,
        rules: Vec::new(),
        unlisted: None,
        files: Vec::new(),
    };
    let mut status = ExitStatus::Clean;
    match Manifest::from_file(&args.manifest) {
        Err(hermetic_manifest::ManifestError::Io { source, .. }) => {
            eprintln!(
                "hermetic: cannot read {}: {source}",
                args.manifest.display()
            );
            return Ok(ExitStatus::Internal);
        }
        Err(e) => {
            report.error = Some(e.to_string());
            status = ExitStatus::Findings;
        }
        Ok(m) => {
            report.valid = true;
            report.blobs = m.blobs.len();
            report.rules = m.active_rules().into_iter().map(|(n, _)| n).collect();
            report.unlisted = Some(m.unlisted.as_str());
            let policy = Policy::default();
            let limits = Limits::default();
            for f in &args.files {
                let r = scan_file(f, &policy, &limits);
                if let Some(e) = &r.error {
                    eprintln!("hermetic: {}: {e}", r.path);
                    status = ExitStatus::Internal;
                    continue;
                }
                if r.streams.is_empty() {
                    eprintln!("hermetic: {}: no pickle stream found", r.path);
                }
                for b in file_blobs(f, &r) {
                    let (s, id) = (b.stream, b.id);
                    let (st, callers) = match m.blobs.get(&id) {
                        None => ("unlisted", None),
                        Some(e) if e.size.is_some_and(|n| n != b.size) => ("size-mismatch", None),
                        Some(Entry {
                            callers: Some(c), ..
                        }) => (
                            "listed-for-callers",
                            Some(c.iter().map(|p| p.to_string()).collect()),
                        ),
                        Some(_) => ("listed", None),
                    };
                    if !st.starts_with("listed") && status == ExitStatus::Clean {
                        status = ExitStatus::Findings;
                    }
                    report.files.push(BlobStatus {
                        path: r.path.clone(),
                        stream: s.name.clone(),
                        id: id.to_string(),
                        size: b.size,
                        status: st,
                        callers,
                    });
                }
            }
        }
    }
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
        return Ok(status);
    }
    match &report.error {
        Some(e) => writeln!(out, "{}: INVALID: {e}", report.manifest)?,
        None => writeln!(
            out,
            "{}: valid; {} blob(s); rules: {}; unlisted = {}",
            report.manifest,
            report.blobs,
            if report.rules.is_empty() {
                "none".to_string()
            } else {
                report.rules.join(", ")
            },
            report.unlisted.unwrap_or("refuse")
        )?,
    }
    for b in &report.files {
        let label = match b.status {
            "listed" => "listed".to_string(),
            "listed-for-callers" => format!(
                "listed for {}",
                b.callers.as_deref().unwrap_or_default().join(", ")
            ),
            "size-mismatch" => "SIZE MISMATCH".to_string(),
            _ => "NOT LISTED".to_string(),
        };
        writeln!(
            out,
            "{}  {:>10}  {}:{}  {label}",
            b.id, b.size, b.path, b.stream
        )?;
    }
    Ok(status)
}
