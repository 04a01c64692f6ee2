use clap::{Args, Parser, Subcommand, ValueEnum};
use hermetic_manifest::Mode;
use std::ffi::OsString;
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
    /// Show what a file holds: a hermetic/safetensors file's tree, or a pickle-bearing file's
    /// value tree (foreign classes as opaque records), with tensor dtypes, shapes and sizes.
    Inspect(InspectArgs),
    /// Convert a checkpoint (torch zip/legacy, npy/npz, data-only pickle, safetensors) into
    /// hermetic's format, without Python and without running it.
    Convert(ConvertArgs),
    /// Check every tensor of hermetic files against the digests their headers record.
    Verify(VerifyArgs),
    /// Disassemble every pickle stream in a file, exactly as `python -m pickletools` prints it.
    Dis(DisArgs),
    /// Run a command with the pickle firewall on, in it and every Python process it starts.
    Run(RunArgs),
    /// Write, extend and check pickle manifests (the pickles a deployment trusts).
    Manifest(ManifestArgs),
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

/// What `hermetic scan --help` says after the options: the verdicts and the
/// exit statuses, which scripts and CI depend on.
const SCAN_AFTER_HELP: &str = "\
Verdicts (per file, the worst of its pickle streams):
  safe        only allowlisted data constructors: loading runs no code
  suspicious  imports outside the allowlist that are not known code-execution
              primitives (typically a model's own classes): loading imports and
              runs that module's code
  dangerous   known code-execution, file, process or network primitives, or a
              stream that is malformed or read differently by different loaders
  error       the file could not be read or analysed (unreadable, not a regular
              file, a symlink loop): nothing is known about what loading it runs

Exit status:
  0  nothing at or above --fail-on (or --fail-on never)
  1  a file at or above --fail-on (default: suspicious)
  2  usage error (bad option, unreadable policy file)
  3  a file could not be read or analysed (verdict error); fails every
     --fail-on level except never";

#[derive(Debug, Args)]
#[command(after_help = SCAN_AFTER_HELP)]
pub struct ScanArgs {
    /// Files or folders to scan (folders recursively; default: the current folder).
    pub paths: Vec<PathBuf>,
    /// Scan a Hugging Face hub cache and report each `org/name@revision` with its files
    /// (default: the cache huggingface_hub uses: $HF_HUB_CACHE, else $HF_HOME/hub, else
    /// ~/.cache/huggingface/hub).
    #[arg(long, value_name = "DIR", num_args = 0..=1, conflicts_with = "paths")]
    pub hf_cache: Option<Option<PathBuf>>,
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
    /// SARIF only: the folder result paths are made relative to (reported as
    /// `%SRCROOT%`); code scanning wants the repository root (default: the
    /// current directory).
    #[arg(long, value_name = "DIR")]
    pub sarif_root: Option<PathBuf>,
    /// No progress bar (one appears on a terminal when a scan takes over a second).
    #[arg(long, short)]
    pub quiet: bool,
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

/// `--mode`: the firewall's own mode type (`hermetic_manifest::Mode`), so the
/// CLI and the firewall cannot disagree about what a mode is called.
fn mode_parser() -> impl clap::builder::TypedValueParser<Value = Mode> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new([
        PossibleValue::new("deny")
            .help("No unpickling, except through the manifest's call-site rules"),
        PossibleValue::new("enforce")
            .help("Only blobs the manifest lists (or its rules allow) are unpickled"),
        PossibleValue::new("record")
            .help("Everything loads; every unpickle and pickle writer goes into the inventory"),
        PossibleValue::new("warn").help("Like record, and a warning for every unlisted load"),
    ])
    .try_map(|s| s.parse::<Mode>())
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// What the firewall does with unpickles.
    #[arg(long, value_parser = mode_parser())]
    pub mode: Mode,
    /// The manifest (required for enforce).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Where record and warn append the inventory (record's default: ./hermetic-inventory.jsonl).
    #[arg(long)]
    pub inventory: Option<PathBuf>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct ManifestArgs {
    #[command(subcommand)]
    pub command: ManifestCommand,
}

#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// Turn recorded inventories into manifest entries (adding to OUTPUT if it exists).
    Freeze(FreezeArgs),
    /// List the pickle streams of files in a manifest, after review.
    Add(AddArgs),
    /// Validate a manifest and say which pickle streams of FILEs it lists.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct FreezeArgs {
    /// Inventory files written by `record` or `warn` mode.
    #[arg(required = true)]
    pub inventory: Vec<PathBuf>,
    /// The manifest to write or extend.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Do not pin blobs to the call sites that loaded them.
    #[arg(long)]
    pub any_caller: bool,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Files whose pickle streams to list.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The manifest to extend (created if missing).
    #[arg(long)]
    pub to: PathBuf,
    /// Allow the blobs only from call sites matching this `module:qualname` glob (repeatable).
    #[arg(long)]
    pub caller: Vec<String>,
    /// The note to record instead of the scanner's summary.
    #[arg(long)]
    pub note: Option<String>,
    /// List blobs the scanner calls dangerous too.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The manifest to validate.
    pub manifest: PathBuf,
    /// Files whose pickle streams must be listed.
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

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The checkpoint to read.
    pub input: PathBuf,
    /// The hermetic (safetensors) file to write.
    pub output: PathBuf,
    /// Read a pickle that is not data-only (a whole pickled model) without running it: modules
    /// become their state dicts, other foreign objects dicts of their class, arguments and state.
    #[arg(long, conflicts_with = "allow")]
    pub salvage: bool,
    /// Trust objects of these classes (`module:qualname` or `module:*`, repeatable): nothing is
    /// imported or run; each becomes the record `hermetic.torch.load(..., plain=True)` gives,
    /// `{"$class": "module:qualname", ...its state}`.
    #[arg(long, value_name = "PATTERN")]
    pub allow: Vec<String>,
}
