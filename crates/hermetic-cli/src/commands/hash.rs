use super::CliError;
use crate::args::HashArgs;
use crate::ExitStatus;
use hermetic_pickle::{scan_file, Limits, Policy};
use serde::Serialize;
use std::io::Write;

#[derive(Serialize)]
struct Blob<'a> {
    path: &'a str,
    stream: &'a str,
    id: &'a str,
    size: u64,
    offset: u64,
}

/// Prints `<blob id>  <size>  <path>:<stream>` for every pickle stream, the
/// ids manifests list.
pub(crate) fn run(args: &HashArgs, out: &mut dyn Write) -> Result<ExitStatus, CliError> {
    let policy = Policy::default();
    let limits = Limits::default();
    let mut status = ExitStatus::Clean;
    let mut blobs = Vec::new();
    let reports: Vec<_> = args
        .files
        .iter()
        .map(|f| scan_file(f, &policy, &limits))
        .collect();
    for r in &reports {
        if let Some(e) = &r.error {
            eprintln!("hermetic: {}: {e}", r.path);
            status = ExitStatus::Internal;
            continue;
        }
        if r.streams.is_empty() {
            eprintln!("hermetic: {}: no pickle stream found", r.path);
        }
        for s in &r.streams {
            blobs.push(Blob {
                path: &r.path,
                stream: &s.name,
                id: &s.sha256,
                size: s.length,
                offset: s.offset,
            });
        }
    }
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &blobs)?;
        writeln!(out)?;
    } else {
        for b in &blobs {
            writeln!(out, "{}  {:>10}  {}:{}", b.id, b.size, b.path, b.stream)?;
        }
    }
    Ok(status)
}
