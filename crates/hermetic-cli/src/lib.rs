//! The `hermetic` command line. The binary's `main` and the Python package's
//! `hermetic` entry point both call [`run`], so there is one implementation.

mod args;
mod commands;
mod hf;

use clap::Parser;
use std::ffi::OsString;
use std::io::Write;

pub use args::Cli;
pub use commands::CliError;
pub use hermetic_pickle::walk::{scan_paths, Summary};

/// How a run ended. Scripts and CI read these codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// Nothing at or above the fail level.
    Clean = 0,
    /// Something at or above the fail level.
    Findings = 1,
    /// The command line was wrong.
    Usage = 2,
    /// A file could not be read, or an output could not be written.
    Internal = 3,
}

impl From<ExitStatus> for std::process::ExitCode {
    fn from(s: ExitStatus) -> Self {
        std::process::ExitCode::from(s as u8)
    }
}

/// Parses `args` (including the program name) and runs the command.
pub fn run<I, T>(args: I) -> ExitStatus
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitStatus::Clean
                }
                _ => ExitStatus::Usage,
            };
        }
    };
    // Reports can be large; stdout is line-buffered, so batch the writes.
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let status = commands::dispatch(cli, &mut out);
    let _ = out.flush();
    status
}
