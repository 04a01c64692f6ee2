use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Safe persistence for machine learning: find out whether loading a file can
/// run code, before anything loads it.
#[derive(Debug, Parser)]
#[command(name = "hermetic", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scan files and folders for pickles and report what loading them would import and call.
    Scan(ScanArgs),
    /// Print the blob id (sha256 of the exact stream bytes) of every pickle stream in each file.
    Hash(HashArgs),
    /// Show a hermetic or safetensors file's tree with dtypes, shapes and sizes.
    Inspect(InspectArgs),
    /// Check every tensor of hermetic files against the digests their headers record.
    Verify(VerifyArgs),
    /// Disassemble every pickle stream in a file, exactly as `python -m pickletools` prints it.
    Dis(DisArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Sarif,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    Suspicious,
    Dangerous,
    Never,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Files or folders to scan (folders recursively).
    #[arg(default_value = ".")]
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// A TOML policy file that allows or denies more globals.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Exit with status 1 when any file is at or above this verdict.
    #[arg(long, value_enum, default_value_t = FailOn::Suspicious)]
    pub fail_on: FailOn,
    /// Also list files that hold no pickle.
    #[arg(long)]
    pub all: bool,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub jobs: Option<usize>,
}

#[derive(Debug, Args)]
pub struct DisArgs {
    /// A pickle, or any container hermetic recognises (torch checkpoint, npy, joblib ...).
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct HashArgs {
    /// Files whose pickle streams to hash.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print JSON instead of lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Files, checkpoint folders or `*.index.json` files to describe.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print JSON (entries and the raw tree) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Show at most this many items of each container.
    #[arg(long, default_value_t = 50)]
    pub max_items: usize,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Files, checkpoint folders or `*.index.json` files to verify.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print JSON instead of lines.
    #[arg(long)]
    pub json: bool,
}
