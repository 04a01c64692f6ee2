//! One error type for the crate. Every variant names the file (or `<bytes>`)
//! and the place inside it, and has a stable snake_case [`FormatError::code`].

use std::path::Path;

/// Why a file could not be written, read or verified.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The operating system refused a read, write, map or rename.
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid safetensors file (header length, JSON, offsets,
    /// dtype sizes): the checks the `safetensors` crate makes, plus ours.
    #[error("{file}: not a valid safetensors file: {detail}")]
    Safetensors { file: String, detail: String },
    /// The hermetic tree in `__metadata__` breaks the spec.
    #[error("{file}: invalid hermetic tree at {place}: {detail}")]
    Tree {
        file: String,
        place: String,
        detail: String,
    },
    /// A bound on untrusted input was hit before anything was allocated.
    #[error("{file}: {what} exceeds the limit of {limit} at {place}")]
    Limit {
        file: String,
        place: String,
        what: &'static str,
        limit: u64,
    },
    /// A stored digest does not match the bytes of an entry.
    #[error("{file}: tensor entry `{entry}` is corrupt: its bytes hash to {actual}, the header records {expected}")]
    Digest {
        file: String,
        entry: String,
        expected: String,
        actual: String,
    },
    /// The header no longer matches the layout digest its writer recorded.
    #[error("{file}: the header changed since it was written (its dtypes, shapes, offsets, metadata or tree): the layout digest is {actual}, the header records {expected}")]
    Layout {
        file: String,
        expected: String,
        actual: String,
    },
    /// The file records no digest to check.
    #[error("{file}: no digests recorded (not written by hermetic); nothing to verify")]
    NoDigests { file: String },
    /// A sharded checkpoint's index is malformed or disagrees with a shard.
    #[error("{file}: invalid shard index: {detail}")]
    Index { file: String, detail: String },
    /// The writer was given something the format cannot hold.
    #[error("cannot save {place}: {detail}")]
    Unsupported { place: String, detail: String },
    /// An evaluated checkpoint holds something the format cannot (feature
    /// `pickle`); `detail` names the place in its tree.
    #[error("cannot convert: {detail}")]
    Convert { detail: String },
    /// The caller's byte source failed or gave the wrong number of bytes.
    #[error("cannot save tensor entry `{entry}`: {detail}")]
    Source { entry: String, detail: String },
}

impl FormatError {
    /// A stable snake_case code for scripts and reports.
    pub fn code(&self) -> &'static str {
        match self {
            FormatError::Io { .. } => "io_error",
            FormatError::Safetensors { .. } => "invalid_safetensors",
            FormatError::Tree { .. } => "invalid_tree",
            FormatError::Limit { .. } => "limit_exceeded",
            FormatError::Digest { .. } => "digest_mismatch",
            FormatError::Layout { .. } => "layout_mismatch",
            FormatError::NoDigests { .. } => "no_digests",
            FormatError::Index { .. } => "invalid_index",
            FormatError::Unsupported { .. } => "unsupported_object",
            FormatError::Convert { .. } => "cannot_convert",
            FormatError::Source { .. } => "source_error",
        }
    }

    pub(crate) fn io(file: &Path, source: std::io::Error) -> Self {
        FormatError::Io {
            file: file.display().to_string(),
            source,
        }
    }

    pub(crate) fn tree(file: &str, place: impl Into<String>, detail: impl Into<String>) -> Self {
        FormatError::Tree {
            file: file.to_string(),
            place: place.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn unsupported(place: impl Into<String>, detail: impl Into<String>) -> Self {
        FormatError::Unsupported {
            place: place.into(),
            detail: detail.into(),
        }
    }
}

/// `Result` with [`FormatError`].
pub type Result<T, E = FormatError> = std::result::Result<T, E>;
