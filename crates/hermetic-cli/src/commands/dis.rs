use super::CliError;
use crate::args::DisArgs;
use crate::ExitStatus;
use hermetic_pickle::dis::disassemble;
use hermetic_pickle::{blob_id, scan_bytes, Limits, Policy};
use std::io::Write;

/// Disassembles each pickle stream the scanner finds in the file. Streams
/// that only exist after decompression are named but not shown, since their
/// offsets are not offsets in the file.
pub(crate) fn run(args: &DisArgs, out: &mut dyn Write) -> Result<ExitStatus, CliError> {
    let data = std::fs::read(&args.file).map_err(|e| {
        CliError::Io(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", args.file.display()),
        ))
    })?;
    let report = scan_bytes(
        &data,
        &args.file.display().to_string(),
        &Policy::default(),
        &Limits::default(),
    );
    if report.streams.is_empty() {
        eprintln!("hermetic: {}: no pickle stream found", args.file.display());
        return Ok(ExitStatus::Findings);
    }
    let mut status = ExitStatus::Clean;
    for s in &report.streams {
        writeln!(
            out,
            "== {} (offset {}, {} bytes, {})",
            s.name, s.offset, s.length, s.sha256
        )?;
        let start = usize::try_from(s.offset).ok().filter(|&o| o <= data.len());
        let in_file = start.is_some_and(|o| {
            let end = o.saturating_add(s.length as usize).min(data.len());
            blob_id(&data[o..end]) == s.sha256
        });
        let Some(start) = start.filter(|_| in_file) else {
            writeln!(out, "(stored compressed; not shown)\n")?;
            continue;
        };
        match disassemble(&data, start) {
            Ok(d) => write!(out, "{}", d.text)?,
            Err(e) => {
                write!(out, "{}", e.partial_text)?;
                writeln!(
                    out,
                    "\nerror at byte {}: {}: {}",
                    e.offset, e.exception, e.message
                )?;
                status = ExitStatus::Findings;
            }
        }
        writeln!(out)?;
    }
    Ok(status)
}
