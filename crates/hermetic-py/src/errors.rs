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

/// `err` with attributes set on its value (`code`, `path`, ...). Setting
/// them cannot fail on these classes; if it did, the error stays as it is.
fn with_attrs<'py>(py: Python<'py>, err: PyErr, attrs: &[(&str, Bound<'py, PyAny>)]) -> PyErr {
    let value = err.value(py);
    for (name, v) in attrs {
        let _ = value.setattr(*name, v);
    }
    err
}

/// Maps a format error: I/O errors to the matching built-in exception
/// (FileNotFoundError, PermissionError, ...), everything else to FormatError
/// with its `code`.
pub(crate) fn format_error(e: hermetic_format::FormatError) -> PyErr {
    match e {
        hermetic_format::FormatError::Io { file, source } => PyErr::from(std::io::Error::new(
            source.kind(),
            format!("{file}: {source}"),
        )),
        other => Python::with_gil(|py| {
            let code = other.code().into_pyobject(py)?.into_any();
            Ok::<_, PyErr>(with_attrs(
                py,
                FormatError::new_err(other.to_string()),
                &[("code", code)],
            ))
        })
        .unwrap_or_else(|e| e),
    }
}

/// A policy file error as PolicyError, with its `code` and `path`.
pub(crate) fn policy_error(e: hermetic_pickle::policy::PolicyError) -> PyErr {
    Python::with_gil(|py| {
        let code = e.code().into_pyobject(py)?.into_any();
        let path = e.path().into_pyobject(py)?.into_any();
        Ok::<_, PyErr>(with_attrs(
            py,
            PolicyError::new_err(e.to_string()),
            &[("code", code), ("path", path)],
        ))
    })
    .unwrap_or_else(|e| e)
}

/// A manifest error as ManifestError, with its `code` and `path`.
pub(crate) fn manifest_error(e: hermetic_manifest::ManifestError) -> PyErr {
    Python::with_gil(|py| {
        let code = e.code().into_pyobject(py)?.into_any();
        let path = e.path().into_pyobject(py)?.into_any();
        Ok::<_, PyErr>(with_attrs(
            py,
            ManifestError::new_err(e.to_string()),
            &[("code", code), ("path", path)],
        ))
    })
    .unwrap_or_else(|e| e)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // Class-level defaults of `code` (and `path`, `offset`) for errors raised
    // without a more specific one; `hermetic.errors` documents them.
    let none = py.None();
    py.get_type::<HermeticError>()
        .setattr("code", "hermetic_error")?;
    let unsafe_type = py.get_type::<UnsafePickleError>();
    unsafe_type.setattr("code", "unsafe_pickle")?;
    unsafe_type.setattr("offset", 0)?;
    let policy_type = py.get_type::<PolicyError>();
    policy_type.setattr("code", "invalid_policy")?;
    policy_type.setattr("path", &none)?;
    let manifest_type = py.get_type::<ManifestError>();
    manifest_type.setattr("code", "invalid_manifest")?;
    manifest_type.setattr("path", &none)?;
    py.get_type::<FormatError>()
        .setattr("code", "format_error")?;
    let checkpoint_type = py.get_type::<CheckpointError>();
    checkpoint_type.setattr("code", "checkpoint_error")?;
    checkpoint_type.setattr("offset", 0)?;
    m.add("HermeticError", py.get_type::<HermeticError>())?;
    m.add("UnsafePickleError", py.get_type::<UnsafePickleError>())?;
    m.add("PolicyError", py.get_type::<PolicyError>())?;
    m.add("FormatError", py.get_type::<FormatError>())?;
    m.add("CheckpointError", py.get_type::<CheckpointError>())?;
    m.add("ManifestError", py.get_type::<ManifestError>())?;
    Ok(())
}
