use crate::errors::policy_error;
use hermetic_pickle::{blob_id as rust_blob_id, scan_bytes, scan_file, Limits, Policy};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::path::PathBuf;

fn policy(path: Option<PathBuf>) -> PyResult<Policy> {
    match path {
        Some(p) => Policy::from_file(&p).map_err(policy_error),
        None => Ok(Policy::default()),
    }
}

/// Scans one file; returns the report as JSON (the `hermetic scan --format json` shape).
#[pyfunction]
#[pyo3(signature = (path, policy_file=None))]
fn scan_path(py: Python<'_>, path: PathBuf, policy_file: Option<PathBuf>) -> PyResult<String> {
    let policy = policy(policy_file)?;
    py.allow_threads(|| {
        let report = scan_file(&path, &policy, &Limits::default());
        serde_json::to_string(&report)
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
    })
}

/// Scans files and folders (recursively, in parallel); returns
/// `{"files": [...], "summary": {...}}` as JSON, every file included.
#[pyfunction]
#[pyo3(signature = (paths, policy_file=None, jobs=None))]
fn scan_paths(
    py: Python<'_>,
    paths: Vec<PathBuf>,
    policy_file: Option<PathBuf>,
    jobs: Option<usize>,
) -> PyResult<String> {
    let policy = policy(policy_file)?;
    py.allow_threads(|| {
        let (reports, summary) = hermetic_pickle::walk::scan_paths(&paths, &policy, jobs)
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
        serde_json::to_string(&serde_json::json!({"files": reports, "summary": summary}))
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
    })
}

/// Scans in-memory bytes named `name`; returns the report as JSON.
#[pyfunction]
#[pyo3(signature = (data, name="<bytes>", policy_file=None))]
fn scan_data(
    py: Python<'_>,
    data: &Bound<'_, PyBytes>,
    name: &str,
    policy_file: Option<PathBuf>,
) -> PyResult<String> {
    let policy = policy(policy_file)?;
    let bytes = data.as_bytes();
    py.allow_threads(|| {
        let report = scan_bytes(bytes, name, &policy, &Limits::default());
        serde_json::to_string(&report)
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
    })
}

/// The blob id (`sha256:<hex>`) of exactly these bytes.
#[pyfunction]
fn blob_id(py: Python<'_>, data: &[u8]) -> String {
    py.allow_threads(|| rust_blob_id(data))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(scan_path, m)?)?;
    m.add_function(wrap_pyfunction!(scan_paths, m)?)?;
    m.add_function(wrap_pyfunction!(scan_data, m)?)?;
    m.add_function(wrap_pyfunction!(blob_id, m)?)?;
    // Every finding code, in catalogue order (README: "Finding codes").
    let codes = hermetic_pickle::FindingCode::ALL.iter().map(|c| c.as_str());
    m.add("FINDING_CODES", pyo3::types::PyTuple::new(m.py(), codes)?)?;
    Ok(())
}
