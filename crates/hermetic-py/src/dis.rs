use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// Disassembles the first pickle stream in `data` exactly as
/// `pickletools.dis` prints it. Where pickletools would raise, raises
/// `ValueError("<Exception>: <message>", partial_text)`.
#[pyfunction]
fn dis(py: Python<'_>, data: &[u8]) -> PyResult<String> {
    py.allow_threads(|| hermetic_pickle::dis::disassemble(data, 0))
        .map(|d| d.text)
        .map_err(|e| {
            PyValueError::new_err((format!("{}: {}", e.exception, e.message), e.partial_text))
        })
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(dis, m)?)?;
    Ok(())
}
