//! Pickle manifests for hermetic's firewall, with no Python in sight: the
//! manifest file model (TOML), blob ids, call-site patterns, the inventory
//! format that `record` mode writes, and the decision function that says
//! whether a load runs, is evaluated safely, or is refused, and why.
//!
//! The Python firewall (`hermetic.firewall`) collects the facts of a load
//! (the blob's bytes, the call stack) and asks [`Manifest::decide`]; the
//! `hermetic manifest` and `hermetic run` commands use the same types.

pub mod blob;
pub mod decide;
pub mod files;
pub mod glob;
pub mod inventory;
pub mod manifest;
pub mod summary;
pub mod text;

pub use blob::{first_blob, stream_extent, BlobId, Extent};
pub use decide::{Action, Judgement, LoadContext, Mode, Query, Refusal, Why};
pub use files::{file_blobs, is_torchscript, joblib_span, FileBlob, UNCERTAIN_ZIP_FINDINGS};
pub use glob::CallerPattern;
pub use inventory::{freeze, read_inventory, Event, FreezeOptions, Frozen, Record};
pub use manifest::{add_entries, entry_line, Entry, Manifest, Rule, Unlisted};
pub use summary::ScanSummary;
pub use text::display;

/// Everything that can go wrong reading manifests and inventories.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("bad blob id {0:?}: expected `sha256:` and 64 lowercase hex digits")]
    BadBlobId(String),
    #[error("bad call-site pattern {pattern:?}: {why}")]
    BadCallerPattern { pattern: String, why: String },
    #[error("bad mode {0:?}: expected deny, enforce, record or warn")]
    BadMode(String),
    #[error("manifest is not valid TOML: {0}")]
    Toml(String),
    #[error("invalid manifest: {0}")]
    Invalid(String),
    #[error("invalid manifest {path}: {message}")]
    InFile { path: String, message: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("inventory line {line}: {message}")]
    Inventory { line: usize, message: String },
}
