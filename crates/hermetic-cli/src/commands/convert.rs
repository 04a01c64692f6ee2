//! `hermetic convert IN OUT [--salvage]`: any checkpoint hermetic reads
//! (torch zip or legacy, `.npy`/`.npz`, a data-only pickle, safetensors)
//! into hermetic's tensor-tree format (a valid safetensors file), without
//! Python and without running anything.
//!
//! The input is evaluated by the safe evaluator and converted by
//! `hermetic_format::convert` (feature `pickle`), which Rust callers can use
//! without this crate; this file adds the command line, the progress bar and
//! the safetensors-input path. `--salvage` reads a non-data-only pickle (a
//! whole pickled model) in opaque mode: an `nn.Module` record becomes its
//! state dict, any other foreign object a dict with its `__class__`,
//! arguments and state.

use super::CliError;
use crate::args::ConvertArgs;
use crate::ExitStatus;
use hermetic_format::{save_tensors, write_file, Archive, Dtype, EntrySource, WriteOptions};
use hermetic_pickle::eval::{self, EvalError, Flavor, LoadOptions, Mode};
use hermetic_pickle::{FindingCode, Limits, Policy};
use std::io::{IsTerminal, Write};
use std::path::Path;

/// Inputs at least this large get a progress bar (on a terminal).
const PROGRESS_MIN_BYTES: u64 = 64 << 20;

pub(crate) fn run(args: &ConvertArgs, out: &mut dyn Write) -> Result<ExitStatus, CliError> {
    let input = &args.input;
    let name = input.display().to_string();
    if input.is_dir() && input.join(hermetic_pickle::dcp::METADATA).is_file() {
        return from_dcp(input, &args.output, out);
    }
    let file = match hermetic_pickle::fsio::open_regular(input) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("hermetic: {name}: {e}");
            return Ok(ExitStatus::Internal);
        }
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let map = if len == 0 {
        None
    } else {
        match eval::map_file_populated(&file) {
            Ok(m) => Some(m),
            Err(e) => {
                eprintln!("hermetic: {name}: {e}");
                return Ok(ExitStatus::Internal);
            }
        }
    };
    let data: &[u8] = map.as_deref().unwrap_or(&[]);
    if hermetic_pickle::containers::is_safetensors(data) {
        return from_safetensors(input, &args.output, out);
    }
    let allow = match eval::AllowList::parse(&args.allow) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hermetic: {e}");
            return Ok(ExitStatus::Usage);
        }
    };
    let policy = Policy::default();
    let companions = eval::Companions::beside(input);
    let mut opts = LoadOptions {
        mode: if args.salvage {
            Mode::Salvage
        } else {
            Mode::Strict
        },
        flavor: Flavor::Any,
        policy: &policy,
        limits: Limits::default(),
        allowed: eval::Allowed::none(),
        encoding: None,
        companions: Some(&companions),
    };
    let report = hermetic_pickle::scan_bytes(data, &name, opts.policy, &opts.limits);
    let trusted = allow.trusted(&report);
    if !args.allow.is_empty() {
        opts.allowed = &trusted;
    }
    let loaded = match eval::load_scanned(data, &name, &opts, report) {
        Ok(l) => l,
        Err(e) => {
            let hint = match &e {
                EvalError::Unsafe(u) if !args.salvage && dangerous_free(u) => allow_hint(u),
                _ => String::new(),
            };
            eprintln!("hermetic: {e}{hint}");
            return Ok(ExitStatus::Findings);
        }
    };
    let foreign = if args.salvage {
        hermetic_format::Foreign::Salvage
    } else if opts.allowed.is_empty() {
        hermetic_format::Foreign::Refuse
    } else {
        hermetic_format::Foreign::Records(opts.allowed.clone())
    };
    let mut conv = match hermetic_format::convert_with(&loaded, foreign) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hermetic: {name}: {e}");
            return Ok(ExitStatus::Findings);
        }
    };
    let total = conv.plan.data_size();
    let mut source = Progress {
        inner: &mut conv.data,
        bar: progress(total),
    };
    if let Err(e) = write_file(
        &args.output,
        &conv.plan,
        &mut source,
        WriteOptions::default(),
    ) {
        eprintln!("hermetic: {e}");
        return Ok(ExitStatus::Internal);
    }
    if let Some(p) = &source.bar {
        p.finish_and_clear();
    }
    let not_carried = &conv.not_carried;
    if !not_carried.is_empty() {
        eprintln!(
            "hermetic: note: {} place(s) had Python attributes the tensor-tree format does not store (attributes set on a tensor object); not carried over:",
            not_carried.len()
        );
        for place in not_carried.iter().take(10) {
            eprintln!("  {place}");
        }
        if not_carried.len() > 10 {
            eprintln!("  ... and {} more", not_carried.len() - 10);
        }
    }
    writeln!(
        out,
        "{} -> {}: {} tensors in {} entries, {} ({})",
        name,
        args.output.display(),
        conv.tensors,
        conv.plan.entries.len(),
        super::inspect_pickle::human(total),
        loaded.format.as_str()
    )?;
    Ok(ExitStatus::Clean)
}

/// Whether a refusal names only imports that salvage may read (no
/// dangerous primitives, no broken structure).
fn dangerous_free(u: &eval::Unsafe) -> bool {
    u.offenders
        .iter()
        .all(|o| o.code == FindingCode::UnknownImport)
}

fn progress(total: u64) -> Option<indicatif::ProgressBar> {
    if total < PROGRESS_MIN_BYTES || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(bar)
}

/// A torch.distributed.checkpoint folder, consolidated into one file as
/// `dcp_to_torch_save` consolidates it (see `hermetic_pickle::dcp::consolidate`).
fn from_dcp(input: &Path, output: &Path, out: &mut dyn Write) -> Result<ExitStatus, CliError> {
    let name = input.display().to_string();
    let loaded = match hermetic_pickle::dcp::consolidate(input) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hermetic: {name}: {e}");
            return Ok(ExitStatus::Findings);
        }
    };
    let mut conv = match hermetic_format::convert_with(&loaded, hermetic_format::Foreign::Refuse) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hermetic: {name}: {e}");
            return Ok(ExitStatus::Findings);
        }
    };
    let total = conv.plan.data_size();
    if let Err(e) = write_file(output, &conv.plan, &mut conv.data, WriteOptions::default()) {
        eprintln!("hermetic: {e}");
        return Ok(ExitStatus::Internal);
    }
    writeln!(
        out,
        "{} -> {}: {} tensors in {} entries, {} (dcp)",
        name,
        output.display(),
        conv.tensors,
        conv.plan.entries.len(),
        super::inspect_pickle::human(total),
    )?;
    Ok(ExitStatus::Clean)
}

fn from_safetensors(
    input: &Path,
    output: &Path,
    out: &mut dyn Write,
) -> Result<ExitStatus, CliError> {
    let ar = match Archive::open(input) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hermetic: {e}");
            return Ok(ExitStatus::Findings);
        }
    };
    if ar.has_tree() {
        // Already hermetic's format: a byte-for-byte copy.
        if let Err(e) = std::fs::copy(input, output) {
            eprintln!("hermetic: {}: {e}", output.display());
            return Ok(ExitStatus::Internal);
        }
        writeln!(
            out,
            "{} -> {}: already in hermetic's format, copied",
            input.display(),
            output.display()
        )?;
        return Ok(ExitStatus::Clean);
    }
    let mut items = Vec::new();
    for f in &ar.files {
        for e in &f.header.entries {
            let Some(dtype) = Dtype::from_safetensors(e.st_dtype) else {
                eprintln!(
                    "hermetic: {}: entry `{}` has dtype {:?}, which hermetic has no code for",
                    input.display(),
                    e.name,
                    e.st_dtype
                );
                return Ok(ExitStatus::Findings);
            };
            items.push((e.name.as_str(), dtype, e.shape.as_slice(), f.entry_bytes(e)));
        }
    }
    let md = ar.metadata();
    let md: Vec<(&str, &str)> = md
        .iter()
        .filter(|(k, _)| k.as_str() != "format")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if let Err(e) = save_tensors(output, &items, &md, WriteOptions::default()) {
        eprintln!("hermetic: {e}");
        return Ok(ExitStatus::Internal);
    }
    writeln!(
        out,
        "{} -> {}: {} tensors (safetensors)",
        input.display(),
        output.display(),
        items.len()
    )?;
    Ok(ExitStatus::Clean)
}

/// Counts the bytes of each entry into the progress bar as they are written.
struct Progress<'s, S: EntrySource> {
    inner: &'s mut S,
    bar: Option<indicatif::ProgressBar>,
}

impl<S: EntrySource> EntrySource for Progress<'_, S> {
    fn write_entry(
        &mut self,
        index: usize,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> hermetic_format::Result<()> {
        let bar = self.bar.as_ref();
        self.inner.write_entry(index, &mut |piece| {
            sink(piece)?;
            if let Some(p) = bar {
                p.inc(piece.len() as u64);
            }
            Ok(())
        })
    }
}

/// What to pass to convert a file whose refusal names only classes: the
/// exact `--allow` flags, or `--salvage`. Neither runs anything.
fn allow_hint(u: &eval::Unsafe) -> String {
    let mut names: Vec<&str> = Vec::new();
    for o in &u.offenders {
        let (m, n) = o.global.split_once(':').unwrap_or(("", ""));
        // Only names that parse as an allow entry (identifiers): the line is
        // meant to be pasted into a shell, and the names come from the file.
        let entry_ok = eval::AllowList::parse([o.global.as_str()]).is_ok();
        if o.code == FindingCode::UnknownImport
            && entry_ok
            && eval::Allowed::trustable(m, n)
            && !names.contains(&o.global.as_str())
        {
            names.push(&o.global);
        }
    }
    if names.is_empty() {
        return "\n`hermetic convert --salvage` extracts the tensors and plain data of such a file without running it.".into();
    }
    let flags: Vec<String> = names.iter().map(|n| format!("--allow {n}")).collect();
    format!(
        "\nTo convert it anyway, running nothing: `{}` keeps those objects as `$class` records, \
         or `--salvage` keeps every object's class, arguments and state.",
        flags.join(" ")
    )
}
