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
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The arguments do not make sense together (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// Reading or writing failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl CliError {
    /// A stable snake_case code for scripts and reports.
    pub fn code(&self) -> &'static str {
        match self {
            CliError::Usage(_) => "usage",
            CliError::Io(_) => "io_error",
        }
    }
}

impl From<serde_json::Error> for CliError {
    fn from(e: serde_json::Error) -> Self {
        CliError::Io(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::CliError;

    #[test]
    fn errors_display_their_message_and_have_codes() {
        let e = CliError::Usage("no files given".into());
        assert_eq!(
            (e.to_string().as_str(), e.code()),
            ("no files given", "usage")
        );
        let e: CliError = std::io::Error::new(std::io::ErrorKind::NotFound, "gone").into();
        assert_eq!((e.to_string().as_str(), e.code()), ("gone", "io_error"));
    }
}
