mod convert;
mod dis;
mod hash;
mod inspect;
mod inspect_pickle;
mod manifest;
mod run;
pub(crate) mod sarif;
mod scan;
mod verify;

use crate::args::{Cli, Command};
use crate::ExitStatus;
use std::io::Write;

pub(crate) fn dispatch(cli: Cli, out: &mut dyn Write) -> ExitStatus {
    let result = match cli.command {
        Command::Scan(a) => scan::run(&a, out),
        Command::Hash(a) => hash::run(&a, out),
        Command::Inspect(a) => inspect::run(&a, out),
        Command::Convert(a) => convert::run(&a, out),
        Command::Verify(a) => verify::run(&a, out),
        Command::Dis(a) => dis::run(&a, out),
        Command::Run(a) => run::run(&a),
        Command::Manifest(a) => manifest::run(&a, out),
    };
    match result {
        Ok(status) => status,
        Err(CliError::Usage(msg)) => {
            eprintln!("hermetic: error: {msg}");
            ExitStatus::Usage
        }
        Err(CliError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitStatus::Clean,
        Err(CliError::Io(e)) => {
            eprintln!("hermetic: error: {e}");
            ExitStatus::Internal
        }
    }
}

/// Why a command could not run.
#[derive(Debug)]
pub enum CliError {
    Usage(String),
    Io(std::io::Error),
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(m) => f.write_str(m),
            CliError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CliError {}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Io(e)
    }
}

impl From<serde_json::Error> for CliError {
    fn from(e: serde_json::Error) -> Self {
        CliError::Io(e.into())
    }
}
