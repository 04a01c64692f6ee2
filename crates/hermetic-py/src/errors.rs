use pyo3::create_exception;
use pyo3::prelude::*;

create_exception!(
    hermetic,
    HermeticError,
    pyo3::exceptions::PyException,
    "Base class of every hermetic error."
);
create_exception!(
    hermetic,
    UnsafePickleError,
    HermeticError,
    "A pickle names globals outside the policy."
);
create_exception!(
    hermetic,
    PolicyError,
    HermeticError,
    "A policy file could not be read."
);
create_exception!(
    hermetic,
    ManifestError,
    HermeticError,
    "A pickle manifest could not be read or is invalid."
);

create_exception!(
    hermetic,
    FormatError,
    HermeticError,
    "A tensor-tree file is invalid or corrupt, or an object cannot be saved in one."
);

create_exception!(
    hermetic,
    CheckpointError,
    HermeticError,
    "A checkpoint or pickle could not be evaluated: malformed, unsupported, or over a limit."
);

/// Maps a format error: I/O errors to the matching built-in exception
/// (FileNotFoundError, PermissionError, ...), everything else to FormatError.
pub(crate) fn format_error(e: hermetic_format::FormatError) -> PyErr {
    match e {
        hermetic_format::FormatError::Io { file, source } => PyErr::from(std::io::Error::new(
            source.kind(),
            format!("{file}: {source}"),
        )),
        other => FormatError::new_err(other.to_string()),
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("HermeticError", py.get_type::<HermeticError>())?;
    m.add("UnsafePickleError", py.get_type::<UnsafePickleError>())?;
    m.add("PolicyError", py.get_type::<PolicyError>())?;
    m.add("FormatError", py.get_type::<FormatError>())?;
    m.add("CheckpointError", py.get_type::<CheckpointError>())?;
    m.add("ManifestError", py.get_type::<ManifestError>())?;
    Ok(())
}
