//! `hermetic run`: start a command with the pickle firewall on, in it and in
//! every Python process it starts, through the environment the firewall's
//! start-up hook reads.

use super::CliError;
use crate::args::RunArgs;
use crate::ExitStatus;
use hermetic_manifest::{Manifest, Mode};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The variables the start-up hook reads.
pub(crate) const ENV_MODE: &str = "HERMETIC_PICKLE";
pub(crate) const ENV_MANIFEST: &str = "HERMETIC_MANIFEST";
pub(crate) const ENV_INVENTORY: &str = "HERMETIC_INVENTORY";

/// The inventory `record` writes when none is named.
const DEFAULT_INVENTORY: &str = "hermetic-inventory.jsonl";

fn absolute(p: &Path) -> Result<PathBuf, CliError> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(p))
    }
}

pub(crate) fn run(args: &RunArgs) -> Result<ExitStatus, CliError> {
    let mode = args.mode;
    if mode == Mode::Enforce && args.manifest.is_none() {
        return Err(CliError::Usage(
            "--mode enforce needs --manifest (the blobs to allow)".into(),
        ));
    }
    let manifest = match &args.manifest {
        Some(p) => {
            // Refuse to start on a manifest the firewall would reject.
            Manifest::from_file(p).map_err(|e| CliError::Usage(e.to_string()))?;
            Some(absolute(p)?)
        }
        None => None,
    };
    let inventory = match (&args.inventory, mode) {
        (Some(p), _) => Some(absolute(p)?),
        (None, Mode::Record) => Some(absolute(Path::new(DEFAULT_INVENTORY))?),
        (None, _) => None,
    };
    if mode == Mode::Record {
        if let Some(p) = &inventory {
            warn_existing_inventory(p);
        }
    }
    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| CliError::Usage("no command given after `--`".into()))?;
    let mut cmd = Command::new(program);
    cmd.args(rest).env(ENV_MODE, mode.as_str());
    match &manifest {
        Some(p) => cmd.env(ENV_MANIFEST, p),
        None => cmd.env_remove(ENV_MANIFEST),
    };
    match &inventory {
        Some(p) => cmd.env(ENV_INVENTORY, p),
        None => cmd.env_remove(ENV_INVENTORY),
    };
    exec(cmd, program)
}

/// `record` appends to its inventory, and `freeze` trusts every line in
/// it: an inventory already there (one a repository shipped, with lines
/// nobody recorded) would be frozen with this run's. Say so before the run.
fn warn_existing_inventory(p: &Path) {
    let Ok(meta) = std::fs::symlink_metadata(p) else {
        return;
    };
    let shown = hermetic_manifest::display(&p.display().to_string()).into_owned();
    if meta.file_type().is_symlink() || !meta.is_file() {
        eprintln!(
            "hermetic: {shown} is not a regular file (a symlink, a pipe, ...): \
             the firewall will not write the inventory there; name another with --inventory"
        );
    } else if meta.len() > 0 {
        eprintln!(
            "hermetic: appending to the existing inventory {shown} ({} bytes): \
             `hermetic manifest freeze` trusts every line in it, including lines this run \
             did not write; for a clean record, name a new file with --inventory",
            meta.len()
        );
    }
}

#[cfg(unix)]
fn exec(mut cmd: Command, program: &std::ffi::OsStr) -> Result<ExitStatus, CliError> {
    use std::os::unix::process::CommandExt;
    // Replaces this process, so the command's exit status and signals are
    // its own. `exec` only returns on failure.
    let e = cmd.exec();
    Err(CliError::Io(std::io::Error::new(
        e.kind(),
        format!("cannot run {}: {e}", program.to_string_lossy()),
    )))
}

#[cfg(not(unix))]
fn exec(mut cmd: Command, program: &std::ffi::OsStr) -> Result<ExitStatus, CliError> {
    let status = cmd.status().map_err(|e| {
        CliError::Io(std::io::Error::new(
            e.kind(),
            format!("cannot run {}: {e}", program.to_string_lossy()),
        ))
    })?;
    std::process::exit(status.code().unwrap_or(1));
}
