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

impl ManifestError {
    /// A stable snake_case code for scripts and reports.
    pub fn code(&self) -> &'static str {
        match self {
            ManifestError::BadBlobId(_) => "bad_blob_id",
            ManifestError::BadCallerPattern { .. } => "bad_caller_pattern",
            ManifestError::BadMode(_) => "bad_mode",
            ManifestError::Toml(_) => "invalid_toml",
            ManifestError::Invalid(_) | ManifestError::InFile { .. } => "invalid_manifest",
            ManifestError::Io { .. } => "io_error",
            ManifestError::Inventory { .. } => "invalid_inventory",
        }
    }

    /// The file the error is about, when it names one.
    pub fn path(&self) -> Option<&str> {
        match self {
            ManifestError::InFile { path, .. } | ManifestError::Io { path, .. } => Some(path),
            ManifestError::BadBlobId(_)
            | ManifestError::BadCallerPattern { .. }
            | ManifestError::BadMode(_)
            | ManifestError::Toml(_)
            | ManifestError::Invalid(_)
            | ManifestError::Inventory { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ManifestError;

    #[test]
    fn errors_have_codes_and_paths() {
        let e = ManifestError::InFile {
            path: "m.toml".into(),
            message: "bad".into(),
        };
        assert_eq!((e.code(), e.path()), ("invalid_manifest", Some("m.toml")));
        let e = ManifestError::BadMode("x".into());
        assert_eq!((e.code(), e.path()), ("bad_mode", None));
        assert_eq!(
            e.to_string(),
            "bad mode \"x\": expected deny, enforce, record or warn"
        );
    }
}
